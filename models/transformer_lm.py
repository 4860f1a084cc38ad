"""A tiny causal Transformer next-word model, the second architecture beside the CIFG-LSTM.

The shape follows the small Transformer of the federated Stack Overflow benchmark (Wang et al.
2021, "A Field Guide to Federated Optimization"; pfl-research's `benchmarks/lm` config uses
embedding and hidden size 96, 8 heads, 3 layers, tied input and output embeddings), with two
changes to sit next to the 1.4M-parameter CIFG model: a feed-forward width of 512 (that config
uses 1,536, which alone adds about 0.9M parameters) and learned positions instead of
sinusoidal ones. Blocks are pre-LayerNorm (GPT-2): x + attn(ln(x)), then x + mlp(ln(x)), a
final LayerNorm, and logits h @ E^T + b_out with E the word embedding.

Parameters with the defaults (V = 10,004, D = 96, F = 512, L = 3, max_len = 64):

    embeddings V*D + positions max_len*D                         960,384 + 6,144
    per block: 2 LayerNorms 4*D, attention 4*D*D + 4*D, MLP 2*D*F + F + D
               = 384 + 37,248 + 98,912 = 136,544; three blocks     409,632
    final LayerNorm 2*D, output bias V                                192 + 10,004
    total                                                        1,386,356

Attention is written out with matmuls (no `nn.MultiheadAttention` or fused attention kernel,
which `torch.func.vmap` can only run one sample at a time), and nothing in the forward pass
branches on tensor values, so the model runs under `torch.func.functional_call` and `vmap` over
stacked parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from data.vocab import DEFAULT_SIZE, PAD, SPECIALS


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TransformerLMConfig:
    """Hyperparameters of `TransformerLM`.

    Attributes:
        vocab_size: Output and input ids: the 10,000 words and the 4 specials of `data.vocab`.
        d_model: Embedding and residual width (96, as the Stack Overflow benchmark's model).
        n_layers: Transformer blocks (3, ditto).
        n_heads: Attention heads; must divide d_model (8, ditto).
        d_ff: Feed-forward hidden width (512: see the module docstring).
        max_len: Longest input; positions beyond it have no embedding. The next-word data has
            20 ids per example (`data.torch_data.DEFAULT_SEQ_LEN`), so 64 leaves room.
        dropout: Dropout on attention weights and residual branches when training (0: none,
            which also keeps `vmap` free of randomness).
        pad_id: The padding id (never a target; `suggest` masks it).
        output_bias: Whether the output layer has a per-word bias.
        layer_norm_eps: LayerNorm epsilon (torch's default).
    """

    vocab_size: int = DEFAULT_SIZE + len(SPECIALS)
    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 8
    d_ff: int = 512
    max_len: int = 64
    dropout: float = 0.0
    pad_id: int = PAD
    output_bias: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, len(SPECIALS))
        _check_int("d_model", self.d_model, 1)
        _check_int("n_layers", self.n_layers, 1)
        _check_int("n_heads", self.n_heads, 1)
        _check_int("d_ff", self.d_ff, 1)
        _check_int("max_len", self.max_len, 1)
        _check_int("pad_id", self.pad_id, 0)
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads {self.n_heads} must divide d_model {self.d_model}")
        if self.pad_id >= self.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} must be below vocab_size {self.vocab_size}")
        for name in ("dropout", "layer_norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not isinstance(self.output_bias, bool):
            raise ValueError(f"output_bias must be a bool, got {self.output_bias!r}")

    def to_dict(self) -> dict:
        """The config as plain JSON data (`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerLMConfig:
        """A config from `to_dict`'s output; missing keys take the defaults.

        Raises:
            ValueError: A key is not a field of the config, or a value is out of range.
        """
        if not isinstance(d, dict):
            raise ValueError(f"Transformer LM config must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"Transformer LM config: unknown keys {unknown}")
        return cls(**d)

    def num_parameters(self) -> int:
        """The model's parameter count, from the formula in the module docstring."""
        v, d, f = self.vocab_size, self.d_model, self.d_ff
        block = 4 * d + (4 * d * d + 4 * d) + (2 * d * f + f + d)
        out = v if self.output_bias else 0
        return v * d + self.max_len * d + self.n_layers * block + 2 * d + out


def _linear_params(out_dim: int, in_dim: int) -> tuple[nn.Parameter, nn.Parameter]:
    # Uninitialised; `reset_parameters` fills them (no RNG use at construction).
    return nn.Parameter(torch.empty(out_dim, in_dim)), nn.Parameter(torch.empty(out_dim))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t."""

    def __init__(self, config: TransformerLMConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.qkv_weight, self.qkv_bias = _linear_params(3 * d, d)  # q, k, v stacked
        self.out_weight, self.out_bias = _linear_params(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        b, t, d = x.shape
        hd = d // self.n_heads
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias)  # (B, T, 3D)
        q, k, v = (
            z.reshape(b, t, self.n_heads, hd).transpose(1, 2)  # (B, nh, T, hd)
            for z in qkv.chunk(3, dim=-1)
        )
        # Explicit matmuls rather than F.scaled_dot_product_attention: its fused CPU kernel has
        # no vmap batching rule (vmap falls back to a slow per-sample loop).
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # (B, nh, T, T)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # (T, T): s <= t
        att = att.masked_fill(~causal, -math.inf).softmax(dim=-1)
        if self.dropout and self.training:
            att = F.dropout(att, self.dropout, True)
        y = att @ v  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(b, t, d)  # heads side by side again
        return F.linear(y, self.out_weight, self.out_bias)


class MLP(nn.Module):
    """Position-wise feed-forward: D -> F -> GELU -> D."""

    def __init__(self, config: TransformerLMConfig):
        super().__init__()
        self.fc_weight, self.fc_bias = _linear_params(config.d_ff, config.d_model)
        self.proj_weight, self.proj_bias = _linear_params(config.d_model, config.d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return F.linear(
            F.gelu(F.linear(x, self.fc_weight, self.fc_bias)), self.proj_weight, self.proj_bias
        )


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, config: TransformerLMConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        self.dropout = config.dropout

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Skipped outright at p = 0, so a dropout-free model draws no random numbers (vmap).
        return F.dropout(x, self.dropout, self.training) if self.dropout else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        x = x + self._drop(self.attn(self.ln1(x)))
        return x + self._drop(self.mlp(self.ln2(x)))


class TransformerLM(nn.Module):
    """Causal Transformer next-word model with tied input/output embeddings.

    Args:
        config: The hyperparameters.
        generator: Source of the initial weights; None uses torch's default generator. Pass a
            seeded `torch.Generator` for an initialisation that depends on nothing else.
    """

    def __init__(self, config: TransformerLMConfig, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(config, TransformerLMConfig):
            raise TypeError(f"config must be a TransformerLMConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.embedding = nn.Parameter(torch.empty(config.vocab_size, d))  # (V, D), also output
        self.positions = nn.Parameter(torch.empty(config.max_len, d))  # (max_len, D)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.out_bias = nn.Parameter(torch.empty(config.vocab_size)) if config.output_bias else None
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2's scheme: weights N(0, 0.02), the two projections into the residual stream
        N(0, 0.02 / sqrt(2 L)) so its variance does not grow with depth; biases 0,
        LayerNorms 1 and 0."""
        std = 0.02
        resid_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embedding, 0.0, std, generator=generator)
        nn.init.normal_(self.positions, 0.0, std, generator=generator)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv_weight, 0.0, std, generator=generator)
            nn.init.normal_(block.attn.out_weight, 0.0, resid_std, generator=generator)
            nn.init.normal_(block.mlp.fc_weight, 0.0, std, generator=generator)
            nn.init.normal_(block.mlp.proj_weight, 0.0, resid_std, generator=generator)
            for bias in (
                block.attn.qkv_bias,
                block.attn.out_bias,
                block.mlp.fc_bias,
                block.mlp.proj_bias,
            ):
                bias.zero_()
            for ln in (block.ln1, block.ln2):
                ln.reset_parameters()
        self.ln_f.reset_parameters()
        if self.out_bias is not None:
            self.out_bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-word logits at every position: ids (B, T) int64 -> (B, T, V) float.

        Raises:
            ValueError: x is not 2-D or T > max_len.
        """
        if x.dim() != 2:
            raise ValueError(f"x must be (batch, time) ids, got shape {tuple(x.shape)}")
        t = x.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence of {t} ids is longer than max_len {self.config.max_len}")
        h = F.embedding(x, self.embedding) + self.positions[:t]  # (B, T, D)
        if self.config.dropout and self.training:
            h = F.dropout(h, self.config.dropout, True)
        for block in self.blocks:
            h = block(h)  # (B, T, D)
        h = self.ln_f(h)
        return F.linear(h, self.embedding, self.out_bias)  # (B, T, V), tied weights

    def num_parameters(self) -> int:
        """Trainable parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())
