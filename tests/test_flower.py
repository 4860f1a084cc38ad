"""federated/flower.py: kbsim's local training as a Flower ClientApp, Flower's FedAvg server.

The key property: with every client training every round, Flower's FedAvg (weighted by
num-examples) and kbsim's FedAvg (weighting "examples", server SGD lr 1) make the same model
from the same initial weights, since both run `train_client` with the same seeds. Each Flower
run starts Ray (about 10 s here), so there are two.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("ray")

from federated.client import ClientConfig, ClientDataset  # noqa: E402
from federated.fedavg import FedAvg, FedAvgConfig  # noqa: E402
from federated.flower import FlowerError, SharedClients, run_flower  # noqa: E402
from federated.params import ParamLayout  # noqa: E402
from federated.run import round_seed  # noqa: E402
from models.lm import build_lm  # noqa: E402

MODEL = {"vocab_size": 50, "embed_dim": 16, "hidden_dim": 32}
CLIENT = ClientConfig(lr=0.5, batch_size=4)
SEED = 7
# One actor on one CPU: the test shares a 2-core machine.
BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}}
# float32 weights averaged in different orders and precisions (Flower: sum of n_i/N * w_i in
# float32; kbsim: w + sum n_i (w_i - w) / N in float64) differ by a few ulps per round; the
# weights are O(1), so 1e-5 is ~100 ulps, while the rounds move them by ~0.3 (checked below).
ATOL = 1e-5


def _clients() -> dict[str, ClientDataset]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for cid, n in (("a", 5), ("b", 9), ("c", 20)):
        s = torch.randint(1, MODEL["vocab_size"], (n, 7), generator=g)
        out[cid] = ClientDataset(cid, s[:, :-1], s[:, 1:])
    return out


@pytest.fixture(scope="module")
def setup():
    model = build_lm("cifg", MODEL, generator=torch.Generator().manual_seed(2))
    return model, ParamLayout.of(model).vector(model), _clients()


def _kbsim(model, p0, clients, cohorts, seed=SEED):
    algo = FedAvg(model, FedAvgConfig(client=CLIENT, weighting="examples"))
    state = algo.init(p0)
    for r, ids in enumerate(cohorts):
        state, _ = algo.apply(state, [clients[c] for c in ids], round_seed(seed, r))
    return state.params


def test_flower_fedavg_matches_kbsim_fedavg(setup):
    model, p0, clients = setup
    pythonpath = os.environ.get("PYTHONPATH")
    out = run_flower(clients, "cifg", MODEL, CLIENT, rounds=2, cohort_size=3, seed=SEED,
                     initial_params=p0, backend_config=BACKEND)
    assert os.environ.get("PYTHONPATH") == pythonpath  # Flower's Ray set-up undone
    ours = _kbsim(model, p0, clients, [["a", "b", "c"]] * 2)
    assert out["params"].dtype == torch.float32 and out["params"].shape == p0.shape
    assert float((ours - p0).norm()) > 0.1  # training moved the weights
    torch.testing.assert_close(out["params"], ours, atol=ATOL, rtol=0)
    # The seed reaches the clients: another seed's batch orders give another model.
    other = _kbsim(model, p0, clients, [["a", "b", "c"]] * 2, seed=SEED + 1)
    assert float((other - out["params"]).abs().max()) > 100 * ATOL
    # Steps per client: ceil(5/4)=2, ceil(9/4)=3, ceil(20/4)=5; Flower averages them weighted
    # by examples: (5*2 + 9*3 + 20*5) / 34 = 137/34.
    for r in (0, 1):
        assert out["history"][r]["steps"] == pytest.approx(137 / 34)
    assert len(out["round_seconds"]) == 2 and min(out["round_seconds"]) > 0
    assert out["cohorts"] == {}


def test_kbsim_cohorts_on_flower(setup):
    model, p0, clients = setup
    chosen = [("c", "a"), ("b",)]
    out = run_flower(clients, "cifg", MODEL, CLIENT, rounds=2, cohort_size=3, seed=SEED,
                     initial_params=p0, cohorts=lambda r: chosen[r], backend_config=BACKEND)
    assert out["cohorts"] == {0: ["a", "c"], 1: ["b"]}
    torch.testing.assert_close(out["params"], _kbsim(model, p0, clients, chosen),
                               atol=ATOL, rtol=0)
    # Round 1 trained b alone: (9 examples) steps ceil(9/4) = 3.
    assert out["history"][1]["steps"] == 3


def test_shared_clients_round_trip(tmp_path):
    clients = _clients()
    shared = SharedClients.write(clients, tmp_path / "shared")
    assert sorted(shared) == ["a", "b", "c"] and len(shared) == 3
    for cid, c in clients.items():
        assert torch.equal(shared[cid].x, c.x) and torch.equal(shared[cid].y, c.y)
        assert shared[cid].client_id == cid
    # It pickles as its folder, not its examples.
    assert len(pickle.dumps(shared)) < 300
    again = pickle.loads(pickle.dumps(shared))
    assert torch.equal(again["c"].x, clients["c"].x)
    # Writing the folder again makes a new handle; the old one still reads its own examples.
    clients["a"] = clients["b"]
    newer = SharedClients.write(clients, tmp_path / "shared")
    assert torch.equal(newer["a"].x, clients["b"].x)
    assert torch.equal(shared["a"].x, _clients()["a"].x)


def test_shared_clients_need_one_sequence_length(tmp_path):
    clients = _clients()
    s = torch.ones(2, 4, dtype=torch.int64)
    clients["d"] = ClientDataset("d", s, s)
    with pytest.raises(FlowerError, match="sequence lengths"):
        SharedClients.write(clients, tmp_path)


@pytest.mark.parametrize("kw, match", [
    ({"cohort_size": 4}, "cohort_size"),
    ({"rounds": 0}, "rounds"),
    ({"initial_params": torch.zeros(3)}, "flat vector"),
])
def test_bad_arguments_fail_before_ray_starts(setup, kw, match):
    _, p0, clients = setup
    args = {"rounds": 1, "cohort_size": 2, "seed": 0, "initial_params": p0, **kw}
    with pytest.raises(FlowerError, match=match):
        run_flower(clients, "cifg", MODEL, CLIENT, **args)
