"""PairStats: hand-computed goldens and merge = whole."""

from __future__ import annotations

from keyboard_sim import simulate
from keyboard_sim.channels import Channel
from keyboard_sim.pair import Edit, Pair
from keyboard_sim.stats import PairStats


def test_golden_two_pairs():
    a = Pair("0", "the cat", "teh cat", (Edit(Channel.TRANSPOSITION, 1, 3, 1, 3),))
    b = Pair("1", "ok 😀", "o 😀", (Edit(Channel.OMISSION, 1, 2, 1, 1),
                                   Edit(Channel.PASSTHROUGH, 3, 4, 2, 3)))
    s = PairStats.of([a, b])
    assert (s.records, s.changed, s.clean_chars, s.passthrough) == (2, 2, 11, 1)
    # Levenshtein: "he" -> "eh" is 2, "k" -> "" is 1.
    assert s.distance == 3 and abs(s.cer - 3 / 11) < 1e-12
    assert s.edits == {"transposition": 1, "omission": 1}


def test_merge_equals_whole():
    pairs = simulate(["hello there", "how are you", "fine thanks", ""] * 30, "raw", seed=4)
    whole = PairStats.of(pairs)
    parts = PairStats.of(pairs[:50]) + PairStats.of(pairs[50:])
    assert parts == whole
