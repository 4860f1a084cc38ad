"""Tests for eval.correction: goldens worked by hand, sharding, provenance, real data."""

from __future__ import annotations

import math
from pathlib import Path

import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.correction import (
    AUTOCORRECT_BETA,
    CorrectionCounts,
    CorrectionInputError,
    Identity,
    correction_counts,
    evaluate_corrector,
    split_words,
    word_spans,
)
from keyboard_sim import Channel, Edit, simulate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# The two-sentence example. Sentence 1 has two typos; the corrector fixes one and breaks a
# right word. Sentence 2 has none; the corrector breaks two words.
#   clean      "the cat sat"   (11 chars, 3 words)   "i am here"   (9 chars, 3 words)
#   noisy      "teh cst sat"                          "i am here"
#   prediction "the cst sit"                          "u am her"
# Provenance of sentence 1: "he" -> "eh" at [1, 3) (transposition), "a" -> "s" at [5, 6).
EDITS_1 = (
    Edit(Channel.TRANSPOSITION, 1, 3, 1, 3),
    Edit(Channel.SUBSTITUTION, 5, 6, 5, 6),
)


def two_sentences() -> tuple[CorrectionCounts, CorrectionCounts]:
    return (
        CorrectionCounts.of("teh cst sat", "the cat sat", "the cst sit", EDITS_1),
        CorrectionCounts.of("i am here", "i am here", "u am her", ()),
    )


def test_two_sentence_counts_by_hand():
    s1, s2 = two_sentences()
    # Sentence 1. Characters: "teh" vs "the" needs 2 operations, "cst" vs "cat" 1: 3 before;
    # "the cst sit" vs "the cat sat": s/a and i/a, 2 after. Words: teh, cst wrong before (2);
    # cst, sit wrong after (2). Gold edits (noisy -> clean): teh->the, cst->cat. System edits
    # (noisy -> prediction): teh->the, sat->sit. One in common. kebbie: "the" and "cat" had
    # typos, "the" restored (TP 1, FN 1); "sat" was right and is broken (FP 1). Provenance:
    # the transposition's word "the" is restored, the substitution's word "cat" is not.
    assert s1 == CorrectionCounts(
        messages=1, chars=11, char_errors_before=3, char_errors_after=2,
        words=3, word_errors_before=2, word_errors_after=2,
        gold_edits=2, system_edits=2, correct_edits=1,
        messages_with_errors=1, messages_fixed=0, messages_broken=0,
        words_typo=2, words_typo_fixed=1, words_broken=1,
        by_type=(("substitution", 1, 0), ("transposition", 1, 1)),
    )
    # Sentence 2. "u am her" vs "i am here": i->u and a deleted e, 2 characters; u and her are
    # wrong words (2). No gold edits; system edits i->u and here->her. kebbie: i, here broken
    # (FP 2), am kept (TN 1). A right message made wrong.
    assert s2 == CorrectionCounts(
        messages=1, chars=9, char_errors_before=0, char_errors_after=2,
        words=3, word_errors_before=0, word_errors_after=2,
        gold_edits=0, system_edits=2, correct_edits=0,
        messages_with_errors=0, messages_fixed=0, messages_broken=1,
        words_typo=0, words_typo_fixed=0, words_broken=2,
    )


def test_two_sentence_rates_by_hand():
    total = sum(two_sentences())
    # CER: (3 + 0) / (11 + 9) = 0.15 before; (2 + 2) / 20 = 0.2 after.
    assert total.cer_before == pytest.approx(0.15)
    assert total.cer_after == pytest.approx(0.2)
    # WER: (2 + 0) / 6 = 1/3 before; (2 + 2) / 6 = 2/3 after.
    assert total.wer_before == pytest.approx(1 / 3)
    assert total.wer_after == pytest.approx(2 / 3)
    # Edits: TP 1, system 4, gold 2: P = 0.25, R = 0.5,
    # F0.5 = 1.25 * 0.25 * 0.5 / (0.25 * 0.25 + 0.5) = 0.15625 / 0.5625 = 0.27777...
    assert total.edit_precision == pytest.approx(0.25)
    assert total.edit_recall == pytest.approx(0.5)
    assert total.edit_f05 == pytest.approx(0.15625 / 0.5625)
    # Messages: one with errors, not fixed (0/1); one without, broken (1/1).
    assert total.messages_fixed_share == 0.0
    assert total.message_overcorrection_rate == 1.0
    # kebbie over the 6 clean words: TP 1 (the), FN 1 (cat), FP 3 (sat, i, here), TN 1 (am).
    # P = 1/4, R = 1/2, F0.9 = 1.81 * 0.125 / (0.81 * 0.25 + 0.5) = 0.22625 / 0.7025,
    # accuracy = (1 + 1) / 6; word over-correction = FP / (FP + TN) = 3/4.
    assert total.autocorrect_precision == pytest.approx(0.25)
    assert total.autocorrect_recall == pytest.approx(0.5)
    assert AUTOCORRECT_BETA == 0.9
    assert total.autocorrect_fbeta() == pytest.approx(0.22625 / 0.7025)
    assert total.autocorrect_fbeta(1.0) == pytest.approx(2 * 0.125 / 0.75)
    assert total.autocorrect_accuracy == pytest.approx(1 / 3)
    assert total.word_overcorrection_rate == pytest.approx(0.75)
    # Provenance: substitution 0 of 1, transposition 1 of 1.
    assert total.fix_rates == {"substitution": 0.0, "transposition": 1.0}
    assert total.fix_rate(Channel.TRANSPOSITION) == 1.0
    assert math.isnan(total.fix_rate("omission"))
    d = total.to_dict()
    assert d["wer_after"] == total.wer_after and d["fix_rate"] == total.fix_rates
    assert d["counts"]["words_broken"] == 3 and d["autocorrect_fbeta"] == total.autocorrect_fbeta()


def test_kebbie_table_of_outcomes():
    # kebbie's "How testing is done" table, one outcome per clean word "love":
    # TN love->love, FP love->loev, TP loev->love, FN loev->loev.
    rows = [("love", "love"), ("love", "loev"), ("loev", "love"), ("loev", "loev")]
    total = sum(CorrectionCounts.of(n, "love", p) for n, p in rows)
    assert (total.words_typo, total.words_typo_fixed, total.words_broken) == (2, 1, 1)
    assert total.autocorrect_precision == 0.5 and total.autocorrect_recall == 0.5
    assert total.autocorrect_accuracy == 0.5
    assert total.autocorrect_fbeta() == pytest.approx(0.5)  # F of equal P and R is P


def test_zero_denominators_follow_their_sources():
    nothing = CorrectionCounts.of("", "", "")
    assert math.isnan(nothing.cer_before) and math.isnan(nothing.wer_after)
    assert math.isnan(nothing.messages_fixed_share)
    # ERRANT: no system edits -> P = 1; no gold edits -> R = 1.
    assert nothing.edit_precision == 1.0 and nothing.edit_recall == 1.0
    assert nothing.edit_f05 == 1.0
    # kebbie returns 0 for 0/0.
    assert nothing.autocorrect_precision == 0.0 and nothing.autocorrect_recall == 0.0
    assert nothing.autocorrect_fbeta() == 0.0 and nothing.autocorrect_accuracy == 0.0
    missed = CorrectionCounts.of("teh", "the", "tha")
    # One gold edit teh->the, one system edit teh->tha: P = R = 0, F = 0.
    assert (missed.edit_precision, missed.edit_recall, missed.edit_f05) == (0.0, 0.0, 0.0)


def test_edit_grouping():
    # A merged word: "thecat" shares characters with both "the" and "cat", so
    # [thecat] -> [the, cat] is one edit.
    right = CorrectionCounts.of("thecat sat", "the cat sat", "the cat sat")
    assert (right.gold_edits, right.system_edits, right.correct_edits) == (1, 1, 1)
    # System edits: [thecat] -> [the, cat] (equal to the gold one) and [sat] -> [sit].
    partial = CorrectionCounts.of("thecat sat", "the cat sat", "the cat sit")
    assert (partial.gold_edits, partial.system_edits, partial.correct_edits) == (1, 2, 1)
    # Neighbouring typos are separate edits: fixing one of two earns one.
    half = CorrectionCounts.of("teh cta sat", "the cat sat", "the cta sat")
    assert (half.gold_edits, half.system_edits, half.correct_edits) == (2, 1, 1)
    # An inserted word is one edit at its place; a deleted word one edit of its span.
    ins = CorrectionCounts.of("the cat", "the big cat", "the big cat")
    assert (ins.gold_edits, ins.correct_edits, ins.word_errors_before) == (1, 1, 1)
    dele = CorrectionCounts.of("the big cat", "the cat", "the cat")
    assert (dele.gold_edits, dele.correct_edits, dele.words_typo) == (1, 1, 0)
    # Whitespace alone is no word edit.
    assert CorrectionCounts.of("the  cat", "the cat", "the  cat").gold_edits == 0


def test_space_and_whitespace_are_exact():
    # Characters include spaces, nothing is stripped: a leading space is one insertion.
    c = CorrectionCounts.of(" the cat", "the cat", "the  cat")
    assert (c.char_errors_before, c.char_errors_after) == (1, 1)
    # Words split on runs of whitespace, so extra spaces are no word error.
    assert (c.word_errors_before, c.word_errors_after) == (0, 0)
    # Case and punctuation count: nothing is normalised.
    d = CorrectionCounts.of("The cat.", "the cat", "The cat.")
    assert (d.word_errors_before, d.char_errors_before) == (2, 2)
    assert split_words("a\tb  c\n") == ["a", "b", "c"]
    assert word_spans(" ab  c") == [(1, 3), (5, 6)]


def test_fix_rate_touch_rule():
    # An omitted space touches both words it separated: fixed only if both come back.
    omit = (Edit(Channel.SPACE_OMISSION, 3, 4, 3, 3),)
    assert CorrectionCounts.of("thecat", "the cat", "the cat", omit).by_type == (
        ("space_omission", 1, 1),)
    assert CorrectionCounts.of("thecat", "the cat", "the cats", omit).by_type == (
        ("space_omission", 1, 0),)
    # A doubled letter at the end of "the" (an empty clean span at 3) touches only "the".
    dbl = (Edit(Channel.DOUBLE_TAP, 3, 3, 3, 4),)
    assert CorrectionCounts.of("thee cat", "the cat", "the cta", dbl).by_type == (
        ("double_tap", 1, 1),)
    # A space typed before "cat" (the simulator's neighbour insertion, noisy "the  cat") leaves
    # every word right: words cannot tell, so only the exact clean text fixes it.
    space = (Edit(Channel.NEIGHBOR_INSERTION, 4, 5, 4, 6),)
    assert CorrectionCounts.of("the  cat", "the cat", "the  cat", space).by_type == (
        ("neighbor_insertion", 1, 0),)
    assert CorrectionCounts.of("the  cat", "the cat", "the cat", space).by_type == (
        ("neighbor_insertion", 1, 1),)
    # PASSTHROUGH marks an untypeable character, not an error: not counted.
    passthrough = (Edit(Channel.PASSTHROUGH, 0, 1, 0, 1),)
    assert CorrectionCounts.of("€5", "€5", "€5", passthrough).by_type == ()


def test_provenance_must_match_the_pair():
    with pytest.raises(CorrectionInputError, match="record 0.*do not turn clean into noisy"):
        CorrectionCounts.of("teh cst sat", "the cat sat", "x", EDITS_1[:1])
    with pytest.raises(CorrectionInputError, match="record 7.*out of range"):
        correction_counts(["ab"], ["ab"], ["ab"], [(Edit(Channel.OMISSION, 1, 9, 1, 1),)],
                          ids=["7"])
    with pytest.raises(CorrectionInputError, match="record 0: prediction must be a str"):
        CorrectionCounts.of("a", "a", None)


def test_counts_validate_and_merge_by_channel():
    with pytest.raises(ValueError, match="words_typo_fixed <= words_typo"):
        CorrectionCounts(words=1, words_typo=1, words_typo_fixed=2)
    with pytest.raises(ValueError, match="must be an int >= 0"):
        CorrectionCounts(messages=True)
    with pytest.raises(ValueError, match="channel twice"):
        CorrectionCounts(by_type=(("omission", 1, 0), ("omission", 2, 1)))
    a = CorrectionCounts(by_type=(("substitution", 2, 1), ("omission", 1, 0)))
    b = CorrectionCounts(by_type=(("omission", 3, 3), ("double_tap", 0, 0)))
    # Rows sorted, a channel with no edits dropped, counts added key by key.
    assert b.by_type == (("omission", 3, 3),)
    assert (a + b).by_type == (("omission", 4, 3), ("substitution", 2, 1))
    assert sum([a, b]) == a + b and 0 + a == a


class Table:
    """A corrector that answers from a fixed noisy -> prediction table (a stand-in for a model
    whose outputs are known; every path of the scorer is real)."""

    name = "table"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def correct(self, texts):
        return [self.answers.get(t, t) for t in texts]


def simulated(n: int = 120):
    base = ["Hello there, how are you doing today?", "I can't believe it's already Monday.",
            "the cat sat on the mat", "see you at 5 then", "ok", ""]
    texts = [base[i % len(base)] + ("" if i < len(base) else f" {i}") for i in range(n)]
    return simulate(texts, "raw", seed=11)


def test_sharded_equals_whole_and_batching_does_not_matter():
    pairs = simulated()
    # Fix every third message exactly, spoil every fifth clean-typed one.
    answers = {}
    for i, p in enumerate(pairs):
        if i % 3 == 0:
            answers[p.noisy] = p.clean
        elif i % 5 == 0:
            answers[p.noisy] = p.noisy + " x"
    corrector = Table(answers)
    noisy, clean = [p.noisy for p in pairs], [p.clean for p in pairs]
    edits = [p.edits for p in pairs]
    per = evaluate_corrector(corrector, noisy, clean, edits, batch_size=7)
    assert len(per) == len(pairs)
    whole = sum(per)
    shards = [sum(per[i:i + 13]) for i in range(0, len(per), 13)]
    assert sum(shards) == whole
    assert sum(evaluate_corrector(corrector, noisy, clean, edits, batch_size=1000)) == whole
    assert evaluate_corrector(corrector, noisy, clean, edits, batch_size=1) == per
    assert whole.messages == len(pairs) and 0 < whole.messages_fixed < whole.messages_with_errors


def test_identity_and_oracle_bound_the_scale():
    pairs = simulated()
    noisy, clean = [p.noisy for p in pairs], [p.clean for p in pairs]
    edits = [p.edits for p in pairs]
    none = sum(evaluate_corrector(Identity(), noisy, clean, edits))
    assert none.cer_after == none.cer_before > 0 and none.wer_after == none.wer_before > 0
    assert none.system_edits == 0 and none.edit_precision == 1.0 and none.edit_recall == 0.0
    assert none.message_overcorrection_rate == 0.0 and none.word_overcorrection_rate == 0.0
    # No error of any type is fixed by not correcting (the whitespace rule included).
    assert none.by_type and all(fixed == 0 for _, _, fixed in none.by_type)
    oracle = sum(evaluate_corrector(Table(dict(zip(noisy, clean, strict=True))), noisy, clean,
                                    edits))
    assert oracle.cer_after == 0.0 and oracle.wer_after == 0.0
    assert oracle.edit_precision == oracle.edit_recall == 1.0
    assert oracle.gold_edits == none.gold_edits == oracle.system_edits
    assert oracle.messages_fixed_share == 1.0 and oracle.autocorrect_recall == 1.0
    assert all(fixed == total for _, total, fixed in oracle.by_type)


class Broken:
    name = "broken"

    def correct(self, texts):
        return list(texts)[:-1]


def test_corrector_errors_name_the_corrector_and_record():
    with pytest.raises(CorrectionInputError, match="corrector 'broken' returned 1 texts for 2"):
        evaluate_corrector(Broken(), ["a", "b"], ["a", "b"])
    with pytest.raises(CorrectionInputError, match="returned a int for record x2"):
        evaluate_corrector(Table({"b": 3}), ["a", "b"], ["a", "b"], ids=["x1", "x2"])
    with pytest.raises(CorrectionInputError, match="clean has 1 items, noisy has 2"):
        evaluate_corrector(Identity(), ["a", "b"], ["a"])
    assert Identity().name == "no correction"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_real_learner_errors_agree_with_jiwer():
    root = SHARED / "proofreading" / "bea322"
    if not root.is_dir():
        pytest.skip(f"real data not present: {root} (../shared is absent)")
    noisy, clean = _lines(root / "corrupt.txt"), _lines(root / "correct.txt")
    assert len(noisy) == len(clean) == 322
    per = evaluate_corrector(Identity(), noisy, clean)
    total = sum(per)
    # jiwer's corpus-level rates with its default transforms; these lines have single spaces
    # and no leading or trailing ones, where the defaults change nothing.
    assert all(" ".join(s.split()) == s for s in noisy + clean)
    assert total.wer_before == pytest.approx(jiwer.wer(clean, noisy))
    assert total.cer_before == pytest.approx(jiwer.cer(clean, noisy))
    assert total.messages_with_errors == sum(n != c for n, c in zip(noisy, clean, strict=True))
    # Every message of this set has at least one spelling error, word-level.
    assert total.words_typo >= total.messages_with_errors > 300


def test_a_word_typed_where_the_input_had_spaces_is_one_inserted_word():
    # Regression: "hi   there" -> "hi a there" aligns the new "a" against spaces (a
    # substitution, not an insertion); it is an inserted word between "hi" and "there".
    c = CorrectionCounts.of("hi   there", "hi there", "hi a there")
    assert c.system_edits == 1 and c.correct_edits == 0
    c = CorrectionCounts.of("ab  cd", "ab cd", "ab x cd")
    assert c.system_edits == 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab ", max_size=12), st.text(alphabet="ab ", max_size=12),
       st.text(alphabet="ab ", max_size=12))
def test_any_triple_of_short_texts_is_scored(noisy, clean, prediction):
    c = CorrectionCounts.of(noisy, clean, prediction)
    assert c.messages == 1 and 0 <= c.correct_edits <= min(c.system_edits, c.gold_edits)
