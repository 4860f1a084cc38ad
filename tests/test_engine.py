"""Each channel forced alone gives the exact expected output; each rate is met statistically."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from keyboard_sim import Channel, load_layout, simulate
from keyboard_sim.lexicon import load_lexicon
from keyboard_sim.profile import POSTURES

BASE = POSTURES["two_thumbs"]
LAYOUT = load_layout("en-US")


def forced(channel, rate=1.0, **kw):
    return dataclasses.replace(BASE.only(channel, rate), **kw)


def run(texts, profile, seed=0, layout=LAYOUT):
    pairs = simulate(texts, profile, layout, seed)
    for p in pairs:
        assert p.is_consistent(), p
    return pairs


def noisy(texts, channel, rate=1.0, **kw):
    return [p.noisy for p in run(texts, forced(channel, rate, **kw))]


def test_no_channel_no_change():
    texts = ["Hello, World! Don't panic.", "café 123 ?!", ""]
    pairs = run(texts, BASE.only(None))
    assert [p.noisy for p in pairs] == texts
    assert all(p.edits == () for p in pairs)


def test_omission_removes_every_typeable_non_space():
    assert noisy(["hello world", "a b"], Channel.OMISSION) == [" ", " "]


def test_double_tap_doubles_every_character():
    assert noisy(["ab c"], Channel.DOUBLE_TAP) == ["aabb cc"]


def test_transposition_swaps_adjacent_distinct_letters():
    # Overlapping pairs are taken greedily from the left: (a,b) then (c,d).
    # (h,e) swap; (e,l) overlaps it; (l,l) are equal; (l,o) swap.
    assert noisy(["abcd", "hello"], Channel.TRANSPOSITION) == ["badc", "ehlol"]


def test_space_omission_merges_words():
    assert noisy(["a b c"], Channel.SPACE_OMISSION) == ["abc"]


def test_space_substitution_types_the_letter_above_the_space_bar():
    # With exact taps the space bar's centre lies under 'v' on en-US.
    assert noisy(["a b"], Channel.SPACE_SUBSTITUTION) == ["avb"]


def test_space_insertion_splits_on_letters_above_the_space_bar():
    # x c v b n sit above the space bar; o and m do not.
    assert noisy(["box", "moc"], Channel.SPACE_INSERTION) == [" o ", "mo "]


def test_habit_channels_exact():
    assert noisy(["don't 'quoted'"], Channel.DROP_APOSTROPHE) == ["dont 'quoted'"]
    assert noisy(["Hello World ÉTÉ"], Channel.DROP_CAPITAL) == ["hello world été"]
    assert noisy(["café Noël"], Channel.SIMPLIFY_ACCENT) == ["cafe Noel"]
    assert noisy(["Hi, there. Ok!?"], Channel.DROP_PUNCTUATION) == ["Hi there Ok"]


def test_neighbor_insertion_adds_a_touching_key():
    table, count = LAYOUT.neighbors
    text = "qwertyasdfzxcv"
    (pair,) = run([text], forced(Channel.NEIGHBOR_INSERTION))
    assert len(pair.noisy) == 2 * len(text)
    for e in pair.edits:
        assert e.type == Channel.NEIGHBOR_INSERTION
        c = pair.clean[e.clean_start]
        piece = pair.noisy[e.noisy_start : e.noisy_end]
        assert c in piece and len(piece) == 2
        other = piece.replace(c, "", 1)
        k = LAYOUT.find_key("letters", text=c)
        assert other in {LAYOUT.key_text[j] for j in table[k, : count[k]]}


def test_misspelling_draws_from_the_real_list():
    lex = load_lexicon("codespell")
    (pair,) = run(["because the Because"], forced(Channel.MISSPELLING))
    words = pair.noisy.split()
    assert words[0] in lex.misspellings["because"]
    assert words[1] in lex.misspellings["the"]
    assert words[2][0] == "B" and words[2].lower() in lex.misspellings["because"]
    assert {e.type for e in pair.edits} == {Channel.MISSPELLING}


def test_real_word_swaps_within_confusion_set():
    (pair,) = run(["their car is here"], forced(Channel.REAL_WORD))
    w = pair.noisy.split()
    assert w[0] in {"there", "they're"} and w[3] == "hear" and w[1:3] == ["car", "is"]


def test_touch_offset_of_one_key_types_the_right_neighbour():
    # Exact taps shifted right by one key pitch land on the next key of the row.
    out = noisy(["qwe asd"], Channel.SUBSTITUTION, sigma_x_mm=0.0, sigma_y_mm=0.0,
                offset_x_mm=LAYOUT.pitch_mm, posture="index_finger")
    assert out == ["wer sdf"]


def test_characters_off_the_layout_pass_through_and_are_noted():
    text = "ok 😀 漢字 ok"
    (pair,) = run([text], BASE.only(None))
    assert pair.noisy == text
    spans = [(e.clean_start, e.clean_end) for e in pair.edits]
    assert all(e.type == Channel.PASSTHROUGH for e in pair.edits)
    assert spans == [(3, 4), (5, 7)]


def test_layer_switch_and_shift_taps_are_recorded():
    (pair,) = simulate(["A1"], BASE.only(None), LAYOUT, 0, touches=True)
    keys = [t.key for t in pair.touches]
    # shift + A, then ?123 + 1
    assert keys == ["⇧", "A", "?123", "1"]


# ---------------------------------------------------------------------- statistical rates
def corpus(n=3000):
    rng = np.random.default_rng(0)
    words = ["the", "because", "their", "don't", "Hello", "café", "world", "typing", "phone",
             "keyboard", "I'm", "you're", "Noël", "OK", "yes", "now"]
    out = []
    for _ in range(n):
        k = rng.integers(3, 10)
        s = " ".join(rng.choice(words, k))
        out.append(s + rng.choice([".", "!", "?", ",", ""]))
    return out


def eligible_units(texts, channel):
    """Independent count of the units a channel is sampled on (see channels.UNIT)."""
    import unicodedata

    lex = load_lexicon("codespell")
    above = {LAYOUT.key_text[i] for i in np.flatnonzero(LAYOUT.space_row["above"])}
    n = 0
    for t in texts:
        for i, ch in enumerate(t):
            prev = t[i - 1] if i else ""
            nxt = t[i + 1] if i + 1 < len(t) else ""
            if channel in (Channel.OMISSION, Channel.DOUBLE_TAP, Channel.NEIGHBOR_INSERTION):
                n += ch != " "
            elif channel in (Channel.SPACE_OMISSION, Channel.SPACE_SUBSTITUTION):
                n += ch == " "
            elif channel == Channel.SPACE_INSERTION:
                n += ch in above
            elif channel == Channel.DROP_APOSTROPHE:
                n += ch == "'" and prev.isalpha() and nxt.isalpha()
            elif channel == Channel.DROP_CAPITAL:
                n += ch.isupper()
            elif channel == Channel.SIMPLIFY_ACCENT:
                n += ch.isalpha() and unicodedata.normalize("NFD", ch) != ch
            elif channel == Channel.DROP_PUNCTUATION:
                n += ch in ".,!?;:"
        if channel in (Channel.MISSPELLING, Channel.REAL_WORD):
            table = lex.misspellings if channel == Channel.MISSPELLING else lex.confusions
            n += sum(w.strip(".,!?").lower() in table for w in t.split())
    return n


@pytest.mark.parametrize(
    "channel",
    [c for c in Channel if c not in (Channel.SUBSTITUTION, Channel.PASSTHROUGH,
                                     Channel.TRANSPOSITION)],
)
def test_channel_rate_matches_configuration(channel):
    rate = 0.2
    texts = corpus()
    pairs = run(texts, forced(channel, rate))
    hits = sum(e.type == channel for p in pairs for e in p.edits)
    units = eligible_units(texts, channel)
    assert units > 2000
    sd = math.sqrt(units * rate * (1 - rate))
    # Four standard deviations of a binomial count.
    assert abs(hits - units * rate) < 4 * sd, (hits, units * rate, sd)


def test_transposition_rate_with_cross_hand_factor():
    rate, factor = 0.05, 3.0
    texts = corpus()
    prof = forced(Channel.TRANSPOSITION, rate, cross_hand_factor=factor)
    pairs = run(texts, prof)
    # Expected count: a pair is kept if it fires and the pair before it was not kept, so
    # P(kept_i) = p_i * (1 - P(kept_i-1)) exactly.
    from keyboard_sim.touch import digits

    expected = var = 0.0
    for t in texts:
        prev_p = 0.0
        for i in range(len(t) - 1):
            a, b = t[i], t[i + 1]
            if a.isalpha() and b.isalpha() and a != b:
                ka = LAYOUT.plan.key[LAYOUT.plan.lookup(np.array([ord(a)], np.uint32))[0]]
                kb = LAYOUT.plan.key[LAYOUT.plan.lookup(np.array([ord(b)], np.uint32))[0]]
                da, db = digits(prof.posture, np.array([ka, kb]), LAYOUT)
                p = min(1.0, rate * factor) if da != db else rate
                q = p * (1 - prev_p)
                expected += q
                var += q * (1 - q)
                prev_p = q
            else:
                prev_p = 0.0
    hits = sum(e.type == Channel.TRANSPOSITION for p in pairs for e in p.edits)
    assert abs(hits - expected) < 4 * math.sqrt(var), (hits, expected)


def test_touch_substitution_matches_gaussian_mass_outside_the_key():
    from keyboard_sim.touch import miss_probability

    sigma = 2.0
    prof = forced(Channel.SUBSTITUTION, sigma_x_mm=sigma, sigma_y_mm=sigma, offset_x_mm=0.0,
                  offset_y_mm=0.0, keystroke_ms=0.0)
    texts = ["g" * 200] * 150  # 'g' is surrounded by letter keys on every side
    pairs = run(texts, prof)
    n = sum(len(t) for t in texts)
    hits = sum(e.type == Channel.SUBSTITUTION for p in pairs for e in p.edits)
    k = LAYOUT.keys[LAYOUT.find_key("letters", text="g")]
    expected = miss_probability(k.w, k.h, sigma, sigma)
    sd = math.sqrt(expected * (1 - expected) / n)
    assert abs(hits / n - expected) < 4 * sd, (hits / n, expected)


def test_two_thumb_offset_points_inwards():
    prof = forced(Channel.SUBSTITUTION, sigma_x_mm=0.0, sigma_y_mm=0.0,
                  offset_x_mm=LAYOUT.pitch_mm, keystroke_ms=0.0)
    (pair,) = run(["qp"], prof)
    # Left thumb errs right (q -> w), right thumb errs left (p -> o).
    assert pair.noisy == "wo"


@pytest.mark.parametrize(
    "channel,text,keys",
    [
        (Channel.DOUBLE_TAP, "ab", ["a", "a", "b", "b"]),
        (Channel.OMISSION, "ab", []),
        (Channel.TRANSPOSITION, "ab", ["b", "a"]),
        (Channel.DROP_CAPITAL, "Ab", ["a", "b"]),
        (Channel.SPACE_SUBSTITUTION, "a b", ["a", "v", "b"]),
    ],
)
def test_touches_follow_what_was_typed(channel, text, keys):
    (pair,) = simulate([text], forced(channel), LAYOUT, 0, touches=True)
    assert [t.key for t in pair.touches] == keys


def test_drawn_touches_decode_to_the_typed_key():
    prof = forced(Channel.SUBSTITUTION, sigma_x_mm=3.0, sigma_y_mm=3.0)
    pairs = simulate(corpus(200), prof, LAYOUT, 0, touches=True)
    function_keys = {k.label for k in LAYOUT.keys if k.text is None}
    letters = LAYOUT.layer_names.index("letters")
    for p in pairs:
        typed = [t.key for t in p.touches if t.key not in function_keys]
        # The key each typed character comes from (a long-pressed accent: its base key).
        cid = LAYOUT.plan.lookup(np.array([ord(c) for c in p.noisy], dtype=np.uint32))
        out = [LAYOUT.keys[LAYOUT.plan.key[i]].label for i in cid]
        assert typed == out, (p.clean, p.noisy, typed)
        for t in p.touches:
            if t.key.isalpha() and t.key.islower():
                k = LAYOUT.decode(np.array([letters]), np.array([t.x]), np.array([t.y]))[0]
                assert LAYOUT.keys[k].label == t.key


def test_prepare_builds_the_lazy_tables():
    from keyboard_sim.engine import Engine
    from keyboard_sim.lexicon import load_lexicon

    load_lexicon.cache_clear()
    Engine(LAYOUT, BASE).prepare()
    assert load_lexicon.cache_info().currsize == 1
    load_lexicon.cache_clear()
    Engine(LAYOUT, BASE.only(None)).prepare()  # no word channel: no lexicon needed
    assert load_lexicon.cache_info().currsize == 0


def test_a_missed_shift_tap_types_the_key_it_hit_then_the_letter_unshifted():
    # Taps shifted one key right: the shift tap lands on z, the tap for A on the s key, and
    # the keyboard still shows lower case.
    prof = forced(Channel.SUBSTITUTION, sigma_x_mm=0.0, sigma_y_mm=0.0,
                  offset_x_mm=LAYOUT.pitch_mm, posture="index_finger")
    (pair,) = simulate(["A"], prof, LAYOUT, 0, touches=True)
    assert pair.noisy == "zs"
    assert [(e.type, e.clean_start, e.clean_end, e.noisy_start, e.noisy_end)
            for e in pair.edits] == [(Channel.SUBSTITUTION, 0, 1, 0, 2)]
    assert [t.key for t in pair.touches] == ["z", "s"]


def test_place_weights_exact():
    # No slips on first letters: every other character is omitted (punctuation too).
    assert noisy(["hello world, I'm ok"], Channel.OMISSION, place_weights=(0.0, 1.0, 1.0)) == [
        "h w I o"]
    # Only last letters double.
    assert noisy(["abc de"], Channel.DOUBLE_TAP, place_weights=(0.0, 0.0, 1.0)) == ["abcc dee"]


def test_place_weights_scale_rates_by_place():
    rate, w = 0.1, (0.5, 1.0, 2.0)
    texts = corpus()
    pairs = run(texts, forced(Channel.OMISSION, rate, place_weights=w))
    import re

    units = [0, 0, 0]
    hits = [0, 0, 0]
    word = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
    for p in pairs:
        places = {}
        for m in word.finditer(p.clean):
            for i in range(m.start(), m.end()):
                if p.clean[i].isalpha():
                    places[i] = 0 if i == m.start() else (2 if i == m.end() - 1 else 1)
        for k in places.values():
            units[k] += 1
        for e in p.edits:
            if e.clean_start in places:
                hits[places[e.clean_start]] += 1
    for k in range(3):
        q = rate * w[k]
        sd = math.sqrt(units[k] * q * (1 - q))
        assert abs(hits[k] - units[k] * q) < 4 * sd, (k, hits[k], units[k] * q)
