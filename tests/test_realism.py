"""eval.realism: error-mix comparison of simulated and real typing, on hand pairs and on Aalto."""

from __future__ import annotations

import json
import math

import pytest

from eval.realism import (
    CALIBRATED,
    DEFAULT_PAIRS,
    RealismError,
    compare_mixes,
    layout_for,
    mix_summary,
    realism,
)
from keyboard_sim.fidelity import ErrorMix
from keyboard_sim.profile import load_profile

# Two real pairs and two "simulated" ones of the same intended texts, labelled without a
# misspelling list so that the aligner's rules alone decide.
REAL = [("the cat", "teh cat"), ("a dog.", "a dog")]
SIM = [("the cat", "hte cat"), ("a dog.", "a dgo.")]

# JSD in bits of p = (1/2, 1/2) and q = (1, 0): m = (3/4, 1/4),
# KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2) = 0.5 * (-0.5849625) + 0.5 = 0.2075187,
# KL(q||m) = log2(4/3) = 0.4150375, JSD = (0.2075187 + 0.4150375) / 2 = 0.3112781.
JSD_HALF_VS_ONE = 0.3112781


def test_two_sentence_golden():
    # Real: "teh" is one transposition, "a dog." -> "a dog" one dropped full stop.
    # Simulated: "hte" and "dgo" are two transpositions.
    # Edit types: real (transposition 1/2, drop_punctuation 1/2) vs simulated (transposition 1)
    # -> JSD_HALF_VS_ONE.
    # Motor slips by relative position in the word (5 bins): "teh" swaps letters 1-2 of a
    # 3-letter word -> 1/(3-1) = 0.5 -> bin 2; "hte" letter 0 -> bin 0; "dgo" letter 1 -> bin 2.
    # The dropped full stop is no slip inside a word. Real (bin 2: 1) vs simulated (bins 0 and 2:
    # 1/2 each) -> again JSD_HALF_VS_ONE.
    # Edits per text: one in each of the two texts on both sides -> 0.
    # Combined: (0.3112781 * 2 + 0) / 3 = 0.2075187.
    real = ErrorMix.of_pairs(REAL, None)
    sim = ErrorMix.of_pairs(SIM, None)
    out = compare_mixes(real, sim)
    d = out["divergence"]
    assert d["types"] == pytest.approx(JSD_HALF_VS_ONE, abs=1e-7)
    assert d["position"] == pytest.approx(JSD_HALF_VS_ONE, abs=1e-7)
    assert d["per_text"] == 0.0
    assert d["combined"] == pytest.approx(0.2075187, abs=1e-7)
    s = out["simulated"]
    assert s["types"]["transposition"] == 2 and s["edits"] == 2
    assert sum(s["types"].values()) == 2
    # Real side: distance 1 + 1 over 7 + 6 intended characters.
    r = mix_summary(real)
    assert (r["distance"], r["clean_chars"]) == (2, 13)
    assert r["cer"] == pytest.approx(2 / 13)
    assert r["types"]["transposition"] == 1 and r["types"]["drop_punctuation"] == 1
    assert r["error_share"] == 1.0
    json.dumps(out)  # plain JSON


def test_sharded_mixes_equal_whole():
    pairs = REAL + SIM + [("you're right", "youre right"), ("Hello there", "hello tjere")]
    whole = ErrorMix.of_pairs(pairs, None)
    shards = [ErrorMix.of_pairs(pairs[i:i + 2], None) for i in range(0, len(pairs), 2)]
    merged = shards[0]
    for s in shards[1:]:
        merged = merged + s
    assert mix_summary(merged) == mix_summary(whole)
    real = ErrorMix.of_pairs(REAL, None)
    assert compare_mixes(real, merged) == compare_mixes(real, whole)


def test_every_type_listed_in_channel_order():
    s = mix_summary(ErrorMix())
    assert list(s["types"])[:3] == ["substitution", "omission", "double_tap"]
    assert all(v == 0 for v in s["types"].values())
    assert s["cer"] == 0.0 and s["edits"] == 0


def test_layout_for_posture():
    assert layout_for(load_profile("physical")) == "en-US-physical"
    assert layout_for(load_profile("two_thumbs")) == "en-US"
    assert layout_for(load_profile("committed")) == "en-US"


def _tsv(path, rows):
    path.write_text("participant_id\ttest_section_id\ttarget\ttyped\n"
                    + "".join(f"{g}\t{i}\t{c}\t{n}\n" for i, (g, c, n) in enumerate(rows)),
                    encoding="utf-8")
    return path


# Participants "b" and "a" fall in different halves of calibrate.split_groups (stable hash).
SMALL = [
    ("b", "The quick brown fox jumps over the lazy dog.",
     "The quick brwon fox jumps over the lazy dog"),
    ("b", "Pack my box with five dozen liquor jugs.", "pack my box with five dozen liqour jugs."),
    ("b", "How vexingly quick daft zebras jump!", "How vexingly quick daft zebras jump!"),
    ("a", "Sphinx of black quartz, judge my vow.", "Sphinx of black quartz judge my vow."),
    ("a", "The five boxing wizards jump quickly.", "The five boxing wizrds jump quickly."),
]


def test_small_file_end_to_end(tmp_path):
    path = _tsv(tmp_path / "pairs.tsv", SMALL)
    out = realism(path, presets=("physical", "committed"), seed=3, refine=1)
    assert list(out["profiles"]) == ["physical", "committed", CALIBRATED]
    assert out["split"]["calibrate"]["participants"] == 1
    assert out["split"]["compare"]["participants"] == 1
    assert out["split"]["calibrate"]["pairs"] + out["split"]["compare"]["pairs"] == len(SMALL)
    assert out["profiles"]["committed"]["layout"] == "en-US"
    assert out["profiles"][CALIBRATED]["calibrated"] is True
    n = out["split"]["compare"]["pairs"]
    for p in out["profiles"].values():
        assert p["simulated"]["pairs"] == n
        assert sum(p["simulated"]["types"].values()) == p["simulated"]["edits"]
        d = p["divergence"]
        assert all(0.0 <= d[k] <= 1.0 for k in ("types", "position", "per_text"))
        assert d["combined"] == pytest.approx((d["types"] + d["position"] + d["per_text"]) / 3)
    assert sum(out["real"]["types"].values()) == out["real"]["edits"]
    json.loads(json.dumps(out))
    # Deterministic in the seed.
    assert realism(path, presets=("physical", "committed"), seed=3, refine=1) == out


def test_bad_input(tmp_path):
    with pytest.raises(RealismError, match="nope.tsv"):
        realism(tmp_path / "nope.tsv")
    one = _tsv(tmp_path / "one.tsv", [r for r in SMALL if r[0] == "b"])
    with pytest.raises(RealismError, match="half has no pairs"):
        realism(one)
    path = _tsv(tmp_path / "pairs.tsv", SMALL)
    with pytest.raises(RealismError, match="limit"):
        realism(path, limit=0)
    with pytest.raises(RealismError, match="not-a-preset"):
        realism(path, presets=("not-a-preset",))
    with pytest.raises(RealismError, match="given twice"):
        realism(path, presets=("physical", "physical"))
    bad = tmp_path / "bad.tsv"
    bad.write_text("who\twhat\nx\ty\n", encoding="utf-8")
    with pytest.raises(RealismError, match="bad.tsv"):
        realism(bad)


def test_aalto_calibrated_is_closer():
    if not DEFAULT_PAIRS.exists():
        pytest.skip(f"real typing data not available ({DEFAULT_PAIRS}; ../shared is absent)")
    out = realism(limit=300, seed=0)
    assert out["source"] == "aalto_typed_pairs_dev.tsv"
    assert out["split"]["compare"]["pairs"] == 300
    real = out["real"]
    # The Aalto sample's documented character error rate is about 1% (SOURCES.md).
    assert 0.002 < real["cer"] < 0.03
    phys, cal = out["profiles"]["physical"], out["profiles"][CALIBRATED]
    # Calibrating on other typists brings the edit-type mix closer to held-out ones (the claim of
    # scripts/realism_aalto.py on the full data; deterministic here for seed 0).
    assert cal["divergence"]["types"] < phys["divergence"]["types"]
    assert math.isfinite(cal["divergence"]["combined"])
    assert out["calibrated_profile"]["name"] == CALIBRATED
