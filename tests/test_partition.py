"""data.partition: clients and splits are pure functions of (seed, names), with the stated skew."""

import json
from collections import Counter

import numpy as np
import pytest

from data.partition import (
    IID,
    OVER_USER_CAP,
    Dirichlet,
    Natural,
    PartitionError,
    PartitionStats,
    PerUserCap,
    UserSplit,
    partitioner_from_dict,
    time_order,
    time_split,
    time_split_count,
    time_split_index,
    user_split,
)
from data.record import Message, derive_seed


def _messages(n, labels=("a",), user=""):
    return [Message(f"m{i}", user, "hi", line=i + 1, label=labels[i % len(labels)])
            for i in range(n)]


# --- Partitioners ----------------------------------------------------------------------------


def test_natural_uses_the_user_and_names_a_record_without_one():
    assert Natural().client_of(Message("1", "alice", "hi")) == "alice"
    with pytest.raises(PartitionError, match=r"record 'x7' \(line 8\).*no user"):
        Natural().client_of(Message("x7", "", "hi", line=8))
    assert issubclass(PartitionError, ValueError)


def test_iid_is_deterministic_order_independent_and_seeded():
    msgs = _messages(500)
    part = IID(7, seed=3)
    forward = {m.id: part.client_of(m) for m in msgs}
    backward = {m.id: part.client_of(m) for m in reversed(msgs)}
    assert forward == backward
    assert forward == {m.id: IID(7, seed=3).client_of(m) for m in msgs}
    assert forward != {m.id: IID(7, seed=4).client_of(m) for m in msgs}
    assert set(forward.values()) == {f"iid-{k}" for k in range(7)}


def test_iid_is_balanced():
    n, k = 20000, 10
    counts = Counter(IID(k, seed=0).client_of(m) for m in _messages(n))
    # Each count is Binomial(n, 1/k): sd = sqrt(20000 * 0.1 * 0.9) = 42.4; allow 4 sd.
    sd = (n * (1 / k) * (1 - 1 / k)) ** 0.5
    assert len(counts) == k
    assert all(abs(c - n / k) < 4 * sd for c in counts.values()), counts


def test_partitioners_validate_their_config():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_clients"):
            IID(bad)
    for bad in (0, -0.5, float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            Dirichlet(5, bad)


def test_dirichlet_label_distribution_is_the_documented_draw():
    part = Dirichlet(6, 0.5, seed=11)
    p = part.label_distribution("sports")
    expected = np.random.default_rng(derive_seed(11, "dirichlet", "sports")).dirichlet(
        np.full(6, 0.5))
    np.testing.assert_array_equal(p, expected)
    assert not p.flags.writeable


def test_dirichlet_is_deterministic_and_order_independent():
    msgs = _messages(600, labels=("x", "y", "z"))
    part = Dirichlet(8, 0.3, seed=2)
    forward = {m.id: part.client_of(m) for m in msgs}
    # Labels met in another order, and a message seen alone, give the same clients.
    backward = {m.id: Dirichlet(8, 0.3, seed=2).client_of(m) for m in reversed(msgs)}
    assert forward == backward
    assert forward != {m.id: Dirichlet(8, 0.3, seed=5).client_of(m) for m in msgs}


def test_dirichlet_follows_the_label_distribution():
    n, k = 20000, 5
    part = Dirichlet(k, 1.0, seed=0)
    counts = Counter(part.client_of(m) for m in _messages(n, labels=("only",)))
    p = part.label_distribution("only")
    for j in range(k):
        sd = (n * p[j] * (1 - p[j])) ** 0.5
        assert abs(counts[f"dir-{j}"] - n * p[j]) < 4 * sd + 1, (j, counts, p)


def _mean_max_share(alpha):
    labels = [f"l{i}" for i in range(40)]
    part = Dirichlet(10, alpha, seed=0)
    per_label: dict[str, Counter] = {}
    for m in _messages(8000, labels=labels):
        per_label.setdefault(m.label, Counter())[part.client_of(m)] += 1
    return float(np.mean([max(c.values()) / sum(c.values()) for c in per_label.values()]))


def test_dirichlet_skew_grows_as_alpha_falls():
    skewed, even = _mean_max_share(0.1), _mean_max_share(100.0)
    # Measured: 0.1 -> 0.64, 100 -> 0.14. With 10 clients an even split has max share near
    # 0.1 (plus sampling noise of 200 messages per label); alpha=0.1 puts most on one client.
    assert skewed > 0.5
    assert even < 0.25


def test_dirichlet_names_a_record_without_label():
    with pytest.raises(PartitionError, match=r"record 'q': no label"):
        Dirichlet(3, 1.0).client_of(Message("q", "u", "hi"))


def test_partitioner_dicts_round_trip():
    for part in (Natural(), IID(4, seed=9), Dirichlet(3, 0.25, seed=1)):
        assert partitioner_from_dict(json.loads(json.dumps(part.to_dict()))) == part
    with pytest.raises(ValueError, match="unknown partition kind"):
        partitioner_from_dict({"kind": "random"})
    with pytest.raises(ValueError, match="iid"):
        partitioner_from_dict({"kind": "iid", "clients": 3})


# --- Per-user cap --------------------------------------------------------------------------


def test_cap_keeps_the_first_messages_of_each_client():
    cap = PerUserCap(2)
    state = cap.init()
    reasons = [cap.admit(state, c) for c in ["a", "a", "b", "a", "b", "a", "c", "b"]]
    assert reasons == [None, None, None, OVER_USER_CAP, None, OVER_USER_CAP, None, OVER_USER_CAP]
    assert OVER_USER_CAP == "over_user_cap"
    assert state.counts == Counter({"a": 4, "b": 3, "c": 1})
    assert (state.kept, state.dropped) == (5, 3)
    assert cap.keep_mask(["x", "x", "x"]) == [True, True, False]
    with pytest.raises(ValueError, match="max_messages"):
        PerUserCap(0)


# --- Splits ----------------------------------------------------------------------------------


def test_user_split_is_deterministic_and_has_the_fractions():
    n = 20000
    ids = [f"user{i}" for i in range(n)]
    split = UserSplit(0.7, 0.2, 0.1, seed=4)
    got = [split.split_of(c) for c in ids]
    assert got == [user_split(c, 4, (0.7, 0.2, 0.1)) for c in ids]
    assert got != [user_split(c, 5, (0.7, 0.2, 0.1)) for c in ids]
    counts = Counter(got)
    for name, f in zip(("train", "val", "test"), split.fractions, strict=True):
        sd = (n * f * (1 - f)) ** 0.5
        assert abs(counts[name] - n * f) < 4 * sd, counts


def test_user_split_edges_and_validation():
    assert {user_split(f"u{i}", 0, (1.0, 0.0, 0.0)) for i in range(200)} == {"train"}
    assert {user_split(f"u{i}", 0, (0.0, 0.0, 1.0)) for i in range(200)} == {"test"}
    with pytest.raises(ValueError, match="sum to 1"):
        UserSplit(0.8, 0.1, 0.2)
    with pytest.raises(ValueError, match="three numbers"):
        user_split("u", 0, (1.2, -0.2, 0.0))
    assert UserSplit.from_dict(UserSplit(seed=3).to_dict()) == UserSplit(seed=3)


def test_time_split_count_rounding():
    assert time_split_count(30, 0.1) == 3  # 0.1 * 30 is 3.0000000000000004 in floats
    assert time_split_count(10, 0.25) == 3  # ceil(2.5)
    assert time_split_count(2, 0.1) == 1  # ceil: every user with 2+ messages gets a test one
    assert time_split_count(1, 0.5) == 0  # a single message stays in train
    assert time_split_count(0, 0.5) == 0
    assert time_split_count(5, 1.0) == 4  # at least one message stays in train
    assert time_split_count(5, 0.0) == 0
    with pytest.raises(ValueError, match="test_fraction"):
        time_split_count(5, 1.5)


def test_time_split_goldens():
    # Latest two of four go to test; the untimed one sorts right after its predecessor (t=2).
    assert time_split([3.0, 1.0, 2.0, None], 0.5) == ["test", "train", "train", "test"]
    # Ties go by position: ceil(0.34 * 3) = 2, the last two positions.
    assert time_split([5.0, 5.0, 5.0], 0.34) == ["train", "test", "test"]
    # No times: position order.
    assert time_split([None, None, None, None], 0.25) == ["train", "train", "train", "test"]
    # An untimed first message sorts first.
    assert time_order([None, 2.0, 1.0]) == [0, 2, 1]
    assert time_split([7.0], 0.9) == ["train"]
    assert time_split([], 0.5) == []
    with pytest.raises(ValueError, match="finite"):
        time_order([1.0, float("nan")])


def test_time_split_index_matches_time_split():
    rng = np.random.default_rng(0)
    for n in range(1, 30):
        times = [None if rng.random() < 0.2 else float(rng.integers(0, 5)) for _ in range(n)]
        labels = time_split(times, 0.3)
        order = time_order(times)
        assert [labels[i] for i in order] == [time_split_index(k, n, 0.3) for k in range(n)]
    with pytest.raises(ValueError, match="out of range"):
        time_split_index(3, 3, 0.5)


# --- Stats -----------------------------------------------------------------------------------


def test_partition_stats_quantiles_and_merge():
    ids = ["a", "a", "b", "c", "c", "c"]
    whole = PartitionStats.of(ids)
    assert whole.n_clients == 3 and whole.n_messages == 6
    # Counts 2, 1, 3: linear-interpolated quartiles of [1, 2, 3].
    assert whole.quantiles() == {"min": 1.0, "p25": 1.5, "p50": 2.0, "p75": 2.5, "max": 3.0}
    merged = PartitionStats.of(ids[:3]) + PartitionStats.of(ids[3:])
    assert merged.counts == whole.counts and merged.summary() == whole.summary()
    empty = PartitionStats()
    assert empty.n_clients == 0 and empty.quantiles()["max"] == 0.0
    empty.add("z", 4)
    assert empty.summary() == {"clients": 1, "messages": 4, "messages_per_client": {
        "min": 4.0, "p25": 4.0, "p50": 4.0, "p75": 4.0, "max": 4.0}}
