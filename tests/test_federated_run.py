"""federated.run and `kbsim federated`: real federated runs on chit-chat users, exact resume
(after max_rounds and after a real SIGKILL), 2 torch.distributed ranks equal to 1, DP epsilon as
dp-accounting computes it, and clear errors.

One small build of the default corpus (3,000 records, a 300-word vocabulary) per module; a tiny
CIFG trained for a few real rounds.
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data.build import build
from data.config import (
    ClientsConfig,
    ConfigError,
    CorpusConfig,
    DataConfig,
    PairsConfig,
    TokenizersConfig,
)
from federated.config import FederatedConfig
from federated.run import (
    FederatedError,
    load_federated_model,
    noise_multiplier,
    run_federated,
    tree_rounds,
)
from models.checkpoint import list_checkpoints, load_tensors

pytest.importorskip("chitchat_dataset")
dp_accounting = pytest.importorskip("dp_accounting")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build(DataConfig(seed=3, shard_size=5000, corpus=CorpusConfig(limit=3000),
                     clients=ClientsConfig(max_messages=None),
                     tokenizers=TokenizersConfig(vocab_size=300, subword_vocab_size=0),
                     pairs=PairsConfig(materialize=False)), out)
    return out


def config(data_dir, **kw):
    base = {"data": str(data_dir), "model_config": {"embed_dim": 16, "hidden_dim": 32},
            "rounds": 6, "sampling": {"cohort_size": 8, "dropout": 0.1},
            "client": {"lr": 0.5}, "eval_every": 2, "checkpoint_every": 2,
            "keep_checkpoints": 5}
    base.update(kw)
    return FederatedConfig.from_dict(base)


def params(run_dir):
    return load_tensors(list_checkpoints(Path(run_dir) / "checkpoints")[-1][1])[0]


def rows(path, drop=("seconds",)):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    return out, run_federated(config(data_dir), out)


def test_a_run_trains_and_held_out_loss_goes_down(straight):
    out, summary = straight
    assert summary["finished"] and summary["round"] == 6 and summary["clients"] > 50
    evals = rows(out / "eval.csv")
    assert [int(r["round"]) for r in evals] == [2, 4, 6]
    assert float(evals[-1]["loss"]) < float(evals[0]["loss"]) - 0.3
    metrics = rows(out / "metrics.csv")
    assert len(metrics) == 6
    for r in metrics:  # cohort accounting: every sampled client reported or dropped
        assert int(r["sampled"]) == 8 == int(r["reporting"]) + int(r["dropped"])
        assert float(r["clients"]) == int(r["reporting"])
    assert sum(int(r["dropped"]) for r in metrics) > 0  # dropout 0.1 over 48 selections
    assert (out / "summary.json").exists() and list((out / "tb").iterdir())
    model = load_federated_model(out)
    assert sum(p.numel() for p in model.parameters()) == summary["parameters"]


def test_resume_after_max_rounds_equals_an_uninterrupted_run(straight, data_dir, tmp_path):
    out, _ = straight
    first = run_federated(config(data_dir), tmp_path, max_rounds=3)
    assert not first["finished"] and first["round"] == 3
    second = run_federated(config(data_dir), tmp_path)
    assert second["resumed_from"] == 3 and second["finished"]
    a, b = params(out), params(tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rows(out / "metrics.csv") == rows(tmp_path / "metrics.csv")
    assert rows(out / "eval.csv") == rows(tmp_path / "eval.csv")


def _yaml(path, cfg: FederatedConfig):
    path.write_text(json.dumps({"federated": cfg.to_dict()}))  # JSON is YAML
    return path


def test_a_killed_run_resumes_to_the_same_model(data_dir, tmp_path):
    cfg = config(data_dir, rounds=12, checkpoint_every=1, eval_every=4,
                 server={"kind": "adam", "lr": 0.02})
    conf = _yaml(tmp_path / "fed.json", cfg)
    cmd = [str(BIN / "kbsim"), "federated", str(conf), "--threads", "1", "--no-progress"]
    straight = run_federated(cfg, tmp_path / "straight")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(killed / "checkpoints")) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(killed / "checkpoints")
    assert done and done[-1][0] < 12, "the run ended before it could be killed"
    subprocess.run([*cmd, "--out", str(killed)], check=True, capture_output=True)
    a, b = params(Path(straight["out_dir"])), params(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(Path(straight["out_dir"]) / "metrics.csv") == rows(killed / "metrics.csv")


def test_two_ranks_give_the_model_of_one(straight, data_dir, tmp_path):
    out, _ = straight
    conf = _yaml(tmp_path / "fed.json", config(data_dir))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29517", "-m",
         "kbsim.cli", "federated", str(conf), "--out", str(tmp_path / "two"), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout
    a, b = params(out), params(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k
    one, two = rows(out / "eval.csv"), rows(tmp_path / "two" / "eval.csv")
    for r1, r2 in zip(one, two, strict=True):
        assert r1["tokens"] == r2["tokens"]
        assert float(r1["loss"]) == pytest.approx(float(r2["loss"]), rel=1e-5)


def test_dp_run_reports_the_epsilon_dp_accounting_gives(data_dir, tmp_path):
    cfg = config(data_dir, rounds=4, weighting="uniform",
                 sampling={"kind": "poisson", "rate": 0.1},
                 dp={"noise_multiplier": 0.8, "clip_norm": 0.5, "target_quantile": 0.5,
                     "count_noise_std": 1.0, "delta": 1e-5},
                 secagg={"bound": 1.0, "bits": 16, "modulus_bits": 40})
    s = run_federated(cfg, tmp_path)
    acc = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(0.8))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, 4))
    assert s["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    m = rows(tmp_path / "metrics.csv")
    eps = [float(r["epsilon"]) for r in m]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(s["epsilon"])
    norms = [float(r["dp/clip_norm"]) for r in m]
    assert norms[0] == 0.5 and len(set(norms)) > 1  # adaptive clipping moved the norm
    assert all(float(r["secagg/may_wrap"]) == 0 for r in m)


def test_dp_run_for_a_target_epsilon_spends_just_that(data_dir, tmp_path):
    cfg = config(data_dir, rounds=3, weighting="uniform", sampling={"cohort_size": 10},
                 dp={"target_epsilon": 5.0, "clip_norm": 0.5, "delta": 1e-4})
    s = run_federated(cfg, tmp_path)
    assert 0.99 * 5.0 <= s["epsilon"] <= 5.0
    with pytest.raises(FederatedError, match="rounds"):  # z was chosen for 3 rounds
        run_federated(config(data_dir, rounds=4, weighting="uniform",
                             sampling={"cohort_size": 10},
                             dp={"target_epsilon": 5.0, "clip_norm": 0.5, "delta": 1e-4}),
                      tmp_path)
    with pytest.raises(ConfigError, match="one of noise_multiplier and target_epsilon"):
        config(data_dir, weighting="uniform", dp={"clip_norm": 0.5})


def _tree_config(data_dir, clients, **kw):
    # Cohorts of 16 (76 clients: 4 rounds an epoch); the tree restarts every `restart` rounds,
    # the largest divisor of the epoch up to 4, so 6 rounds cross an epoch and hold trees of
    # several nodes.
    epoch = clients // 16
    restart = next(d for d in (4, 3, 2, 1) if epoch % d == 0)
    dp = {"noise_multiplier": 0.7, "clip_norm": 0.5, "mechanism": "tree",
          "restart_rounds": restart, "delta": 1e-5}
    return config(data_dir, weighting="uniform", rounds=6, checkpoint_every=1,
                  sampling={"kind": "shuffle", "cohort_size": 16, "dropout": 0.1},
                  server={"kind": "sgd", "lr": 1.0, "momentum": 0.9}, dp=dp, **kw), epoch, restart


def test_dp_ftrl_run_reports_epsilon_and_resumes_to_the_same_model(straight, data_dir, tmp_path):
    clients = straight[1]["clients"]
    cfg, epoch, restart = _tree_config(data_dir, clients)
    s = run_federated(cfg, tmp_path / "straight")
    assert s["finished"] and s["noise_multiplier"] == 0.7
    m = rows(tmp_path / "straight" / "metrics.csv")
    assert all(math.isfinite(float(r["train_loss"])) for r in m)
    assert [int(float(r["dp/tree_round"])) for r in m] == [r % restart for r in range(6)]
    # epsilon after every round: dp-accounting's single-epoch tree events, composed.
    relation = dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    for r, row in enumerate(m):
        trees = [min(restart, r + 1 - start) for start in range(0, r + 1, restart)]
        epochs = [trees[i:i + epoch // restart] for i in range(0, len(trees), epoch // restart)]
        acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
        acc.compose(dp_accounting.ComposedDpEvent(
            [dp_accounting.SingleEpochTreeAggregationDpEvent(0.7, e) for e in epochs]))
        assert float(row["epsilon"]) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert s["epsilon"] == pytest.approx(float(m[-1]["epsilon"]))
    # Stopped mid-tree and resumed: the same model, bit for bit.
    first = run_federated(cfg, tmp_path / "resumed", max_rounds=3)
    assert first["round"] == 3
    second = run_federated(cfg, tmp_path / "resumed")
    assert second["resumed_from"] == 3 and second["finished"]
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m == rows(tmp_path / "resumed" / "metrics.csv")


def test_dp_ftrl_settings_and_noise_for_a_target_epsilon(straight, data_dir):
    clients = straight[1]["clients"]
    cfg, epoch, restart = _tree_config(data_dir, clients)
    assert tree_rounds(cfg, clients) == (epoch, restart)
    dp = {**cfg.to_dict()["dp"], "noise_multiplier": None, "target_epsilon": 8.0}
    target = config(data_dir, weighting="uniform", rounds=6, sampling=cfg.sampling, dp=dp)
    from federated.accounting import tree_epsilon

    z = noise_multiplier(target, clients)
    assert 0.99 * 8.0 <= tree_epsilon(z, 6, epoch, restart, 1e-5) <= 8.0
    dp = {**cfg.to_dict()["dp"], "restart_rounds": epoch + 1}
    with pytest.raises(FederatedError, match="restart_rounds .* must divide"):
        tree_rounds(config(data_dir, weighting="uniform", sampling=cfg.sampling, dp=dp), clients)


def test_a_checkpoint_from_before_dp_mechanisms_resumes(data_dir, tmp_path):
    # Written by a run whose DP settings had no mechanism / restart_rounds yet: those take
    # their defaults, which is what that run did.
    cfg = config(data_dir, rounds=2, weighting="uniform", sampling={"cohort_size": 4},
                 dp={"noise_multiplier": 1.0, "clip_norm": 0.5})
    run_federated(cfg, tmp_path, max_rounds=1)
    (step, path), = list_checkpoints(tmp_path / "checkpoints")
    meta_file = next(f for f in path.iterdir() if f.suffix == ".json")
    meta = json.loads(meta_file.read_text())
    for key in ("mechanism", "restart_rounds"):
        del meta["state"]["config"]["dp"][key]
    meta_file.write_text(json.dumps(meta))
    assert run_federated(cfg, tmp_path)["resumed_from"] == 1


def test_settings_that_cannot_run_are_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="weighting: uniform"):
        config(data_dir, dp={"noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="unknown key"):
        config(data_dir, client={"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="sampling"):
        config(data_dir, sampling={"cohort_size": 0})
    with pytest.raises(FederatedError, match="dropout-free"):
        run_federated(config(data_dir, model="transformer",
                             model_config={"d_model": 8, "n_layers": 1, "n_heads": 2,
                                           "d_ff": 16, "dropout": 0.1}), tmp_path / "t")
    run_federated(config(data_dir, rounds=2), tmp_path / "r")
    with pytest.raises(FederatedError, match="other settings"):
        run_federated(config(data_dir, rounds=2, seed=9), tmp_path / "r")


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("federated:\n  data: nowhere\n  rounds: 0\n")
    r = subprocess.run([str(BIN / "kbsim"), "federated", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "rounds must be an int >= 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_shipped_config_loads():
    cfg = FederatedConfig.load(REPO / "configs" / "federated.yaml")
    assert cfg.sampling.cohort_size == 50 and cfg.client.batch_size == 16
    assert cfg.seq_len == 20 and cfg.model == "cifg"


def test_extra_training_messages_join_their_client_and_the_runs_identity(data_dir, tmp_path):
    cfg = config(data_dir, rounds=2, sampling={"kind": "poisson", "rate": 1.0})  # everyone
    from data.built import BuiltDataset

    client = sorted(BuiltDataset(data_dir).client_texts("train", "early"))[0]
    extra = {client: ["my secret code is purple monkey dishwasher"] * 5}
    with_extra = run_federated(cfg, tmp_path / "a", extra_train_messages=extra)
    plain = run_federated(cfg, tmp_path / "b")
    assert with_extra["clients"] == plain["clients"]
    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    assert not torch.equal(a["params"], b["params"])  # the client trained on 5 more examples
    with pytest.raises(FederatedError, match="other data"):
        run_federated(config(data_dir, rounds=3, sampling={"kind": "poisson", "rate": 1.0}),
                      tmp_path / "a")
    with pytest.raises(FederatedError, match="not a training client"):
        run_federated(cfg, tmp_path / "c", extra_train_messages={"nobody": ["hi"]})
