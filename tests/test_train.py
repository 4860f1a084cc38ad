"""models.train and `kbsim train nwp`: real training on a tiny built dataset, exact resume.

One small build of the default corpus (2,000 records, a 300-word vocabulary, no subword model)
per module; tiny CIFG and Transformer configs trained for a few dozen real steps.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data.build import build
from data.config import (
    ClientsConfig,
    ConfigError,
    CorpusConfig,
    DataConfig,
    PairsConfig,
    TokenizersConfig,
)
from models.checkpoint import CheckpointError, list_checkpoints
from models.train import NWPTrainConfig, TrainError, load_trained_lm, metric_columns, train_nwp

pytest.importorskip("chitchat_dataset")

REPO = Path(__file__).resolve().parents[1]
CIFG = {"embed_dim": 16, "hidden_dim": 32}
TRANSFORMER = {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "dropout": 0.1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build(DataConfig(seed=3, shard_size=5000, corpus=CorpusConfig(limit=2000),
                     clients=ClientsConfig(max_messages=None),
                     tokenizers=TokenizersConfig(vocab_size=300, subword_vocab_size=0),
                     pairs=PairsConfig(materialize=False)), out)
    return out


def _config(data_dir, **kw):
    base = {"data": str(data_dir), "model": "cifg", "model_config": CIFG, "steps": 40,
            "lr": 0.01, "eval_every": 10, "checkpoint_every": 10, "keep_checkpoints": 2}
    base.update(kw)
    return NWPTrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def cifg_run(data_dir, tmp_path_factory):
    """A CIFG run of 40 uninterrupted steps."""
    out = tmp_path_factory.mktemp("cifg")
    return out, train_nwp(_config(data_dir), out)


def _weights(summary):
    return load_file(Path(summary["checkpoint"]) / "model.safetensors")


def _identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rows(out):
    with open(Path(out) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _tb_steps(out, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(out) / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


# --------------------------------------------------------------------------- config


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['batchsize'\]"):
        NWPTrainConfig.from_dict({"data": "d", "batchsize": 3})
    with pytest.raises(ConfigError, match="data .* is required"):
        NWPTrainConfig.from_dict({})
    with pytest.raises(ConfigError, match="steps or epochs, not both"):
        NWPTrainConfig(data="d", steps=3, epochs=1)
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        NWPTrainConfig(data="d", optimizer="adagrad")
    with pytest.raises(ConfigError, match="model must be one of"):
        NWPTrainConfig(data="d", model="rnn")
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1"):
        NWPTrainConfig(data="d", batch_size=0)
    with pytest.raises(ConfigError, match="lr must be a finite number > 0"):
        NWPTrainConfig(data="d", lr=float("nan"))
    with pytest.raises(ConfigError, match="momentum is for sgd only"):
        NWPTrainConfig(data="d", momentum=0.9)
    # YAML, under `train:`, with the data folder relative to the config file; ints for floats.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.yaml").write_text("train:\n  data: ../data\n  lr: 1\n  steps: 5\n")
    c = NWPTrainConfig.load(tmp_path / "sub" / "t.yaml")
    assert c.data == str((tmp_path / "data").resolve()) and c.lr == 1.0 and c.steps == 5
    assert NWPTrainConfig.from_dict(c.to_dict()) == c
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid yaml"):
        NWPTrainConfig.load(tmp_path / "bad.yaml")


def test_model_must_fit_the_dataset(data_dir, tmp_path):
    with pytest.raises(TrainError, match="vocab_size is 999, the dataset's vocabulary has 304"):
        train_nwp(_config(data_dir, model_config={**CIFG, "vocab_size": 999}), tmp_path)
    with pytest.raises(TrainError, match="seq_len 20 exceeds the model's max_len 8"):
        train_nwp(_config(data_dir, model="transformer",
                          model_config={**TRANSFORMER, "max_len": 8}), tmp_path)
    with pytest.raises(TrainError, match="model_config: .*unknown keys"):
        train_nwp(_config(data_dir, model_config={"hidden": 3}), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


# --------------------------------------------------------------------------- training


def test_loss_goes_down_and_logs_are_written(cifg_run):
    out, summary = cifg_run
    assert summary["finished"] and summary["step"] == summary["total_steps"] == 40
    assert summary["resumed_from"] is None
    rows = _rows(out)
    assert list(rows[0]) == metric_columns()
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    train = [float(r["train_loss"]) for r in rows]
    val = [float(r["val_loss"]) for r in rows]
    # From about ln(304) = 5.7 (uniform): the last 10 steps' mean loss is clearly lower than
    # the first 10 steps', and held-out users' loss falls too.
    assert train[-1] < train[0] - 0.5, train
    assert val[-1] < val[0] - 0.1, val
    assert summary["val"]["loss"] == pytest.approx(val[-1])
    assert summary["val"]["tokens"] > 100
    # The same rows as TensorBoard scalars.
    assert _tb_steps(out, "train/loss") == [10, 20, 30, 40]
    assert _tb_steps(out, "val/accuracy") == [10, 20, 30, 40]
    # The newest two checkpoints are kept; the summary is written at the end.
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [30, 40]
    assert json.loads((out / "summary.json").read_text())["step"] == 40
    assert NWPTrainConfig.from_dict(json.loads((out / "config.json").read_text())).steps == 40


def test_trained_model_loads_back(cifg_run):
    out, summary = cifg_run
    model = load_trained_lm(out)
    assert not model.training and model.config.embed_dim == 16
    got = {k: v for k, v in model.state_dict().items() if k in _weights(summary)}
    assert _identical(got, _weights(summary))


def test_finished_run_is_not_trained_again(cifg_run, data_dir):
    out, summary = cifg_run
    again = train_nwp(_config(data_dir), out)
    assert again["resumed_from"] == 40 and again["step"] == 40 and again["finished"]
    assert again["val"] == summary["val"]
    assert [int(r["step"]) for r in _rows(out)] == [10, 20, 30, 40]


def test_exact_resume_with_dropout(data_dir, tmp_path):
    """A Transformer with dropout (torch's RNG matters) stopped at 13 and resumed to 30."""
    config = _config(data_dir, model="transformer", model_config=TRANSFORMER, steps=30,
                     checkpoint_every=7)
    whole = train_nwp(config, tmp_path / "whole")
    first = train_nwp(config, tmp_path / "parts", max_steps=13)
    assert first["step"] == 13 and not first["finished"]
    assert not (tmp_path / "parts" / "summary.json").exists()
    rest = train_nwp(config, tmp_path / "parts")
    assert rest["resumed_from"] == 13 and rest["finished"]
    assert _identical(_weights(whole), _weights(rest))
    assert (tmp_path / "whole" / "metrics.csv").read_text() == \
        (tmp_path / "parts" / "metrics.csv").read_text()
    # Another seed is another run (so the equality above is not vacuous).
    other = train_nwp(_config(data_dir, model="transformer", model_config=TRANSFORMER,
                              steps=30, seed=1), tmp_path / "other")
    assert not _identical(_weights(whole), _weights(other))


_CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    import torch
    torch.set_num_threads(1)
    from models.train import NWPTrainConfig, train_nwp

    config = NWPTrainConfig.from_dict({config!r})
    out = {out!r}
    flag = os.path.join(out, "checkpoints", "step-00000010")

    def killer():  # SIGKILL this process as soon as checkpoint 10 is in place
        while not os.path.isdir(flag):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()
    train_nwp(config, out)
    sys.exit(3)  # reached only if the kill never came
""")


def test_exact_resume_after_sigkill(cifg_run, data_dir, tmp_path):
    """Killed (SIGKILL, no cleanup) just after a checkpoint, resumed: same weights and logs."""
    whole_out, whole = cifg_run
    out = tmp_path / "killed"
    long_run = _config(data_dir, steps=5000).to_dict()  # would take minutes: it is killed
    code = _CHILD.format(config=long_run, out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rest = train_nwp(_config(data_dir), out)
    assert 10 <= rest["resumed_from"] < 40 and rest["finished"]
    assert _identical(_weights(whole), _weights(rest))
    assert (whole_out / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    assert _tb_steps(out, "train/loss") == [10, 20, 30, 40]  # none twice


def test_resume_refuses_another_run_or_a_corrupt_checkpoint(cifg_run, data_dir, tmp_path):
    out, _ = cifg_run
    with pytest.raises(TrainError, match="run with other settings \\(lr\\)"):
        train_nwp(_config(data_dir, lr=0.02), out)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    model_file = copy / "checkpoints" / "step-00000040" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match=r"step-00000040/model\.safetensors: truncated"):
        train_nwp(_config(data_dir), copy)


# --------------------------------------------------------------------------- command line


def _write_config(tmp_path, data_dir, **kw):
    path = tmp_path / "nwp.json"
    path.write_text(json.dumps(_config(data_dir, **kw).to_dict()))
    return path


def test_cli_command_runs_and_reports(data_dir, tmp_path, capsys):
    import argparse

    from kbsim.train_cli import add_train_parser

    parser = argparse.ArgumentParser(prog="kbsim")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    config = _write_config(tmp_path, data_dir, steps=12, eval_every=6, checkpoint_every=6)
    args = parser.parse_args(["train", "nwp", str(config), "--out", str(tmp_path / "run"),
                              "--max-steps", "6", "--threads", "1", "--no-progress"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert "steps        6/12" in out and "val top-1" in out
    assert "stopped (run again to resume) at step 6/12" in err
    args = parser.parse_args(["train", "nwp", str(config), "--out", str(tmp_path / "run")])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert "resumed at step 6" in out and "finished at step 12/12" in err
    assert str(tmp_path / "run") in err


def test_cli_exit_codes(data_dir, tmp_path, capsys):
    from kbsim import cli

    config = _write_config(tmp_path, data_dir, steps=4, eval_every=4, checkpoint_every=4)
    assert cli.main(["train", "nwp", str(config), "--out", str(tmp_path / "run")]) == 0
    assert "val loss" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": str(data_dir), "optimiser": "adam"}))
    assert cli.main(["train", "nwp", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key(s) ['optimiser']" in capsys.readouterr().err
    assert cli.main(["train", "nwp", str(tmp_path / "none.yaml"), "--out", "x"]) == 2
    assert "none.yaml: cannot read" in capsys.readouterr().err
    nodata = tmp_path / "nodata.json"
    nodata.write_text(json.dumps({"data": str(tmp_path / "nothing")}))
    assert cli.main(["train", "nwp", str(nodata), "--out", str(tmp_path / "y")]) == 2
    assert "no finished data build" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: --out is required
        cli.main(["train", "nwp", str(config)])
    assert e.value.code == 2
