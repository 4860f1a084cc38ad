"""Exports the models to ONNX and ExecuTorch for phones, and runs the exported files.

What a keyboard runs is not `forward` over a whole sequence but one prediction at a time, so
each model is exported as the step a phone takes:

* CIFG-LSTM (`models.cifg`): one recurrent step, `(x_t [B], h [B, P], c [B, H]) -> (logits
  [B, V], h', c')`. The app keeps (h, c) between words, so a prediction costs one step however
  long the message is; that is how Gboard's CIFG model runs (Hard et al. 2018, section 3) and
  what `forward_with_state` computes when fed one word at a time.
* Transformer LM (`models.transformer_lm`): the last `T` ids (1 <= T <= max_len, dynamic) to
  the next-word logits at the last position, `ids [B, T] -> logits [B, V]`. No key/value cache:
  a prediction re-reads its window, so its cost grows with T (the benchmark uses the training
  window of 20 ids, `data.torch_data.DEFAULT_SEQ_LEN`).
* Proofreader (`models.proofreader`): an encoder, `(src [B, S], src_mask [B, S]) ->
  (cross_k, cross_v [L, B, H, S, D/H], key_mask [B, S])`, run once per message, and a decoder
  step with a growing self-attention cache, `(tokens [B], position [1], cross_k, cross_v,
  key_mask, past_k, past_v [L, B, H, T, D/H]) -> (log_probs [B, V], past_k', past_v'
  [.., T + 1, ..])`. `ExportedProofreader.greedy` drives them as `Proofreader.greedy` does.

  In ExecuTorch the decoder file is one program with two methods, because executorch 1.5.1's
  Python runtime refuses a tensor with a 0-length axis as an input ("invalid strides"), so the
  ONNX step's empty first cache cannot be fed to it. `first` is the step at position 0 with no
  cache, `(cross_k, cross_v, key_mask) -> (log_probs, past_k, past_v [.., 1, ..])`, reading
  BOS by itself; `forward` is the step above with a cache of 1 to max_len - 1 positions. Both
  run the decoder layers exactly as `Proofreader._step` does, so the exported file computes the
  same numbers as torch (no padding or masking of a fixed-size cache, whose rounding and
  memory traffic would differ), and the two methods share their weights: a program stores
  equal constants once (measured on the default model: the two-method float decoder file is
  15.4 MB, ONNX's one step 13.5 MB, the difference being XNNPACK's second copy of the tied
  matrix, 2.0 MB, not a second decoder). The ExecuTorch proofreader takes one message per call
  (batch 1, as on a phone); `ExportedProofreader` decodes a batch there message by message.

Tied embeddings are stored once. In the ONNX graphs the tied matrix is kept transposed, [E, V]:
the lookup is a Gather along its second axis and the output layer a MatMul with it, so
onnxruntime's dynamic quantizer makes one int8 copy serve both (with the usual `[V, E]` layout
the output layer's transposed copy is quantized apart, which adds V*E bytes: 0.96 MB for the
CIFG model). The ExecuTorch graphs keep the `[V, E]` layout, which XNNPACK's quantizer expects.

int8 ("quantize_int8=True") means dynamic quantization with int8 weights and activations
quantized per call, the scheme phones' CPU runtimes accelerate:

* ONNX: `onnxruntime.quantization.quantize_dynamic` (QInt8 weights, per tensor) on every MatMul,
  Gemm and Gather, i.e. the tied embedding too.
* ExecuTorch: PT2E with XNNPACK's quantizer (symmetric, per-channel int8 weights, dynamic int8
  activations) on the linear layers, and torchao's `EmbeddingQuantizer` (per-row int8) on the
  lookups. XNNPACK packs its own copy of a linear layer's weights, so a tied matrix is stored
  twice in a `.pte`: once for XNNPACK's output layer and once for the lookup kernel.

Exported files are data only: an ONNX protobuf or an ExecuTorch flatbuffer, never a pickle.
A missing, corrupt or foreign file gives `ExportedModelError` (a ValueError) naming the file.
The heavy packages (onnx, onnxruntime, executorch) are imported only when used.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The first 8 bytes of an ExecuTorch program: a flatbuffer root offset, then its file
# identifier "ET12" (executorch/schema/program.fbs, `file_identifier`).
_PTE_IDENTIFIER = b"ET12"
ONNX_OPSET = 18  # torch 2.13's dynamo exporter default; onnxruntime 1.32 runs up to 23


class ExportedModelError(ValueError):
    """An exported model file is missing, corrupt, of the wrong kind or has other inputs."""


# --- modules that define the exported step -------------------------------------------------


class _TiedEmbedding(nn.Module):
    """A tied word embedding / output layer in the layout the target runtime quantizes best.

    Args:
        weight: The model's (V, E) embedding, also its output layer.
        bias: The output layer's per-word bias (V,) or None.
        transposed: Store the matrix as (E, V) (ONNX: one int8 copy serves both uses).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool):
        super().__init__()
        self.transposed = transposed
        w = weight.detach()
        self.weight = nn.Parameter(w.t().contiguous() if transposed else w.clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) int64 -> embeddings (..., E)."""
        if not self.transposed:
            return F.embedding(ids, self.weight)
        flat = torch.index_select(self.weight, 1, ids.reshape(-1)).t()  # (N, E)
        return flat.reshape(*ids.shape, self.weight.shape[0])

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., E) -> logits (..., V)."""
        if not self.transposed:
            return F.linear(h, self.weight, self.bias)
        out = h @ self.weight
        return out if self.bias is None else out + self.bias


class CIFGStep(nn.Module):
    """One step of a `CIFGLanguageModel`: (x_t [B], h [B, P], c [B, H]) -> (logits [B, V], h, c).

    A snapshot: later changes to the model's weights do not reach it.

    Args:
        model: A `models.cifg.CIFGLanguageModel`.
        transposed: Tied matrix layout (see `_TiedEmbedding`); True for ONNX.
    """

    def __init__(self, model: nn.Module, transposed: bool = True):
        super().__init__()
        cell = model.cell
        self.tied = _TiedEmbedding(model.embedding, model.out_bias, transposed)
        # The gate matrix over [x_t, h_{t-1}] split into its input and recurrent halves (the
        # same values): `CIFGCell` slices one parameter at run time, and a slice of a weight
        # is not a constant that onnxruntime's quantizer sees, which left it float32.
        w = cell.weight.detach()
        self.w_x = nn.Parameter(w[:, : cell.input_dim].clone())  # (3H, E)
        self.w_h = nn.Parameter(w[:, cell.input_dim :].clone())  # (3H, P)
        self.bias = nn.Parameter(cell.bias.detach().clone())  # (3H,)
        self.proj = nn.Parameter(cell.proj.detach().clone())  # (P, H)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # CIFGCell.step (models/cifg.py) with the split weights; the parity tests hold them equal.
        z = F.linear(self.tied.lookup(x), self.w_x, self.bias) + F.linear(h, self.w_h)  # (B, 3H)
        zf, zg, zo = z.chunk(3, dim=-1)
        f = torch.sigmoid(zf)
        c = f * c + (1.0 - f) * torch.tanh(zg)  # input gate = 1 - forget gate
        h = F.linear(torch.sigmoid(zo) * torch.tanh(c), self.proj)  # (B, P)
        return self.tied.logits(h), h, c


class TransformerLastLogits(nn.Module):
    """A `TransformerLM` read for the next word only: ids [B, T] -> logits [B, V] at T - 1.

    Args:
        model: A `models.transformer_lm.TransformerLM`.
        transposed: Tied matrix layout (see `_TiedEmbedding`); True for ONNX.
    """

    def __init__(self, model: nn.Module, transposed: bool = True):
        super().__init__()
        self.tied = _TiedEmbedding(model.embedding, model.out_bias, transposed)
        self.positions = model.positions
        self.blocks = model.blocks
        self.ln_f = model.ln_f

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        h = self.tied.lookup(ids) + self.positions[:t]  # (B, T, D)
        for block in self.blocks:
            h = block(h)
        return self.tied.logits(self.ln_f(h[:, -1]))  # only the last position: (B, V)


class ProofreaderEncoder(nn.Module):
    """(src [B, S], src_mask [B, S] bool) -> (cross_k, cross_v [L, B, H, S, D/H], key_mask [B, S]).

    The keys and values every decoder layer's cross-attention reads, computed once per message.
    A message with no real piece attends to its first position, as `Proofreader` does.
    """

    def __init__(self, model: nn.Module, transposed: bool = True):
        super().__init__()
        self.tied = _TiedEmbedding(model.embed.weight, None, transposed)
        self.src_pos = model.src_pos
        self.layers = model.encoder
        self.ln = model.enc_ln
        self.cross = nn.ModuleList(layer.cross_attn for layer in model.decoder)

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(src.shape[1], device=src.device)
        mask = src_mask.bool()
        empty = ~mask.any(dim=1, keepdim=True)  # (B, 1)
        mask = mask | (empty & (pos == 0)[None, :])
        key_mask = mask[:, None, None, :]
        x = self.tied.lookup(src) + self.src_pos(pos)
        for layer in self.layers:
            x = layer(x, key_mask)
        memory = self.ln(x)
        kv = [attn.keys_values(memory) for attn in self.cross]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv]), mask


class ProofreaderDecoderStep(nn.Module):
    """One greedy/beam step of a `Proofreader` decoder with a growing self-attention cache.

    Inputs: tokens [B] int64 (the ids at `position`), position [1] int64, cross_k and cross_v
    [L, B, H, S, D/H] and key_mask [B, S] from the encoder, past_k and past_v [L, B, H, T, D/H]
    (T = position; empty at the first step). Outputs: log-probabilities [B, V] of the next id
    with PAD and BOS at -inf (as `Proofreader._step`), and the caches grown to T + 1.
    """

    def __init__(self, model: nn.Module, transposed: bool = True):
        super().__init__()
        c = model.config
        self.tied = _TiedEmbedding(model.embed.weight, None, transposed)
        self.tgt_pos = model.tgt_pos
        self.layers = model.decoder
        self.ln = model.dec_ln
        banned = torch.zeros(c.vocab_size)
        banned[[c.pad_id, c.bos_id]] = -math.inf
        self.register_buffer("banned", banned)

    def forward(
        self,
        tokens: torch.Tensor,
        position: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        key_mask: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.tied.lookup(tokens[:, None]) + self.tgt_pos(position)  # (B, 1, D)
        mask = key_mask.bool()[:, None, None, :]
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            cache = [past_k[i], past_v[i]]
            x = layer(x, (cross_k[i], cross_v[i]), mask, cache)  # appends this position
            new_k.append(cache[0])
            new_v.append(cache[1])
        logp = F.log_softmax(self.tied.logits(self.ln(x))[:, 0], dim=-1) + self.banned
        return logp, torch.stack(new_k), torch.stack(new_v)


class ProofreaderFirstStep(nn.Module):
    """A decoder step at position 0 with no cache (BOS in, the first cache out).

    Inputs: cross_k, cross_v [L, B, H, S, D/H] and key_mask [B, S] from the encoder. Outputs:
    log-probabilities [B, V] of the first id (PAD and BOS at -inf) and past_k, past_v
    [L, B, H, 1, D/H]. Shares its weights with `step`, so one program holds them once.
    """

    def __init__(self, step: ProofreaderDecoderStep, bos_id: int):
        super().__init__()
        self.step = step
        self.register_buffer("bos", torch.tensor([[bos_id]], dtype=torch.int64), persistent=False)

    def forward(
        self, cross_k: torch.Tensor, cross_v: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.step
        x = s.tied.lookup(self.bos) + s.tgt_pos.weight[:1]  # (1, 1, D)
        x = x.expand(key_mask.shape[0], 1, x.shape[-1])  # (B, 1, D)
        mask = key_mask.bool()[:, None, None, :]
        new_k, new_v = [], []
        for i, layer in enumerate(s.layers):
            cache: list[torch.Tensor] = []  # empty: the layer starts the cache with position 0
            x = layer(x, (cross_k[i], cross_v[i]), mask, cache)
            new_k.append(cache[0])
            new_v.append(cache[1])
        logp = F.log_softmax(s.tied.logits(s.ln(x))[:, 0], dim=-1) + s.banned
        return logp, torch.stack(new_k), torch.stack(new_v)


# --- export ------------------------------------------------------------------------------


def _dims(dynamic_axes: Mapping[str, Mapping[int, tuple[str, int, int]]], names: Sequence[str]):
    """torch.export dynamic shapes, one dict per input, from {input: {axis: (name, lo, hi)}}."""
    made: dict[str, torch.export.Dim] = {}
    out = []
    for name in names:
        axes = {}
        for axis, (dim_name, lo, hi) in dynamic_axes.get(name, {}).items():
            if lo == hi:
                continue  # one size only: fixed to the example's
            if dim_name not in made:
                made[dim_name] = torch.export.Dim(dim_name, min=lo, max=hi)
            axes[axis] = made[dim_name]
        out.append(axes or None)
    return tuple(out)


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, tuple[str, int, int]]] | None = None,
    quantize_int8: bool = False,
) -> Path:
    """Writes `module` as an ONNX model (torch.onnx dynamo exporter) and returns the path.

    Args:
        module: Called as module(*example_inputs); put in eval mode.
        path: The .onnx file to write (its folder is created).
        example_inputs: Tensors of a representative shape.
        input_names, output_names: The graph's input and output names, in order.
        dynamic_axes: {input name: {axis: (dim name, min, max)}}; axes sharing a dim name
            are one symbol. Absent inputs are fixed to the example's shape.
        quantize_int8: Dynamic int8 quantization of the weights (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    shapes = _dims(dynamic_axes or {}, input_names)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            tuple(example_inputs),
            dynamo=True,
            dynamic_shapes=shapes if dynamic_axes else None,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=ONNX_OPSET,
            verbose=False,
            optimize=True,
        )
    if not quantize_int8:
        program.save(str(path))
        return path
    with tempfile.TemporaryDirectory(prefix="kbsim-onnx-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        program.save(str(float_path))
        return quantize_onnx(float_path, path)


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Writes an int8 copy of the float ONNX model `src` to `dst` (see the module docstring).

    Raises:
        ExportedModelError: `src` is missing or not an ONNX model.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = _check_file(src, ".onnx"), Path(dst)
    try:
        onnx.checker.check_model(str(src))
    except Exception as e:  # onnx raises ValidationError or protobuf's DecodeError
        raise ExportedModelError(f"{src}: not a valid ONNX model: {e}") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return dst


class ExecuTorchMethod(NamedTuple):
    """One method of an ExecuTorch program: what `export_executorch_program` traces.

    Attributes:
        module: Called as module(*example_inputs); put in eval mode.
        example_inputs: Tensors of a representative shape.
        input_names: Names for `dynamic_axes` (positional, as the module's inputs).
        dynamic_axes: As `export_onnx`'s; ExecuTorch needs every dynamic axis bounded.
    """

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: Sequence[str] = ()
    dynamic_axes: Mapping[str, Mapping[int, tuple[str, int, int]]] | None = None


def export_executorch(
    module: nn.Module,
    path: str | os.PathLike,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str] = (),
    dynamic_axes: Mapping[str, Mapping[int, tuple[str, int, int]]] | None = None,
    quantize_int8: bool = False,
) -> Path:
    """Writes `module` as an ExecuTorch program (.pte, XNNPACK delegate); returns the path.

    The program's one method is `forward`. Args as `ExecuTorchMethod`'s, and:

    Args:
        path: The .pte file to write (its folder is created).
        quantize_int8: PT2E dynamic int8 quantization (see the module docstring).
    """
    method = ExecuTorchMethod(module, tuple(example_inputs), input_names, dynamic_axes)
    return export_executorch_program({"forward": method}, path, quantize_int8)


def export_executorch_program(
    methods: Mapping[str, ExecuTorchMethod], path: str | os.PathLike, quantize_int8: bool = False
) -> Path:
    """Writes one ExecuTorch program (.pte, XNNPACK delegate) with several methods.

    Methods that use the same weights (the same tensors, or equal values) store them once.

    Args:
        methods: {method name: ExecuTorchMethod}; a runtime loads each by name ("forward" is the
            default method of ExecuTorch's runners).
        path: The .pte file to write (its folder is created); replaced atomically.
        quantize_int8: PT2E dynamic int8 quantization of every method (see the module
            docstring).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    if not methods:
        raise ValueError("export_executorch_program: no methods to export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    programs = {}
    with torch.no_grad():
        for name, m in methods.items():
            module = m.module.eval()
            args = tuple(m.example_inputs)
            shapes = _dims(m.dynamic_axes, m.input_names) if m.dynamic_axes else None
            program = torch.export.export(module, args, dynamic_shapes=shapes)
            if quantize_int8:
                program = torch.export.export(
                    _quantize_pt2e(program.module(), args), args, dynamic_shapes=shapes
                )
            programs[name] = program
        lowered = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
        et = lowered.to_executorch(
            ExecutorchBackendConfig(
                extract_delegate_segments=True,
                # Fuses the embedding's dequantize into `embedding_byte`, which runs on int8.
                do_quant_fusion_and_const_prop=quantize_int8,
                # Plans memory for the dynamic axes' upper bounds, not the example's shape.
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
            )
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(et.buffer)
    os.replace(tmp, path)
    return path


def _quantize_pt2e(graph_module: torch.fx.GraphModule, args: tuple) -> torch.fx.GraphModule:
    """PT2E: XNNPACK dynamic int8 linears and int8 embedding lookups, calibrated on `args`."""
    import executorch.kernels.quantized  # noqa: F401  (registers embedding_byte for export)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import EmbeddingQuantizer

    linear = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    )
    prepared = prepare_pt2e(graph_module, ComposableQuantizer([EmbeddingQuantizer(), linear]))
    prepared(*args)  # dynamic activations: one call only records the graph's observers
    return convert_pt2e(prepared)


# --- running exported files ----------------------------------------------------------------


def _check_file(path: str | os.PathLike, suffix: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ExportedModelError(f"{path}: no such model file")
    if path.stat().st_size < 8:
        raise ExportedModelError(f"{path}: {path.stat().st_size} bytes is too short for a model")
    if suffix == ".pte":
        with path.open("rb") as f:
            head = f.read(8)
        if head[4:8] != _PTE_IDENTIFIER:
            raise ExportedModelError(
                f"{path}: not an ExecuTorch program (file identifier {head[4:8]!r}, "
                f"expected {_PTE_IDENTIFIER!r})"
            )
    return path


class OnnxRunner:
    """An ONNX model in onnxruntime on the CPU: `runner(*arrays) -> list of arrays`.

    Args:
        path: The .onnx file.
        threads: Intra-op threads (1: what a keyboard gets, and what the benchmark measures).

    Raises:
        ExportedModelError: The file is missing or onnxruntime cannot load it.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        import onnxruntime as ort

        self.path = _check_file(path, ".onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportedModelError(f"{self.path}: onnxruntime cannot load it: {e}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"{self.path}: {len(inputs)} inputs given, the model takes "
                f"{len(self.input_names)} ({', '.join(self.input_names)})"
            )
        feed = {n: np.asarray(a) for n, a in zip(self.input_names, inputs, strict=True)}
        return self.session.run(None, feed)


class ExecuTorchRunner:
    """One method of an ExecuTorch program on the CPU: `runner(*arrays) -> list of arrays`.

    Uses `executorch.runtime` (the pybind runtime with the portable, quantized and XNNPACK
    kernels the export targets). XNNPACK runs on one thread unless told otherwise.

    Args:
        path: The .pte file.
        method: The method to run ("forward" unless the program was written with others).

    Attributes:
        method_names: Every method the program has.

    Raises:
        ExportedModelError: The file is missing, not an ExecuTorch program, fails to load, or
            has no such method.
    """

    def __init__(self, path: str | os.PathLike, method: str = "forward"):
        import executorch.kernels.quantized  # noqa: F401  (registers the int8 lookup kernel)
        from executorch.runtime import Runtime

        self.path = _check_file(path, ".pte")
        try:
            self.program = Runtime.get().load_program(str(self.path))
            self.method_names = frozenset(self.program.method_names)
        except Exception as e:  # the runtime raises RuntimeError with an error code
            raise ExportedModelError(f"{self.path}: ExecuTorch cannot load it: {e}") from None
        self.method_name = method
        self.method = self._load(method)

    def _load(self, name: str):
        if name not in self.method_names:
            raise ExportedModelError(f"{self.path}: the program has no {name!r} method (it "
                                     f"has {', '.join(sorted(self.method_names))})")
        try:
            method = self.program.load_method(name)
        except Exception as e:  # RuntimeError with an error code
            raise ExportedModelError(f"{self.path}: ExecuTorch cannot load method {name!r}: "
                                     f"{e}") from None
        if method is None:
            raise ExportedModelError(f"{self.path}: ExecuTorch cannot load method {name!r}")
        return method

    def other(self, method: str) -> ExecuTorchRunner:
        """A runner of another method of the same loaded program (its weights not read again)."""
        runner = object.__new__(ExecuTorchRunner)
        runner.path, runner.program, runner.method_names = (
            self.path, self.program, self.method_names)
        runner.method_name = method
        runner.method = runner._load(method)
        return runner

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        # Copies: an output may live in the method's planned memory, which the next call reuses.
        return [t.numpy().copy() for t in self.method.execute(tensors)]


def open_runner(path: str | os.PathLike) -> OnnxRunner | ExecuTorchRunner:
    """The runner for a file by its suffix (.onnx or .pte)."""
    suffix = Path(path).suffix
    if suffix == ".onnx":
        return OnnxRunner(path)
    if suffix == ".pte":
        return ExecuTorchRunner(path)
    raise ExportedModelError(f"{path}: unknown model file suffix {suffix!r} (.onnx or .pte)")


# --- per-model export --------------------------------------------------------------------


FORMATS = ("onnx", "executorch")
_SUFFIX = {"onnx": ".onnx", "executorch": ".pte"}


def _exporter(fmt: str) -> Callable:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    return export_onnx if fmt == "onnx" else export_executorch


def _export(fmt, module, path, args, names, outputs, axes, quantize_int8) -> Path:
    if fmt == "onnx":
        return export_onnx(module, path, args, names, outputs, axes, quantize_int8)
    return export_executorch(module, path, args, names, axes, quantize_int8)


def export_next_word(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str = "onnx",
    quantize_int8: bool = False,
    max_batch: int = 64,
) -> Path:
    """Exports a next-word model's keyboard step (see the module docstring) to `path`.

    CIFG: inputs x [B] int64, h [B, P], c [B, H]; outputs logits [B, V], h, c. Transformer:
    input ids [B, T] int64 (1 <= T <= max_len); output logits [B, V]. In ONNX, B is dynamic up
    to `max_batch`; ExecuTorch files take B = 1 (one keyboard), because executorch 1.5.1's
    `to_edge` specializes a dynamic batch axis through the CIFG cell's gate split to the
    example's size (seen with torch 2.13), while dynamic time axes survive.

    Raises:
        ValueError: The model is neither kind, or `fmt` is unknown.
    """
    _exporter(fmt)
    transposed = fmt == "onnx"
    kind = type(model).__name__
    batch = ("batch", 1, max_batch)
    if kind == "CIFGLanguageModel":
        c = model.config
        step = CIFGStep(model, transposed)
        b = 1 if fmt == "executorch" else 2
        args = (
            torch.arange(4, 4 + b, dtype=torch.int64).remainder(c.vocab_size),
            torch.zeros(b, c.embed_dim),
            torch.zeros(b, c.hidden_dim),
        )
        names, outs = ("x", "h", "c"), ("logits", "h_out", "c_out")
        axes = {n: {0: batch} for n in names} if fmt == "onnx" else None
        return _export(fmt, step, path, args, names, outs, axes, quantize_int8)
    if kind == "TransformerLM":
        c = model.config
        step = TransformerLastLogits(model, transposed)
        b, t = (1 if fmt == "executorch" else 2), min(3, c.max_len)
        args = (torch.arange(4, 4 + b * t, dtype=torch.int64).remainder(c.vocab_size).view(b, t),)
        axes = {"ids": {1: ("time", 1, c.max_len)}} if c.max_len > 1 else {}
        if fmt == "onnx":
            axes.setdefault("ids", {})[0] = batch
        return _export(fmt, step, path, args, ("ids",), ("logits",), axes, quantize_int8)
    raise ValueError(f"export_next_word: {kind} is not a CIFGLanguageModel or TransformerLM")


class ProofreaderFiles(NamedTuple):
    """The two files of an exported proofreader (an ExecuTorch decoder has two methods)."""

    encoder: Path
    decoder: Path


_ENC_IN = ("src", "src_mask")
_ENC_OUT = ("cross_k", "cross_v", "key_mask")
_DEC_IN = ("tokens", "position", "cross_k", "cross_v", "key_mask", "past_k", "past_v")
_DEC_OUT = ("log_probs", "past_k_out", "past_v_out")
FIRST_STEP_METHOD = "first"  # the ExecuTorch decoder's step at position 0 (no cache)


def export_proofreader(
    model: nn.Module,
    folder: str | os.PathLike,
    fmt: str = "onnx",
    quantize_int8: bool = False,
    max_batch: int = 64,
) -> ProofreaderFiles:
    """Exports a `Proofreader` as `proofreader_encoder` and `proofreader_decoder_step` files.

    See the module docstring for their inputs and outputs; `ExportedProofreader` runs them.
    Source length and cache length are dynamic up to max_len. In ONNX the batch is dynamic up
    to `max_batch` and one decoder step takes the empty first cache; in ExecuTorch the batch is
    1 (as `export_next_word`'s) and the decoder file holds the `first` step (no cache) and the
    `forward` step (a cache of 1 to max_len - 1 positions).
    """
    _exporter(fmt)
    c = model.config
    model = model.eval()
    onnx_fmt = fmt == "onnx"
    folder = Path(folder)
    suffix = _SUFFIX[fmt] if not quantize_int8 else f".int8{_SUFFIX[fmt]}"
    batch = ("batch", 1, max_batch)
    src_len = ("src_len", 1, c.max_len)
    b, s, t = (2 if onnx_fmt else 1), min(5, c.max_len), min(3, c.max_len - 1)
    src = torch.arange(4, 4 + b * s, dtype=torch.int64).remainder(c.vocab_size).view(b, s)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[-1, -2:] = False
    enc = ProofreaderEncoder(model, onnx_fmt)
    enc_axes = {"src": {1: src_len}, "src_mask": {1: src_len}}
    if onnx_fmt:
        enc_axes = {k: {0: batch, **v} for k, v in enc_axes.items()}
    enc_path = _export(
        fmt, enc, folder / f"proofreader_encoder{suffix}", (src, mask), _ENC_IN, _ENC_OUT,
        enc_axes, quantize_int8,
    )
    with torch.no_grad():
        cross_k, cross_v, key_mask = enc(src, mask)
    heads, hd = cross_k.shape[2], cross_k.shape[4]
    past = torch.zeros(len(model.decoder), b, heads, t, hd)
    dec_args = (
        torch.tensor([c.bos_id, 5][:b], dtype=torch.int64),
        torch.tensor([t], dtype=torch.int64),
        cross_k,
        cross_v,
        key_mask,
        past,
        past.clone(),
    )
    cross_axes = {"cross_k": {3: src_len}, "cross_v": {3: src_len}, "key_mask": {1: src_len}}
    cache = ("past_len", 0 if onnx_fmt else 1, c.max_len - 1)  # ExecuTorch: never empty
    dec_axes = {"tokens": {}, **cross_axes, "past_k": {3: cache}, "past_v": {3: cache}}
    step = ProofreaderDecoderStep(model, onnx_fmt)
    dec_file = folder / f"proofreader_decoder_step{suffix}"
    if onnx_fmt:
        batch_axis = {"tokens": 0, "key_mask": 0}  # the others: [L, B, ...]
        dec_axes = {k: {**v, batch_axis.get(k, 1): batch} for k, v in dec_axes.items()}
        dec_path = export_onnx(step, dec_file, dec_args, _DEC_IN, _DEC_OUT, dec_axes,
                               quantize_int8)
        return ProofreaderFiles(enc_path, dec_path)
    first = ProofreaderFirstStep(step, c.bos_id)
    dec_path = export_executorch_program({
        FIRST_STEP_METHOD: ExecuTorchMethod(first, dec_args[2:5], _ENC_OUT, cross_axes),
        "forward": ExecuTorchMethod(step, dec_args, _DEC_IN, dec_axes),
    }, dec_file, quantize_int8)
    return ProofreaderFiles(enc_path, dec_path)


class GreedyResult(NamedTuple):
    """As `models.proofreader.Decoded`, in numpy: sequences [B, L], lengths [B], log_probs [B]."""

    sequences: np.ndarray
    lengths: np.ndarray
    log_probs: np.ndarray


class ExportedProofreader:
    """Greedy decoding with an exported encoder and decoder step (ONNX or ExecuTorch).

    Args:
        encoder, decoder: The files `export_proofreader` wrote (or runners of them).
        config: The model's `ProofreaderConfig` (special ids, max_len, layer and head counts).
        first: The step at position 0 without a cache (see `ProofreaderFirstStep`); by default
            an ExecuTorch decoder's `first` method, and None for ONNX, whose step takes the
            empty cache itself.
        max_batch: Messages per call; by default 1 for ExecuTorch files (exported for one
            message), else unlimited. A larger batch is decoded in parts and joined.
    """

    def __init__(self, encoder, decoder, config, first=None, max_batch: int | None = None):
        self.encoder = encoder if callable(encoder) else open_runner(encoder)
        self.decoder = decoder if callable(decoder) else open_runner(decoder)
        executorch = isinstance(self.decoder, ExecuTorchRunner)
        if first is None and executorch:
            first = self.decoder.other(FIRST_STEP_METHOD)
        self.first = first
        self.max_batch = max_batch if max_batch is not None else (1 if executorch else None)
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.config = config

    def greedy(self, src_ids: Sequence[Sequence[int]], max_len: int | None = None) -> GreedyResult:
        """Most likely next id at each step, as `Proofreader.greedy` on the same ids."""
        c = self.config
        rows = [list(map(int, r)) for r in src_ids]
        if not rows:
            raise ValueError("src_ids is empty: nothing to decode")
        width = max(1, max(len(r) for r in rows))
        if width > c.max_len:
            raise ValueError(f"a source has {width} ids, max_len is {c.max_len}")
        limit = c.max_len if max_len is None else min(max_len, c.max_len)
        size = self.max_batch or len(rows)
        parts = [self._greedy(rows[i : i + size], limit) for i in range(0, len(rows), size)]
        if len(parts) == 1:
            return parts[0]
        steps = max(p.sequences.shape[1] for p in parts)  # PAD after EOS, as Proofreader pads
        return GreedyResult(
            np.concatenate([np.pad(p.sequences, ((0, 0), (0, steps - p.sequences.shape[1])),
                                   constant_values=c.pad_id) for p in parts]),
            np.concatenate([p.lengths for p in parts]),
            np.concatenate([p.log_probs for p in parts]),
        )

    def _greedy(self, rows: list[list[int]], limit: int) -> GreedyResult:
        c = self.config
        width = max(1, max(len(r) for r in rows))
        b = len(rows)
        src = np.full((b, width), c.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=bool)
        for i, r in enumerate(rows):
            src[i, : len(r)] = r
            mask[i, : len(r)] = True
        cross_k, cross_v, key_mask = self.encoder(src, mask)
        layers, _, heads, _, hd = cross_k.shape
        past_k = np.zeros((layers, b, heads, 0, hd), dtype=np.float32)
        past_v = past_k
        tokens = np.full(b, c.bos_id, dtype=np.int64)
        finished = np.zeros(b, dtype=bool)
        lengths = np.zeros(b, dtype=np.int64)
        log_probs = np.zeros(b, dtype=np.float32)
        out = []
        for t in range(limit):
            if t == 0 and self.first is not None:
                logp, past_k, past_v = self.first(cross_k, cross_v, key_mask)
            else:
                position = np.array([t], dtype=np.int64)
                logp, past_k, past_v = self.decoder(
                    tokens, position, cross_k, cross_v, key_mask, past_k, past_v
                )
            tokens = logp.argmax(axis=-1).astype(np.int64)
            best = logp[np.arange(b), tokens]
            tokens = np.where(finished, c.pad_id, tokens)
            log_probs += np.where(finished, 0.0, best).astype(np.float32)
            lengths += ~finished
            out.append(tokens)
            finished = finished | (tokens == c.eos_id)
            if finished.all():
                break
        return GreedyResult(np.stack(out, axis=1), lengths, log_probs)
