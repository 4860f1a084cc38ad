"""Alignment and labelling: hand-made goldens per edit type, invariants, and agreement with the
simulator's own provenance."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyboard_sim import POSTURES, simulate
from keyboard_sim.align import Agreement, agreement, align, char_ops
from keyboard_sim.channels import Channel
from keyboard_sim.lexicon import Lexicon
from keyboard_sim.pair import Edit, Pair

C = Channel


def edits(clean: str, noisy: str, lexicon=None) -> list[tuple]:
    return [tuple(e) for e in align(clean, noisy, lexicon).edits]


# One tiny example per channel: (clean, noisy, expected edits as (type, cs, ce, ns, ne)).
GOLDENS = [
    ("cat", "cst", [(C.SUBSTITUTION, 1, 2, 1, 2)]),
    ("cat", "ct", [(C.OMISSION, 1, 2, 1, 1)]),
    ("cat", "caat", [(C.DOUBLE_TAP, 1, 1, 1, 2)]),
    ("cat", "cart", [(C.NEIGHBOR_INSERTION, 2, 2, 2, 3)]),
    ("cat", "cta", [(C.TRANSPOSITION, 1, 3, 1, 3)]),
    ("a cat", "ancat", [(C.SPACE_SUBSTITUTION, 1, 2, 1, 2)]),
    ("cabin", "ca in", [(C.SPACE_INSERTION, 2, 3, 2, 3)]),
    ("a cat", "acat", [(C.SPACE_OMISSION, 1, 2, 1, 1)]),
    ("don't", "dont", [(C.DROP_APOSTROPHE, 3, 4, 3, 3)]),
    ("The", "the", [(C.DROP_CAPITAL, 0, 1, 0, 1)]),
    ("café", "cafe", [(C.SIMPLIFY_ACCENT, 3, 4, 3, 4)]),
    ("cat.", "cat", [(C.DROP_PUNCTUATION, 3, 4, 3, 3)]),
    # Slips on neighbouring letters of one word: one cognitive misspelling of the whole word.
    ("see you tonight", "see you tonite", [(C.MISSPELLING, 8, 15, 8, 14)]),
    ("go pretty far", "go prteey far", [(C.MISSPELLING, 3, 9, 3, 9)]),
]


@pytest.mark.parametrize(("clean", "noisy", "expected"), GOLDENS)
def test_each_edit_type_golden(clean, noisy, expected):
    assert edits(clean, noisy) == expected


def test_identical_and_empty_strings_have_no_edits():
    assert edits("same text", "same text") == []
    assert edits("", "") == []
    assert edits("", "ab") == [(C.NEIGHBOR_INSERTION, 0, 0, 0, 1),
                               (C.NEIGHBOR_INSERTION, 0, 0, 1, 2)]
    assert edits("a", "") == [(C.OMISSION, 0, 1, 0, 0)]


def test_slips_far_apart_stay_separate():
    # Two substitutions 9 letters apart in one word are two motor slips, not a misspelling;
    # so are two transpositions with a letter between them (CLUSTER_GAP is 0).
    assert edits("conditions", "xonditionz") == [
        (C.SUBSTITUTION, 0, 1, 0, 1),
        (C.SUBSTITUTION, 9, 10, 9, 10),
    ]
    assert edits("conditions", "condtiinos") == [
        (C.TRANSPOSITION, 4, 6, 4, 6),
        (C.TRANSPOSITION, 7, 9, 7, 9),
    ]


def test_double_tap_is_found_whichever_copy_the_alignment_picks():
    # Insertions and deletions in a run of equal letters sit at the run's start, where the
    # simulator records the doubled letter.
    assert edits("see", "seee") == [(C.DOUBLE_TAP, 1, 1, 1, 2)]
    assert edits("see", "se") == [(C.OMISSION, 1, 2, 1, 1)]
    assert [e[0] for e in edits("busy", "bussy")] == [C.DOUBLE_TAP]
    assert [e[0] for e in edits("the  cat", "the   cat")] == [C.DOUBLE_TAP]


def test_case_and_class_ties():
    # A capital dropped next to an omission aligns T with t, not as an insertion and deletion.
    assert edits("The", "te") == [(C.DROP_CAPITAL, 0, 1, 0, 1), (C.OMISSION, 1, 2, 1, 1)]
    # A doubled letter and a dropped full stop, not two substitutions across classes.
    assert [e[0] for e in edits("Tuesday.", "Tuesdaay")] == [C.DOUBLE_TAP, C.DROP_PUNCTUATION]


def test_lexicon_words():
    lex = Lexicon(MappingProxyType({"because": ("becuase",)}),
                  MappingProxyType({"their": ("there",), "there": ("their",)}), "test")
    # A listed misspelling is one edit over the word even though a single transposition explains
    # it; without the lexicon it is that transposition.
    assert edits("just because", "just becuase", lex) == [(C.MISSPELLING, 5, 12, 5, 12)]
    assert edits("just because", "just becuase") == [(C.TRANSPOSITION, 8, 10, 8, 10)]
    # A confusion-set partner is a real-word error; the word keeps its case pattern.
    assert edits("Their dog", "There dog", lex) == [(C.REAL_WORD, 0, 5, 0, 5)]


def test_retyped_word_with_inserted_space_stays_consistent():
    # Regression: the inserted space inside a retyped word must go into the merged edit.
    a = align("call you Monday morning", "call you on Monday morning")
    assert a.to_pair().is_consistent()


def _osa(a: str, b: str) -> int:
    """Reference restricted Damerau-Levenshtein distance (textbook dynamic programme)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


small = st.text(alphabet="abAB .'é", max_size=12)


@settings(max_examples=400, deadline=None)
@given(small, small)
def test_alignment_is_optimal_and_edits_are_consistent(clean, noisy):
    a = align(clean, noisy)
    assert a.distance == _osa(clean, noisy)
    assert a.to_pair().is_consistent()


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abc d", min_size=60, max_size=120), st.data())
def test_band_widens_to_the_optimum_for_long_noisy_texts(clean, data):
    """Many edits or a large length change force the diagonal band to widen; still optimal."""
    noisy = list(clean)
    for _ in range(data.draw(st.integers(0, 40))):
        k = data.draw(st.integers(0, len(noisy)))
        if data.draw(st.booleans()) and k < len(noisy):
            del noisy[k]
        else:
            noisy.insert(k, data.draw(st.sampled_from("abcxyz ")))
    noisy = "".join(noisy)
    a = align(clean, noisy)
    assert a.distance == _osa(clean, noisy)
    assert a.to_pair().is_consistent()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_arbitrary_unicode_never_crashes(clean, noisy):
    a = align(clean, noisy)
    assert a.to_pair().is_consistent()
    assert len(char_ops(clean, noisy)) == a.distance


def test_agreement_counts_and_merges():
    p = Pair("0", "cat", "ct", (Edit(C.OMISSION, 1, 2, 1, 1),))
    q = Pair("1", "cat", "cst", (Edit(C.OMISSION, 1, 2, 1, 1),))  # wrong provenance on purpose
    one, two = agreement([p]), agreement([q])
    both = one + two
    assert isinstance(both, Agreement)
    assert (both.pairs, both.pairs_equal, both.edits, both.edits_found) == (2, 1, 2, 1)
    assert both.confusion[(C.OMISSION, C.SUBSTITUTION)] == 1
    assert both.edit_rate == 0.5


# Chat-like sentences for the checks against the simulator (no external data needed).
SENTENCES = [
    "I'm not sure we can make it tonight, sorry!",
    "The meeting moved to Thursday at 3pm.",
    "Did you see what she said about the new café?",
    "Let's grab lunch tomorrow if you're free.",
    "We don't have time for that right now.",
    "Thanks so much, that was really helpful.",
] * 150


@pytest.mark.parametrize(
    ("channel", "rate", "min_recall"),
    [
        (C.OMISSION, 0.02, 0.75),
        (C.DOUBLE_TAP, 0.02, 0.75),
        (C.NEIGHBOR_INSERTION, 0.02, 0.75),
        (C.TRANSPOSITION, 0.02, 0.6),
        (C.SPACE_OMISSION, 0.05, 0.9),
        (C.SPACE_SUBSTITUTION, 0.05, 0.9),
        (C.DROP_APOSTROPHE, 0.5, 0.7),
        (C.DROP_CAPITAL, 0.5, 0.9),
        (C.DROP_PUNCTUATION, 0.5, 0.9),
        (C.SIMPLIFY_ACCENT, 0.5, 0.9),
        (C.MISSPELLING, 0.2, 0.9),
    ],
)
def test_each_channel_alone_is_labelled_as_itself(channel, rate, min_recall):
    """With one channel on (exact taps), re-aligned labels recover the provenance's type.

    The floors are below the measured recall (which is 0.8 to 1.0): some outputs are genuinely
    ambiguous (an omitted full stop is a dropped punctuation mark; a transposition or omission
    that gives a listed misspelling reads as that misspelling).
    """
    profile = POSTURES["two_thumbs"].only(channel, rate)
    pairs = simulate(SENTENCES, profile, "en-US", seed=3)
    ag = agreement(pairs, _lexicon())
    n, found = ag.by_type[channel]
    assert n > 50
    assert found / n >= min_recall, (found, n, ag.confusion.most_common(5))


def test_agreement_with_the_physical_preset():
    """All channels together at the physical preset's rates: most edits are recovered."""
    pairs = simulate(SENTENCES, "physical", "en-US-physical", seed=4)
    ag = agreement(pairs, _lexicon())
    assert ag.edits > 200
    assert ag.edit_rate >= 0.75
    assert ag.pair_rate >= 0.8


def _lexicon():
    from keyboard_sim.lexicon import load_lexicon

    return load_lexicon("codespell")
