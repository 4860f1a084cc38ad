"""federated.dp_ftrl: the tree's prefix covers on hand-checked cases, the added noise summing to
the tree's prefix noise (with restarts), the noise's moments, a hand golden of four rounds of
DP-FTRL with server SGD, clipping, determinism and exact resume of the stage's state, and the
settings that are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

from data.config import ConfigError
from federated import server_optim
from federated.chain import Aggregate, Contribution, run_client, run_server
from federated.config import DPConfig, FederatedConfig
from federated.dp import DPError
from federated.dp_ftrl import (
    TreeDP,
    node_noise,
    prefix_nodes,
    prefix_noise,
    round_noise,
    step_nodes,
    tree_depth,
)
from federated.server_optim import ServerOptimizerConfig

SEED = 1234


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _stage(**kw) -> TreeDP:
    base = {"noise_multiplier": 1.0, "expected_clients": 1.0, "noise_seed": SEED,
            "clip_norm": 1.0}
    base.update(kw)
    return TreeDP(**base)


def _noise_of_rounds(stage: TreeDP, rounds: int, size: int, state=None):
    """The noise the stage adds in each of `rounds` rounds (to an empty sum), and its states."""
    state = state or stage.init_state()
    noises, states, metrics = [], [], []
    for _ in range(rounds):
        agg = Aggregate.zeros(size, stage.stat_names)
        out, state, m = stage.server(agg, state, _gen())
        noises.append(out.total)
        states.append(state)
        metrics.append(m)
    return noises, states, metrics


# ------------------------------------------------------------------- the tree


@pytest.mark.parametrize("t, nodes", [
    (0, ()),
    (1, ((0, 0),)),                       # [0, 1)
    (2, ((1, 0),)),                       # [0, 2)
    (3, ((1, 0), (0, 2))),                # [0, 2) + [2, 3)
    (4, ((2, 0),)),                       # [0, 4)
    (7, ((2, 0), (1, 2), (0, 6))),        # [0, 4) + [4, 6) + [6, 7)
    (8, ((3, 0),)),                       # [0, 8)
])
def test_prefix_nodes_hand_checked(t, nodes):
    assert prefix_nodes(t) == nodes


def test_prefix_nodes_partition_the_prefix_and_step_nodes_go_from_one_to_the_next():
    for t in range(70):
        covered = []
        for level, index in prefix_nodes(t):
            covered.extend(range(index << level, (index + 1) << level))
        assert covered == list(range(t))
        assert len(prefix_nodes(t)) == bin(t).count("1")
        added, removed = step_nodes(t)
        assert set(prefix_nodes(t + 1)) == (set(prefix_nodes(t)) - set(removed)) | {added}
        assert set(removed) <= set(prefix_nodes(t))


def test_tree_depth_is_the_most_nodes_one_round_lies_under():
    for n in range(1, 40):
        # The nodes released while the tree has n rounds: those that end by round n.
        released = {node for t in range(n + 1) for node in prefix_nodes(t)}
        under = max(sum(1 for lv, i in released if i << lv <= leaf < (i + 1) << lv)
                    for leaf in range(n))
        assert tree_depth(n) == under == math.ceil(math.log2(n + 1))
    assert tree_depth(0) == 0


# ------------------------------------------------------------------- the noise


@pytest.mark.parametrize("t", [1, 2, 3, 5, 7, 8, 13])
def test_added_noise_sums_to_the_prefix_noise(t):
    stage = _stage(noise_multiplier=0.7, clip_norm=0.5)
    noises, states, _ = _noise_of_rounds(stage, t, 16)
    total = torch.stack(noises).sum(0)
    want = prefix_noise(SEED, 0, t, 16, 0.35)
    # Equal up to float64 rounding: the sum of the rounds' differences is the sum of the
    # covering nodes' noise, added in another order (a relative 1e-16 per addition).
    assert torch.allclose(total, want, rtol=0, atol=1e-12)
    # And the covering nodes are what they should be.
    by_nodes = sum(node_noise(SEED, 0, n, 16, 0.35) for n in prefix_nodes(t))
    assert torch.allclose(want, by_nodes, rtol=0, atol=1e-14)
    assert states[-1] == {"tree": 0, "position": t}


def test_with_restarts_each_tree_adds_its_own_prefix_from_zero():
    stage = _stage(noise_multiplier=0.7, clip_norm=0.5, restart_rounds=3)
    noises, states, metrics = _noise_of_rounds(stage, 8, 16)
    assert [s["tree"] for s in states] == [0, 0, 1, 1, 1, 2, 2, 2]
    assert [s["position"] for s in states] == [1, 2, 0, 1, 2, 0, 1, 2]
    assert [m["dp/tree"] for m in metrics] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [m["dp/tree_round"] for m in metrics] == [0, 1, 2, 0, 1, 2, 0, 1]
    # Trees 0 and 1 complete (3 rounds each: nodes [0, 2) and [2, 3)), tree 2 has 2 rounds.
    want = (prefix_noise(SEED, 0, 3, 16, 0.35) + prefix_noise(SEED, 1, 3, 16, 0.35)
            + prefix_noise(SEED, 2, 2, 16, 0.35))
    assert torch.allclose(torch.stack(noises).sum(0), want, rtol=0, atol=1e-12)
    # The first round of a new tree adds that tree's first leaf alone.
    assert torch.equal(noises[3], node_noise(SEED, 1, (0, 0), 16, 0.35))


def test_prefix_noise_std_over_many_seeds():
    # 400 seeds x 100 coordinates = 40,000 draws per t: the sample std is within 5 sd
    # (5 / sqrt(2 * 40000) = 1.8%) of z C sqrt(nodes covering [0, t)).
    z, clip = 0.8, 0.5
    for t in (1, 3, 7, 8):
        draws = torch.cat([prefix_noise(seed, 0, t, 100, z * clip) for seed in range(400)])
        want = z * clip * math.sqrt(len(prefix_nodes(t)))
        assert float(draws.std()) == pytest.approx(want, rel=0.018), t
        assert abs(float(draws.mean())) < 5 * want / math.sqrt(draws.numel())


def test_round_noise_std_is_the_reported_one():
    # Round t removes as many nodes as t has trailing one-bits: std z C sqrt(1 + that).
    stage = _stage(noise_multiplier=0.8, clip_norm=0.5, restart_rounds=8)
    _, _, metrics = _noise_of_rounds(stage, 8, 4)
    trailing = [0, 1, 0, 2, 0, 1, 0, 3]
    for t, (m, k) in enumerate(zip(metrics, trailing, strict=True)):
        assert m["dp/noise_std"] == pytest.approx(0.4 * math.sqrt(1 + k))
        draws = torch.cat([round_noise(seed, 0, t, 100, 0.4) for seed in range(400)])
        assert float(draws.std()) == pytest.approx(m["dp/noise_std"], rel=0.018), t


def test_noise_depends_on_seed_tree_and_node_only():
    a = node_noise(SEED, 0, (1, 0), 8, 1.0)
    assert torch.equal(a, node_noise(SEED, 0, (1, 0), 8, 1.0))
    for other in (node_noise(SEED + 1, 0, (1, 0), 8, 1.0), node_noise(SEED, 1, (1, 0), 8, 1.0),
                  node_noise(SEED, 0, (0, 1), 8, 1.0), node_noise(SEED, 0, (1, 1), 8, 1.0)):
        assert not torch.equal(a, other)
    assert a.dtype == torch.float64


# ------------------------------------------------------------------- the stage


def test_hand_golden_four_rounds_of_dp_ftrl_with_server_sgd():
    # Two clients a round, C = 1, m = 2 (the fixed denominator), z = 0.5, server SGD lr 1.
    # Client updates (before clipping) per round; (3, 4) has norm 5 and clips to (0.6, 0.8).
    rounds = [
        [(3.0, 4.0), (0.3, 0.4)],    # clipped: (0.6, 0.8) + (0.3, 0.4) = (0.9, 1.2)
        [(0.0, 0.5), (0.0, -2.0)],   # (0, 0.5) + (0, -1)              = (0, -0.5)
        [(1.0, 0.0), (0.0, 0.0)],    # (1, 0) + (0, 0)                 = (1, 0)
        [(-6.0, 8.0), (0.1, 0.1)],   # (-0.6, 0.8) + (0.1, 0.1)        = (-0.5, 0.9)
    ]
    clipped_total = torch.tensor([0.9 + 0 + 1 - 0.5, 1.2 - 0.5 + 0 + 0.9], dtype=torch.float64)
    stage = _stage(noise_multiplier=0.5, clip_norm=1.0, expected_clients=2.0)
    sgd = ServerOptimizerConfig(kind="sgd", lr=1.0)
    theta0 = torch.tensor([0.25, -1.0])
    params, opt = theta0.clone(), server_optim.init(sgd, theta0)
    states = [stage.init_state()]
    for updates in rounds:
        agg = Aggregate.zeros(2, stage.stat_names)
        for u in updates:
            c = run_client([stage], Contribution(torch.tensor(u), 1.0), states, [_gen()])
            assert float(c.vector.norm()) <= 1.0 + 1e-6
            agg = agg.add_(c)
        mean, states, _ = run_server([stage], agg, states, [_gen()])
        params, opt = server_optim.apply(sgd, opt, params, mean)
    # After 4 rounds the tree's prefix is its single node (2, 0) = [0, 4), noise std z C.
    assert prefix_nodes(4) == ((2, 0),)
    noise = node_noise(SEED, 0, (2, 0), 2, 0.5)
    want = theta0.double() + (clipped_total + noise) / 2.0
    assert torch.allclose(params.double(), want, rtol=0, atol=1e-6)  # float32 model
    assert states == [{"tree": 0, "position": 4}]


def test_clipping_bounds_every_contribution_and_records_the_stats():
    stage = _stage(clip_norm=0.3)
    g = torch.Generator().manual_seed(5)
    for scale in (1e-3, 1.0, 1e4):
        v = torch.randn(50, generator=g) * scale
        c = stage.client(Contribution(v, 1.0), stage.init_state(), _gen())
        norm = float(v.double().norm())
        assert float(c.vector.double().norm()) <= 0.3 * (1 + 1e-6)
        assert c.stats["dp/norm"] == pytest.approx(norm)
        assert c.stats["dp/unclipped"] == (1.0 if norm <= 0.3 else 0.0)


def test_metrics_and_the_fixed_denominator():
    stage = _stage(noise_multiplier=0.0, clip_norm=1.0, expected_clients=4.0)
    agg = Aggregate.zeros(2, stage.stat_names)
    for v in ((3.0, 4.0), (0.3, 0.4)):
        agg = agg.add_(stage.client(Contribution(torch.tensor(v), 1.0), {}, _gen()))
    out, state, m = stage.server(agg, stage.init_state(), _gen())
    assert out.weight == 4.0 and torch.allclose(out.total, agg.total)  # no noise at z = 0
    assert m == {"dp/clip_norm": 1.0, "dp/noise_std": 0.0, "dp/clipped_fraction": 0.5,
                 "dp/mean_norm": pytest.approx(2.75), "dp/tree": 0.0, "dp/tree_round": 0.0}
    assert state == {"tree": 0, "position": 1}


def test_state_is_json_and_a_resumed_stage_adds_the_same_noise():
    stage = _stage(noise_multiplier=1.3, restart_rounds=4)
    straight, _, _ = _noise_of_rounds(stage, 10, 32)
    first, states, _ = _noise_of_rounds(stage, 6, 32)
    saved = json.loads(json.dumps(states[-1]))
    again = _stage(noise_multiplier=1.3, restart_rounds=4)  # a new process's stage
    rest, _, _ = _noise_of_rounds(again, 4, 32, state=saved)
    for a, b in zip(straight, first + rest, strict=True):
        assert torch.equal(a, b)
    other, _, _ = _noise_of_rounds(_stage(noise_multiplier=1.3, noise_seed=SEED + 1), 1, 32)
    assert not torch.equal(other[0], straight[0])


def test_stage_errors():
    stage = _stage()
    with pytest.raises(DPError, match="uniform client weights"):
        stage.client(Contribution(torch.ones(3), 2.0), stage.init_state(), _gen())
    with pytest.raises(DPError, match="non-finite"):
        stage.client(Contribution(torch.tensor([1.0, math.inf]), 1.0), stage.init_state(), _gen())
    with pytest.raises(DPError, match="past the tree"):
        _stage(restart_rounds=2).server(Aggregate.zeros(2), {"tree": 0, "position": 2}, _gen())
    with pytest.raises(DPError, match="position"):
        stage.server(Aggregate.zeros(2), {"tree": 0}, _gen())
    for bad in ({"noise_multiplier": -1.0}, {"expected_clients": 0.0}, {"clip_norm": 0.0},
                {"noise_seed": -1}, {"restart_rounds": 0}, {"name": "a/b"}):
        with pytest.raises(DPError):
            _stage(**bad)
    with pytest.raises(TypeError):
        _stage(target_quantile=0.5)  # no adaptive clipping with the tree


# ------------------------------------------------------------------- settings refused


def test_settings_the_tree_cannot_use_are_refused():
    with pytest.raises(ConfigError, match="adaptive clipping.*not supported"):
        DPConfig(noise_multiplier=1.0, mechanism="tree", target_quantile=0.5)
    with pytest.raises(ConfigError, match="accountant: rdp"):
        DPConfig(noise_multiplier=1.0, mechanism="tree", accountant="pld")
    with pytest.raises(ConfigError, match="restart_rounds applies"):
        DPConfig(noise_multiplier=1.0, restart_rounds=4)
    with pytest.raises(ConfigError, match="restart_rounds must be"):
        DPConfig(noise_multiplier=1.0, mechanism="tree", restart_rounds=0)
    with pytest.raises(ConfigError, match="mechanism must be"):
        DPConfig(noise_multiplier=1.0, mechanism="laplace")
    base = {"data": "somewhere", "weighting": "uniform",
            "dp": {"noise_multiplier": 1.0, "mechanism": "tree"}}
    with pytest.raises(ConfigError, match="needs sampling kind: shuffle"):
        FederatedConfig.from_dict({**base, "sampling": {"cohort_size": 4}})
    with pytest.raises(ConfigError, match="needs dp.mechanism: tree"):
        FederatedConfig.from_dict({**base, "dp": {"noise_multiplier": 1.0},
                                   "sampling": {"kind": "shuffle", "cohort_size": 4}})
    ok = FederatedConfig.from_dict({**base, "sampling": {"kind": "shuffle", "cohort_size": 4}})
    assert ok.dp.mechanism == "tree" and ok.dp.restart_rounds is None
    assert DPConfig(noise_multiplier=1.0).mechanism == "gaussian"  # the default is unchanged


def test_the_shipped_dp_ftrl_config_loads():
    from pathlib import Path

    cfg = FederatedConfig.load(Path(__file__).resolve().parents[1] / "configs"
                               / "federated_dpftrl.yaml")
    assert cfg.dp.mechanism == "tree" and cfg.sampling.kind == "shuffle"
    assert cfg.weighting == "uniform" and cfg.dp.target_quantile is None
