"""Tests for models.train_proofreader: metrics goldens, the schedule, the config, and short real
training runs on a small `kbsim data build` (loss falls, checkpoints load back, same seed gives
the same run, a run stopped by `max_steps`, by a lost checkpoint or by SIGKILL and resumed ends
with the weights and logs of one that never stopped, TensorBoard logs)."""

import csv
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from data.build import build
from data.config import DataConfig
from models.checkpoint import CheckpointError
from models.proofreader import Proofreader
from models.train_proofreader import (
    ProofreaderTrainConfig,
    ProofreaderTrainError,
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
    assert summary["finished"] and summary["resumed_from"] is None
    assert {"config.json", "subword.model", "subword.json"} <= {p.name for p in out.iterdir()}
    # TensorBoard holds the same rows.
    assert tb_scalars(out, "train/loss") == [(20, pytest.approx(float(first["train_loss"]))),
                                             (40, pytest.approx(float(last["train_loss"])))]
    assert [s for s, _ in tb_scalars(out, "val/cer_after")] == [20, 40]


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


# --------------------------------------------------------------------------- exact resume

REPO = Path(__file__).resolve().parents[1]


def tb_scalars(out, tag):
    """(step, value) of every event of `tag` TensorBoard shows for a run (purged ones hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(out) / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def resume_config(built, **kw):
    # 12 steps (dropout on), evaluated every 3, checkpointed every 4.
    return small_config(built, **{"steps": 12, "eval_every": 3, "checkpoint_every": 4,
                                  "eval_messages": 4, "keep_checkpoints": 3, **kw})


def weights(out):
    return load_proofreader(out).state_dict()


def identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rows_but_time(out):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(out)]


@pytest.fixture(scope="module")
def whole(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return out, train_proofreader(resume_config(built), out)


def test_exact_resume_after_max_steps(whole, built, tmp_path):
    whole_out, _ = whole
    parts = tmp_path / "parts"
    first = train_proofreader(resume_config(built), parts, max_steps=6)
    assert first["steps"] == 6 and not first["finished"]
    assert not (parts / "summary.json").exists()
    assert [int(r["step"]) for r in read_metrics(parts)] == [3, 6]
    rest = train_proofreader(resume_config(built), parts)
    assert rest["resumed_from"] == 6 and rest["steps"] == 12 and rest["finished"]
    assert identical(weights(whole_out), weights(parts))
    assert rows_but_time(parts) == rows_but_time(whole_out)
    assert tb_scalars(parts, "train/loss") == tb_scalars(whole_out, "train/loss")
    # A finished run is not trained again.
    again = train_proofreader(resume_config(built), parts)
    assert again["resumed_from"] == 12 and again["final"] == rest["final"]
    # Another seed is another run, so the equality above is not vacuous.
    train_proofreader(resume_config(built, seed=4), tmp_path / "other")
    assert not identical(weights(tmp_path / "other"), weights(whole_out))


def test_rows_after_the_checkpoint_are_dropped(whole, built, tmp_path):
    """Stopped at 7 after logging step 6, with checkpoint 7 lost: resumes at 4, logs 6 once."""
    whole_out, _ = whole
    out = tmp_path / "lost"
    train_proofreader(resume_config(built), out, max_steps=7)
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-00000007")
    with open(out / "metrics.csv", "a") as f:
        f.write("9,1,0.001,2.5")  # a row torn by a crash
    rest = train_proofreader(resume_config(built, eval_messages=4, eval_every=3), out)
    assert rest["resumed_from"] == 4
    assert identical(weights(whole_out), weights(out))
    assert rows_but_time(out) == rows_but_time(whole_out)
    assert [s for s, _ in tb_scalars(out, "train/loss")] == [3, 6, 9, 12]  # 6 once


_CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    import torch
    torch.set_num_threads(1)
    from models.train_proofreader import ProofreaderTrainConfig, train_proofreader

    config = ProofreaderTrainConfig.from_dict({config!r})
    out = {out!r}
    flag = os.path.join(out, "checkpoints", "step-00000004")

    def killer():  # SIGKILL this process as soon as checkpoint 4 is in place
        while not os.path.isdir(flag):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()
    train_proofreader(config, out)
    sys.exit(3)  # reached only if the kill never came
""")


def test_exact_resume_after_sigkill(whole, built, tmp_path):
    whole_out, _ = whole
    out = tmp_path / "killed"
    code = _CHILD.format(config=resume_config(built).to_dict(), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rest = train_proofreader(resume_config(built), out)
    assert 4 <= rest["resumed_from"] < 12 and rest["finished"]
    assert identical(weights(whole_out), weights(out))
    assert rows_but_time(out) == rows_but_time(whole_out)
    assert [s for s, _ in tb_scalars(out, "val/loss")] == [3, 6, 9, 12]


def test_resume_refuses_another_run(whole, built, tmp_path):
    import shutil

    whole_out, _ = whole
    copy = tmp_path / "copy"
    shutil.copytree(whole_out, copy)
    with pytest.raises(ProofreaderTrainError, match="run with other settings \\(lr\\)"):
        train_proofreader(resume_config(built, lr=1e-3), copy)
    with pytest.raises(ProofreaderTrainError, match="other settings \\(steps\\)"):
        train_proofreader(resume_config(built, steps=24), copy)  # the schedule would differ
    # What is measured may change; the finished run is not trained again.
    assert train_proofreader(resume_config(built, eval_every=5), copy)["resumed_from"] == 12
    (copy / "metrics.csv").write_text("step,loss\n3,1.0\n")
    with pytest.raises(ProofreaderTrainError, match="metrics.csv: columns"):
        train_proofreader(resume_config(built), copy)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        train_proofreader(resume_config(built), copy, max_steps=0)
