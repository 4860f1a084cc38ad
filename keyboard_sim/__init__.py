"""keyboard_sim: clean text -> (noisy, clean) pairs, the way people mistype on a phone.

The public API:
    simulate(texts, profile="raw", layout="en-US", seed=0) -> list[Pair]
    simulate_iter(...)            streaming form
    TypistProfile, Posture, POSTURES, Population, sample_profile, load_profile
    Channel, DEFAULT_RATES        error channels and their default rates
    Layout, load_layout, available_layouts
    Pair, Edit, Touch             records with provenance
Importing this package loads only numpy; tables are built on first use.
"""

from keyboard_sim.channels import DEFAULT_RATES, Channel
from keyboard_sim.layout import Layout, available_layouts, load_layout
from keyboard_sim.pair import Edit, Pair, Touch
from keyboard_sim.profile import (
    POSTURES,
    Population,
    Posture,
    TypistProfile,
    load_profile,
    sample_profile,
)
from keyboard_sim.simulate import simulate, simulate_iter

__all__ = [
    "DEFAULT_RATES",
    "Channel",
    "Edit",
    "Layout",
    "POSTURES",
    "Pair",
    "Population",
    "Posture",
    "Touch",
    "TypistProfile",
    "available_layouts",
    "load_layout",
    "load_profile",
    "sample_profile",
    "simulate",
    "simulate_iter",
]
