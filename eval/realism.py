"""Realism of the simulator: the error mix of simulated pairs against real typing, with divergences.

The question is whether the simulator's errors look like people's, and whether calibrating it on
real logs brings it closer. Data: the Aalto "136M Keystrokes" transcription sample
(../shared/data/typing/aalto_typed_pairs_dev.tsv; Dhakal, Feit, Kristensson & Oulasvirta,
CHI 2018; via wxyzz22/TypeLikeU; non-commercial research use with attribution), read in place.

Method (the one of scripts/realism_aalto.py, as a library function whose output the report
renders):

1. The participants are split in two halves by a stable hash of their id
   (`keyboard_sim.calibrate.split_groups`), so no typist is in both.
2. A profile is fitted on half A (`keyboard_sim.calibrate.calibrate_detailed`, base: the
   "physical" preset on the `en-US-physical` layout, since the Aalto participants typed on
   physical keyboards).
3. Half B's intended texts are typed by the simulator with each preset and with the calibrated
   profile, all with the same simulation seed (common random numbers, so the profiles differ only
   by their settings).
4. Both sides are aligned and labelled the same way (`keyboard_sim.align`) and their error mixes
   compared (`keyboard_sim.fidelity.divergence`): Jensen-Shannon divergences in bits (Lin 1991,
   base 2 so 0 = identical and 1 = disjoint) of the edit-type shares, of the relative position of
   motor slips in words and of the number of edits per text; lower is closer.

The output is plain JSON (counts per edit type, not only shares, so that anyone can recompute a
divergence or a confidence interval from it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from data.record import derive_seed
from keyboard_sim.align import Lexicon, resolve_lexicon
from keyboard_sim.fidelity import TYPE_ORDER, ErrorMix, divergence
from keyboard_sim.profile import Posture, TypistProfile, load_profile

# ../shared/data/ beside the repository (see /work/shared/data/SOURCES.md).
DEFAULT_PAIRS = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "typing"
                 / "aalto_typed_pairs_dev.tsv")
CALIBRATED = "calibrated"  # key of the calibrated profile's entry in the output
# The calibration's base and keyboard: Aalto participants typed on physical keyboards.
CALIBRATION_BASE = "physical"
CALIBRATION_LAYOUT = "en-US-physical"


class RealismError(ValueError):
    """The real pairs cannot be read or are too few to compare (the message says which)."""


def layout_for(profile: TypistProfile) -> str:
    """The shipped layout a profile types on: the physical keyboard for the ten-finger posture,
    the phone keyboard otherwise."""
    return CALIBRATION_LAYOUT if profile.posture == Posture.PHYSICAL else "en-US"


def mix_summary(mix: ErrorMix) -> dict:
    """JSON-ready counts of an error mix: pairs, edits per type (every type, zeros included, in
    the simulator's channel order), character error rate and share of texts with any error."""
    return {
        "pairs": mix.pairs,
        "pairs_with_error": mix.pairs_with_error,
        "error_share": mix.error_share,
        "clean_chars": mix.clean_chars,
        "distance": mix.distance,
        "cer": mix.cer,
        "edits": mix.edits,
        "types": {c.value: int(mix.types.get(c.value, 0)) for c in TYPE_ORDER},
    }


def compare_mixes(real: ErrorMix, simulated: ErrorMix) -> dict:
    """The simulated side's summary and its divergences (bits) from the real mix."""
    d = divergence(real, simulated)
    return {
        "simulated": mix_summary(simulated),
        "divergence": {"types": d.types, "position": d.position, "per_text": d.per_text,
                       "combined": d.combined},
    }


def simulated_mix(
    texts: Sequence[str], profile: TypistProfile, layout: str, seed: int, lexicon: Lexicon | None
) -> ErrorMix:
    """Types `texts` with `profile` and returns the error mix of the simulated pairs, labelled by
    alignment exactly as the real pairs are (not by the simulator's provenance), so both sides
    pass through the same labeller and its biases cancel."""
    from keyboard_sim.simulate import simulate

    pairs = simulate(texts, profile, layout, seed)
    return ErrorMix.of_pairs(((p.clean, p.noisy) for p in pairs), lexicon)


def realism(
    pairs_path: str | Path | None = None,
    presets: Iterable[str | TypistProfile] = ("physical",),
    seed: int = 0,
    limit: int | None = None,
    *,
    refine: int = 3,
    lexicon: Lexicon | str | None = "codespell",
) -> dict:
    """Compares the error mix of held-out real typists with the simulator's, per profile.

    Args:
        pairs_path: Real (intended, typed) pairs with a participant column (TSV or JSONL, see
            `keyboard_sim.calibrate.read_pairs`). Default: the Aalto sample in ../shared.
        presets: Profiles to compare besides the calibrated one (preset names or profiles); each
            types on `layout_for(profile)`.
        seed: Run seed; the calibration and simulation seeds are derived from it.
        limit: Keep at most this many pairs of each half (the first in file order), for speed.
        refine: Calibration refinement rounds (see `calibrate_detailed`).
        lexicon: Word lists for labelling whole-word errors, the same for both sides.

    Returns:
        {"source", "seed", "limit", "split": {"calibrate"|"compare": {"pairs", "participants"}},
        "real": mix summary of half B, "profiles": {name: {"profile", "layout", "calibrated",
        "simulated": mix summary, "divergence": {"types", "position", "per_text", "combined"}}},
        "calibrated_profile": the fitted profile as a dict, "calibration_notes": [str]}.
        Profile entries come in the order given, the calibrated one ("calibrated") last.

    Raises:
        RealismError: The file is missing or unreadable, a half has no pairs, or a preset is
            unknown or named "calibrated".
    """
    from keyboard_sim.calibrate import calibrate_detailed, read_pairs, split_groups

    path = Path(pairs_path) if pairs_path is not None else DEFAULT_PAIRS
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise RealismError(f"realism: limit must be an int >= 1 or None, got {limit!r}")
    if not path.exists():
        raise RealismError(f"realism: real pairs {path} not found (the Aalto sample lives in "
                           "../shared/data/typing/)")
    try:
        logged = read_pairs(path)
        profiles = [load_profile(p) for p in presets]
    except ValueError as e:
        raise RealismError(f"realism: {e}") from None
    names = [p.name for p in profiles]
    for n in names:
        if n == CALIBRATED:
            raise RealismError(f"realism: preset name {CALIBRATED!r} is reserved for the "
                               "profile fitted here")
        if names.count(n) > 1:
            raise RealismError(f"realism: preset {n!r} given twice")
    half_a, half_b = split_groups(logged)
    if limit is not None:
        half_a, half_b = half_a[:limit], half_b[:limit]
    for name, half in (("calibration", half_a), ("comparison", half_b)):
        if not half:
            raise RealismError(f"realism: {path}: the {name} half has no pairs ({len(logged)} "
                               "pairs read; are they all from one participant?)")
    lex = resolve_lexicon(lexicon)

    cal = calibrate_detailed([(p.clean, p.noisy) for p in half_a], CALIBRATION_LAYOUT,
                             CALIBRATION_BASE, refine=refine,
                             seed=derive_seed(seed, "realism", "calibrate"), lexicon=lex)
    real = ErrorMix.of_pairs(((p.clean, p.noisy) for p in half_b), lex)
    texts = [p.clean for p in half_b]
    sim_seed = derive_seed(seed, "realism", "simulate")

    entries: dict[str, dict] = {}
    for prof, is_cal in [*((p, False) for p in profiles), (cal.profile, True)]:
        name = CALIBRATED if is_cal else prof.name
        layout = CALIBRATION_LAYOUT if is_cal else layout_for(prof)
        mix = simulated_mix(texts, prof, layout, sim_seed, lex)
        entries[name] = {"profile": prof.name, "layout": layout, "calibrated": is_cal,
                         **compare_mixes(real, mix)}
    return {
        "source": path.name,
        "seed": seed,
        "limit": limit,
        "split": {
            "calibrate": {"pairs": len(half_a), "participants": len({p.group for p in half_a})},
            "compare": {"pairs": len(half_b), "participants": len({p.group for p in half_b})},
        },
        "real": mix_summary(real),
        "profiles": entries,
        "calibrated_profile": _jsonable(cal.profile.to_dict()),
        "calibration_notes": list(cal.notes),
    }


def _jsonable(x):
    """Plain JSON types (str for enums, lists for tuples) of a nested dict."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, str):
        return str(x)
    if isinstance(x, (bool, int, float)) or x is None:
        return x
    return str(x)
