"""Simulator throughput: kbsim against nlpaug and kebbie on the same 20,000 chat messages.

    python benchmarks/bench_simulate.py [--json results.json]

Runs in kbsim's environment (with the `corpus` extra for the messages). In one run, on one input
file, it times:

* kbsim's Python API in a subprocess pinned to one core (`raw` preset: full touch model, every
  error channel, edits as provenance), timing only the `simulate` call; once more with every
  keystroke's touch point returned as well;
* the `kbsim simulate` command with `--workers 1` and `--workers 2`, end to end (start-up,
  reading, simulating, writing), not pinned;
* `nlpaug.augmenter.char.KeyboardAug()` and kebbie's `NoiseModel(lang="en-US", common_typos={})`
  in their own virtual environment (`.venv-peers`, built on first use by `peers.py`), each in a
  subprocess pinned to one core, timing only its processing loop.

Each figure is the best of `--repeat` runs (machines are noisy; the best run is the one least
disturbed). Rates count the input's characters (Unicode code points) and messages. Results are
printed as a Markdown table, with the ratios the project's goals are stated in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from _timing import OtherLoad, single_thread_env
from peers import DEFAULT_VENV, ensure_peer_venv, time_peer
from workload import DEFAULT_MESSAGES, write_workload

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The goals set for the simulator (issue 2, "Fast").
GOAL_VS_KEBBIE = 25.0  # kbsim chars/s at least 25x kebbie's, on the same run
GOAL_VS_NLPAUG = 1.0  # and ahead of nlpaug
GOAL_WORKERS = 1.7  # `--workers 2` at least 1.7x the `--workers 1` rate


def kbsim_command() -> list[str]:
    """How to call the `kbsim` console command of the running environment."""
    script = Path(sys.executable).parent / "kbsim"
    if script.exists():
        return [str(script)]
    found = shutil.which("kbsim")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from kbsim.cli import main; sys.exit(main())"]


def time_kbsim_api(workload: Path, repeat: int, touches: bool) -> dict:
    cmd = [sys.executable, str(HERE / "run_kbsim.py"), str(workload), str(repeat)]
    if touches:
        cmd.append("--touches")
    with OtherLoad() as load:
        proc = subprocess.run(
            cmd, env=single_thread_env(), capture_output=True, text=True, cwd=ROOT
        )
    if proc.returncode != 0:
        raise RuntimeError(f"kbsim API run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout), "other_load_cores": load.cores}


def time_split(workload: Path, repeat: int, slot: float) -> dict:
    """This machine's own two-core scaling for kbsim's work at this moment (`run_split.py`): the
    API on every message on one core, in turns with two pinned processes on half the messages
    each. {} with fewer than two cores."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {}
    start = time.time() + 5.0  # after the three processes' imports and warm-ups
    procs = {
        role: subprocess.Popen(
            [sys.executable, str(HERE / "run_split.py"), str(workload), role, str(core),
             repr(start), repr(slot), str(repeat)],
            env=single_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT,
        )
        for role, core in (("all", cores[0]), ("even", cores[0]), ("odd", cores[1]))
    }
    out = {}
    with OtherLoad() as load:
        for role, p in procs.items():
            stdout, stderr = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"run_split.py {role} failed (exit {p.returncode}):\n"
                                   f"{stderr[-4000:]}")
            out[role] = json.loads(stdout)
    one = out["all"]["seconds"]
    two = [max(a, b) for a, b in zip(out["even"]["seconds"], out["odd"]["seconds"], strict=True)]
    return {
        "one_process_seconds": one,
        "two_processes_seconds": two,
        "best_ratio": min(one) / min(two),
        "median_ratio": statistics.median(one) / statistics.median(two),
        "late_seconds": max(max(r["late_seconds"]) for r in out.values()),
        "slot_seconds": slot,
        "other_load_cores": load.cores,
    }


def time_kbsim_cli(
    workload: Path, workdir: Path, repeat: int, workers: tuple[int, ...], n_messages: int
) -> dict[int, dict]:
    """End-to-end wall time of `kbsim simulate`, the worker counts interleaved on each pass."""
    results = {w: {"seconds": [], "cores_used": w} for w in workers}
    env = single_thread_env()  # each worker one thread; parallelism only from --workers
    for _ in range(repeat):
        for w in workers:
            out = workdir / f"cli-workers{w}.jsonl"
            out.unlink(missing_ok=True)
            cmd = [
                *kbsim_command(),
                "simulate",
                "--input",
                str(workload),
                "--output",
                str(out),
                "--workers",
                str(w),
                "--seed",
                "0",
                "--no-progress",
            ]
            with OtherLoad() as load:
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=workdir)
                seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
                )
            results[w]["seconds"].append(seconds)
            # The CLI's own summary times its set-up (tables, workers) apart from the records;
            # the time after set-up comes from its rate (seconds are printed to 10 ms only).
            m = re.search(r"(\d+) written.*, then ([\d,]+) records/s", proc.stderr)
            if m is None:
                raise RuntimeError(f"no timing in the summary line:\n{proc.stderr[-2000:]}")
            work = int(m.group(1)) / float(m.group(2).replace(",", ""))
            results[w].setdefault("work_seconds", []).append(work)
            results[w].setdefault("other_load_cores_each", []).append(load.cores)
            results[w]["command"] = " ".join(["kbsim", *cmd[len(kbsim_command()) :]])
    for w in workers:
        best = min(range(repeat), key=results[w]["seconds"].__getitem__)
        results[w]["other_load_cores"] = results[w]["other_load_cores_each"][best]
        results[w]["best_work_seconds"] = min(results[w]["work_seconds"])
        data = (workdir / f"cli-workers{w}.jsonl").read_bytes()
        results[w]["records"] = data.count(b"\n")
        results[w]["output_bytes"] = len(data)
        if results[w]["records"] != n_messages:
            raise RuntimeError(
                f"--workers {w} wrote {results[w]['records']} records for {n_messages} messages"
            )
    # Determinism check that comes for free: the worker count must not change the output.
    outputs = {(workdir / f"cli-workers{w}.jsonl").read_bytes() for w in workers}
    for w in workers:
        results[w]["identical_across_workers"] = len(outputs) == 1
    return results


def rates(result: dict, n_messages: int, n_chars: int) -> dict:
    best = min(result["seconds"])
    return {
        **result,
        "best_seconds": best,
        "messages_per_s": n_messages / best,
        "chars_per_s": n_chars / best,
    }


def busy_cores(interval: float = 1.0) -> float:
    """How many cores' worth of CPU other programs used over the next `interval` seconds."""
    with OtherLoad() as load:
        time.sleep(interval)
    return load.cores


def wait_until_idle(limit_s: float, log) -> float:
    """Waits (up to `limit_s`) for other programs to leave the CPUs; returns the last reading."""
    deadline = time.monotonic() + limit_s
    busy = busy_cores()
    while busy > 0.2 and time.monotonic() < deadline:
        print(f"  waiting: other programs are using {busy:.1f} cores", file=log, flush=True)
        time.sleep(4)
        busy = busy_cores()
    return busy


def contended(result: dict, cores_usable: int) -> bool:
    """Whether other programs needed more of the CPUs than this run left free.

    A tenth of a core of slack covers the odd daemon; a pinned one-core run on two cores is not
    disturbed by one other busy process.
    """
    free = cores_usable - result.get("cores_used", 1)
    return result.get("other_load_cores", 0.0) > max(0.2, free + 0.1)


def quiet_attempts(run, retries: int, wait_s: float, cores_usable: int, log) -> dict:
    """Runs `run` (returns {key: result}) until no result is contended, at most 1 + `retries`
    times, waiting for idle CPUs before each try; returns the last try."""
    for attempt in range(retries + 1):
        wait_until_idle(wait_s, log)
        results = run()
        busy = [k for k, r in results.items() if contended(r, cores_usable)]
        if not busy:
            break
        if attempt < retries:
            print(
                f"  other programs shared the CPUs ({', '.join(map(str, busy))}); again",
                file=log,
                flush=True,
            )
    return results


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        # Uncommitted changes to the timed code make the commit alone an incomplete record.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "keyboard_sim", "kbsim"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if commit and dirty:
            commit += " + uncommitted changes"
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "commit": commit,
        # Other work on the machine slows every figure; this shows whether there was any.
        "load_average_1_5_15min": list(os.getloadavg()),
    }


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| tool | messages/s | chars/s | best of runs (s) | set-up (s) | messages changed "
        "| other load (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        changed = f"{100 * r['changed']:.0f}%" if "changed" in r else "-"
        if "setup_seconds" in r:
            setup = f"{r['setup_seconds']:.2f}"
        elif "best_work_seconds" in r:
            setup = f"in the time (records alone: {r['best_work_seconds']:.2f} s)"
        else:
            setup = "in the time"
        lines.append(
            f"| {name} | {r['messages_per_s']:,.0f} | {r['chars_per_s']:,.0f} | "
            f"{r['best_seconds']:.2f} of {len(r['seconds'])} | {setup} | {changed} | "
            f"{r.get('other_load_cores', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def goals(results: dict) -> list[dict]:
    out = []
    api = results.get("kbsim_api")

    def add(name: str, value: float, goal: float, strict: bool) -> None:
        met = value > goal if strict else value >= goal
        out.append({"name": name, "value": value, "goal": goal, "strict": strict, "met": met})

    if api and "kebbie" in results:
        add(
            "kbsim API / kebbie (chars/s)",
            api["chars_per_s"] / results["kebbie"]["chars_per_s"],
            GOAL_VS_KEBBIE,
            False,
        )
    if api and "nlpaug" in results:
        add(
            "kbsim API / nlpaug (chars/s)",
            api["chars_per_s"] / results["nlpaug"]["chars_per_s"],
            GOAL_VS_NLPAUG,
            True,
        )
    if "kbsim_cli_w1" in results and "kbsim_cli_w2" in results:
        # Rate after set-up, as the other tools are timed (their import and construction are
        # reported apart): the CLI's own summary gives its set-up time. The goal is read on the
        # medians of the interleaved runs. A best-of-N ratio is biased against two workers on a
        # host whose cores slow down independently (other virtual machines): one worker's best
        # run needs one core in a fast spell, two workers' best run needs both at once, so the
        # one-worker times spread further below their median than the two-worker times do
        # (best to worst 29% against 11% in one run here). The best is reported beside it.
        add(
            "kbsim CLI --workers 2 / --workers 1, per-record rate after set-up, medians",
            statistics.median(results["kbsim_cli_w1"]["work_seconds"])
            / statistics.median(results["kbsim_cli_w2"]["work_seconds"]),
            GOAL_WORKERS,
            False,
        )
        add(
            "kbsim CLI --workers 2 / --workers 1, per-record rate after set-up, best (extra)",
            results["kbsim_cli_w1"]["best_work_seconds"]
            / results["kbsim_cli_w2"]["best_work_seconds"],
            GOAL_WORKERS,
            False,
        )
        split = results.get("machine_split")
        if split:
            # What the host gives two cores right now: the same work as two independent
            # processes, each pinned to a core with a fixed half, no queue, no pipes, no
            # output. A CLI ratio below the goal with this reference low too is the host's
            # (other virtual machines on its cores), not kbsim's coordination. It is no
            # ceiling: kbsim's unpinned workers share the chunks as they go, so a core that
            # the host slows for a while does less of the work, and they can beat it.
            add(
                "two independent API processes on fixed halves / one process, best (extra: "
                "this machine's two-core scaling now)",
                split["best_ratio"],
                GOAL_WORKERS,
                False,
            )
            add(
                "kbsim CLI --workers 2 / --workers 1 against that reference, best (extra)",
                results["kbsim_cli_w1"]["best_work_seconds"]
                / results["kbsim_cli_w2"]["best_work_seconds"]
                / split["best_ratio"],
                0.0,
                False,
            )
        add(
            "kbsim CLI --workers 2 / --workers 1, end to end (start-up included)",
            results["kbsim_cli_w2"]["chars_per_s"] / results["kbsim_cli_w1"]["chars_per_s"],
            GOAL_WORKERS,
            False,
        )
    for key in sorted(results):
        if key.startswith("kbsim_cli_x") and key.endswith("_w1"):
            big = key[: -len("_w1")]
            add(
                f"kbsim CLI --workers 2 / --workers 1, input {big.split('_')[-1]} (extra)",
                results[f"{big}_w2"]["chars_per_s"] / results[key]["chars_per_s"],
                GOAL_WORKERS,
                False,
            )
            if "kbsim_cli_w1" in results:
                # Time taken by the extra copies alone: the fixed start-up cost cancels out.
                extra = {
                    w: results[f"{big}_{w}"]["best_seconds"]
                    - results[f"kbsim_cli_{w}"]["best_seconds"]
                    for w in ("w1", "w2")
                }
                if extra["w2"] > 0:
                    add(
                        "kbsim CLI --workers 2 / --workers 1, marginal, start-up excluded (extra)",
                        extra["w1"] / extra["w2"],
                        GOAL_WORKERS,
                        False,
                    )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--messages",
        type=int,
        default=DEFAULT_MESSAGES,
        help="messages in the workload (default: %(default)s)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best counts")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    ap.add_argument(
        "--workdir",
        type=Path,
        help="keep the workload and the CLI's outputs here (default: a temp dir)",
    )
    ap.add_argument(
        "--peer-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="the peers' virtual environment (default: %(default)s)",
    )
    ap.add_argument("--no-kbsim", action="store_true", help="skip kbsim's API runs")
    ap.add_argument("--no-cli", action="store_true", help="skip the `kbsim simulate` runs")
    ap.add_argument("--no-peers", action="store_true", help="skip nlpaug and kebbie")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        metavar="S",
        help="wait up to S seconds for other programs to leave the CPUs (default: %(default)s)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="measure again, up to N times, when other programs shared the CPUs "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--cli-copies",
        type=int,
        default=1,
        metavar="K",
        help="also time the CLI on K copies of the workload in one file, to tell fixed "
        "start-up cost from parallel speed-up (default: 1, i.e. not)",
    )
    ap.add_argument(
        "--split-slot",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds per turn of the machine's own two-core scaling check (two pinned "
        "processes on fixed halves), which runs after "
        "the CLI (each turn simulates the workload once; default: %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.messages < 1 or args.cli_copies < 1 or args.retries < 0:
        ap.error("--repeat, --messages and --cli-copies must be at least 1, --retries at least 0")

    info = machine()
    # Other programs on the machine slow every figure: wait for quiet if asked, and say.
    info["busy_cores_at_start"] = wait_until_idle(args.wait_idle, sys.stderr)
    if info["busy_cores_at_start"] > 0.2:
        print(
            f"warning: other programs are using {info['busy_cores_at_start']:.1f} cores; "
            "the figures may be low",
            file=sys.stderr,
        )
    peer_python = None if args.no_peers else ensure_peer_venv(args.peer_venv, quiet=True)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="kbsim-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        workload_path = workdir / "messages.txt"
        workload = write_workload(workload_path, args.messages)
        n, chars = workload["messages"], workload["chars"]
        log = sys.stderr
        print(
            f"workload: {n:,} messages, {chars:,} chars ({workload['corpus']}), "
            f"best of {args.repeat}",
            file=log,
            flush=True,
        )

        results: dict[str, dict] = {}
        rows: list[tuple[str, dict]] = []

        def record(key: str, name: str, result: dict, copies: int = 1) -> None:
            results[key] = rates(result, n * copies, chars * copies)
            rows.append((name, results[key]))
            print(f"  {name}: {results[key]['chars_per_s']:,.0f} chars/s", file=log, flush=True)

        def quietly(run) -> dict:
            return quiet_attempts(run, args.retries, args.wait_idle, info["cores_usable"], log)

        if not args.no_kbsim:
            for key, name, touches in (
                ("kbsim_api", "kbsim, Python API, 1 core", False),
                ("kbsim_api_touches", "kbsim, Python API, 1 core, + touch points", True),
            ):
                res = quietly(lambda t=touches: {0: time_kbsim_api(workload_path, args.repeat, t)})
                record(key, name, res[0])
        if not args.no_cli:
            cli = quietly(lambda: time_kbsim_cli(workload_path, workdir, args.repeat, (1, 2), n))
            record("kbsim_cli_w1", "kbsim CLI `--workers 1`, end to end", cli[1])
            record("kbsim_cli_w2", "kbsim CLI `--workers 2`, end to end", cli[2])
            # Right after, what two cores give kbsim's work here without any coordination.
            split = time_split(workload_path, args.repeat, args.split_slot)
            if split:
                results["machine_split"] = split
                print(f"  two independent processes on halves / one: best "
                      f"{split['best_ratio']:.2f}x, median {split['median_ratio']:.2f}x",
                      file=log, flush=True)
            if args.cli_copies > 1:
                k = args.cli_copies
                big = workdir / f"messages-x{k}.txt"
                big.write_bytes(workload_path.read_bytes() * k)
                cli = quietly(lambda: time_kbsim_cli(big, workdir, args.repeat, (1, 2), n * k))
                for w in (1, 2):
                    record(
                        f"kbsim_cli_x{k}_w{w}",
                        f"kbsim CLI `--workers {w}`, end to end, input x{k}",
                        cli[w],
                        copies=k,
                    )
        if peer_python is not None:
            for tool, name in (
                ("nlpaug", "nlpaug `KeyboardAug()`, 1 core"),
                ("kebbie", "kebbie `NoiseModel`, 1 core"),
            ):
                res = quietly(
                    lambda t=tool: {0: time_peer(peer_python, t, workload_path, args.repeat)}
                )
                record(tool, name, res[0])
    finally:
        if tmp is not None:
            tmp.cleanup()

    checks = goals(results)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{n:,} chat messages, {chars:,} chars; best of {args.repeat}; {when}; "
        f"{info['cpu']}, {info['cores_usable']} cores usable, "
        f"{info['busy_cores_at_start']:.1f} cores busy with other work at start\n"
    )
    print(table(rows))
    loaded = [name for name, r in rows if contended(r, info["cores_usable"])]
    if loaded:
        print(
            "\nWARNING: other programs used the CPUs during: "
            + "; ".join(loaded)
            + ". Those figures read low; run again on a quiet machine."
        )
    if checks:
        print("\n| ratio | measured | goal | |\n|---|---:|---:|---|")
        for c in checks:
            op = ">" if c["strict"] else ">="
            print(
                f"| {c['name']} | {c['value']:.2f}x | {op} {c['goal']:g}x | "
                f"{'met' if c['met'] else 'MISSED'} |"
            )
    if "kbsim_cli_w1" in results and not results["kbsim_cli_w1"]["identical_across_workers"]:
        print("\nWARNING: `--workers 1` and `--workers 2` wrote different bytes")

    if args.json:
        versions = {}
        for dist in ("kbsim", "numpy"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        for key in ("nlpaug", "kebbie"):
            if key in results:
                versions[key] = results[key]["version"]
                versions["numpy (peers env)"] = results[key]["numpy"]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": when,
                    "machine": info,
                    "versions": versions,
                    "workload": workload,
                    "repeat": args.repeat,
                    "results": results,
                    "goals": checks,
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
        print(f"\nresults written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
