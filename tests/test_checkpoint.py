"""models.checkpoint: safetensors + JSON checkpoints, checked on loading, written atomically.

A small real module (a tied embedding/output weight, a buffer) trained a few real steps stands
in for a language model: the checkpoint code is generic over modules and optimizers.
"""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from models.checkpoint import (
    META,
    MODEL_FILE,
    OPTIMIZER_FILE,
    RNG_FILE,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    save_step_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """Embedding -> linear -> tied output layer, plus a buffer (as a BatchNorm's count)."""

    def __init__(self, vocab: int = 11, dim: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        with torch.no_grad():
            for p in (self.embed.weight, self.hidden.weight, self.hidden.bias):
                p.copy_(torch.randn(p.shape, generator=g))
        self.out.weight = self.embed.weight  # tied
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.seen += x.numel()
        return self.out(torch.tanh(self.hidden(self.embed(x))))


def _train(model, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, 11, (3, 5), generator=g)
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 11), x.roll(1, 1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _trained(opt_cls=torch.optim.Adam, **kw):
    model = Tiny()
    opt = opt_cls(model.parameters(), lr=0.05, **kw)
    _train(model, opt, 3)
    return model, opt


def _state_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif isinstance(x, dict):
            if not (isinstance(y, dict) and _state_equal(x, y)):
                return False
        elif isinstance(x, list):
            if len(x) != len(y) or not all(
                    _state_equal({0: u}, {0: v}) for u, v in zip(x, y, strict=True)):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("opt_cls,kw", [(torch.optim.Adam, {}),
                                        (torch.optim.SGD, {"momentum": 0.9})])
def test_round_trip_restores_model_optimizer_and_rngs(tmp_path, opt_cls, kw):
    model, opt = _trained(opt_cls, **kw)
    tg = torch.Generator().manual_seed(7)
    torch.rand(3, generator=tg)  # not at a freshly seeded state
    ng = np.random.default_rng(7)
    ng.random(3)
    state = {"step": 3, "epoch": 0, "position": 3, "metrics": [{"loss": 1.5, "n": 2}],
             "config": {"lr": 0.05, "name": "x", "none": None}}
    save_checkpoint(tmp_path / "c", model, opt, state,
                    generators={"torch": tg, "np": ng})
    expect_t, expect_n = torch.rand(4, generator=tg), ng.random(4)

    model2 = Tiny(seed=99)
    opt2 = opt_cls(model2.parameters(), lr=0.5, **kw)
    _train(model2, opt2, 1, seed=5)  # different moments and step counts, to be overwritten
    tg2, ng2 = torch.Generator().manual_seed(0), np.random.default_rng(0)
    got = load_checkpoint(tmp_path / "c", model2, opt2, generators={"torch": tg2, "np": ng2})

    assert got == state
    assert _state_equal(model.state_dict(), model2.state_dict())
    assert model2.out.weight is model2.embed.weight  # still tied after loading
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert _state_equal(sd["state"], sd2["state"])
    if opt_cls is torch.optim.Adam:
        assert set(sd2["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
        assert sd2["param_groups"][0]["betas"] == (0.9, 0.999)  # a tuple again
    assert sd["param_groups"] == sd2["param_groups"]
    assert torch.equal(torch.rand(4, generator=tg2), expect_t)
    assert np.array_equal(ng2.random(4), expect_n)
    # Training on from either gives the same weights: nothing that matters was left out.
    _train(model, opt, 2, seed=9)
    _train(model2, opt2, 2, seed=9)
    assert _state_equal(model.state_dict(), model2.state_dict())


def test_weights_only_and_the_global_generator(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path / "c", model, opt, {"step": 1},
                    generators={"global": torch.default_generator})
    fresh = Tiny(seed=3)
    assert load_checkpoint(tmp_path / "c", fresh) == {"step": 1}
    assert _state_equal(model.state_dict(), fresh.state_dict())
    assert read_meta(tmp_path / "c")["model"]["class"] == "Tiny"


def test_files_are_safetensors_and_json_never_pickle(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path / "c", model, opt, {"step": 3},
                    generators={"t": torch.Generator()})
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == sorted([META, MODEL_FILE, OPTIMIZER_FILE, RNG_FILE])
    meta = json.loads((tmp_path / "c" / META).read_text())
    for name in (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE):
        raw = (tmp_path / "c" / name).read_bytes()
        assert not raw.startswith(b"\x80")  # pickle protocol 2+ magic
        assert not raw.startswith(b"PK")  # torch.save's zip archive
        # safetensors: an 8-byte little-endian header length, a JSON header, the raw data.
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        sizes = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        assert 8 + n + max(sizes, default=0) == len(raw) == meta["files"][name]["bytes"]
    # The tied weight is stored once and named as an alias.
    with safe_open(tmp_path / "c" / MODEL_FILE, "pt") as f:
        assert sorted(f.keys()) == ["embed.weight", "hidden.bias", "hidden.weight", "seen"]
    assert meta["model"]["aliases"] == {"out.weight": "embed.weight"}
    with safe_open(tmp_path / "c" / OPTIMIZER_FILE, "pt") as f:
        keys = sorted(f.keys())
    assert keys == sorted(f"state/{i}/{k}" for i in range(3)
                          for k in ("step", "exp_avg", "exp_avg_sq"))


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def saved(tmp_path):
    model, opt = _trained()
    return save_checkpoint(tmp_path / "c", model, opt, {"step": 3},
                           generators={"t": torch.Generator()})


def _load(path, **kw):
    model = Tiny(seed=4)
    return load_checkpoint(path, model, torch.optim.Adam(model.parameters()), **kw)


def test_flipped_byte_is_named(saved):
    path = saved / MODEL_FILE
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt \(sha256"):
        _load(saved)


def test_truncated_file_is_named(saved):
    path = saved / OPTIMIZER_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors: truncated"):
        _load(saved)


def test_missing_file_and_missing_checkpoint(saved, tmp_path):
    (saved / RNG_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"rng\.safetensors: missing"):
        _load(saved, generators={"t": torch.Generator()})
    with pytest.raises(CheckpointError, match=r"meta\.json: missing \(not a checkpoint"):
        _load(tmp_path)


def test_corrupt_or_foreign_meta(saved):
    meta = saved / META
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"meta\.json: unreadable, corrupt or truncated"):
        _load(saved)
    meta.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a kbsim checkpoint"):
        _load(saved)


def test_not_safetensors_even_with_matching_checksum(saved):
    # A file swapped together with its checksum is still parsed as safetensors only.
    import hashlib

    bad = b"\xff" * 8 + b"not a header"
    (saved / MODEL_FILE).write_bytes(bad)
    meta = json.loads((saved / META).read_text())
    meta["files"][MODEL_FILE] = {"bytes": len(bad), "sha256": hashlib.sha256(bad).hexdigest()}
    (saved / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors"):
        _load(saved)


def test_mismatched_model_optimizer_and_generators(saved):
    with pytest.raises(CheckpointError,
                       match=r"model\.safetensors: tensor 'embed\.weight' has shape \(11, 4\), "
                       r"the model expects \(12, 4\)"):
        load_checkpoint(saved, Tiny(vocab=12))
    other = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(CheckpointError, match=r"does not match the model \(Sequential\)"):
        load_checkpoint(saved, other)
    model = Tiny(seed=5)
    with pytest.raises(CheckpointError, match="holds Adam state, the optimizer is SGD"):
        load_checkpoint(saved, model, torch.optim.SGD(model.parameters(), lr=0.1))
    # Two parameter groups where the checkpoint has one.
    two = torch.optim.Adam([{"params": [model.embed.weight]},
                            {"params": [model.hidden.weight, model.hidden.bias]}])
    with pytest.raises(CheckpointError, match="1 parameter groups, the optimizer has 2"):
        load_checkpoint(saved, model, two)
    with pytest.raises(CheckpointError, match=r"no torch generator 'other' saved"):
        load_checkpoint(saved, model, generators={"other": torch.Generator()})
    with pytest.raises(CheckpointError, match=r"no numpy PCG64 generator 't' saved"):
        load_checkpoint(saved, model, generators={"t": np.random.default_rng()})


def test_optimizer_over_other_shapes_is_a_mismatch(tmp_path):
    # Same names and counts, other shapes: caught before the moments reach the optimizer.
    a = nn.Linear(3, 2)
    opt = torch.optim.Adam(a.parameters())
    a(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c", a, opt)
    b = nn.Linear(2, 3)
    with pytest.raises(CheckpointError, match=r"state 0/exp_avg has shape \(2, 3\), parameter 0 "
                       r"has \(3, 2\)"):
        load_checkpoint(tmp_path / "c", None, torch.optim.Adam(b.parameters()))


def test_failed_load_changes_nothing(saved):
    model = Tiny(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        # The weights would fit; the optimizer does not: nothing is applied.
        load_checkpoint(saved, model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert _state_equal(before, model.state_dict())


def test_unsaveable_state_is_refused_and_writes_nothing(tmp_path):
    model, opt = _trained()
    for bad, why in (({"x": object()}, "not JSON-able"), ({"x": (1, 2)}, "survive JSON"),
                     ({1: 2}, "survive JSON")):
        with pytest.raises(CheckpointError, match=why):
            save_checkpoint(tmp_path / "c", model, opt, bad)
    with pytest.raises(CheckpointError, match="generator 'g' is a int"):
        save_checkpoint(tmp_path / "c", model, opt, generators={"g": 3})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a run's folder


def test_step_checkpoints_keep_the_newest_and_replace_atomically(tmp_path):
    model, opt = _trained()
    root = tmp_path / "ckpt"
    for step in (5, 10, 15, 20):
        save_step_checkpoint(root, step, model, opt, {"step": step}, keep=2)
    assert [s for s, _ in list_checkpoints(root)] == [15, 20]
    assert latest_checkpoint(root).name == "step-00000020"
    # What a killed save leaves behind is not a checkpoint, and the next save clears it.
    (root / ".tmp-step-00000025-abc").mkdir()
    (root / ".tmp-step-00000025-abc" / MODEL_FILE).write_bytes(b"half")
    assert latest_checkpoint(root).name == "step-00000020"
    # Saving a step again replaces it whole.
    save_step_checkpoint(root, 20, model, opt, {"step": 20, "again": True}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000015", "step-00000020"]
    assert read_meta(root / "step-00000020")["state"] == {"step": 20, "again": True}
    assert latest_checkpoint(tmp_path / "none") is None
