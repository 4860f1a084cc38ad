"""Misspelling lists and confusion sets parse as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyboard_sim.lexicon import (
    load_lexicon,
    match_case,
    parse_birkbeck,
    parse_codespell,
    parse_confusions,
)

BIRKBECK = Path(__file__).resolve().parents[2] / "shared" / "data" / "typing" / "birkbeck_missp.dat"


def test_parse_codespell_keeps_unambiguous_entries():
    text = "teh->the\nrecieve->receive\nabout->about\nwich->which, witch,\nhte->the\n"
    assert parse_codespell(text) == {"the": ["teh", "hte"], "receive": ["recieve"]}


def test_parse_birkbeck():
    text = "$because\nbecos\nbecuase\n$the\nteh\n"
    assert parse_birkbeck(text) == {"because": ["becos", "becuase"], "the": ["teh"]}


def test_confusions_are_symmetric():
    c = parse_confusions("their there they're\n# comment\n")
    assert c["there"] == ["their", "they're"] and "there" in c["their"]


def test_match_case():
    assert match_case("Hello", "helo") == "Helo"
    assert match_case("OK", "ko") == "KO"
    assert match_case("ok", "ko") == "ko"


def test_codespell_list_is_real_and_large():
    lex = load_lexicon("codespell")
    assert len(lex.misspellings) > 10_000
    assert "teh" in lex.misspellings["the"]


@pytest.mark.skipif(not BIRKBECK.exists(), reason="shared data not present")
def test_birkbeck_file_loads():
    lex = load_lexicon(str(BIRKBECK))
    assert len(lex.misspellings) > 5000


def test_missing_list_is_clear():
    with pytest.raises(ValueError, match="no such file"):
        load_lexicon("/nonexistent/list.dat")
