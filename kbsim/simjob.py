"""A simulation job: a file of clean texts in, a file of (noisy, clean) pairs out.

What `kbsim simulate` and `kbsim demo` run. The input is streamed in chunks; each chunk is
simulated by `keyboard_sim.simulate.simulate_batch` (in this process, or in worker processes,
`kbsim.workers.Workers`, that also read their part of the input and serialise their output, so
the parent only appends) and written in input order. Record ids come from line numbers (or an
id field) and each record's randomness from (seed, id), so the output's bytes do not depend on
the number of workers or the chunk size. Memory stays bounded: at most a few chunks per worker
are in flight.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbsim.workers import Workers
from keyboard_sim.io import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    JsonlWriter,
    M2Writer,
    ParquetWriter,
    Rejects,
    count_records,
    input_format,
    line_ranges,
    output_format,
    pair_to_m2,
    pairs_to_jsonl_bytes,
    pairs_to_record_batch,
    read_chunks,
)
from keyboard_sim.simulate import DEFAULT_CHUNK
from keyboard_sim.stats import PairStats


class ConfigError(ValueError):
    """A bad job setting (unknown layout, unreadable profile, unknown format...)."""


@dataclass(frozen=True)
class SimulateJob:
    """Everything one simulation run needs. Validated on construction (no I/O).

    Attributes:
        input: Clean texts: .txt (one message per line), .jsonl/.json or .parquet.
        output: Pairs: .jsonl or .parquet.
        layout: Shipped layout name or path to a layout JSON file.
        profile: Preset name or path to a profile JSON file.
        seed: Run seed.
        workers: Worker processes (1: simulate in this process).
        chunk_size: Records per chunk handed to a worker (affects speed, never output).
        output_format: "jsonl" or "parquet"; None: from the output's extension.
        input_format: "txt", "jsonl" or "parquet"; None: from the input's extension.
        text_field: JSONL field or Parquet column with the text.
        id_field: JSONL field or Parquet column with the record id (None: line number).
        touches: Also record every keystroke's touch point.
        rejects: JSONL file for unreadable records (None: the first one is an error).
        m2: Also write an M2 edit file of the pairs here.
        stats: Also count headline statistics of the pairs (see `PairStats`).
    """

    input: Path
    output: Path
    layout: str = "en-US"
    profile: str = "raw"
    seed: int = 0
    workers: int = 1
    chunk_size: int = DEFAULT_CHUNK
    output_format: str | None = None
    input_format: str | None = None
    text_field: str = "text"
    id_field: str | None = None
    touches: bool = False
    rejects: Path | None = None
    m2: Path | None = None
    stats: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk size must be >= 1, got {self.chunk_size}")
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format {self.output_format!r}")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"unknown input format {self.input_format!r}")


@dataclass
class RunSummary:
    """What a job did: every input record is either written or rejected."""

    records_in: int = 0
    written: int = 0
    rejected: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0  # loading tables and starting workers, before the first record
    stats: PairStats | None = None

    def line(self) -> str:
        work = self.seconds - self.setup_seconds
        rate = self.written / work if work > 0 else 0.0
        return (f"{self.records_in} records in, {self.written} written, {self.rejected} "
                f"rejected, {self.seconds:.2f} s (set-up {self.setup_seconds:.2f} s, then "
                f"{rate:,.0f} records/s)")


# ----------------------------------------------------------------------------- workers

# Per-process state of a worker, set once by `_init_worker` (also used in-process for 1 worker).
_WORKER: dict[str, Any] = {}


def _init_worker(layout: str, profile: dict, seed: int, touches: bool, fmt: str, m2: bool,
                 stats: bool) -> None:
    """Builds the layout, the profile and every lazily built table (lexicon, layout grids)
    once per process, before its first record, so that set-up is timed apart from the work
    (spawn-safe: plain arguments)."""
    from keyboard_sim.engine import Engine
    from keyboard_sim.layout import load_layout
    from keyboard_sim.profile import TypistProfile

    _WORKER.update(layout=load_layout(layout), profile=TypistProfile.from_dict(profile),
                   seed=seed, touches=touches, fmt=fmt, m2=m2, stats=stats)
    Engine(_WORKER["layout"], _WORKER["profile"]).prepare()


def _init_pool_worker(*args: Any) -> None:
    """`_init_worker` in a worker process (see `run_simulate`)."""
    keep_heap()
    _init_worker(*args)


def keep_heap() -> None:
    """Asks glibc's malloc to keep freed memory instead of returning it to the system.

    The engine allocates and frees a few large numpy arrays per chunk; by default glibc maps
    and unmaps them (or trims the heap) each time, and every first touch of a page is then a
    page fault. Keeping the memory made `kbsim simulate` about 1.4 times faster in one process
    and halved the workers' system time (benchmarks/bench_simulate.py). It changes the whole
    process, so only processes kbsim owns call it: the `kbsim` command and its workers, on
    glibc only.
    """
    import ctypes

    try:  # glibc only; asked directly (ctypes.util.find_library would run ldconfig)
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        return
    if not version.startswith("glibc"):
        return
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's mallopt among them
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
    except (OSError, AttributeError):
        return


def _simulate_chunk(chunk: tuple[list[str], list[str]]) -> tuple[int, Any, str | None,
                                                                  PairStats | None]:
    """Simulates one chunk; returns (records, serialised output, M2 text, stats)."""
    from keyboard_sim.simulate import simulate_batch

    texts, ids = chunk
    w = _WORKER
    pairs = simulate_batch(texts, ids, w["profile"], w["layout"], w["seed"], touches=w["touches"])
    if len(pairs) != len(texts):
        raise RuntimeError(f"simulate_batch returned {len(pairs)} pairs for {len(texts)} texts")
    if w["fmt"] == "jsonl":
        payload = pairs_to_jsonl_bytes(pairs)
    else:
        payload = pairs_to_record_batch(pairs, w["touches"])
    m2 = "".join(pair_to_m2(p) for p in pairs) if w["m2"] else None
    return len(pairs), payload, m2, PairStats.of(pairs) if w["stats"] else None


def _simulate_range(task: tuple) -> tuple:
    """A worker reads lines [first, last] of the input itself (bytes [start, end)), simulates
    them and, for JSONL output, writes its part of the output to `part` (the parent appends
    the file without reading it). Returns (records, payload or None, M2 text, stats, rejects).

    Reading and writing in the workers leaves the parent almost nothing to do per record, so
    two workers come close to twice the speed of one.
    """
    from keyboard_sim.io import RejectList, read_range

    path, fmt, start, end, first, text_field, id_field, keep_rejects, part = task
    sink = RejectList() if keep_rejects else None
    texts, ids = read_range(path, fmt, start, end, first, text_field=text_field,
                            id_field=id_field, rejects=sink)
    n, payload, m2, stats = _simulate_chunk((texts, ids))
    if part is not None:
        with open(part, "wb") as f:
            f.write(payload)
        payload = None
    return n, payload, m2, stats, sink.items if sink is not None else []


def _pool_context() -> Any:
    """Fork where the platform has it (workers inherit loaded tables, so they start at once);
    spawn elsewhere. The worker code needs nothing from the parent but its arguments, so any
    start method works; KBSIM_START_METHOD (fork, spawn, forkserver) chooses one."""
    methods = multiprocessing.get_all_start_methods()
    method = os.environ.get("KBSIM_START_METHOD") or ("fork" if "fork" in methods else "spawn")
    if method not in methods:
        raise ConfigError(f"KBSIM_START_METHOD={method!r} is not one of {', '.join(methods)}")
    return multiprocessing.get_context(method)


# ----------------------------------------------------------------------------- the job


def validate(job: SimulateJob) -> tuple[Any, Any, str, str]:
    """Loads the layout and profile and settles the formats; raises `ConfigError`."""
    from keyboard_sim.layout import load_layout
    from keyboard_sim.profile import load_profile

    try:
        layout = load_layout(job.layout)
        profile = load_profile(job.profile)
        in_fmt = input_format(job.input, job.input_format)
        out_fmt = output_format(job.output, job.output_format)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not job.input.is_file():
        raise ConfigError(f"input file {job.input} does not exist")
    if job.id_field is not None and in_fmt == "txt":
        raise ConfigError("plain text input has no fields: --id-field needs JSONL or Parquet")
    if out_fmt == "parquet" or in_fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("Parquet needs pyarrow: pip install 'kbsim[parquet]'") from None
    return layout, profile, in_fmt, out_fmt


def run_simulate(job: SimulateJob, progress: bool = False,
                 on_chunk: Callable[[int], None] | None = None) -> RunSummary:
    """Runs `job`; writes the output (and rejects, M2) atomically.

    Args:
        job: What to do.
        progress: Show a progress bar on stderr.
        on_chunk: Called with the number of input lines accounted for after each chunk.

    Raises:
        ConfigError: A bad setting, before anything is written.
        InputError: A bad input record (without `job.rejects`); nothing is written.
    """
    t0 = time.perf_counter()
    layout, profile, in_fmt, out_fmt = validate(job)
    del layout  # loaded to validate it (forked workers inherit the loaded layout)
    init_args = (job.layout, profile.to_dict(), job.seed, job.touches, out_fmt,
                 job.m2 is not None, job.stats)
    summary = RunSummary(stats=PairStats() if job.stats else None)

    writer: Any = None
    m2_writer: M2Writer | None = None
    rejects: Rejects | None = None
    pool: Workers | None = None
    bar = None
    finished = False
    try:
        if job.workers == 1:
            _init_worker(*init_args)
        else:
            # Each worker builds its own tables (all at once, one per core) and set-up ends
            # when every worker is ready. Tables built here and inherited by forked workers
            # would be shared copy-on-write, and each worker's first records would then copy
            # the pages they touch one by one (about 4,000 page faults, 15-20 ms, per worker).
            # The workers start before any thread starts here (tqdm's monitor): forking is
            # then safe.
            pool = Workers(job.workers, _init_pool_worker, init_args, context=_pool_context())
            pool.wait_ready()
        if progress:
            from tqdm import tqdm

            total = count_records(job.input, in_fmt)
            bar = tqdm(total=total, unit="msg", file=sys.stderr, dynamic_ncols=True,
                       desc="simulate")
        rejects = Rejects(job.rejects) if job.rejects is not None else None
        writer = (JsonlWriter(job.output) if out_fmt == "jsonl"
                  else ParquetWriter(job.output, touches=job.touches))
        m2_writer = M2Writer(job.m2) if job.m2 is not None else None
        summary.setup_seconds = time.perf_counter() - t0
        chunks = ((((texts, ids)), last) for texts, ids, last in read_chunks(
            job.input, job.chunk_size, in_fmt, text_field=job.text_field,
            id_field=job.id_field, rejects=rejects))
        done_lines = 0

        def handle(result: tuple, last_line: int) -> None:
            nonlocal done_lines
            n, payload, m2, stats = result
            if payload is None:
                pass  # a worker's part file, already appended
            elif out_fmt == "jsonl":
                writer.write_bytes(payload, n)
            else:
                writer.write_batch(payload)
            if m2_writer is not None:
                m2_writer.write_text(m2, n)
            if summary.stats is not None:
                summary.stats = summary.stats + stats
            if bar is not None:
                bar.update(last_line - done_lines)
            done_lines = last_line
            if on_chunk is not None:
                on_chunk(done_lines)

        def handle_part(res: tuple, last_line: int, part: str | None) -> None:
            n, payload, m2, stats, bad = res
            for line, reason, raw in bad:
                rejects.add(line, reason, raw)
            if part is not None:
                writer.append_file(part, n)
                os.unlink(part)
            handle((n, payload, m2, stats), last_line)

        if pool is None:
            for chunk, last_line in chunks:
                handle(_simulate_chunk(chunk), last_line)
        elif in_fmt in ("txt", "jsonl"):
            # Workers read their own line ranges and write their own output parts.
            import tempfile

            parts = Path(tempfile.mkdtemp(prefix=".kbsim-parts-", dir=job.output.parent))
            try:
                meta: deque = deque()  # (last line, part file) of each task, in order

                def range_tasks():
                    for k, (start, end, first, last) in enumerate(
                            line_ranges(job.input, job.chunk_size)):
                        part = str(parts / f"{k}.jsonl") if out_fmt == "jsonl" else None
                        meta.append((last, part))
                        yield (str(job.input), in_fmt, start, end, first, job.text_field,
                               job.id_field, rejects is not None, part)

                for res in pool.map(_simulate_range, range_tasks()):
                    handle_part(res, *meta.popleft())
            except BaseException:
                pool.terminate()  # before the folder goes, so that no worker writes in it
                raise
            finally:
                import shutil

                shutil.rmtree(parts, ignore_errors=True)
        else:
            # The parent reads (Parquet) and the workers simulate; `Workers.map` reads ahead
            # at most two chunks per worker.
            lines: deque = deque()  # last line of each chunk, in order

            def chunk_tasks():
                for chunk, last_line in chunks:
                    lines.append(last_line)
                    yield chunk

            for res in pool.map(_simulate_chunk, chunk_tasks()):
                handle(res, lines.popleft())
        if pool is not None:
            pool.stop()  # the workers exit while the output is checked and committed
        summary.written = writer.count
        summary.rejected = rejects.count if rejects else 0
        # Every input line must be accounted for; count them apart from the reader (a fast
        # newline count, or the Parquet footer) so a lost record cannot go unnoticed.
        summary.records_in = count_records(job.input, in_fmt)
        if summary.written + summary.rejected != summary.records_in:
            raise RuntimeError(
                f"{job.input}: {summary.records_in} records in but {summary.written} written "
                f"and {summary.rejected} rejected; output discarded (this is a bug)"
            )
        if bar is not None:  # rejected lines after the last record
            bar.update(max(0, summary.records_in - bar.n))
        for w in (writer, m2_writer, rejects):
            if w is not None:
                w.close()
        finished = True
    except BaseException:
        for w in (writer, m2_writer, rejects):
            if w is not None:
                w.abort()
        raise
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:
                pool.terminate()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
