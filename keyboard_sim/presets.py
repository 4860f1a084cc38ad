"""Intent presets: `raw` (what lands on the keys) and `committed` (what users leave).

- `raw`: taps before any keyboard decoding or autocorrect. On phones the share of letters
  whose touch point lands outside the intended key is about 8-9% (Azenkot & Zhai 2012 report
  touch accuracy of this order for soft QWERTY keyboards without correction). Calibrated so
  the simulated character error rate on the default chat corpus is 8.5%.
- `committed`: what users leave in sent text after the keyboard's autocorrect and their own
  fixes. Palin et al. 2019 ("How do people type on mobile devices? Observations from a study
  with 37,000 volunteers", MobileHCI) report about 2.3% uncorrected errors. Calibrated so the
  simulated character error rate is 2.3%.

How: `python scripts/calibrate_presets.py` simulates the first 5,000 messages of the default
corpus (chitchat-dataset) with a two-thumb typist and bisects one scale factor per preset:
for `raw`, the touch spread (sigma) with all other rates at their defaults; for `committed`,
every channel rate and the spread together (autocorrect removes most slips of every kind).
The factors it printed are the constants below; tests/test_presets.py re-measures both rates.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from keyboard_sim.channels import DEFAULT_RATES, RateTable
from keyboard_sim.profile import POSTURES, TypistProfile

RAW_TARGET_CER = 0.085
COMMITTED_TARGET_CER = 0.023

# Factors found by scripts/calibrate_presets.py (see module docstring).
RAW_SIGMA_SCALE = 1.6952
COMMITTED_SCALE = 0.6402


def raw_profile(sigma_scale: float = RAW_SIGMA_SCALE) -> TypistProfile:
    """Two-thumb typist before correction, touch spread scaled by `sigma_scale`."""
    base = POSTURES["two_thumbs"]
    return dataclasses.replace(
        base, name="raw", sigma_x_mm=base.sigma_x_mm * sigma_scale,
        sigma_y_mm=base.sigma_y_mm * sigma_scale,
    )


def committed_profile(scale: float = COMMITTED_SCALE) -> TypistProfile:
    """What remains after correction: spread and every rate scaled by `scale`."""
    base = raw_profile()
    rates = {c.value: min(1.0, r * scale) for c, r in DEFAULT_RATES.items()}
    return dataclasses.replace(
        base, name="committed", sigma_x_mm=base.sigma_x_mm * scale,
        sigma_y_mm=base.sigma_y_mm * scale, rates=RateTable(rates),
    )


INTENT_PRESETS: MappingProxyType = MappingProxyType(
    {"raw": raw_profile(), "committed": committed_profile()}
)
