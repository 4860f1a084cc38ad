"""Typist profiles: validation, presets, population sampling, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from keyboard_sim import POSTURES, Channel, Population, TypistProfile, load_profile, sample_profile


def test_postures_order_by_precision():
    # One thumb is the least precise posture, the index finger the most (Azenkot & Zhai 2012).
    assert POSTURES["one_thumb"].sigma_x_mm > POSTURES["two_thumbs"].sigma_x_mm
    assert POSTURES["two_thumbs"].sigma_x_mm > POSTURES["index_finger"].sigma_x_mm


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="sigma_x_mm"):
        TypistProfile(sigma_x_mm=-1)
    with pytest.raises(ValueError, match="posture"):
        TypistProfile(posture="feet")
    with pytest.raises(ValueError, match="keystroke_ms"):
        TypistProfile(keystroke_ms=10.0, fitts_a_s=0.05)


def test_sampled_typists_differ_and_are_reproducible():
    a = [sample_profile(np.random.default_rng(s)) for s in range(20)]
    b = [sample_profile(np.random.default_rng(s)) for s in range(20)]
    assert a == b
    assert len({p.sigma_x_mm for p in a}) == 20
    assert {p.posture.value for p in a} >= {"two_thumbs", "one_thumb"}


def test_population_validates_mix():
    with pytest.raises(ValueError, match="sum to 1"):
        Population(posture_mix=(("two_thumbs", 0.5),))


def test_json_round_trip(tmp_path):
    p = POSTURES["physical"].with_rates(omission=0.02)
    path = tmp_path / "p.json"
    p.save(path)
    q = load_profile(str(path))
    assert q == p and q.rates[Channel.OMISSION] == 0.02


def test_bad_profile_file_is_clear(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"sigma_x_mm": 1, "wings": 2}')
    with pytest.raises(ValueError, match="wings"):
        load_profile(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read JSON"):
        load_profile(str(path))
