"""Peak memory of `kbsim data build` on a large plain-text corpus: bounded, whatever its size.

Writes a text file of about `--size-gb` gigabytes (the Chit-Chat messages, one per line,
repeated in order until the size is reached: a file with no user field, so clients are IID
over line ids), then runs `kbsim data build` on it in a child process with a config whose
every stage is on (filter, clients, cap, user and time splits, per-client typists, pairs,
vocabulary and subword model; 100 IID clients, a cap of 1,000,000 messages per client), and
reports the child's peak resident memory (the kernel's
`ru_maxrss`), its wall time and its record rate.

    .venv/bin/python benchmarks/bench_data_memory.py --size-gb 2 --json runs/bench/data_memory.json

Several sizes in one call (`--size-gb 0.05 0.2`) show how the peak grows with the input; a
bounded build's peak stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_corpus(path: Path, size_bytes: int) -> tuple[int, int]:
    """Writes the chat messages, one per line, repeated until `size_bytes`; (lines, bytes)."""
    from data.chitchat import iter_messages

    block = "".join(" ".join(m["text"].split()) + "\n" for m in iter_messages()
                    if m["text"].strip()).encode("utf-8")
    per_block = block.count(b"\n")
    if path.exists() and path.stat().st_size >= size_bytes:
        size = path.stat().st_size
        return size // len(block) * per_block + block[: size % len(block)].count(b"\n"), size
    path.parent.mkdir(parents=True, exist_ok=True)
    written = lines = 0
    with open(path, "wb") as f:
        while written + len(block) <= size_bytes:
            f.write(block)
            written += len(block)
            lines += per_block
        rest = block[: size_bytes - written]
        rest = rest[: rest.rfind(b"\n") + 1]
        f.write(rest)
        written += len(rest)
        lines += rest.count(b"\n")
    return lines, written


def config_for(corpus: Path) -> dict:
    return {
        "seed": 0,
        "shard_size": 50_000,
        "corpus": {"source": str(corpus)},
        "clients": {"partition": "iid", "n_clients": 100, "max_messages": 1_000_000},
        "splits": {"late_fraction": 0.1},
        "tokenizers": {"vocab_size": 10_000, "subword_vocab_size": 2000},
    }


def rss_sampler(pid: int, samples: list, stop: threading.Event) -> None:
    """Samples the child's resident memory (MB) every half second."""
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append((time.perf_counter(), int(line.split()[1]) / 1024))
        except OSError:
            break
        stop.wait(0.5)


def run(size_gb: float, work: Path) -> dict:
    corpus = work / f"corpus-{size_gb:g}gb.txt"
    lines, size = make_corpus(corpus, int(size_gb * 1e9))
    cfg = work / f"config-{size_gb:g}gb.json"
    cfg.write_text(json.dumps(config_for(corpus)))
    out = work / f"build-{size_gb:g}gb"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "kbsim.cli", "data", "build", str(cfg),
                             "--out", str(out), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=rss_sampler, args=(proc.pid, samples, stop))
    sampler.start()
    output = proc.stdout.read()
    # wait4 gives this child's own resource usage: its peak resident set (ru_maxrss, KB).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kbsim data build failed ({proc.returncode}):\n{output}")
    peak_mb = usage.ru_maxrss / 1024
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    return {"size_gb": size / 1e9, "lines": lines, "peak_rss_mb": round(peak_mb, 1),
            "sampled_peak_rss_mb": round(max((mb for _, mb in samples), default=0.0), 1),
            "seconds": round(seconds, 1), "records_per_s": round(lines / seconds),
            "kept": summary["kept"], "accounted": summary["records"] == lines,
            "summary_table": output.strip().splitlines()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-gb", type=float, nargs="+", default=[2.0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "data_memory")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = []
    for size in args.size_gb:
        r = run(size, args.work)
        results.append(r)
        print(f"{r['size_gb']:.2f} GB, {r['lines']:,} lines: peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(sampled {r['sampled_peak_rss_mb']:.0f} MB), {r['seconds']:.0f} s, "
              f"{r['records_per_s']:,} records/s, every record accounted: {r['accounted']}",
              flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "cpu": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
