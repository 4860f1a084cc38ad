"""The keyboard likelihood: touch table, hand-computed goldens per channel, and the simulator."""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
import pytest

from keyboard_sim import load_layout, simulate
from keyboard_sim.channels import Channel
from keyboard_sim.presets import raw_profile
from keyboard_sim.touch import miss_probability
from models.keyboard_likelihood import KeyboardLikelihood, LikelihoodError

RAW = raw_profile()
# The raw typist without the FFitts speed term, which the likelihood leaves out.
RAW_STILL = dataclasses.replace(RAW, keystroke_ms=0.0)


@pytest.fixture(scope="module")
def raw_kl():
    return KeyboardLikelihood("en-US", RAW_STILL, lexicon="codespell")


def test_touch_table_rows_are_distributions_and_match_the_analytic_miss(raw_kl):
    table = raw_kl.touch_table
    assert np.allclose(table.sum(axis=2), 1.0, atol=1e-12)
    layout = load_layout("en-US")
    g = layout.find_key("letters", text="g")
    key = layout.keys[g]
    # g is left of the middle: the left thumb, whose x offset is not mirrored. Its decoding
    # cell is its own rectangle, so the hit rate is the analytic one of keyboard_sim.touch.
    miss = miss_probability(key.w, key.h, RAW.sigma_x_mm, RAW.sigma_y_mm, RAW.offset_x_mm,
                            RAW.offset_y_mm)
    assert math.isclose(raw_kl.substitution_probs("g")["g"], 1 - miss, rel_tol=1e-12)
    assert math.isclose(sum(raw_kl.substitution_probs("g").values()), 1.0, rel_tol=1e-12)


def test_identity_is_most_likely_and_neighbours_beat_far_keys(raw_kl):
    variants = ["hello", "gello", "hrllo", "helo", "hlelo", "helllo", "jello", "pello", "Hello"]
    scores = {v: raw_kl.log_prob(v, "hello") for v in variants}
    assert max(scores, key=scores.get) == "hello"
    assert scores["gello"] > scores["pello"]  # g touches h; p is on the far side of the board
    assert scores["jello"] > scores["pello"]
    assert scores["Hello"] == -math.inf  # a lowercase letter is never typed capitalised
    assert raw_kl.log_prob("Teh", "the") == -math.inf


def _only(channel: Channel, rate: float):
    return KeyboardLikelihood("en-US", RAW.only(channel, rate))


def test_omission_and_double_tap_goldens():
    r = 0.1
    kl = _only(Channel.OMISSION, r)
    # Either l may be left out: two alignments, both counted.
    assert math.isclose(kl.prob("helo", "hello"), 2 * r * (1 - r) ** 4, rel_tol=1e-12)
    assert math.isclose(kl.prob("hllo", "hello"), r * (1 - r) ** 4, rel_tol=1e-12)
    assert math.isclose(kl.prob("hello", "hello"), (1 - r) ** 5, rel_tol=1e-12)
    kl = _only(Channel.DOUBLE_TAP, r)
    assert math.isclose(kl.prob("helllo", "hello"), 2 * r * (1 - r) ** 4, rel_tol=1e-12)


def test_transposition_golden_follows_the_every_other_rule():
    r = 0.05
    kl = _only(Channel.TRANSPOSITION, r)
    # t, h, e are typed by left, right, left thumb: both pairs cross hands (rate x 2).
    p = r * RAW.cross_hand_factor
    assert math.isclose(kl.prob("hte", "the"), p, rel_tol=1e-12)
    assert math.isclose(kl.prob("teh", "the"), (1 - p) * p, rel_tol=1e-12)
    assert math.isclose(kl.prob("the", "the"), (1 - p) ** 2, rel_tol=1e-12)


def test_habit_goldens():
    kl = _only(Channel.DROP_CAPITAL, 0.3)
    assert math.isclose(kl.prob("hello", "Hello"), 0.3, rel_tol=1e-12)
    kl = _only(Channel.DROP_APOSTROPHE, 0.2)
    assert math.isclose(kl.prob("dont", "don't"), 0.2, rel_tol=1e-12)
    assert math.isclose(kl.prob("don't", "don't"), 0.8, rel_tol=1e-12)


def _compare(kl, profile, word, n, seed):
    """(largest |z| of a frequent variant, total variation over the frequent variants and one
    bin for all the rest), simulated against scored."""
    pairs = simulate([word] * n, profile, "en-US", seed=seed)
    counts = collections.Counter(p.noisy for p in pairs)
    worst, tv = 0.0, 0.0
    rest_seen, rest_model = 0, 1.0
    for typed, k in counts.items():
        p = kl.prob(typed, word)
        if n * p >= 20:
            worst = max(worst, abs(k - n * p) / math.sqrt(n * p * (1 - p)))
            tv += abs(k / n - p) / 2
            rest_model -= p
        else:
            rest_seen += k
    return worst, tv + abs(rest_seen / n - rest_model) / 2


@pytest.mark.parametrize("word", ["hello", "Don't"])
def test_matches_the_simulator(raw_kl, word):
    # Every channel of the raw preset on (words, habits, slips, touch, shift and layer-switch
    # taps) except the FFitts speed term. Each typed variant expected 20+ times in 20,000
    # simulated copies must be within 4 sd of its binomial count, and the total variation over
    # those variants and one bin for the rest within 0.02 (measured: |z| 2.3 and 2.5, total
    # variation 0.013 for both).
    worst, tv = _compare(raw_kl, RAW_STILL, word, 20_000, seed=11)
    assert worst < 4.0
    assert tv < 0.02


def test_speed_term_is_a_small_approximation():
    # With the FFitts term on (the raw preset as shipped) the likelihood is an approximation;
    # the total variation for "the" measured 0.010 (the same as sampling noise alone).
    kl = KeyboardLikelihood("en-US", RAW, lexicon="codespell")
    _, tv = _compare(kl, RAW, "the", 20_000, seed=3)
    assert tv < 0.03


def test_bad_input_is_named():
    kl = KeyboardLikelihood("en-US", "raw")
    with pytest.raises(LikelihoodError, match="one word"):
        kl.log_prob("a b", "a b")
    with pytest.raises(TypeError):
        kl.log_prob(b"the", "the")
    with pytest.raises(LikelihoodError, match="cannot type"):
        kl.substitution_probs("\U0001f600")
