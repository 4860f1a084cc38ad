"""Timing protocol shared by the benchmark and its one-core runners (kbsim's and the peers').

Standard library only: the peers' runner imports it from their own virtual environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
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


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot, over all cores (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds used by this process and its waited-for children (and theirs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """Context manager: how many cores' worth of CPU other programs used meanwhile.

    Machine-wide busy time minus this process's and its children's, over the wall time. A
    figure well above 0 means the measurement shared the CPUs and reads low. NaN off Linux.
    """

    cores: float = float("nan")

    def __enter__(self) -> OtherLoad:
        try:
            self._busy = _machine_busy_s()
        except (OSError, ValueError):
            self._busy = None
        self._own = _own_cpu_s()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t
        if self._busy is None or wall <= 0:
            return
        other = (_machine_busy_s() - self._busy) - (_own_cpu_s() - self._own)
        self.cores = max(0.0, other) / wall
