"""The touch model: where each tap lands, as pure functions over arrays of taps.

A tap aimed at a key lands at the key centre plus the typist's systematic offset plus Gaussian
noise. Following FFitts law (Bi, Li & Zhai 2013) the noise has two independent parts: the
absolute precision of the digit (sigma_a, the profile's sigma_x_mm / sigma_y_mm) and a relative
part from the speed-accuracy trade-off. The relative part is what Fitts' law allows for the
movement: with MT = a + b * log2(A / W_e + 1) and the effective width W_e = sqrt(2 pi e) sigma,
a digit that travels A mm in MT seconds has sigma_r = A / (sqrt(2 pi e) (2^((MT - a) / b) - 1)).
"""

from __future__ import annotations

import math

import numpy as np

from keyboard_sim.profile import Posture, TypistProfile

SQRT_2PIE = math.sqrt(2 * math.pi * math.e)


def digits(posture: Posture, keys: np.ndarray, layout) -> np.ndarray:
    """Which digit taps each key (global key indices): 0/1 for the left/right thumb or hand,
    2 for the thumbs of a ten-finger typist (the space bar).

    Two thumbs and ten-finger typing use the layout's hand of each key (`Layout.hands`); one
    thumb and the index finger are a single digit (0).
    """
    if posture in (Posture.TWO_THUMBS, Posture.PHYSICAL):
        return layout.hands[np.asarray(keys, dtype=np.int64)]
    return np.zeros(len(keys), dtype=np.int64)


def previous_same_digit(digit: np.ndarray, first_of_record: np.ndarray) -> np.ndarray:
    """Index of the previous tap by the same digit in the same record, or -1.

    Args:
        digit: Digit of each tap (taps ordered by record, then time).
        first_of_record: Index of the first tap of each tap's record.
    """
    n = len(digit)
    prev = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return prev
    idx = np.arange(n, dtype=np.int32)
    n_digits = int(digit.max()) + 1
    if n_digits == 1:
        prev[1:] = idx[:-1]
    elif n_digits == 2:
        # Two digits alternate in runs. The previous tap of my digit is the tap before me if it
        # is mine, else the one before the run of the other digit that precedes me.
        change = np.empty(n, dtype=bool)
        change[0] = True
        change[1:] = digit[1:] != digit[:-1]
        run_start = np.maximum.accumulate(np.where(change, idx, np.int32(0)))
        before = np.empty(n, dtype=np.int64)
        before[0] = -1
        before[1:] = run_start[:-1].astype(np.int64) - 1
        prev[1:] = idx[:-1]
        prev = np.where(change, before, prev)
    else:
        for d in range(n_digits):
            mine = digit == d
            last = np.maximum.accumulate(np.where(mine, idx, np.int32(-1)))
            shifted = np.empty(n, dtype=np.int64)
            shifted[0] = -1
            shifted[1:] = last[:-1]
            prev = np.where(mine, shifted, prev)
    prev[prev < first_of_record] = -1
    return prev


def relative_sigma(distance_mm: np.ndarray, movement_s: np.ndarray, a: float, b: float):
    """FFitts relative spread (mm) for moving `distance_mm` in `movement_s` seconds."""
    if b <= 0:
        return np.zeros_like(distance_mm)
    dtype = np.result_type(distance_mm, movement_s)
    bits = np.clip((movement_s - dtype.type(a)) / dtype.type(b), 1e-3, 60.0)
    return distance_mm / (dtype.type(SQRT_2PIE) * (np.exp2(bits) - 1))


def tap_spread(profile: TypistProfile, key_cx: np.ndarray, key_cy: np.ndarray,
               digit: np.ndarray, first_of_record: np.ndarray):
    """Per-tap (sigma_x, sigma_y, offset_x, offset_y) in mm for taps aimed at given centres."""
    n = len(key_cx)
    f32 = np.float32
    sx = np.full(n, profile.sigma_x_mm, dtype=f32)
    sy = np.full(n, profile.sigma_y_mm, dtype=f32)
    if profile.keystroke_ms > 0 and n:
        prev = previous_same_digit(digit, first_of_record)
        has = prev >= 0
        safe = np.where(has, prev, 0)
        cx32, cy32 = key_cx.astype(f32), key_cy.astype(f32)
        dist = np.hypot(cx32 - cx32[safe], cy32 - cy32[safe])
        dist[~has] = 0.0
        gap = np.where(has, np.arange(n) - safe, 1).astype(f32)
        mt = gap * f32(profile.keystroke_ms / 1000.0)
        rel = relative_sigma(dist, mt, profile.fitts_a_s, profile.fitts_b_s)
        sx = np.sqrt(sx * sx + rel * rel)
        sy = np.sqrt(sy * sy + rel * rel)
    if profile.posture == Posture.TWO_THUMBS:
        # Both thumbs err towards the middle: the right thumb's x offset is mirrored.
        ox = (1 - 2 * digit).astype(f32) * f32(profile.offset_x_mm)
    else:
        ox = np.full(n, profile.offset_x_mm, dtype=f32)
    oy = np.full(n, profile.offset_y_mm, dtype=f32)
    return sx, sy, ox, oy


def miss_probability(width_mm: float, height_mm: float, sigma_x: float, sigma_y: float,
                     offset_x: float = 0.0, offset_y: float = 0.0) -> float:
    """Analytic probability that a Gaussian tap aimed at a key centre lands outside the key."""

    def inside(half: float, sigma: float, off: float) -> float:
        if sigma == 0:
            return 1.0 if abs(off) < half else 0.0
        z = lambda v: 0.5 * (1 + math.erf(v / (sigma * math.sqrt(2))))  # noqa: E731
        return z(half - off) - z(-half - off)

    return 1.0 - inside(width_mm / 2, sigma_x, offset_x) * inside(height_mm / 2, sigma_y, offset_y)
