"""Typist profiles: how one person's taps land on the keys, and how often they slip.

A `TypistProfile` holds the touch model's parameters (posture, spread, systematic offset, speed)
and the rates of the error channels. Presets give typical postures; `sample_profile` draws a new
typist from a population, so every simulated user types differently.

Sources of the defaults:
- Azenkot & Zhai 2012, "Touch behavior with different postures on soft smartphone keyboards"
  (MobileHCI): 32 participants typing with two thumbs, one thumb and an index finger. Touch
  points had a spread of roughly 1 to 1.5 mm (standard deviation) per axis, larger for one
  thumb than for two thumbs or the index finger, and pronounced, consistent offsets from the key
  centres, mostly downwards (towards the user) by around a millimetre.
- Henze, Rukzio & Boll 2011, "100,000,000 taps" (MobileHCI): systematic, position-dependent
  offsets of touches on phone screens, consistent across users.
- Bi, Li & Zhai 2013, "FFitts law" (CHI): the touch point is the sum of two independent normal
  distributions, an absolute precision sigma_a of the finger and a relative part that follows
  Fitts' speed-accuracy trade-off. The relative part here comes from inverting Fitts' law for
  the distance travelled since the digit's last tap and the time it had (see touch.py).
The numbers below are this project's settings chosen within the ranges those studies report, not
figures copied from a table; `kbsim calibrate` fits them to a user's own logs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

import numpy as np

from keyboard_sim.channels import DEFAULT_RATES, Channel, RateTable, validate_rates


class Posture(StrEnum):
    """How the keyboard is held and tapped."""

    TWO_THUMBS = "two_thumbs"
    ONE_THUMB = "one_thumb"
    INDEX_FINGER = "index_finger"
    # Ten fingers on a physical keyboard (for logs such as the Aalto 136M keystrokes data).
    PHYSICAL = "physical"


@dataclass(frozen=True)
class TypistProfile:
    """One typist's touch model and slip rates. Frozen; validated on construction.

    Attributes:
        name: Label for reports.
        posture: Decides which digit taps each key (two thumbs split the keyboard in halves),
            and so the distance each digit travels between its taps.
        sigma_x_mm, sigma_y_mm: Absolute precision of a tap (FFitts sigma_a) per axis, in mm.
        offset_x_mm, offset_y_mm: Systematic offset of taps from the key centre in mm (+y is
            down, towards the user). For two thumbs the x offset points towards the middle of
            the keyboard for both thumbs (mirrored for the right thumb).
        keystroke_ms: Mean time between two keystrokes; with the distance travelled it sets the
            speed-dependent (relative) spread of a tap. 0 disables the speed-accuracy term.
        fitts_a_s, fitts_b_s: Intercept (s) and slope (s/bit) of Fitts' law for this typist.
        cross_hand_factor: Multiplier on the transposition rate for letter pairs typed by
            different digits.
        place_weights: How much slips happen at a letter that is (first, middle, last) in its
            word: multiplies the motor-slip rates (omission, double tap, neighbour touch,
            transposition starting there); the touch model is left alone. (1, 1, 1) is no
            effect; `kbsim calibrate` fits them, as real typists slip less on a word's first
            letter and more on its last.
        rates: Rate of each error channel (see channels.py for the unit of each).
    """

    name: str = "two_thumbs"
    posture: Posture = Posture.TWO_THUMBS
    sigma_x_mm: float = 1.0
    sigma_y_mm: float = 1.1
    offset_x_mm: float = 0.3
    offset_y_mm: float = 0.8
    keystroke_ms: float = 300.0
    fitts_a_s: float = 0.05
    fitts_b_s: float = 0.06
    cross_hand_factor: float = 2.0
    place_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rates: RateTable = field(default_factory=lambda: RateTable(DEFAULT_RATES))

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "posture", Posture(self.posture))
        except ValueError:
            known = ", ".join(p.value for p in Posture)
            raise ValueError(f"unknown posture {self.posture!r}; known: {known}") from None
        for name in ("sigma_x_mm", "sigma_y_mm", "keystroke_ms", "fitts_b_s", "cross_hand_factor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"profile field {name} must be a finite number >= 0, got {value!r}")
        for name in ("offset_x_mm", "offset_y_mm", "fitts_a_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"profile field {name} must be a finite number, got {value!r}")
        try:
            weights = tuple(float(w) for w in self.place_weights)
        except (TypeError, ValueError):
            weights = ()
        if len(weights) != 3 or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError("profile field place_weights must be three finite numbers >= 0 "
                             f"(first, middle, last letter), got {self.place_weights!r}")
        object.__setattr__(self, "place_weights", weights)
        if self.keystroke_ms > 0 and self.keystroke_ms / 1000.0 <= self.fitts_a_s:
            raise ValueError(
                f"keystroke_ms ({self.keystroke_ms}) must exceed Fitts' intercept "
                f"fitts_a_s ({self.fitts_a_s} s), or be 0 to switch the speed term off"
            )
        object.__setattr__(self, "rates", RateTable(validate_rates(dict(self.rates))))

    def with_rates(self, **rates: float) -> TypistProfile:
        """Returns a copy with some channel rates replaced (by channel value)."""
        merged = {c.value: r for c, r in self.rates.items()}
        merged.update(rates)
        return dataclasses.replace(self, rates=merged)

    def only(self, channel: Channel | str | None, rate: float = 1.0) -> TypistProfile:
        """Returns a copy where every channel is off (and taps are exact) except `channel`.

        With `channel=None` the copy makes no error at all. Used to force one branch at a time.
        """
        zero = {c.value: 0.0 for c in self.rates}
        if channel is not None and Channel(channel) != Channel.SUBSTITUTION:
            zero[Channel(channel).value] = rate
        exact = channel is None or Channel(channel) != Channel.SUBSTITUTION
        return dataclasses.replace(
            self,
            rates=RateTable(zero),
            sigma_x_mm=0.0 if exact else self.sigma_x_mm,
            sigma_y_mm=0.0 if exact else self.sigma_y_mm,
            offset_x_mm=0.0,
            offset_y_mm=0.0,
            keystroke_ms=0.0,
        )

    def to_dict(self) -> dict:
        """A JSON-ready dict (rates by channel value)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["posture"] = self.posture.value
        d["place_weights"] = list(self.place_weights)
        d["rates"] = {c.value: float(r) for c, r in self.rates.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TypistProfile:
        """Builds a profile from `to_dict` output; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown profile field(s): {', '.join(unknown)}")
        d = dict(d)
        if "rates" in d:
            if not isinstance(d["rates"], dict):
                raise ValueError("profile field rates must be an object of channel -> rate")
            d["rates"] = RateTable(validate_rates(d["rates"]))
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Writes the profile as JSON (atomically)."""
        from keyboard_sim.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


# Presets per posture. Spread: one thumb is the least precise, the index finger the most
# (Azenkot & Zhai 2012 report this ordering). Speed: two thumbs are the fastest posture.
POSTURES: MappingProxyType = MappingProxyType(
    {
        "two_thumbs": TypistProfile(
            name="two_thumbs", posture=Posture.TWO_THUMBS, sigma_x_mm=1.0, sigma_y_mm=1.1,
            offset_x_mm=0.3, offset_y_mm=0.8, keystroke_ms=300.0,
        ),
        "one_thumb": TypistProfile(
            name="one_thumb", posture=Posture.ONE_THUMB, sigma_x_mm=1.25, sigma_y_mm=1.35,
            offset_x_mm=0.4, offset_y_mm=1.0, keystroke_ms=420.0,
        ),
        "index_finger": TypistProfile(
            name="index_finger", posture=Posture.INDEX_FINGER, sigma_x_mm=0.9, sigma_y_mm=1.0,
            offset_x_mm=0.0, offset_y_mm=0.6, keystroke_ms=380.0,
        ),
        # Ten-finger typing on a 19 mm pitch physical keyboard: keys are three times larger
        # than phone keys, so spatial misses are rare and slips (omissions, insertions,
        # transpositions) dominate, as in the Aalto 136M keystrokes data (Dhakal et al. 2018).
        "physical": TypistProfile(
            name="physical", posture=Posture.PHYSICAL, sigma_x_mm=2.5, sigma_y_mm=2.5,
            offset_x_mm=0.0, offset_y_mm=0.0, keystroke_ms=200.0, fitts_a_s=0.05,
            fitts_b_s=0.04,
            rates=RateTable(
                dict(DEFAULT_RATES)
                | {
                    Channel.SPACE_SUBSTITUTION: 0.0005,
                    Channel.SPACE_INSERTION: 0.0002,
                    Channel.DROP_CAPITAL: 0.01,
                    Channel.DROP_APOSTROPHE: 0.02,
                    Channel.DROP_PUNCTUATION: 0.02,
                    Channel.MISSPELLING: 0.01,
                }
            ),
        ),
    }
)


@dataclass(frozen=True)
class Population:
    """Distributions that typists are drawn from (one draw per simulated user).

    Attributes:
        posture_mix: Probability of each posture (phones; must sum to 1).
        sigma_log_sd: Log-normal spread of each typist's precision around the posture preset.
        offset_sd_mm: Normal spread of each typist's systematic offset around the preset.
        speed_log_sd: Log-normal spread of keystroke time around the preset.
        rate_log_sd: Log-normal spread of each channel rate around the preset.
    """

    # Two thumbs is the most common posture for phone typing; the split is this project's
    # assumption (Azenkot & Zhai 2012 observed all three postures in everyday use).
    posture_mix: tuple[tuple[str, float], ...] = (
        ("two_thumbs", 0.6),
        ("one_thumb", 0.25),
        ("index_finger", 0.15),
    )
    sigma_log_sd: float = 0.2
    offset_sd_mm: float = 0.4
    speed_log_sd: float = 0.25
    rate_log_sd: float = 0.5

    def __post_init__(self) -> None:
        total = sum(p for _, p in self.posture_mix)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"posture_mix must sum to 1, got {total}")
        for name, _ in self.posture_mix:
            if name not in POSTURES:
                raise ValueError(f"unknown posture {name!r} in posture_mix")


def sample_profile(rng: np.random.Generator, population: Population = Population(),
                   name: str = "sampled") -> TypistProfile:
    """Draws one typist from `population` with the explicit generator `rng`."""
    names = [n for n, _ in population.posture_mix]
    probs = [p for _, p in population.posture_mix]
    base = POSTURES[names[int(rng.choice(len(names), p=probs))]]
    lognorm = lambda sd: float(np.exp(rng.normal(0.0, sd)))  # noqa: E731
    sigma = lognorm(population.sigma_log_sd)
    keystroke = max(base.keystroke_ms * lognorm(population.speed_log_sd),
                    1000 * base.fitts_a_s + 20)
    rates = {c.value: min(1.0, r * lognorm(population.rate_log_sd)) for c, r in base.rates.items()}
    return dataclasses.replace(
        base,
        name=name,
        sigma_x_mm=base.sigma_x_mm * sigma,
        sigma_y_mm=base.sigma_y_mm * sigma,
        offset_x_mm=base.offset_x_mm + float(rng.normal(0.0, population.offset_sd_mm)),
        offset_y_mm=base.offset_y_mm + float(rng.normal(0.0, population.offset_sd_mm)),
        keystroke_ms=keystroke,
        rates=RateTable(rates),
    )


def load_profile(spec: str | Path | TypistProfile) -> TypistProfile:
    """A profile from a preset name (posture or intent preset), a JSON file, or a profile."""
    if isinstance(spec, TypistProfile):
        return spec
    from keyboard_sim.presets import INTENT_PRESETS

    key = str(spec)
    if key in INTENT_PRESETS:
        return INTENT_PRESETS[key]
    if key in POSTURES:
        return POSTURES[key]
    path = Path(key)
    if not path.exists():
        known = ", ".join([*INTENT_PRESETS, *POSTURES])
        raise ValueError(f"profile {key!r} is neither a preset ({known}) nor an existing file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"profile file {path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile file {path}: expected a JSON object")
    try:
        return TypistProfile.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"profile file {path}: {e}") from None
