"""Tests for federated.sampling: determinism, order and round independence, exact cohort sizes,
empirical selection / drop-out / availability rates against the configured ones (5 sd,
fixed seeds), over-selection, and errors."""

import json
import math
import random

import numpy as np
import pytest

from federated.sampling import (
    Cohort,
    SamplingConfig,
    SamplingError,
    client_availability,
    rounds_per_epoch,
    sample_round,
    sampling_probability,
)

IDS = [f"user{i:04d}" for i in range(200)]


def _check_partition(c: Cohort) -> None:
    for part in (c.sampled, c.reporting, c.dropped, c.not_needed):
        assert list(part) == sorted(part)
    parts = [*c.reporting, *c.dropped, *c.not_needed]
    assert len(parts) == len(set(parts))
    assert set(parts) == set(c.sampled)


def test_uniform_cohort_size_exact_and_deterministic():
    config = SamplingConfig(cohort_size=17)
    c = sample_round(IDS, config, seed=3, round=5)
    assert len(c.sampled) == 17 and len(set(c.sampled)) == 17
    assert c.reporting == c.sampled and c.dropped == () and c.not_needed == ()
    assert c.round == 5
    assert set(c.sampled) <= set(IDS)
    assert sample_round(IDS, config, seed=3, round=5) == c
    assert sample_round(IDS, config, seed=4, round=5).sampled != c.sampled
    assert sample_round(IDS, config, seed=3, round=6).sampled != c.sampled


@pytest.mark.parametrize("config", [
    SamplingConfig(cohort_size=20, dropout=0.3, over_selection=0.3),
    SamplingConfig(kind="poisson", rate=0.1, dropout=0.2, availability=(2.0, 2.0)),
    SamplingConfig(kind="shuffle", cohort_size=30, dropout=0.2, availability=(2.0, 2.0)),
])
def test_independent_of_client_order_and_of_earlier_rounds(config):
    shuffled = list(IDS)
    random.Random(0).shuffle(shuffled)
    alone = sample_round(IDS, config, seed=11, round=7)
    _check_partition(alone)
    assert sample_round(shuffled, config, seed=11, round=7) == alone
    assert sample_round(tuple(reversed(IDS)), config, seed=11, round=7) == alone
    # A run that went through rounds 0..6 first gets the same round 7 (no hidden state).
    for r in range(7):
        sample_round(IDS, config, seed=11, round=r)
    assert sample_round(shuffled, config, seed=11, round=7) == alone


def test_uniform_inclusion_rate_per_client():
    # 50 clients, cohort 10, 2000 rounds: each client's count ~ Binomial(2000, 0.2):
    # mean 400, sd sqrt(2000*0.2*0.8) = 17.9; every client within 5 sd (89.4).
    ids = IDS[:50]
    config = SamplingConfig(cohort_size=10)
    counts = dict.fromkeys(ids, 0)
    for r in range(2000):
        for c in sample_round(ids, config, seed=1, round=r).sampled:
            counts[c] += 1
    assert all(abs(v - 400) < 5 * 17.9 for v in counts.values())


def test_poisson_empirical_rate():
    # 200 clients, rate 0.05, 400 rounds: total ~ Binomial(80000, 0.05): mean 4000,
    # sd sqrt(80000*0.05*0.95) = 61.6; within 5 sd (308). Cohort sizes vary (not fixed).
    config = SamplingConfig(kind="poisson", rate=0.05)
    sizes = [len(sample_round(IDS, config, seed=2, round=r).sampled) for r in range(400)]
    assert abs(sum(sizes) - 4000) < 5 * 61.6
    assert len(set(sizes)) > 3
    c = sample_round(IDS, config, seed=2, round=0)
    assert c.reporting == c.sampled


def test_poisson_rate_one_selects_everyone():
    c = sample_round(IDS, SamplingConfig(kind="poisson", rate=1.0), seed=0, round=0)
    assert c.sampled == tuple(IDS) == c.reporting


def test_dropout_empirical_rate():
    # cohort 100 of 200, dropout 0.3, 50 rounds: dropped ~ Binomial(5000, 0.3): mean 1500,
    # sd sqrt(5000*0.3*0.7) = 32.4; within 5 sd (162).
    config = SamplingConfig(cohort_size=100, dropout=0.3)
    dropped = 0
    for r in range(50):
        c = sample_round(IDS, config, seed=5, round=r)
        _check_partition(c)
        assert len(c.sampled) == 100 and c.not_needed == ()
        dropped += len(c.dropped)
    assert abs(dropped - 1500) < 5 * 32.4


def test_dropout_zero_and_one_force_each_branch():
    c0 = sample_round(IDS, SamplingConfig(cohort_size=30, dropout=0.0), seed=1, round=0)
    assert c0.reporting == c0.sampled and c0.dropped == ()
    c1 = sample_round(IDS, SamplingConfig(cohort_size=30, dropout=1.0), seed=1, round=0)
    assert c1.reporting == () and c1.dropped == c1.sampled
    # Drop-out does not change who is selected.
    assert c0.sampled == c1.sampled


def test_availability_follows_beta():
    # Beta(2, 6): mean 2/8 = 0.25, variance ab/((a+b)^2 (a+b+1)) = 12/(64*9) = 0.0208333.
    # 4000 clients: the sample mean has sd sqrt(0.0208333/4000) = 0.00228 (5 sd = 0.0114);
    # the sample variance is checked to 15%.
    a = np.array([client_availability(f"c{i}", (2.0, 6.0), 9) for i in range(4000)])
    assert abs(a.mean() - 0.25) < 5 * 0.00228
    assert abs(a.var() / 0.0208333 - 1) < 0.15
    assert ((a > 0) & (a < 1)).all()
    # Drawn once per client: the same value again, another seed another value.
    assert client_availability("c0", (2.0, 6.0), 9) == a[0]
    assert client_availability("c0", (2.0, 6.0), 10) != a[0]


def test_per_client_report_rate_is_its_availability_times_one_minus_dropout():
    # Everyone selected (poisson rate 1), 20 clients, 1500 rounds, dropout 0.2: client c reports
    # with probability p_c = 0.8 * a_c; its count has sd sqrt(1500 p (1 - p)) <= 19.4, so each
    # client's report rate is within 5 * 19.4 / 1500 = 0.065 of p_c.
    ids = IDS[:20]
    config = SamplingConfig(kind="poisson", rate=1.0, dropout=0.2, availability=(1.0, 1.0))
    counts = dict.fromkeys(ids, 0)
    for r in range(1500):
        c = sample_round(ids, config, seed=4, round=r)
        for cid in c.reporting:
            counts[cid] += 1
    rates = {cid: 0.8 * client_availability(cid, (1.0, 1.0), 4) for cid in ids}
    for cid in ids:
        sd = math.sqrt(rates[cid] * (1 - rates[cid]) / 1500)
        assert abs(counts[cid] / 1500 - rates[cid]) < 5 * sd + 1e-9
    # The per-client rates really differ (Beta(1, 1) is uniform): some clients are rarely there.
    assert min(rates.values()) < 0.25 and max(rates.values()) > 0.55


def test_shuffle_epochs_are_permutations_without_repeats():
    # 200 clients, cohort 30: 6 rounds an epoch, 20 clients sit each epoch out.
    config = SamplingConfig(kind="shuffle", cohort_size=30)
    assert rounds_per_epoch(config, 200) == 6
    epochs = []
    for e in range(4):
        seen = []
        for r in range(6 * e, 6 * e + 6):
            c = sample_round(IDS, config, seed=7, round=r)
            _check_partition(c)
            assert len(c.sampled) == 30 and c.reporting == c.sampled
            seen.extend(c.sampled)
        assert len(seen) == len(set(seen)) == 180  # no client twice within an epoch
        epochs.append(frozenset(seen))
        # Deterministic for a seed; another seed shuffles otherwise.
        assert sample_round(IDS, config, seed=7, round=6 * e) == \
            sample_round(IDS, config, seed=7, round=6 * e)
    assert sample_round(IDS, config, seed=8, round=0).sampled != \
        sample_round(IDS, config, seed=7, round=0).sampled
    # Each epoch is a fresh permutation: other clients sit out, and the cohorts differ.
    assert len(set(epochs)) == 4
    assert sample_round(IDS, config, seed=7, round=0).sampled != \
        sample_round(IDS, config, seed=7, round=6).sampled


def test_shuffle_uses_every_client_when_the_cohort_divides_them():
    config = SamplingConfig(kind="shuffle", cohort_size=8)
    ids = IDS[:40]
    for e in range(3):
        seen = [c for r in range(5 * e, 5 * e + 5)
                for c in sample_round(ids, config, seed=1, round=r).sampled]
        assert sorted(seen) == ids
    # Every client sits out now and then when 200 = 6 * 30 + 20: 20 per epoch, 50 epochs.
    config = SamplingConfig(kind="shuffle", cohort_size=30)
    counts = dict.fromkeys(IDS, 0)
    for r in range(6 * 50):
        for c in sample_round(IDS, config, seed=2, round=r).sampled:
            counts[c] += 1
    assert max(counts.values()) <= 50 and min(counts.values()) < 50
    assert sum(counts.values()) == 50 * 180


def test_shuffle_dropout_applies_to_the_selected():
    base = SamplingConfig(kind="shuffle", cohort_size=20)
    all_drop = SamplingConfig(kind="shuffle", cohort_size=20, dropout=1.0)
    a = sample_round(IDS, base, seed=3, round=4)
    b = sample_round(IDS, all_drop, seed=3, round=4)
    assert a.sampled == b.sampled and b.reporting == () and b.dropped == b.sampled


def test_over_selection_keeps_cohort_size_reporting():
    # cohort 10, over-selection 0.3 -> ceil(13.0) = 13 selected; dropout 0.1.
    config = SamplingConfig(cohort_size=10, over_selection=0.3, dropout=0.1)
    full = 0
    for r in range(100):
        c = sample_round(IDS, config, seed=8, round=r)
        _check_partition(c)
        assert len(c.sampled) == 13
        reported = len(c.reporting) + len(c.not_needed)
        assert len(c.reporting) == min(10, reported)
        assert len(c.not_needed) == max(0, reported - 10)
        full += len(c.reporting) == 10
    # P(at least 10 of 13 report) = P(Binomial(13, 0.9) >= 10) = 0.966: nearly every round.
    assert full >= 85


def test_over_selection_130_percent_is_130():
    # 100 * 1.3 is 130.00000000000003 in floating point; the cohort must still be 130.
    c = sample_round([f"u{i}" for i in range(1000)],
                     SamplingConfig(cohort_size=100, over_selection=0.3), seed=0, round=0)
    assert len(c.sampled) == 130 and len(c.reporting) == 100 and len(c.not_needed) == 30


def test_over_selection_capped_at_population():
    c = sample_round(IDS[:12], SamplingConfig(cohort_size=10, over_selection=0.5), seed=0,
                     round=0)
    assert len(c.sampled) == 12 and len(c.reporting) == 10


def test_sampling_probability():
    assert sampling_probability(SamplingConfig(cohort_size=10), 100) == 0.1
    assert sampling_probability(SamplingConfig(cohort_size=10, over_selection=0.3), 100) == 0.13
    assert sampling_probability(SamplingConfig(kind="poisson", rate=0.02), 100) == 0.02
    assert sampling_probability(SamplingConfig(kind="shuffle", cohort_size=30), 200) == 0.15
    with pytest.raises(SamplingError, match="exceeds"):
        sampling_probability(SamplingConfig(kind="shuffle", cohort_size=10), 9)
    with pytest.raises(SamplingError, match="only shuffle sampling has epochs"):
        rounds_per_epoch(SamplingConfig(cohort_size=10), 100)
    with pytest.raises(SamplingError, match="exceeds"):
        sampling_probability(SamplingConfig(cohort_size=10), 9)
    with pytest.raises(SamplingError, match="num_clients"):
        sampling_probability(SamplingConfig(cohort_size=1), 0)


def test_config_json_round_trip():
    for c in (SamplingConfig(cohort_size=5, dropout=0.1, availability=(2, 3), over_selection=0.3),
              SamplingConfig(kind="poisson", rate=0.5),
              SamplingConfig(kind="shuffle", cohort_size=4, dropout=0.2)):
        assert SamplingConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    c = sample_round(IDS, SamplingConfig(cohort_size=3), seed=0, round=1)
    assert json.loads(json.dumps(c.to_dict()))["sampled"] == list(c.sampled)


@pytest.mark.parametrize("kw, match", [
    (dict(), "cohort_size"),
    (dict(kind="random", cohort_size=3), "unknown sampling kind"),
    (dict(cohort_size=0), "cohort_size"),
    (dict(cohort_size=3, rate=0.1), "rate applies"),
    (dict(kind="poisson"), "needs rate"),
    (dict(kind="poisson", rate=0.0), "rate"),
    (dict(kind="poisson", rate=1.5), "rate"),
    (dict(kind="poisson", rate=0.1, cohort_size=3), "cohort_size applies"),
    (dict(kind="poisson", rate=0.1, over_selection=0.3), "over_selection"),
    (dict(cohort_size=3, dropout=1.1), "dropout"),
    (dict(cohort_size=3, over_selection=-0.1), "over_selection"),
    (dict(cohort_size=3, availability=(0.0, 1.0)), "availability"),
    (dict(cohort_size=3, availability=(1.0,)), "availability"),
    (dict(kind="shuffle"), "shuffle sampling needs cohort_size"),
    (dict(kind="shuffle", cohort_size=3, rate=0.1), "rate applies"),
    (dict(kind="shuffle", cohort_size=3, over_selection=0.3), "over_selection"),
])
def test_config_errors(kw, match):
    with pytest.raises(SamplingError, match=match):
        SamplingConfig(**kw)


def test_from_dict_unknown_key():
    with pytest.raises(SamplingError, match="clients_per_round"):
        SamplingConfig.from_dict({"cohort_size": 3, "clients_per_round": 3})


def test_sample_round_errors():
    config = SamplingConfig(cohort_size=5)
    with pytest.raises(SamplingError, match="exceeds"):
        sample_round(IDS[:4], config, seed=0, round=0)
    with pytest.raises(SamplingError, match="no clients"):
        sample_round([], config, seed=0, round=0)
    with pytest.raises(SamplingError, match="duplicate client id 'user0001'"):
        sample_round([*IDS[:6], "user0001"], config, seed=0, round=0)
    with pytest.raises(SamplingError, match="strings"):
        sample_round([1, 2, 3, 4, 5], config, seed=0, round=0)
    with pytest.raises(SamplingError, match="round"):
        sample_round(IDS, config, seed=0, round=-1)
