"""Tests for models.train_proofreader: metrics goldens, the schedule, the config, and a short real
training run on a small `kbsim data build` (loss falls, checkpoints load back, same seed gives
the same run)."""

import csv
import dataclasses
import json
import random

import pytest
import torch

from data.build import build
from data.config import DataConfig
from models.checkpoint import CheckpointError
from models.proofreader import Proofreader
from models.train_proofreader import (
    ProofreaderTrainConfig,
    correction_metrics,
    evaluate,
    levenshtein,
    load_corrector,
    load_proofreader,
    lr_at,
    train_proofreader,
)

pytest.importorskip("chitchat_dataset")

TINY_MODEL = {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
              "d_ff": 64, "max_len": 64, "dropout": 0.1}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small ops on a shared 2-core machine: one torch thread is several times faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- metrics


def naive_levenshtein(a, b):
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, sub)
    return d[-1][-1]


def test_levenshtein_goldens_and_against_the_plain_table():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("the cat sat", "the cta sat") == 2
    assert levenshtein("aaa", "aaaa") == 1
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("abc ") for _ in range(rng.randrange(9)))
        b = "".join(rng.choice("abc ") for _ in range(rng.randrange(9)))
        assert levenshtein(a, b) == naive_levenshtein(a, b), (a, b)


def test_correction_metrics_golden():
    noisy = ["teh cat", "ok", "hllo"]
    fixed = ["the cat", "ok", "hullo"]
    clean = ["the cat", "ok", "hello"]
    m = correction_metrics(noisy, fixed, clean)
    # 14 clean characters; before: 2 + 0 + 1 edits; after: 0 + 0 + 1.
    assert m == {"messages": 3, "exact_match": 2 / 3, "exact_match_before": 1 / 3,
                 "cer_before": 3 / 14, "cer_after": 1 / 14, "changed": 2 / 3}
    with pytest.raises(ValueError, match="2 noisy, 3 corrected, 3 clean"):
        correction_metrics(noisy[:2], fixed, clean)


def test_learning_rate_schedule():
    c = ProofreaderTrainConfig(data_dir="x", steps=110, warmup_steps=10, lr=1e-3,
                               min_lr_ratio=0.1)
    assert lr_at(1, c) == pytest.approx(1e-4)
    assert lr_at(10, c) == pytest.approx(1e-3)
    assert lr_at(60, c) == pytest.approx(0.55e-3)  # half way down the cosine
    assert lr_at(110, c) == pytest.approx(1e-4)
    assert lr_at(500, c) == pytest.approx(1e-4)


# --------------------------------------------------------------------------- config


def test_config_from_dict_and_files(tmp_path):
    c = ProofreaderTrainConfig.from_dict({"data_dir": "d", "model": {"d_model": 64},
                                          "betas": [0.9, 0.99]})
    assert c.betas == (0.9, 0.99) and c.model == {"d_model": 64}
    assert ProofreaderTrainConfig.from_dict(c.to_dict()) == c
    y = tmp_path / "p.yaml"
    y.write_text("proofreader:\n  data_dir: runs/data\n  steps: 7\n")
    assert ProofreaderTrainConfig.load(y).steps == 7
    j = tmp_path / "p.json"
    j.write_text(json.dumps(c.to_dict()))
    # From a file, a relative data folder is taken from the file's folder.
    assert ProofreaderTrainConfig.load(j) == dataclasses.replace(
        c, data_dir=str((tmp_path / "d").resolve()))
    with pytest.raises(ValueError, match="unknown proofreader training keys \\['stepz'\\]"):
        ProofreaderTrainConfig.from_dict({"data_dir": "d", "stepz": 3})
    with pytest.raises(ValueError, match="data_dir is required"):
        ProofreaderTrainConfig.from_dict({"steps": 3})
    with pytest.raises(ValueError, match="unknown proofreader config keys"):
        ProofreaderTrainConfig(data_dir="d", model={"width": 3})
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        ProofreaderTrainConfig(data_dir="d", steps=0)
    with pytest.raises(ValueError, match="betas"):
        ProofreaderTrainConfig(data_dir="d", betas=(0.9, 1.0))
    bad = tmp_path / "bad.yaml"
    bad.write_text("proofreader: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        ProofreaderTrainConfig.load(bad)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # 1,500 chit-chat records: about 740 training and 100 validation pairs. BPE subwords train
    # in a fraction of the unigram model's time.
    out = tmp_path_factory.mktemp("data")
    build(DataConfig.from_dict({
        "corpus": {"limit": 1500},
        "tokenizers": {"vocab_size": 300, "subword_vocab_size": 400, "subword_model": "bpe"},
    }), out)
    return out


def small_config(built, **kw):
    base = dict(data_dir=str(built), model=TINY_MODEL, steps=40, batch_size=16, lr=3e-3,
                warmup_steps=5, eval_every=20, eval_messages=16, max_len=64, seed=3)
    base.update(kw)
    return ProofreaderTrainConfig(**base)


@pytest.fixture(scope="module")
def run(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train_proofreader(small_config(built), out)


def read_metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_runs_and_loss_falls(run):
    out, summary = run
    assert summary["steps"] == 40 and summary["train_pairs"] > 500 and summary["val_pairs"] > 50
    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [20, 40]
    first, last = rows[0], rows[-1]
    assert float(last["train_loss"]) < float(first["train_loss"])
    assert float(last["val_loss"]) < float(first["val_loss"])
    assert int(last["messages"]) == 16
    assert 0 < float(last["cer_before"]) < 0.5  # the typed text has errors to fix
    assert summary["final"]["val_loss"] == pytest.approx(float(last["val_loss"]))
    assert json.loads((out / "summary.json").read_text()) == summary
    assert {"config.json", "subword.model", "subword.json"} <= {p.name for p in out.iterdir()}


def test_checkpoint_round_trip(run, built):
    out, summary = run
    model = load_proofreader(out)
    assert isinstance(model, Proofreader) and not model.training
    assert model.config.d_model == 32 and model.config.vocab_size == 400
    # The loaded weights give exactly the metrics the run logged at its last step.
    from data.built import BuiltDataset

    data = BuiltDataset(built)
    pairs = [(p.noisy, p.clean) for c, ps in sorted(data.client_pairs("val", "early").items())
             for p in ps]
    again = evaluate(model, data.subword(), pairs, [], max_len=64)
    assert again["val_loss"] == pytest.approx(summary["final"]["val_loss"], rel=1e-6)
    corrector = load_corrector(out, beam=2)
    noisy = [n for n, _ in pairs[:4]]
    assert len(corrector.correct(noisy)) == 4


def test_a_corrupt_checkpoint_is_a_clear_error(run, tmp_path):
    import shutil

    out, summary = run
    copy = tmp_path / "copy"
    shutil.copytree(summary["checkpoint"], copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_proofreader(copy)
    with pytest.raises(ValueError, match="no proofreader checkpoint"):
        load_proofreader(tmp_path / "nothing")


def test_same_seed_same_run_and_vocab_mismatch(built, tmp_path):
    one = train_proofreader(small_config(built, steps=10, eval_every=10), tmp_path / "one")
    two = train_proofreader(small_config(built, steps=10, eval_every=10), tmp_path / "two")
    assert one["final"].pop("seconds") > 0
    two["final"].pop("seconds")
    assert one["final"] == two["final"]
    a = load_proofreader(tmp_path / "one").state_dict()
    b = load_proofreader(tmp_path / "two").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="differs from the data's subword model"):
        train_proofreader(small_config(built, model={**TINY_MODEL, "vocab_size": 500}),
                          tmp_path / "bad")


def test_cli_trains_from_a_config_with_a_relative_data_folder(built, tmp_path, capsys):
    import os

    from kbsim.cli import main

    d = dataclasses.asdict(small_config(built))
    d["betas"] = list(d["betas"])
    d["steps"] = 3
    d["data_dir"] = os.path.relpath(built, tmp_path)
    (tmp_path / "p.json").write_text(json.dumps({"proofreader": d}))
    assert main(["train", "proofreader", str(tmp_path / "p.json"), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "steps        3" in out and (tmp_path / "run" / "summary.json").exists()
    assert main(["train", "proofreader", str(tmp_path / "missing.json"), "--out",
                 str(tmp_path / "r2")]) == 2
