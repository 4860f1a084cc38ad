"""The `kbsim` command: one entry point, a subcommand per job.

    kbsim simulate --input FILE --output FILE [options]   clean texts -> (noisy, clean) pairs
    kbsim layouts                                          list the shipped keyboard layouts
    kbsim calibrate --pairs FILE --out PROFILE             fit a typist profile to real pairs
    kbsim fidelity --pairs FILE --profile PROFILE          simulated vs real error mix
    kbsim data build CONFIG --out DIR                      an experiment's data, resumable
    kbsim data summary DIR                                 the summary table of a built dataset
    kbsim train nwp CONFIG --out DIR                       a next-word LM, resumable
    kbsim demo [--out DIR]                                 the main job on the default corpus

Bad input or settings end with exit status 2 and one line on stderr naming the problem (and,
for a bad record, the file and line), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kbsim import __version__
from kbsim.federated_cli import add_federated_parser
from kbsim.run_cli import add_run_parser
from kbsim.train_cli import add_train_parser
from keyboard_sim.simulate import DEFAULT_CHUNK

EXIT_USAGE = 2


class _Fail(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _err(msg: str) -> None:
    print(f"kbsim: error: {msg}", file=sys.stderr)


def _progress(flag: bool | None) -> bool:
    """--progress / --no-progress, else a bar only when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


def cmd_simulate(args: argparse.Namespace) -> int:
    from kbsim.simjob import SimulateJob, keep_heap, run_simulate

    keep_heap()

    job = SimulateJob(
        input=Path(args.input), output=Path(args.output), layout=args.layout,
        profile=args.profile, seed=args.seed, workers=args.workers, chunk_size=args.chunk_size,
        output_format=args.format, input_format=args.input_format, text_field=args.text_field,
        id_field=args.id_field, touches=args.touches,
        rejects=Path(args.rejects) if args.rejects else None,
        m2=Path(args.m2) if args.m2 else None,
    )
    summary = run_simulate(job, progress=_progress(args.progress))
    print(f"kbsim simulate: {summary.line()} -> {job.output}", file=sys.stderr)
    return 0


def cmd_layouts(args: argparse.Namespace) -> int:
    from keyboard_sim.layout import available_layouts

    for name in available_layouts():
        print(name)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from keyboard_sim.calibrate import calibrate_file

    kwargs = {"layout": args.layout} if args.layout else {}
    profile = calibrate_file(args.pairs, **kwargs)
    profile.save(args.out)
    print(f"kbsim calibrate: wrote {args.out}", file=sys.stderr)
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from keyboard_sim.fidelity import fidelity_report

    kwargs = {"layout": args.layout} if args.layout else {}
    report = fidelity_report(args.pairs, args.profile, seed=args.seed, limit=args.limit, **kwargs)
    print(report if isinstance(report, str) else report.to_text())
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from data.build import build, format_summary
    from data.config import DataConfig

    config = DataConfig.load(args.config) if args.config else DataConfig()
    if args.limit is not None:
        import dataclasses

        config = dataclasses.replace(
            config, corpus=dataclasses.replace(config.corpus, limit=args.limit))
    summary = build(config, Path(args.out), progress=_progress(args.progress))
    print(format_summary(summary))
    print(f"kbsim data build: wrote {args.out}/ (manifest.json, messages/, pairs/, vocab.json, "
          "subword.model)", file=sys.stderr)
    return 0


def cmd_data_summary(args: argparse.Namespace) -> int:
    from data.build import format_summary
    from data.store import Manifest, StoreError

    manifest = Manifest.load(args.dir)
    if manifest is None or "summary" not in manifest.data:
        raise StoreError(f"{args.dir}: no finished data build here (run kbsim data build)")
    print(format_summary(manifest.data["summary"]))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kbsim.demo import run_demo
    from kbsim.simjob import keep_heap

    keep_heap()

    result = run_demo(Path(args.out), limit=args.limit, workers=args.workers, seed=args.seed,
                      layout=args.layout, progress=_progress(args.progress))
    print(result.report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kbsim",
        description="Keyboard error-correction data simulator: realistic phone typing noise.",
    )
    p.add_argument("--version", action="version", version=f"kbsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="type clean texts with a typist profile: pairs out",
                       description="Simulates typing each input message (one per line of a "
                       "text file, or a JSONL/Parquet field) and writes one (noisy, clean) pair "
                       "with its edits per message, in input order.")
    s.add_argument("--input", "-i", required=True, metavar="FILE",
                   help="clean texts: .txt (one message per line), .jsonl/.json or .parquet")
    s.add_argument("--output", "-o", required=True, metavar="FILE",
                   help="pairs: .jsonl or .parquet (written atomically)")
    s.add_argument("--layout", default="en-US",
                   help="shipped layout name (see `kbsim layouts`) or layout JSON file "
                   "(default: %(default)s)")
    s.add_argument("--profile", default="raw",
                   help="preset (raw, committed, a posture) or profile JSON file "
                   "(default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="run seed (default: %(default)s)")
    s.add_argument("--workers", "-j", type=int, default=1,
                   help="worker processes; the output is the same for any number "
                   "(default: %(default)s)")
    s.add_argument("--format", choices=("jsonl", "parquet"),
                   help="output format (default: from the output's extension)")
    s.add_argument("--input-format", choices=("txt", "jsonl", "parquet"),
                   help="input format (default: from the input's extension)")
    s.add_argument("--text-field", default="text",
                   help="JSONL field or Parquet column with the text (default: %(default)s)")
    s.add_argument("--id-field", metavar="FIELD",
                   help="JSONL field or Parquet column with the record id "
                   "(default: the 0-based line number)")
    s.add_argument("--touches", action="store_true",
                   help="also record every keystroke's touch point (x, y in mm, key)")
    s.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, metavar="N",
                   help="records per batch; speed only, never output (default: %(default)s)")
    s.add_argument("--rejects", metavar="FILE",
                   help="write unreadable records here (JSONL: line, reason, raw) and go on; "
                   "without it the first one stops the run")
    s.add_argument("--m2", metavar="FILE", help="also write an M2 edit file of the pairs")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("layouts", help="list the shipped keyboard layouts")
    s.set_defaults(func=cmd_layouts)

    s = sub.add_parser("calibrate", help="fit a typist profile to real (typed, intended) pairs")
    s.add_argument("--pairs", required=True, metavar="FILE",
                   help="real pairs to fit (TSV or JSONL, see keyboard_sim.calibrate)")
    s.add_argument("--out", required=True, metavar="PROFILE", help="profile JSON to write")
    s.add_argument("--layout", help="layout name or file (default: calibrate's own)")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("fidelity", help="error mix of simulated vs real pairs, side by side")
    s.add_argument("--pairs", required=True, metavar="FILE",
                   help="real pairs (TSV or JSONL, see keyboard_sim.calibrate)")
    s.add_argument("--profile", required=True, help="preset or profile JSON file")
    s.add_argument("--layout", help="layout name or file (default: fidelity's own)")
    s.add_argument("--seed", type=int, default=0, help="run seed (default: %(default)s)")
    s.add_argument("--limit", type=int, metavar="N", help="only the first N pairs")
    s.set_defaults(func=cmd_fidelity)

    d = sub.add_parser("data", help="build an experiment's data: users, splits, tokenizers, "
                       "pairs")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="STEP")
    s = dsub.add_parser("build", help="corpus -> filter -> clients -> splits -> tokenizers -> "
                        "pairs, resumable",
                        description="Builds a whole experiment's data from a YAML or JSON "
                        "config (see configs/data.yaml): per-client messages and simulated "
                        "pairs as Parquet shards, the word vocabulary, the subword model, a "
                        "manifest and a summary. Run it again on the same folder to resume.")
    s.add_argument("config", nargs="?", metavar="CONFIG",
                   help="YAML/JSON config (default: every default, the Chit-Chat corpus)")
    s.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    s.add_argument("--limit", type=int, metavar="N",
                   help="only the first N corpus records (overrides corpus.limit)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_data_build)
    s = dsub.add_parser("summary", help="print the summary table of a built dataset")
    s.add_argument("dir", metavar="DIR")
    s.set_defaults(func=cmd_data_summary)

    add_train_parser(sub)
    add_federated_parser(sub)
    add_run_parser(sub)

    s = sub.add_parser("demo", help="run the simulator end to end on the default corpus",
                       description="Types the BYU Chit-Chat messages (PyPI chitchat-dataset) "
                       "with the raw and committed presets; writes the messages, the pairs "
                       "and M2 edit files under --out and prints headline statistics.")
    s.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="output folder (default: %(default)s)")
    s.add_argument("--limit", type=int, metavar="N", help="only the first N messages")
    s.add_argument("--workers", "-j", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="run seed (default: %(default)s)")
    s.add_argument("--layout", default="en-US", help="layout (default: %(default)s)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:
        msg = _user_message(e, args)
        if msg is None or os.environ.get("KBSIM_DEBUG"):  # a bug, or asked for a traceback
            raise
        _err(msg)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted; no output written")
        return 130


def _user_message(e: Exception, args: argparse.Namespace) -> str | None:
    """One line for an error the user can fix (bad input, settings, paths); None for a bug."""
    from kbsim.simjob import ConfigError
    from keyboard_sim.io import InputError

    if isinstance(e, InputError):
        if e.line is not None and getattr(args, "rejects", "") is None:
            return f"{e} (use --rejects FILE to set bad records aside and go on)"
        return str(e)
    if isinstance(e, ConfigError | ValueError):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.filename}: {e.strerror}" if e.filename else str(e)
    if isinstance(e, ModuleNotFoundError):
        return f"{e} (is the extra installed? see README)"
    return None


if __name__ == "__main__":
    sys.exit(main())
