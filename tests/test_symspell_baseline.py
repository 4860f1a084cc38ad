"""The SymSpell baseline: per-word correction with symspellpy's bundled dictionary."""

from __future__ import annotations

import pytest

from models.symspell_baseline import SymSpellCorrector


@pytest.fixture(scope="module")
def symspell():
    return SymSpellCorrector()  # loads the 82,765-word dictionary once (several seconds)


def test_fixes_typos_and_keeps_case_and_punctuation(symspell):
    assert symspell.correct(["I hvae a problm.", "Teh end!", "wrold"]) == [
        "I have a problem.", "The end!", "world"]


def test_leaves_correct_text_unchanged(symspell):
    texts = ["This is fine, thanks!", "don't worry  :) see you at 5pm", "", "🙂"]
    assert symspell.correct(texts) == texts


def test_name_and_bad_input(symspell):
    assert symspell.name == "symspell"
    with pytest.raises(TypeError, match="text 0"):
        symspell.correct([3])
    with pytest.raises(ValueError, match="max_edit"):
        SymSpellCorrector(max_edit=-1)
