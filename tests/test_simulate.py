"""The public API: determinism, one record per input in order, never a crash on any text."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyboard_sim import Channel, TypistProfile, available_layouts, simulate, simulate_iter
from keyboard_sim.pair import Pair

TEXTS = [
    "Hello there, how are you doing today?",
    "",
    "I don't know 😀 café 123!",
    "Their house is near the river.",
    "ok",
    "Что ты делаешь?",
] * 20


def dump(pairs):
    return json.dumps([p.to_dict() for p in pairs], ensure_ascii=False)


def test_same_seed_same_bytes_whatever_the_chunking():
    ref = dump(simulate(TEXTS, "raw", "en-US", seed=7, touches=True))
    for chunk in (1, 3, 17, 1000):
        assert dump(simulate(TEXTS, "raw", "en-US", seed=7, touches=True,
                             chunk_size=chunk)) == ref


def test_record_output_depends_only_on_its_id():
    ids = [f"m{i}" for i in range(len(TEXTS))]
    full = simulate(TEXTS, "raw", seed=3, ids=ids)
    # Reversed order, same ids: every record is the same.
    rev = simulate(TEXTS[::-1], "raw", seed=3, ids=ids[::-1])
    assert [p.to_dict() for p in full] == [p.to_dict() for p in rev[::-1]]


def test_another_seed_differs():
    assert dump(simulate(TEXTS, "raw", seed=1)) != dump(simulate(TEXTS, "raw", seed=2))


def test_one_record_per_input_in_order():
    pairs = list(simulate_iter(iter(TEXTS), "raw", chunk_size=5))
    assert [p.clean for p in pairs] == TEXTS
    assert [p.id for p in pairs] == [str(i) for i in range(len(TEXTS))]
    assert pairs[1].noisy == "" and pairs[1].edits == ()


def test_pair_round_trips_through_dict():
    for p in simulate(TEXTS[:6], "raw", seed=1, touches=True):
        q = Pair.from_dict(json.loads(json.dumps(p.to_dict())))
        assert (q.id, q.clean, q.noisy, q.edits) == (p.id, p.clean, p.noisy, p.edits)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown layout"):
        simulate(["x"], layout="nope")
    with pytest.raises(ValueError, match="profile"):
        simulate(["x"], profile="no-such-profile")
    with pytest.raises(TypeError, match="record 1"):
        simulate(["x", None])
    with pytest.raises(ValueError, match="rate"):
        TypistProfile().with_rates(omission=1.5)
    with pytest.raises(ValueError, match="unknown error channel"):
        TypistProfile().with_rates(typo=0.1)


HEAVY = TypistProfile(name="heavy").with_rates(
    **{c.value: 0.3 for c in Channel if c not in (Channel.SUBSTITUTION, Channel.PASSTHROUGH)}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=6),
       st.sampled_from(sorted(available_layouts())), st.integers(0, 2**32))
def test_any_unicode_text_gives_a_consistent_pair(texts, layout, seed):
    pairs = simulate(texts, HEAVY, layout, seed, touches=True)
    assert len(pairs) == len(texts)
    for t, p in zip(texts, pairs, strict=True):
        assert p.clean == t
        assert p.is_consistent()
        # Spans are ordered, disjoint and inside both strings.
        c_end = 0
        for e in p.edits:
            assert c_end <= e.clean_start <= e.clean_end <= len(t)
            assert 0 <= e.noisy_start <= e.noisy_end <= len(p.noisy)
            c_end = e.clean_end
        # Characters the layout cannot type come through unchanged and are noted.
        for e in p.edits:
            if e.type == Channel.PASSTHROUGH:
                assert t[e.clean_start : e.clean_end] == p.noisy[e.noisy_start : e.noisy_end]
