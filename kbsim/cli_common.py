"""What the training subcommands share: --threads and --progress."""

from __future__ import annotations

import argparse
import sys


def torch_settings(args: argparse.Namespace) -> bool:
    """Applies --threads (torch CPU threads) and returns whether to show progress bars
    (--progress / --no-progress, else only when stderr is a terminal)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    return sys.stderr.isatty() if args.progress is None else args.progress
