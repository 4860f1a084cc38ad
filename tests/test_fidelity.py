"""Error-mix statistics, divergences and the fidelity report."""

from __future__ import annotations

import math

import pytest

from keyboard_sim.align import align
from keyboard_sim.fidelity import (
    TYPE_ORDER,
    ErrorMix,
    FidelityReport,
    compare,
    divergence,
    fidelity_report,
    jsd,
)


def test_jsd_goldens():
    assert jsd([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0)  # counts are normalised
    assert jsd([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: one bit
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4):
    # JSD = 1/2 log2(4/3) + 1/2 (1/2 log2(2/3) + 1/2 log2(2)) = 0.3113 bits.
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert jsd([1, 0], [1, 1]) == pytest.approx(expected)
    assert jsd([1, 0], [1, 1]) == pytest.approx(jsd([1, 1], [1, 0]))  # symmetric
    assert jsd([0, 0], [0, 0]) == 0.0
    assert jsd([0, 0], [3, 1]) == 1.0


def test_error_mix_golden():
    # "The" -> "the": a dropped capital (not a slip); "cat" -> "cta": a transposition on the
    # middle letter of a three-letter word; "sat." -> "sat": a dropped full stop (no word).
    mix = ErrorMix.of(align(c, n) for c, n in [("The cat sat.", "the cta sat"),
                                              ("hello", "hello")])
    assert (mix.pairs, mix.pairs_with_error, mix.clean_chars, mix.distance, mix.words) == (
        2, 1, 17, 3, 4)
    assert dict(mix.types) == {"drop_capital": 1, "transposition": 1, "drop_punctuation": 1}
    assert mix.per_word == [2, 2, 0, 0]  # The and cat have one error each; sat and hello none
    assert mix.per_text == [1, 0, 0, 1, 0]
    assert mix.positions == [0, 0, 1, 0, 0]  # i = 1 of n = 3 letters: relative 0.5
    assert mix.places == [0, 1, 0]
    assert mix.cer == pytest.approx(3 / 17)
    assert mix.error_share == 0.5
    dist = mix.type_distribution()
    assert dist.sum() == pytest.approx(1.0) and len(dist) == len(TYPE_ORDER)


def test_insertion_position_follows_the_letter_typed_before_it():
    # "cat" -> "cart": the r follows the a (index 1 of 3), so the slip is in the middle.
    mix = ErrorMix.of([align("cat", "cart")])
    assert mix.places == [0, 1, 0]
    # An extra letter before the first one counts on the first letter.
    mix = ErrorMix.of([align("cat", "xcat")])
    assert mix.places == [1, 0, 0]


PAIRS = [("The cat sat.", "the cta sat"), ("see you soon", "see yousoon"),
         ("I don't know", "I dont kno"), ("what time is it?", "whta time is it?"),
         ("good morning", "good mornign"), ("ok", "ok")]


def test_mix_is_mergeable():
    whole = ErrorMix.of_pairs(PAIRS)
    parts = ErrorMix.of_pairs(PAIRS[:2]) + ErrorMix.of_pairs(PAIRS[2:])
    assert whole == parts


def test_divergence_of_a_mix_with_itself_is_zero():
    mix = ErrorMix.of_pairs(PAIRS)
    d = divergence(mix, mix)
    assert (d.types, d.position, d.per_text, d.combined) == (0.0, 0.0, 0.0, 0.0)


def test_compare_against_an_error_free_typist():
    """A typist who makes no error: texts-per-error diverges, edit types have nothing in common."""
    from keyboard_sim import POSTURES

    rep = compare(PAIRS, POSTURES["physical"].only(None), "en-US-physical", seed=0)
    assert rep.simulated.edits == 0 and rep.simulated.cer == 0.0
    assert rep.divergence.types == 1.0
    assert rep.divergence.per_text > 0.3
    assert rep.real == ErrorMix.of_pairs(PAIRS, _lexicon())


def test_fidelity_report_from_file(tmp_path):
    path = tmp_path / "pairs.tsv"
    lines = ["participant_id\ttest_section_id\ttarget\ttyped"]
    for i, (c, n) in enumerate(PAIRS * 10):
        lines.append(f"{i % 4}\t{i}\t{c}\t{n} ")  # a trailing space, dropped by default
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    rep = fidelity_report(path, "physical", "en-US-physical", seed=1)
    assert isinstance(rep, FidelityReport)
    assert rep.real.pairs == rep.simulated.pairs == 60
    assert rep.real == ErrorMix.of_pairs(PAIRS * 10, _lexicon())  # trailing spaces stripped
    text = rep.to_text()
    for row in ("character error rate", "edit types", "position", "combined (mean)", "real",
                "simulated"):
        assert row in text
    # Deterministic: same seed, same report; limit takes the first pairs.
    assert fidelity_report(path, "physical", "en-US-physical", seed=1).to_text() == text
    assert fidelity_report(path, "physical", "en-US-physical", limit=6).real.pairs == 6
    with pytest.raises(ValueError, match="no pairs to compare"):
        fidelity_report(path, "physical", limit=0)
    d = rep.to_dict()
    assert set(d["divergence"]) == {"types", "position", "per_text", "combined"}
    assert d["real"]["pairs"] == 60


def _lexicon():
    from keyboard_sim.lexicon import load_lexicon

    return load_lexicon("codespell")
