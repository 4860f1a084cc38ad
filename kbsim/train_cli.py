"""`kbsim train nwp CONFIG --out DIR`: centralised next-word training from the command line.

Wired into `kbsim.cli` by `add_train_parser(sub)`; errors go through its handler (one line on
stderr, exit status 2).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from kbsim.cli_common import torch_settings


def cmd_train_nwp(args: argparse.Namespace) -> int:
    """Runs (or resumes) a next-word training run; prints where it wrote and the metrics."""
    from models.train import NWPTrainConfig, train_nwp

    config = NWPTrainConfig.load(args.config)
    progress = torch_settings(args)
    summary = train_nwp(config, Path(args.out), progress=progress, max_steps=args.max_steps)
    print(format_train_summary(summary))
    state = "finished" if summary["finished"] else "stopped (run again to resume)"
    print(f"kbsim train nwp: {state} at step {summary['step']}/{summary['total_steps']}; wrote "
          f"{args.out}/ (metrics.csv, tb/, checkpoints/)", file=sys.stderr)
    return 0


def cmd_train_proofreader(args: argparse.Namespace) -> int:
    """Trains the seq2seq proofreader on a built dataset's pairs; prints the last metrics."""
    from models.train_proofreader import ProofreaderTrainConfig, train_proofreader

    config = ProofreaderTrainConfig.load(args.config)
    progress = torch_settings(args)
    summary = train_proofreader(config, Path(args.out), progress=progress,
                                max_steps=args.max_steps)
    final = summary.get("final") or {}
    print(f"steps        {summary['steps']}\nparameters   {summary['parameters']:,}\n"
          f"checkpoint   {summary['checkpoint']}")
    for key in ("val_loss", "val_token_acc", "exact_match", "cer_before", "cer_after"):
        if key in final:
            print(f"{key:<12} {final[key]:.4f}")
    state = "finished" if summary.get("finished", True) else "stopped (run again to resume)"
    print(f"kbsim train proofreader: {state} at step {summary['steps']}; wrote {args.out}/ "
          "(metrics.csv, tb/, checkpoints/)", file=sys.stderr)
    return 0


def format_train_summary(summary: dict) -> str:
    """The run's headline: steps, parameters, and the last validation metrics."""
    lines = [f"steps        {summary['step']}/{summary['total_steps']} "
             f"(epoch {summary['epoch']:.2f}"
             + (f", resumed at step {summary['resumed_from']})" if summary["resumed_from"]
                is not None else ")"),
             f"parameters   {summary['parameters']:,}",
             f"checkpoint   {summary['checkpoint']}"]
    val = summary.get("val")
    if val is None:
        lines.append("val          not evaluated yet")
    else:
        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"

        lines += [f"val loss     {val['loss']:.4f} (perplexity {val['perplexity']:.1f}, "
                  f"{val['tokens']:,} targets)",
                  f"val top-1    {pct(val['accuracy'])} of words "
                  f"({pct(val['accuracy_all'])} with OOV/EOS)",
                  f"val top-3    {pct(val['top3_accuracy'])} of words "
                  f"({pct(val['top3_accuracy_all'])} with OOV/EOS)"]
    return "\n".join(lines)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Adds `train` (with `nwp` under it) to the `kbsim` subcommands."""
    t = sub.add_parser("train", help="train the models centrally: next-word LM, proofreader")
    tsub = t.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    s = tsub.add_parser(
        "nwp", help="a next-word LM on the pooled training users, resumable",
        description="Trains a next-word language model (CIFG-LSTM or Transformer) on every "
        "training user's early messages of a built dataset, evaluates it on the validation "
        "users, and writes metrics.csv, TensorBoard logs and safetensors checkpoints under "
        "--out. Run it again on the same folder to resume exactly where it stopped.")
    s.add_argument("config", metavar="CONFIG",
                   help="YAML/JSON training config (see models/train.py NWPTrainConfig)")
    s.add_argument("--out", "-o", required=True, metavar="DIR", help="run folder")
    s.add_argument("--max-steps", type=int, metavar="N",
                   help="stop at step N (checkpointed); run again to go on")
    s.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's; 1 is fastest for tiny models "
                   "on a busy machine)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_train_nwp)

    s = tsub.add_parser(
        "proofreader", help="the seq2seq proofreader on the training users' pairs",
        description="Trains the sequence-to-sequence proofreader on a built dataset's "
        "(noisy, clean) pairs of the training users, evaluates it on the validation users "
        "(loss, exact match, character error rate before and after) and writes metrics.csv "
        "and safetensors checkpoints under --out.")
    s.add_argument("config", metavar="CONFIG",
                   help="YAML/JSON config (see models/train_proofreader.py)")
    s.add_argument("--out", "-o", required=True, metavar="DIR", help="run folder")
    s.add_argument("--max-steps", type=int, metavar="N",
                   help="stop at step N (checkpointed); run again to go on")
    s.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_train_proofreader)
