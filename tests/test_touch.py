"""The touch model: FFitts spread, digit assignment and the analytic miss probability."""

from __future__ import annotations

import math

import numpy as np

from keyboard_sim.profile import POSTURES, Posture
from keyboard_sim.touch import (
    SQRT_2PIE,
    digits,
    miss_probability,
    previous_same_digit,
    relative_sigma,
    tap_spread,
)


def test_relative_sigma_inverts_fitts_law():
    a, b = 0.05, 0.06
    dist = np.array([20.0])
    mt = np.array([0.3])
    sigma = relative_sigma(dist, mt, a, b)[0]
    # Plugging the effective width back into Fitts' law gives the movement time.
    we = SQRT_2PIE * sigma
    assert math.isclose(a + b * math.log2(20.0 / we + 1), 0.3, rel_tol=1e-9)


def test_faster_typing_spreads_taps_more():
    slow = relative_sigma(np.array([20.0]), np.array([0.5]), 0.05, 0.06)[0]
    fast = relative_sigma(np.array([20.0]), np.array([0.15]), 0.05, 0.06)[0]
    assert fast > slow > 0
    assert relative_sigma(np.array([0.0]), np.array([0.15]), 0.05, 0.06)[0] == 0


def test_previous_same_digit_stays_inside_records():
    digit = np.array([0, 1, 0, 1, 0, 0])
    first = np.array([0, 0, 0, 0, 4, 4])
    assert previous_same_digit(digit, first).tolist() == [-1, -1, 0, 1, -1, 4]


def test_two_thumbs_split_the_keyboard():
    from keyboard_sim.layout import load_layout

    phone = load_layout("en-US")
    keys = np.array([phone.find_key("letters", text=c) for c in "tgbyhn"])
    # g sits on the middle line and goes to the left thumb; b is right of it.
    assert digits(Posture.TWO_THUMBS, keys, phone).tolist() == [0, 0, 1, 1, 1, 1]
    assert digits(Posture.ONE_THUMB, keys, phone).tolist() == [0] * 6
    # Ten fingers: the touch-typing split between t/g/b and y/h/n.
    pc = load_layout("en-US-physical")
    keys = np.array([pc.find_key("letters", text=c) for c in "5tgb6yhn"])
    assert digits(Posture.PHYSICAL, keys, pc).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_tap_spread_adds_relative_part_in_quadrature():
    prof = POSTURES["index_finger"]
    cx = np.array([0.0, 30.0])
    cy = np.array([0.0, 40.0])
    sx, sy, ox, oy = tap_spread(prof, cx, cy, np.zeros(2, np.int64), np.zeros(2, np.int64))
    rel = relative_sigma(np.array([50.0]), np.array([prof.keystroke_ms / 1000]), prof.fitts_a_s,
                         prof.fitts_b_s)[0]
    # Taps are computed in float32: compare to 1e-6.
    assert math.isclose(sx[0], prof.sigma_x_mm, rel_tol=1e-6)
    assert math.isclose(sx[1], math.hypot(prof.sigma_x_mm, rel), rel_tol=1e-6)
    assert math.isclose(sy[1], math.hypot(prof.sigma_y_mm, rel), rel_tol=1e-6)


def test_miss_probability_limits():
    assert miss_probability(6.0, 10.0, 0.0, 0.0) == 0.0
    assert miss_probability(6.0, 10.0, 0.0, 0.0, offset_x=3.5) == 1.0
    # One axis only: two-sided normal tail beyond half the width.
    p = miss_probability(6.0, 1e9, 1.5, 1.0)
    assert math.isclose(p, math.erfc(2.0 / math.sqrt(2)), rel_tol=1e-12)


def test_previous_same_digit_with_three_digits():
    digit = np.array([0, 2, 1, 0, 2, 2, 1])
    first = np.zeros(7, dtype=np.int64)
    assert previous_same_digit(digit, first).tolist() == [-1, -1, -1, 0, 1, 4, 2]


def test_ten_finger_typists_press_space_with_a_thumb():
    from keyboard_sim.layout import load_layout

    pc = load_layout("en-US-physical")
    space = pc.find_key("letters", text=" ")
    assert digits(Posture.PHYSICAL, np.array([space]), pc).tolist() == [2]
