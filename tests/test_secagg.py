"""federated.secagg: a hand-worked encoding, round-trip error within one step per client,
unbiased rounding, the modular sum against an independent integer one, wrap-around detected,
clamping counted, and GaussianDP + SecAgg through the chain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from federated import chain
from federated.chain import Aggregate, Contribution
from federated.dp import GaussianDP
from federated.secagg import (
    SecAgg,
    SecAggError,
    decode,
    encode,
    max_clients,
    modular_sum,
    quantization_step,
)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _aggregate(stages, vectors, states, seed=0):
    agg = Aggregate.zeros(len(vectors[0]), chain.stat_names(stages))
    for i, v in enumerate(vectors):
        c = Contribution(torch.tensor(v, dtype=torch.float32), 1.0)
        gens = [_gen(1000 * seed + 10 * i + j) for j in range(len(stages))]
        agg = agg.add_(chain.run_client(stages, c, states, gens))
    return agg


def test_encode_golden():
    # bound B = 1.5, bits = 2: L = 3 levels above 0, step 2B / L = 1, u = x + 1.5.
    #   x = -1.5 -> u 0 -> 0;  1.5 -> 3 -> 3;  0 -> 1.5 -> 1 or 2;  0.25 -> 1.75 -> 1 or 2;
    #   4.0 (clamped to 1.5) -> 3;  -0.5 -> 1 -> 1.
    # The rounding draws one uniform r_i per coordinate: up when r_i < u_i - floor(u_i).
    x = torch.tensor([-1.5, 1.5, 0.0, 0.25, 4.0, -0.5])
    codes, clamped = encode(x, 1.5, 2, _gen(4))
    r = torch.rand(6, generator=_gen(4), dtype=torch.float64).tolist()
    expected = [0, 3, 1 + (r[2] < 0.5), 1 + (r[3] < 0.75), 3, 1]
    assert codes.dtype == torch.float64
    assert codes.tolist() == expected
    assert clamped == 1
    # Two clients' codes summed: decode is S * 1 - 2 * 1.5.
    assert decode(torch.tensor([3.0, 6.0]), 2, 1.5, 2).tolist() == [0.0, 3.0]


def test_step_and_capacity_goldens():
    assert quantization_step(1.0, 16) == 2.0 / 65535
    # 2^32 - 1 = 4294967295 = 65535 * 65537: exactly 65537 clients fit with 16 bits in 32.
    assert max_clients(16, 32) == 65537
    assert max_clients(2, 3) == 2  # 7 // 3


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.sampled_from([1, 4, 8, 16]), st.floats(0.01, 100.0),
       st.integers(0, 2 ** 31))
def test_round_trip_error_within_one_step_per_client(clients, bits, bound, seed):
    stage = SecAgg(bound=bound, bits=bits, modulus_bits=40)
    rng = np.random.default_rng(seed)
    vectors = rng.uniform(-1.5 * bound, 1.5 * bound, size=(clients, 64))
    agg = _aggregate([stage], vectors.tolist(), [stage.init_state()], seed=seed % 1000)
    out, _, metrics = stage.server(agg, {}, _gen(0))
    assert metrics["secagg/may_wrap"] == 0.0
    exact = np.clip(vectors.astype(np.float32).astype(np.float64), -bound, bound).sum(axis=0)
    err = np.abs(out.total.numpy() - exact)
    # Each client's code is within one step of its scaled value (strictly below one step); the
    # slack covers float64 rounding of the scaling.
    assert err.max() <= clients * stage.step * (1 + 1e-9) + 1e-9 * bound * clients
    assert out.weight == float(clients) and out.count == clients


def test_stochastic_rounding_is_unbiased():
    # x = 0.3 with B = 1, bits = 3: step 2/7, u = 1.3 * 3.5 = 4.55, codes 4 or 5 (p = 0.55).
    # One decoded coordinate has sd step * sqrt(0.55 * 0.45) = 0.142; the mean of 100_000 has sd
    # 0.00045, tolerance 5 sd = 0.0023. The up-rounding rate's sd is sqrt(.2475 / 1e5) = 0.0016.
    n = 100_000
    codes, _ = encode(torch.full((n,), 0.3), 1.0, 3, _gen(9))
    assert set(codes.unique().tolist()) == {4.0, 5.0}
    assert abs(float((codes == 5).double().mean()) - 0.55) < 0.008
    decoded = decode(codes, 1, 1.0, 3)
    # 0.3 in float32 is 0.30000001192...: the target is that value.
    assert abs(float(decoded.mean()) - float(torch.tensor(0.3))) < 0.0023


def test_modular_sum_matches_an_integer_modular_sum():
    # 4-bit codes of 9 clients summed modulo 2^6 = 64: 9 * 15 = 135 >= 64, so sums wrap. The
    # stage's float64 sum reduced once must equal numpy int64 arithmetic reduced after every add.
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 16, size=(9, 200))
    ref = np.zeros(200, dtype=np.int64)
    for row in codes:
        ref = (ref + row) % 64
    total = torch.tensor(codes.sum(axis=0), dtype=torch.float64)
    assert np.array_equal(modular_sum(total, 6).numpy().astype(np.int64), ref)
    assert bool((total >= 64).any())  # the test does exercise wrapping


def test_wrap_detected_and_decoding_right_without_it():
    # bits = 2 (codes 0..3), modulus 2^3 = 8: two clients fit (2 * 3 = 6 <= 7), three do not.
    # Each client sends x = B = 1, code 3 (no rounding: u = 3 exactly).
    stage = SecAgg(bound=1.0, bits=2, modulus_bits=3)
    two = _aggregate([stage], [[1.0]] * 2, [{}])
    out, _, m = stage.server(two, {}, _gen(0))
    assert m["secagg/may_wrap"] == 0.0 and out.total.tolist() == [2.0]
    # Three: codes sum 9 = 1 mod 8, decoded 1 * 2/3 - 3 = -2.333.. instead of 3.
    three = _aggregate([stage], [[1.0]] * 3, [{}])
    out, _, m = stage.server(three, {}, _gen(0))
    assert m["secagg/may_wrap"] == 1.0
    assert out.total.tolist() == [pytest.approx(2.0 / 3.0 - 3.0)]


def test_clamping_counted():
    # B = 0.5: of (0.7, -0.2, -3, 0.5) two coordinates are beyond it (0.5 itself is not); of
    # (0, 0, 0, 0.6) one. Two clients, 8 coordinates: 3 clamped, fraction 0.375.
    stage = SecAgg(bound=0.5, bits=8)
    agg = _aggregate([stage], [[0.7, -0.2, -3.0, 0.5], [0.0, 0.0, 0.0, 0.6]], [{}])
    assert agg.stats == {"secagg/clamped": 3.0}
    _, state, m = stage.server(agg, {}, _gen(0))
    assert state == {}
    assert m["secagg/clamped_fraction"] == 0.375
    assert m["secagg/step"] == 1.0 / 255


def test_weight_and_count_pass_through_and_input_untouched():
    stage = SecAgg(bound=2.0)
    v = torch.tensor([1.0, -1.0])
    c = Contribution(v, 7.0, {"x": 1.0})
    out = stage.client(c, {}, _gen(0))
    assert out.weight == 7.0 and out.stats == {"x": 1.0, "secagg/clamped": 0.0}
    assert v.tolist() == [1.0, -1.0] and c.stats == {"x": 1.0}


@pytest.mark.parametrize("kwargs", [
    {"bound": 0.0}, {"bound": math.inf}, {"bound": 1.0, "bits": 0},
    {"bound": 1.0, "bits": 33, "modulus_bits": 32}, {"bound": 1.0, "modulus_bits": 53},
    {"bound": 1.0, "bits": 8.0}, {"bound": 1.0, "name": ""},
])
def test_config_errors(kwargs):
    with pytest.raises(SecAggError):
        SecAgg(**kwargs)


def test_non_finite_update_is_an_error():
    with pytest.raises(SecAggError, match="non-finite"):
        encode(torch.tensor([0.0, math.inf]), 1.0, 8, _gen(0))


# ------------------------------------------------------------------- with GaussianDP


def test_dp_then_secagg_through_the_chain():
    # Chain [dp, secagg]: each client is clipped to C = 1 then encoded; the server decodes the
    # sum and then adds the noise. Clients (3, 4) -> (0.6, 0.8) and (0, 0.5) -> kept: clipped
    # sum (0.6, 1.3), and with no noise the mean over expected_clients = 2 is (0.3, 0.65), within
    # 2 clients * step / 2 of it (step = 2 / 65535 for B = 1, 16 bits).
    dp = GaussianDP(noise_multiplier=0.0, expected_clients=2, clip_norm=1.0)
    sa = SecAgg(bound=1.0, bits=16, modulus_bits=32)
    stages = [dp, sa]
    states = [s.init_state() for s in stages]
    agg = _aggregate(stages, [[3.0, 4.0], [0.0, 0.5]], states)
    assert set(agg.stats) == {"dp/unclipped", "dp/norm", "secagg/clamped"}
    assert agg.stats["dp/unclipped"] == 1.0 and agg.stats["secagg/clamped"] == 0.0
    assert bool((agg.total == agg.total.round()).all())  # what the server sums is integers
    mean, new_states, metrics = chain.run_server(stages, agg, states, [_gen(0), _gen(1)])
    assert torch.allclose(mean, torch.tensor([0.3, 0.65]), atol=sa.step)
    assert new_states == [{"clip_norm": 1.0}, {}]
    assert metrics["secagg/may_wrap"] == 0.0 and metrics["dp/clipped_fraction"] == 0.5

    # With noise z = 2 (std 2 * C = 2 on the decoded sum), the mean is the noiseless one plus the
    # dp generator's draws / expected_clients: the noise comes after decoding.
    noisy = GaussianDP(noise_multiplier=2.0, expected_clients=2, clip_norm=1.0)
    stages = [noisy, sa]
    agg = _aggregate(stages, [[3.0, 4.0], [0.0, 0.5]], states)
    plain, _, _ = sa.server(agg, {}, _gen(1))
    mean, _, metrics = chain.run_server(stages, agg, states, [_gen(5), _gen(1)])
    draws = torch.randn(2, generator=_gen(5), dtype=torch.float64) * 2.0
    assert metrics["dp/noise_std"] == 2.0
    assert torch.allclose(mean.double(), (plain.total + draws) / 2.0, atol=1e-6)
