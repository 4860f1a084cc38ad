"""federated.dp: clipping bounds, hand-computed goldens for the fixed-clip stage and the noise
multipliers, the noise's moments, determinism, adaptive clipping finding a known quantile, and
the errors."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from federated.chain import Aggregate, Contribution
from federated.dp import (
    DPError,
    GaussianDP,
    adaptive_noise_multiplier,
    clip_by_norm,
    effective_noise_multiplier,
)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _sum(stage: GaussianDP, vectors, state) -> Aggregate:
    agg = Aggregate.zeros(len(vectors[0]), stage.stat_names)
    for i, v in enumerate(vectors):
        c = stage.client(Contribution(torch.tensor(v, dtype=torch.float32), 1.0), state, _gen(i))
        agg = agg.add_(c)
    return agg


# ------------------------------------------------------------------- clipping


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=50),
       st.floats(1e-3, 1e3))
def test_clip_bounds_every_vector(values, max_norm):
    v = torch.tensor(values, dtype=torch.float32)
    out, norm = clip_by_norm(v, max_norm)
    assert norm == pytest.approx(math.sqrt(sum(float(x) ** 2 for x in v)), rel=1e-9, abs=1e-30)
    # Within C up to float32 rounding (relative 1e-6).
    assert float(torch.linalg.vector_norm(out, dtype=torch.float64)) <= max_norm * (1 + 1e-6)
    if norm <= max_norm:
        assert out is v
    else:
        # Clipping only scales: the direction is kept.
        assert torch.allclose(out * (norm / max_norm), v, rtol=1e-5, atol=1e-6)


def test_clip_golden():
    # (3, 4) has norm 5; clipped to 1 it is (0.6, 0.8).
    out, norm = clip_by_norm(torch.tensor([3.0, 4.0]), 1.0)
    assert norm == 5.0
    assert torch.allclose(out, torch.tensor([0.6, 0.8]), atol=1e-7)


def test_clip_errors():
    with pytest.raises(DPError, match="clipping norm"):
        clip_by_norm(torch.ones(3), 0.0)
    with pytest.raises(DPError, match="non-finite"):
        clip_by_norm(torch.tensor([1.0, float("nan")]), 1.0)


# ------------------------------------------------------------------- the stage, fixed clip


def test_fixed_clip_golden_two_clients():
    # Client a = (3, 4), norm 5 > C = 1: clipped to (0.6, 0.8), bit 0.
    # Client b = (0.3, 0.4), norm 0.5 <= 1: kept, bit 1.
    # Sum (0.9, 1.2); with no noise the mean divides by expected_clients = 4: (0.225, 0.3),
    # not by the 2 that reported.
    dp = GaussianDP(noise_multiplier=0.0, expected_clients=4, clip_norm=1.0)
    state = dp.init_state()
    assert state == {"clip_norm": 1.0}
    agg = _sum(dp, [[3.0, 4.0], [0.3, 0.4]], state)
    assert agg.stats == pytest.approx({"dp/unclipped": 1.0, "dp/norm": 5.5})
    assert torch.allclose(agg.total, torch.tensor([0.9, 1.2], dtype=torch.float64), atol=1e-7)
    out, new_state, metrics = dp.server(agg, state, _gen(0))
    assert out.weight == 4.0 and out.count == 2
    assert torch.allclose(out.total / out.weight,
                          torch.tensor([0.225, 0.3], dtype=torch.float64), atol=1e-7)
    assert new_state == {"clip_norm": 1.0}
    assert metrics == pytest.approx({"dp/clip_norm": 1.0, "dp/noise_std": 0.0,
                                     "dp/clipped_fraction": 0.5, "dp/mean_norm": 2.75})


def test_weight_other_than_one_is_an_error():
    dp = GaussianDP(noise_multiplier=1.0, expected_clients=10)
    with pytest.raises(DPError, match="weight 1"):
        dp.client(Contribution(torch.ones(3), 5.0), dp.init_state(), _gen(0))


def test_noise_moments_match_z_times_c():
    # z = 0.5, C = 2: noise std 1 per coordinate. Over n = 200_000 coordinates the sample std's
    # sd is about 1 / sqrt(2n) = 0.0016 and the sample mean's 1 / sqrt(n) = 0.0022; tolerances
    # are 5 sd: 0.008 and 0.011.
    n = 200_000
    dp = GaussianDP(noise_multiplier=0.5, expected_clients=10, clip_norm=2.0)
    agg = Aggregate.zeros(n, dp.stat_names)
    out, _, metrics = dp.server(agg, dp.init_state(), _gen(7))
    assert metrics["dp/noise_std"] == 1.0
    noise = out.total
    assert noise.dtype == torch.float64
    assert abs(float(noise.std()) - 1.0) < 0.008
    assert abs(float(noise.mean())) < 0.011
    # Kurtosis of a Gaussian is 3 (sd about sqrt(24 / n) = 0.011; 5 sd = 0.055).
    z = (noise - noise.mean()) / noise.std()
    assert abs(float((z ** 4).mean()) - 3.0) < 0.055


def test_noise_is_deterministic_per_generator_and_leaves_inputs_alone():
    dp = GaussianDP(noise_multiplier=1.0, expected_clients=3, clip_norm=1.0,
                    target_quantile=0.5, count_noise_std=1.0)
    state = types.MappingProxyType(dp.init_state())  # a read-only state cannot be changed
    agg = _sum(dp, [[1.0, 2.0, 3.0], [0.1, 0.0, 0.0]], state)
    before = agg.total.clone()
    a, sa, ma = dp.server(agg, state, _gen(11))
    b, sb, mb = dp.server(agg, state, _gen(11))
    c, _, _ = dp.server(agg, state, _gen(12))
    assert torch.equal(a.total, b.total) and sa == sb and ma == mb
    assert not torch.equal(a.total, c.total)
    assert torch.equal(agg.total, before) and agg.weight == 2.0
    assert dict(state) == {"clip_norm": 1.0}


def test_client_leaves_its_input_alone():
    dp = GaussianDP(noise_multiplier=1.0, expected_clients=3, clip_norm=1.0)
    v = torch.tensor([3.0, 4.0])
    c = Contribution(v, 1.0, {"other/x": 2.0})
    out = dp.client(c, dp.init_state(), _gen(0))
    assert torch.equal(v, torch.tensor([3.0, 4.0])) and c.stats == {"other/x": 2.0}
    assert out.stats == {"other/x": 2.0, "dp/unclipped": 0.0, "dp/norm": 5.0}


# ------------------------------------------------------------------- noise multipliers


def test_adaptive_noise_multiplier_golden():
    # z = 1, sigma_b = 1: z_delta = (1 - 1/4)^(-1/2) = 2 / sqrt(3) = 1.1547005...
    assert adaptive_noise_multiplier(1.0, 1.0) == pytest.approx(1.1547005383792515, rel=1e-12)
    # z = 0.5, sigma_b = 0.5: z_delta = (4 - 1)^(-1/2) = 0.5773502...
    assert adaptive_noise_multiplier(0.5, 0.5) == pytest.approx(0.5773502691896258, rel=1e-12)
    # sigma_b = 5 (100 clients / 20), z = 1: (1 - 1/100)^(-1/2) = 1.0050378...
    assert adaptive_noise_multiplier(1.0, 5.0) == pytest.approx(1.0050378152592121, rel=1e-12)
    assert adaptive_noise_multiplier(0.0, 0.0) == 0.0
    for z, s in [(1.0, 1.0), (0.7, 3.0), (2.0, 1.5)]:
        assert effective_noise_multiplier(adaptive_noise_multiplier(z, s), s) == pytest.approx(z)


def test_count_noise_too_small_is_an_error():
    with pytest.raises(DPError, match="too small"):
        adaptive_noise_multiplier(1.0, 0.5)  # 2 sigma_b = z: the count spends it all
    with pytest.raises(DPError, match="too small"):
        GaussianDP(noise_multiplier=2.0, expected_clients=10, target_quantile=0.5)  # sb 0.5
    # Fixed clipping releases no count: any sigma_b is fine.
    GaussianDP(noise_multiplier=2.0, expected_clients=10, count_noise_std=0.0)


def test_stage_uses_raised_multiplier_when_adaptive():
    # expected_clients 100: sigma_b = 5 by default, z_delta = 1.0050378... (golden above).
    dp = GaussianDP(noise_multiplier=1.0, expected_clients=100, clip_norm=0.5,
                    target_quantile=0.5)
    assert dp.bits_noise_std == 5.0
    _, _, metrics = dp.server(Aggregate.zeros(4, dp.stat_names), dp.init_state(), _gen(0))
    assert metrics["dp/noise_std"] == pytest.approx(0.5 * 1.0050378152592121, rel=1e-12)
    fixed = GaussianDP(noise_multiplier=1.0, expected_clients=100, clip_norm=0.5)
    assert fixed.update_noise_multiplier == 1.0


@pytest.mark.parametrize("kwargs", [
    {"noise_multiplier": -1.0, "expected_clients": 10},
    {"noise_multiplier": 1.0, "expected_clients": 0},
    {"noise_multiplier": 1.0, "expected_clients": 10, "clip_norm": 0.0},
    {"noise_multiplier": 1.0, "expected_clients": 10, "target_quantile": 1.0},
    {"noise_multiplier": 1.0, "expected_clients": 10, "clip_learning_rate": 0.0},
    {"noise_multiplier": 1.0, "expected_clients": 10, "count_noise_std": -1.0},
    {"noise_multiplier": 1.0, "expected_clients": 10, "name": "a/b"},
])
def test_config_errors(kwargs):
    with pytest.raises(DPError):
        GaussianDP(**kwargs)


# ------------------------------------------------------------------- adaptive clipping


def test_adaptive_update_goldens():
    # No noise at all (z = 0, sigma_b = 0), C = 1, gamma = 0.5, eta = 0.2.
    # Four clients of four expected, all within C: b~ = (4 - 2) / 4 + 1/2 = 1,
    # C' = exp(-0.2 * 0.5) = exp(-0.1) = 0.9048374180...
    dp = GaussianDP(noise_multiplier=0.0, expected_clients=4, clip_norm=1.0,
                    target_quantile=0.5, count_noise_std=0.0)
    state = dp.init_state()
    agg = _sum(dp, [[0.1], [0.2], [-0.3], [0.9]], state)
    _, new, m = dp.server(agg, state, _gen(0))
    assert m["dp/unclipped_fraction_noisy"] == 1.0
    assert new["clip_norm"] == pytest.approx(0.9048374180359595, rel=1e-12)
    # Two of four expected reported (Poisson sampling), both within C: the centred bits give
    # b~ = (2 - 1) / 4 + 1/2 = 0.75, C' = exp(-0.2 * 0.25) = exp(-0.05) = 0.9512294245...
    agg = _sum(dp, [[0.1], [0.2]], state)
    _, new, m = dp.server(agg, state, _gen(0))
    assert m["dp/unclipped_fraction_noisy"] == 0.75
    assert new["clip_norm"] == pytest.approx(0.951229424500714, rel=1e-12)
    # Four clients all clipped: b~ = (0 - 2) / 4 + 1/2 = 0, C' = exp(0.1) = 1.1051709180...
    agg = _sum(dp, [[2.0], [3.0], [-4.0], [5.0]], state)
    _, new, _ = dp.server(agg, state, _gen(0))
    assert new["clip_norm"] == pytest.approx(1.1051709180756477, rel=1e-12)


def test_adaptive_clip_finds_the_median_of_uniform_norms():
    # Norms uniform on [0, 10]: the 0.5 quantile is 5. With no noise, 100 clients a round and
    # eta = 0.2, log C settles with sd about 0.023 (linearised: contraction 1 - 0.2 * 0.5 = 0.9
    # per round, fraction sd sqrt(0.25 / 100) = 0.05), so C is within 5 +- 0.6 by ~5 sd. From
    # C = 0.1 it takes at most about ln(50) / 0.1 = 39 rounds to get there; run 120.
    rng = np.random.default_rng(3)
    dp = GaussianDP(noise_multiplier=0.0, expected_clients=100, clip_norm=0.1,
                    target_quantile=0.5, count_noise_std=0.0)
    state = dp.init_state()
    g = _gen(0)
    history = []
    for _ in range(120):
        norms = rng.uniform(0.0, 10.0, size=100)
        agg = _sum(dp, [[float(x)] for x in norms], state)
        _, state, _ = dp.server(agg, state, g)
        history.append(state["clip_norm"])
    assert all(abs(c - 5.0) < 0.6 for c in history[-40:])
    assert abs(float(np.mean(history[-40:])) - 5.0) < 0.3


def test_adaptive_count_noise_moments():
    # The released fraction b~ = (sum(b - 1/2) + N(0, sigma_b^2)) / m + 1/2: with 20 of m = 20
    # clients within C it is 1 + N(0, (sigma_b / m)^2) = 1 + N(0, 0.25^2) for sigma_b = 5.
    # Over 400 rounds the mean's sd is 0.25 / 20 = 0.0125 (5 sd 0.063) and the sample sd's
    # about 0.25 / sqrt(800) = 0.0088 (5 sd 0.044).
    dp = GaussianDP(noise_multiplier=0.0, expected_clients=20, target_quantile=0.5,
                    count_noise_std=5.0)
    state = dp.init_state()
    agg = _sum(dp, [[0.0]] * 20, state)
    g = _gen(5)
    fr = np.array([dp.server(agg, state, g)[2]["dp/unclipped_fraction_noisy"]
                   for _ in range(400)])
    assert abs(fr.mean() - 1.0) < 0.063
    assert abs(fr.std() - 0.25) < 0.044
