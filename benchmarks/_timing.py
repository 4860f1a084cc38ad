"""Timing protocol shared by every one-core runner (kbsim's and the peers').

Standard library only: the peers' runner imports it from their own virtual environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Numerical libraries read these when they are first imported: one thread each, so that "one
# core" holds for numpy's BLAS as well as for Python.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def single_thread_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: this process's) with every BLAS/OpenMP pool set to 1 thread."""
    out = dict(os.environ if env is None else env)
    out.update(dict.fromkeys(THREAD_VARS, "1"))
    return out


def pin_to_one_core(core: int | None = None) -> int:
    """Pins this process to one CPU (default: the lowest it may run on); returns that CPU."""
    if core is None:
        core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def read_lines(path: str) -> list[str]:
    """The workload's messages, one per line, without their newline."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return f.read().split("\n")[:-1]


def best_of(repeat: int, run: Callable[[], T]) -> tuple[list[float], T]:
    """Runs `run` `repeat` times; returns each run's wall time (s) and the last run's output."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    times: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    return times, out


def changed_fraction(clean: list[str], noisy: list[str]) -> float:
    """Share of messages the tool changed (a sanity check that it did add noise)."""
    if len(clean) != len(noisy):
        raise RuntimeError(f"{len(clean)} messages in, {len(noisy)} out")
    return sum(c != n for c, n in zip(clean, noisy, strict=True)) / max(1, len(clean))
