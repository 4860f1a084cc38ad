"""models.export: exported steps match torch, int8 copies stay close, bad files are refused.

Tolerances (stated once, used below):
- float exports: max |exported - torch| <= 1e-4 on logits and states (float32 with the same
  math; differences are summation order, measured ~1e-7);
- int8 exports: max |exported - torch| <= 0.1 on logits of a briefly trained tiny model, whose
  logits span several units, and the same top-1 next word at >= 90% of the steps over real
  chat messages (measured: 100% ONNX, ~98% ExecuTorch);
- the proofreader's greedy decoding: float exports give the same sequences as torch and
  log-probabilities within 1e-4; int8 exports the same sequence for a stated share of
  messages (see each test).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from data.chitchat import iter_messages
from data.tokenize import tokenize
from data.vocab import BOS, EOS, WordVocab
from models import export as ex
from models.cifg import CIFGConfig, CIFGLanguageModel
from models.proofreader import Proofreader, ProofreaderConfig
from models.transformer_lm import TransformerLM, TransformerLMConfig

FLOAT_TOL = 1e-4
INT8_TOL = 0.1
INT8_TOP1 = 0.90


@pytest.fixture(scope="module")
def corpus() -> list[list[int]]:
    """Word ids of 200 real chat messages, BOS ... EOS, over a 96-word vocabulary."""
    tokens = [tokenize(m["text"]) for m in iter_messages(limit=200)]
    vocab = WordVocab.build(tokens, size=96)
    return [[BOS, *vocab.encode(t)[:15], EOS] for t in tokens if t]


def _train(model: torch.nn.Module, corpus: list[list[int]], steps: int = 40) -> None:
    """A few Adam steps of next-word training, so logits have real margins between words."""
    width = max(len(s) for s in corpus)
    x = torch.zeros(len(corpus), width, dtype=torch.int64)
    for i, s in enumerate(corpus):
        x[i, : len(s)] = torch.tensor(s)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                               ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def cifg(corpus) -> CIFGLanguageModel:
    config = CIFGConfig(vocab_size=100, embed_dim=16, hidden_dim=32)
    model = CIFGLanguageModel(config, generator=torch.Generator().manual_seed(1))
    _train(model, corpus)
    return model


@pytest.fixture(scope="module")
def transformer(corpus) -> TransformerLM:
    config = TransformerLMConfig(vocab_size=100, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                                 max_len=16)
    model = TransformerLM(config, generator=torch.Generator().manual_seed(2))
    _train(model, corpus)
    return model


@pytest.fixture(scope="module")
def cifg_files(cifg, tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("cifg")
    onnx_path = ex.export_next_word(cifg, d / "cifg.onnx", "onnx")
    return {
        "onnx": onnx_path,
        "onnx_int8": ex.quantize_onnx(onnx_path, d / "cifg.int8.onnx"),
        "executorch": ex.export_next_word(cifg, d / "cifg.pte", "executorch"),
        "executorch_int8": ex.export_next_word(cifg, d / "cifg.int8.pte", "executorch", True),
    }


def _cifg_walk(model, runner, corpus, batch: int):
    """Feeds each message word by word to torch and to the exported step, carrying the state.

    Returns (max |logit diff|, max |state diff|, top-1 agreement share)."""
    worst_logit = worst_state = 0.0
    agree = total = 0
    for start in range(0, min(len(corpus), 40), batch):
        rows = corpus[start : start + batch]
        if len(rows) < batch:
            break
        steps = min(len(r) for r in rows) - 1
        x = torch.tensor([r[:steps] for r in rows])
        with torch.no_grad():
            ref, _ = model.forward_with_state(x)
            h, c = (s.numpy() for s in model.initial_state(batch))
            ref_state = model.initial_state(batch)
            for t in range(steps):
                logits, h, c = runner(x[:, t].numpy(), h, c)
                _, ref_state = model.forward_with_state(x[:, t : t + 1], ref_state)
                worst_logit = max(worst_logit, float(np.abs(logits - ref[:, t].numpy()).max()))
                worst_state = max(worst_state, float(np.abs(c - ref_state[1].numpy()).max()))
                agree += int((logits.argmax(-1) == ref[:, t].numpy().argmax(-1)).sum())
                total += batch
    return worst_logit, worst_state, agree / total


@pytest.mark.parametrize("fmt, batch", [("onnx", 4), ("executorch", 1)])
def test_cifg_step_matches_torch(cifg, cifg_files, corpus, fmt, batch):
    runner = ex.open_runner(cifg_files[fmt])
    logit_err, state_err, top1 = _cifg_walk(cifg, runner, corpus, batch)
    assert logit_err <= FLOAT_TOL and state_err <= FLOAT_TOL
    assert top1 == 1.0


@pytest.mark.parametrize("fmt, batch", [("onnx_int8", 4), ("executorch_int8", 1)])
def test_cifg_int8_close_to_torch(cifg, cifg_files, corpus, fmt, batch):
    runner = ex.open_runner(cifg_files[fmt])
    logit_err, _, top1 = _cifg_walk(cifg, runner, corpus, batch)
    assert logit_err <= INT8_TOL
    assert top1 >= INT8_TOP1
    # int8 really stores int8: at least 2 of each weight's 4 bytes saved (graph overhead and
    # ExecuTorch's second copy of the tied matrix keep it from 3).
    saved = cifg_files[fmt.split("_")[0]].stat().st_size - cifg_files[fmt].stat().st_size
    assert saved >= 2 * cifg.num_parameters()


def test_cifg_onnx_stores_tied_matrix_once(cifg, cifg_files):
    # Float: one float copy of every parameter (the tied embedding once), plus graph overhead.
    c = cifg.config
    n = cifg.num_parameters()
    assert 4 * n <= cifg_files["onnx"].stat().st_size < 4 * n + 16_000
    # int8: one byte per weight (the tied matrix once), float biases, plus overhead.
    biases = 4 * (3 * c.hidden_dim + c.vocab_size)
    assert cifg_files["onnx_int8"].stat().st_size < n + biases + 16_000
    # Every weight matrix is stored in 8 bits (none left float32 behind a Slice or Transpose).
    graph = onnx.load(cifg_files["onnx_int8"]).graph
    matrices = {i.name: i.data_type for i in graph.initializer if len(i.dims) == 2}
    assert len(matrices) == 4  # tied embedding, gate input half, recurrent half, projection
    assert set(matrices.values()) <= {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


@pytest.fixture(scope="module")
def transformer_files(transformer, tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("transformer")
    onnx_path = ex.export_next_word(transformer, d / "lm.onnx", "onnx")
    return {
        "onnx": onnx_path,
        "onnx_int8": ex.quantize_onnx(onnx_path, d / "lm.int8.onnx"),
        "executorch": ex.export_next_word(transformer, d / "lm.pte", "executorch"),
    }


@pytest.mark.parametrize("fmt", ["onnx", "onnx_int8", "executorch"])
def test_transformer_window_matches_torch(transformer, transformer_files, corpus, fmt):
    runner = ex.open_runner(transformer_files[fmt])
    batch = 1 if fmt == "executorch" else 4
    worst, agree, total = 0.0, 0, 0
    for t in (1, 2, 7, 16):  # windows of every length up to max_len
        rows = [r for r in corpus if len(r) >= t][: 2 * batch]
        for start in range(0, len(rows) - batch + 1, batch):
            x = torch.tensor([r[:t] for r in rows[start : start + batch]])
            with torch.no_grad():
                ref = transformer(x)[:, -1].numpy()
            (got,) = runner(x.numpy())
            worst = max(worst, float(np.abs(got - ref).max()))
            agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
            total += batch
    if fmt == "onnx_int8":
        assert worst <= INT8_TOL and agree / total >= INT8_TOP1
    else:
        assert worst <= FLOAT_TOL and agree == total


@pytest.fixture(scope="module")
def proofreader() -> Proofreader:
    config = ProofreaderConfig(vocab_size=60, d_model=16, n_heads=2, n_encoder_layers=1,
                               n_decoder_layers=2, d_ff=32, max_len=24, dropout=0.0)
    model = Proofreader(config)
    g = torch.Generator().manual_seed(3)
    model.reset_parameters(g)
    # A few steps of learning to copy, so that greedy output depends on the source.
    src = torch.randint(4, 60, (32, 8), generator=g)
    tgt = torch.cat([torch.ones(32, 1, dtype=torch.int64), src, torch.full((32, 1), 2)], 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        logits = model(src, tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 60), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _sources(n_random: int = 0) -> list[list[int]]:
    """Messages of 1 to 20 random pieces and an empty one, then n_random more of 1-20 pieces."""
    g = torch.Generator().manual_seed(4)
    sources = [torch.randint(4, 60, (n,), generator=g).tolist() for n in (1, 5, 12, 20)]
    sources.append([])  # an empty message decodes as Proofreader does
    lengths = torch.randint(1, 21, (n_random,), generator=g).tolist()
    return sources + [torch.randint(4, 60, (n,), generator=g).tolist() for n in lengths]


def _same_share(got: ex.GreedyResult, ref) -> float:
    pairs = zip(got.sequences.tolist(), ref.sequences.tolist(), strict=True)
    return float(np.mean([a == b for a, b in pairs]))


def _assert_greedy_equal(got: ex.GreedyResult, ref) -> None:
    assert got.sequences.tolist() == ref.sequences.tolist()
    assert got.lengths.tolist() == ref.lengths.tolist()
    np.testing.assert_allclose(got.log_probs, ref.log_probs.numpy(), atol=FLOAT_TOL)
    assert len({tuple(s) for s in ref.sequences.tolist()}) > 1  # not a constant output


def test_proofreader_greedy_matches_torch(proofreader, tmp_path):
    files = ex.export_proofreader(proofreader, tmp_path, "onnx")
    exported = ex.ExportedProofreader(files.encoder, files.decoder, proofreader.config)
    sources = _sources()
    ref = proofreader.greedy(sources, max_len=12)
    got = exported.greedy(sources, max_len=12)
    _assert_greedy_equal(got, ref)
    # One message at a time (batch 1, as on a phone) gives the same output.
    one = exported.greedy(sources[2:3], max_len=12)
    assert one.sequences[0].tolist() == got.sequences[2, : one.sequences.shape[1]].tolist()

    q = ex.ExportedProofreader(
        ex.quantize_onnx(files.encoder, tmp_path / "enc.int8.onnx"),
        ex.quantize_onnx(files.decoder, tmp_path / "dec.int8.onnx"),
        proofreader.config,
    )
    assert _same_share(q.greedy(sources, max_len=12), ref) >= 0.6  # 3 of 5 (measured: 5 of 5)


@pytest.fixture(scope="module")
def proofreader_pte(proofreader, tmp_path_factory) -> dict[str, ex.ProofreaderFiles]:
    d = tmp_path_factory.mktemp("proofreader_pte")
    return {
        "float": ex.export_proofreader(proofreader, d, "executorch"),
        "int8": ex.export_proofreader(proofreader, d, "executorch", quantize_int8=True),
    }


def test_proofreader_executorch_greedy_matches_torch(proofreader, proofreader_pte):
    files = proofreader_pte["float"]
    assert files.decoder.name == "proofreader_decoder_step.pte"
    runner = ex.ExecuTorchRunner(files.decoder)
    assert runner.method_names == {"forward", ex.FIRST_STEP_METHOD}
    with pytest.raises(ex.ExportedModelError, match="no 'backward' method"):
        runner.other("backward")
    exported = ex.ExportedProofreader(files.encoder, files.decoder, proofreader.config)
    assert exported.max_batch == 1 and exported.first is not None
    sources = _sources()
    ref = proofreader.greedy(sources, max_len=12)
    _assert_greedy_equal(exported.greedy(sources, max_len=12), ref)
    # Up to max_len: the cache grows to its largest exported size (max_len - 1 positions).
    full = proofreader.greedy(sources[:2], max_len=24)
    _assert_greedy_equal(exported.greedy(sources[:2]), full)
    # The first step alone is position 0 of the torch decoder.
    enc = ex.ExecuTorchRunner(files.encoder)
    src = np.array([sources[2]], dtype=np.int64)
    logp, past_k, past_v = exported.first(*enc(src, np.ones_like(src, dtype=bool)))
    with torch.no_grad():
        memory, key_mask = proofreader.encode(torch.from_numpy(src))
        caches = [[] for _ in proofreader.decoder]
        want = proofreader._step(torch.tensor([proofreader.config.bos_id]), 0,
                                 proofreader._memory_kv(memory), key_mask, caches)
    finite = np.isfinite(want.numpy())
    assert (np.isfinite(logp) == finite).all()
    np.testing.assert_allclose(logp[finite], want.numpy()[finite], atol=FLOAT_TOL)
    np.testing.assert_allclose(past_k, torch.stack([k for k, _ in caches]).numpy(),
                               atol=FLOAT_TOL)
    assert past_v.shape == past_k.shape == (2, 1, 2, 1, 8)


def test_proofreader_executorch_int8_close_to_torch(proofreader, proofreader_pte):
    files = proofreader_pte["int8"]
    q = ex.ExportedProofreader(files.encoder, files.decoder, proofreader.config)
    sources = _sources(n_random=15)
    ref = proofreader.greedy(sources, max_len=12)
    # XNNPACK quantizes activations to int8 as well as weights (per call), which a 16-wide
    # model feels more than onnxruntime's int8 does (measured: 14 of these 20 messages decode
    # identically, 69 of 100; onnxruntime int8: 91 of 100; float exports: all).
    assert _same_share(q.greedy(sources, max_len=12), ref) >= 0.5
    assert files.decoder.stat().st_size < proofreader_pte["float"].decoder.stat().st_size


@pytest.mark.parametrize("suffix", [".onnx", ".pte"])
def test_corrupt_or_missing_files_give_clear_errors(cifg_files, tmp_path, suffix):
    good = cifg_files["onnx" if suffix == ".onnx" else "executorch"].read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x80\x04\x95 not a model, maybe a pickle " * 20)
    for path in (truncated, garbage, tmp_path / f"missing{suffix}"):
        with pytest.raises(ex.ExportedModelError, match=str(path.name)):
            ex.open_runner(path)
    with pytest.raises(ex.ExportedModelError, match="suffix"):
        ex.open_runner(tmp_path / "model.bin")
    if suffix == ".onnx":
        with pytest.raises(ex.ExportedModelError, match="garbage"):
            ex.quantize_onnx(garbage, tmp_path / "q.onnx")


def test_wrong_inputs_are_refused(cifg, cifg_files):
    runner = ex.open_runner(cifg_files["onnx"])
    with pytest.raises(ValueError, match="inputs given"):
        runner(np.array([4]))
    with pytest.raises(ValueError, match="not a CIFGLanguageModel"):
        ex.export_next_word(torch.nn.Linear(2, 2), "x.onnx")
    with pytest.raises(ValueError, match="unknown export format"):
        ex.export_next_word(cifg, "x.tflite", "tflite")
