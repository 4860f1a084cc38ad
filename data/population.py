"""A population of typists over federated clients: every client types differently.

`client_profile` draws one client's typist from a `keyboard_sim.Population`, seeded by (run
seed, client id) alone, so the same client gets the same typist in every build, shard and round,
whatever other clients exist. `PopulationConfig` adds an optional intent preset: the population
is then spread around the `raw` (before autocorrect) or `committed` (what users send) preset of
keyboard_sim/presets.py, with scale factors calibrated so the population's mean character error
rate (CER) stays at the preset's own target (`population_around`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from data.record import derive_seed
from keyboard_sim.channels import RateTable
from keyboard_sim.presets import COMMITTED_TARGET_CER, INTENT_PRESETS, RAW_TARGET_CER
from keyboard_sim.profile import POSTURES, Population, TypistProfile, sample_profile
from keyboard_sim.simulate import simulate
from keyboard_sim.stats import PairStats

# Both intent presets are built on the two-thumb posture (keyboard_sim/presets.py); a preset's
# effect is taken as its ratio to that posture and applied to every sampled typist.
_PRESET_BASE = POSTURES["two_thumbs"]

PRESET_TARGET_CER = {"raw": RAW_TARGET_CER, "committed": COMMITTED_TARGET_CER}

# Extra scale on every typist so that the population's pooled CER matches the preset's target.
# Without it the population types worse than the preset's single two-thumb typist: a quarter of
# typists use one thumb (wider spread), and log-normal spreads raise the mean above the median.
# Found by `calibrate_scale(preset, texts)` (texts: the first 5,000 chitchat messages; 500
# typists; the mean over seeds 0-7):
# `raw` scales the touch spread only, `committed` the spread and every rate together, as
# keyboard_sim/presets.py calibrates the presets themselves.
CALIBRATED_SCALE = {"raw": 0.8443, "committed": 0.7795}

DEFAULT_POPULATION = Population()


def client_profile(client_id: str, seed: int,
                   population: Population = DEFAULT_POPULATION) -> TypistProfile:
    """The typist of one client: a draw from `population` seeded by (seed, "typist", client id).

    A pure function of its arguments; the profile is named "client:<client id>".
    """
    rng = np.random.default_rng(derive_seed(seed, "typist", client_id))
    return sample_profile(rng, population, name=f"client:{client_id}")


@dataclass(frozen=True)
class PopulationConfig:
    """How client typists are drawn: a `Population`, optionally moved to an intent preset.

    Attributes:
        preset: None to use the posture presets as `sample_profile` does; "raw" or "committed"
            to scale each typist as that preset scales the two-thumb posture (touch spread, and
            each channel rate by its ratio).
        population: The spread of typists (posture mix, log-normal spreads).
        sigma_scale: Further factor on every typist's touch spread.
        rate_scale: Further factor on every channel rate (clipped at 1).
    """

    preset: str | None = None
    population: Population = field(default_factory=Population)
    sigma_scale: float = 1.0
    rate_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in INTENT_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: "
                             f"{', '.join(INTENT_PRESETS)} (or None)")
        for name in ("sigma_scale", "rate_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")

    def profile(self, client_id: str, seed: int) -> TypistProfile:
        """The typist of one client (same draw as `client_profile`, then scaled)."""
        p = client_profile(client_id, seed, self.population)
        sigma, rate = self.sigma_scale, self.rate_scale
        rates = {c.value: r for c, r in p.rates.items()}
        if self.preset is not None:
            preset = INTENT_PRESETS[self.preset]
            sigma *= preset.sigma_x_mm / _PRESET_BASE.sigma_x_mm
            for c, base_rate in _PRESET_BASE.rates.items():
                if base_rate > 0:
                    rates[c.value] *= preset.rates[c] / base_rate
        if sigma == 1.0 and rate == 1.0 and self.preset is None:
            return p
        return dataclasses.replace(
            p, sigma_x_mm=p.sigma_x_mm * sigma, sigma_y_mm=p.sigma_y_mm * sigma,
            rates=RateTable({c: min(1.0, r * rate) for c, r in rates.items()}),
        )

    def to_dict(self) -> dict:
        """A JSON-ready dict for manifests."""
        pop = dataclasses.asdict(self.population)
        pop["posture_mix"] = [[n, p] for n, p in self.population.posture_mix]
        return {"preset": self.preset, "population": pop, "sigma_scale": self.sigma_scale,
                "rate_scale": self.rate_scale}

    @classmethod
    def from_dict(cls, d: Mapping) -> PopulationConfig:
        """The inverse of `to_dict`; unknown fields are an error."""
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown population config field(s): {', '.join(unknown)}")
        if "population" in d:
            pop = dict(d["population"])
            if "posture_mix" in pop:
                pop["posture_mix"] = tuple((str(n), float(p)) for n, p in pop["posture_mix"])
            try:
                d["population"] = Population(**pop)
            except TypeError as e:
                raise ValueError(f"population: {e}") from None
        return cls(**d)


def population_around(preset: str, population: Population = DEFAULT_POPULATION) -> PopulationConfig:
    """A population spread around an intent preset, its mean CER calibrated to the preset's.

    Uses `CALIBRATED_SCALE`, which holds for the default `Population` (another spread
    changes the mean, so calibrate it again with `calibrate_scale`).
    """
    if preset not in PRESET_TARGET_CER:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESET_TARGET_CER)}")
    return _scaled(preset, population, CALIBRATED_SCALE[preset])


def _scaled(preset: str, population: Population, scale: float) -> PopulationConfig:
    if preset == "raw":
        return PopulationConfig(preset, population, sigma_scale=scale)
    return PopulationConfig(preset, population, sigma_scale=scale, rate_scale=scale)


def typist_cers(config: PopulationConfig, texts: Sequence[str], seed: int = 0,
                typists: int = 500, layout: str = "en-US") -> tuple[float, np.ndarray]:
    """The pooled CER of a population on `texts`, and each typist's own CER.

    The texts are dealt out in turn to `typists` clients ("typist-0", ...), so every typist
    types a different slice; the pooled CER (all edits over all characters) estimates the
    population's mean, weighted by characters.
    """
    if typists < 1:
        raise ValueError(f"typists must be >= 1, got {typists}")
    total = PairStats()
    each = []
    for t in range(min(typists, len(texts))):
        client = f"typist-{t}"
        mine = list(texts[t::typists])
        pairs = simulate(mine, config.profile(client, seed), layout,
                         derive_seed(seed, "pairs", client, 0),
                         ids=[f"{client}/{i}" for i in range(len(mine))])
        stats = PairStats.of(pairs)
        total = total + stats
        each.append(stats.cer)
    return total.cer, np.array(each)


def calibrate_scale(preset: str, texts: Sequence[str],
                    population: Population = DEFAULT_POPULATION, seeds: Sequence[int] = range(8),
                    typists: int = 500, tol: float = 1e-4) -> float:
    """The scale at which the population around `preset` has the preset's target CER.

    The CER is the mean of `typist_cers` over `seeds` (one seed's 500 typists leave a
    sampling error of about 2.5% of the CER); bisection on log(scale) in [1/4, 4], as CER
    grows with both touch spread and slip rates.
    """
    target = PRESET_TARGET_CER[preset]
    lo, hi = math.log(0.25), math.log(4.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        config = _scaled(preset, population, math.exp(mid))
        cer = float(np.mean([typist_cers(config, texts, s, typists)[0] for s in seeds]))
        if abs(cer - target) < tol:
            break
        lo, hi = (mid, hi) if cer < target else (lo, mid)
    return round(math.exp(mid), 4)
