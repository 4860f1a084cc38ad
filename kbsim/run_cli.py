"""`kbsim run CONFIG --out DIR`: an experiment end to end (kbsim.experiment) from the command line.

Wired into `kbsim.cli` by `add_run_parser(sub)`; errors go through its handler (one line on
stderr, exit status 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kbsim.cli_common import torch_settings


def cmd_run(args: argparse.Namespace) -> int:
    """Runs (or resumes) every stage, then prints where the report is and its headline."""
    from eval.report import headline
    from kbsim.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig.load(args.config)
    progress = torch_settings(args)

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    results = run_experiment(config, Path(args.out), progress=progress, log=log)
    print(f"kbsim run: {config.name}: report {results['files']['markdown']} and "
          f"{results['files']['html']} ({results['experiment']['seconds']:.0f} s)")
    for line in headline(results):
        print(f"  {line}")
    return 0


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    """Adds `run` to the `kbsim` subcommands."""
    s = sub.add_parser(
        "run", help="an experiment end to end: data, federated training, evaluation, report",
        description="Runs an experiment from one YAML config: the data build, federated "
        "next-word training without and with differential privacy (canaries in some clients' "
        "data), the proofreader, evaluation on held-out simulated pairs and on real errors, the "
        "privacy audit and the realism check, then writes results.json, report.md and a "
        "self-contained report.html under --out. Each stage is cached by the hash of its "
        "inputs: run it again to resume, or after changing the config to redo only what "
        "changed.")
    s.add_argument("config", metavar="CONFIG",
                   help="YAML/JSON experiment config (see configs/demo.yaml, "
                   "configs/experiment.yaml)")
    s.add_argument("--out", "-o", required=True, metavar="DIR", help="experiment folder")
    s.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: only on a terminal)")
    s.set_defaults(func=cmd_run)
