"""Realism check on real typing: does calibrating the simulator bring it closer to held-out typists?

Data: ../shared/data/typing/aalto_typed_pairs_dev.tsv, a sample of the Aalto "136M Keystrokes"
transcription data (Dhakal, Feit, Kristensson & Oulasvirta, CHI 2018; via wxyzz22/TypeLikeU;
non-commercial research use with attribution). It is read in place, never copied.

Method: the participants are split into two halves by a stable hash of their id
(`calibrate.split_groups`). A profile is calibrated on half A (base: the "physical" preset, layout
en-US-physical). Then the intended texts of half B are typed by the simulator with each profile,
and the error mix of the simulated pairs is compared with half B's real pairs
(`fidelity.compare`; Jensen-Shannon divergences in bits, lower is closer), for several
simulation seeds. The same script prints how often the labels recovered by alignment agree with
the simulator's own provenance for each profile.

    python scripts/realism_aalto.py [--pairs FILE] [--seeds 1 2 3] [--out calibrated.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = ROOT.parent / "shared" / "data" / "typing" / "aalto_typed_pairs_dev.tsv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                    help="simulation seeds for the held-out comparison")
    ap.add_argument("--refine", type=int, default=3, help="calibration refinement rounds")
    ap.add_argument("--out", type=Path, help="also save the calibrated profile here (JSON)")
    ap.add_argument("--full", action="store_true",
                    help="print the side-by-side table for every profile, not only two")
    args = ap.parse_args(argv)

    from keyboard_sim.align import agreement
    from keyboard_sim.calibrate import calibrate_detailed, read_pairs, split_groups
    from keyboard_sim.fidelity import compare
    from keyboard_sim.lexicon import load_lexicon
    from keyboard_sim.simulate import simulate

    if not args.pairs.exists():
        print(f"realism_aalto: {args.pairs} not found (the Aalto sample lives in "
              "../shared/data/typing/)", file=sys.stderr)
        return 2
    pairs = read_pairs(args.pairs)
    half_a, half_b = split_groups(pairs)
    print(f"{args.pairs.name}: {len(pairs):,} pairs; calibrate on half A "
          f"({len(half_a):,} pairs, {len({p.group for p in half_a})} participants), "
          f"compare on half B ({len(half_b):,} pairs, {len({p.group for p in half_b})} "
          "participants)\n")

    t0 = time.perf_counter()
    cal = calibrate_detailed([(p.clean, p.noisy) for p in half_a], "en-US-physical", "physical",
                             refine=args.refine, seed=0)
    print(cal.to_text())
    print(f"(calibration took {time.perf_counter() - t0:.1f} s)\n")
    if args.out:
        cal.profile.save(args.out)
        print(f"calibrated profile written to {args.out}\n")

    real_b = [(p.clean, p.noisy) for p in half_b]
    candidates = [
        ("physical preset", "physical", "en-US-physical"),
        ("raw preset (phone)", "raw", "en-US"),
        ("committed preset (phone)", "committed", "en-US"),
        ("calibrated on half A", cal.profile, "en-US-physical"),
    ]
    lex = load_lexicon("codespell")
    rows = []
    reports = {}
    for label, profile, layout in candidates:
        divs, cers, shares = [], [], []
        for seed in args.seeds:
            rep = compare(real_b, profile, layout, seed, lexicon=lex, source="half B")
            reports.setdefault(label, rep)
            d = rep.divergence
            divs.append((d.types, d.position, d.per_text, d.combined))
            cers.append(rep.simulated.cer)
            shares.append(rep.simulated.error_share)
        sims = simulate([c for c, _ in real_b], profile, layout, args.seeds[0])
        ag = agreement(sims, lex)
        rows.append((label, layout, divs, statistics.mean(cers), statistics.mean(shares), ag))

    real_mix = reports[candidates[0][0]].real
    print(f"held-out half B: real character error rate {100 * real_mix.cer:.2f}%, "
          f"texts with any error {100 * real_mix.error_share:.1f}%\n")
    print("Jensen-Shannon divergence from half B's real error mix (bits; mean +- sd over "
          f"seeds {', '.join(map(str, args.seeds))}; lower is closer)\n")
    head = (f"{'profile':<26}{'layout':<16}{'types':>15}{'position':>15}{'per text':>15}"
            f"{'combined':>15}{'sim CER':>9}{'any err':>9}")
    print(head)
    print("-" * len(head))

    def fmt(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f}+-{sd:.4f}"

    for label, layout, divs, cer, share, _ in rows:
        cols = [fmt([d[i] for d in divs]) for i in range(4)]
        print(f"{label:<26}{layout:<16}" + "".join(f"{c:>15}" for c in cols)
              + f"{100 * cer:>8.2f}%{100 * share:>8.1f}%")

    print("\nlabels recovered by alignment vs the simulator's provenance "
          f"(half B intended texts, seed {args.seeds[0]})\n")
    print(f"{'profile':<26}{'edits':>9}{'edit recall':>13}{'pairs equal':>13}")
    for label, _, _, _, _, ag in rows:
        print(f"{label:<26}{ag.edits:>9,}{100 * ag.edit_rate:>12.1f}%{100 * ag.pair_rate:>12.1f}%")

    shown = [c[0] for c in candidates] if args.full else [candidates[0][0], candidates[-1][0]]
    for label in shown:
        print("\n" + "=" * 72 + f"\n{label}\n")
        print(reports[label].to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
