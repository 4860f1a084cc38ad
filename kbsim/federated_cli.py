"""`kbsim federated CONFIG --out DIR`: a simulated federated training run from the command line.

Wired into `kbsim.cli` by `add_federated_parser(sub)`; errors go through its handler (one line
on stderr, exit status 2). Under torchrun the cohort is split across the ranks
(`federated.distributed`):

    torchrun --nproc-per-node 2 -m kbsim.cli federated CONFIG --out DIR
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from kbsim.cli_common import torch_settings


def cmd_federated(args: argparse.Namespace) -> int:
    """Runs (or resumes) a federated run; rank 0 prints the summary."""
    from federated.config import FederatedConfig
    from federated.run import run_federated

    config = FederatedConfig.load(args.config)
    progress = torch_settings(args)
    summary = run_federated(config, Path(args.out), progress=progress,
                            max_rounds=args.max_rounds)
    if summary.get("rank", 0) == 0:
        print(format_federated_summary(summary))
        state = "finished" if summary["finished"] else "stopped (run again to resume)"
        print(f"kbsim federated: {state} at round {summary['round']}/{summary['rounds']}; "
              f"wrote {args.out}/ (metrics.csv, eval.csv, tb/, checkpoints/)", file=sys.stderr)
    return 0


def format_federated_summary(summary: dict) -> str:
    """The run's headline: rounds, clients, held-out metrics and privacy."""
    def pct(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"

    resumed = summary["resumed_from"]
    lines = [f"rounds       {summary['round']}/{summary['rounds']}"
             + (f" (resumed at round {resumed})" if resumed is not None else ""),
             f"clients      {summary['clients']:,} training users, {summary['world_size']} "
             f"process(es)",
             f"parameters   {summary['parameters']:,}"]
    if summary.get("seconds_per_round") is not None:
        lines.append(f"round time   {summary['seconds_per_round']:.3f} s (mean)")
    ev = summary.get("eval")
    if ev is None:
        lines.append("eval         not evaluated yet")
    else:
        lines += [f"eval loss    {ev['loss']:.4f} (perplexity {ev['perplexity']:.1f}, "
                  f"{ev['tokens']:,} targets)",
                  f"eval top-1   {pct(ev['accuracy'])} of words "
                  f"({pct(ev['accuracy_all'])} with OOV/EOS)",
                  f"eval top-3   {pct(ev['top3_accuracy'])} of words "
                  f"({pct(ev['top3_accuracy_all'])} with OOV/EOS)"]
    if summary.get("epsilon") is not None:
        lines.append(f"privacy      epsilon {summary['epsilon']:.3f} at delta "
                     f"{summary['delta']:g}")
    lines.append(f"checkpoint   {summary['checkpoint']}")
    return "\n".join(lines)


def add_federated_parser(sub: argparse._SubParsersAction) -> None:
    """Adds `federated` to the `kbsim` subcommands."""
    s = sub.add_parser(
        "federated", help="simulated federated training of a next-word LM, resumable",
        description="Simulates cross-device federated training (FedAvg with a server "
        "optimizer, optional DP-FedAvg and secure-aggregation quantization) of a next-word "
        "model on a built dataset's training users, evaluates on held-out users, and writes "
        "metrics.csv, eval.csv, TensorBoard logs and safetensors checkpoints under --out. Run "
        "it again on the same folder to resume. Under torchrun the cohort is split over the "
        "processes: torchrun --nproc-per-node 2 -m kbsim.cli federated CONFIG --out DIR")
    s.add_argument("config", metavar="CONFIG",
                   help="YAML/JSON config (see configs/federated.yaml, federated/config.py)")
    s.add_argument("--out", "-o", required=True, metavar="DIR", help="run folder")
    s.add_argument("--max-rounds", type=int, metavar="N",
                   help="stop at round N (checkpointed); run again to go on")
    s.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per process")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_federated)
