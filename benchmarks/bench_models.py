"""On-device cost of the exported models: file size, latency per prediction, peak memory.

    python benchmarks/bench_models.py [--json results.json] [--steps 2000] [--core N]
                                      [--models cifg transformer proofreader]

Exports, with `models.export`, the default-size models (random initialisation from a fixed seed:
size and latency do not depend on training, which is why untrained models are used):

* the CIFG-LSTM next-word model (`CIFGConfig()`: 10,004 ids, embedding 96, 670 cells, 1.42M
  parameters) as a one-step keyboard function, to ONNX and ExecuTorch (.pte, XNNPACK), float32
  and int8;
* the Transformer LM (`TransformerLMConfig()`, 1.39M parameters), last-position logits over a
  window of 20 ids (the training window), the same four ways;
* the proofreader (`ProofreaderConfig()`, 6.1M parameters) as an encoder and a decoder step,
  the same four ways (the ExecuTorch decoder file holds the step without a cache for position 0
  and the step with one: see models/export.py); its file size is the two files together.

Each file then runs in a fresh subprocess pinned to one core (`--core`, default the least busy
core this process may use) with every BLAS/OpenMP pool at one thread and onnxruntime / XNNPACK
at one thread, as bench_simulate.py does:

* next word: `--steps` predictions in a row on real chat messages' word ids (the CIFG carries
  its state from word to word; the Transformer re-reads its last 20 ids), each call timed
  alone; p50 and p95 over the calls, best of `--repeat` passes (by p50);
* proofreader: greedy decoding of 10-word chat messages (sentencepiece pieces of a 2,000-piece
  model trained on the first 20,000 Chit-Chat messages), one message per call, encoder and
  every decoder step included. An untrained model does not stop by itself, so each message
  decodes exactly as many steps as a correction of the same length: its piece count + 1 (EOS);
* peak memory: the subprocess's peak resident set (VmHWM), and its resident set just
  before the model is loaded (interpreter, numpy, torch and the runtime), so the difference
  is what the model and its runs add.

Prints a Markdown table and, with --json, writes every figure, the commands and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from _timing import OtherLoad, single_thread_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

GOAL_CIFG_INT8_BYTES = 1_500_000  # issue 4: "at most 1.5 MB in int8" (Gboard's model)
GOAL_CIFG_P50_MS = 1.0  # "at most 1 ms p50 per prediction on one thread"
GOAL_PROOF_P50_MS = 30.0  # "the proofreader at most 30 ms per message"
WINDOW = 20  # Transformer window: data.torch_data.DEFAULT_SEQ_LEN
SEED = 0


# --- workloads (parent) --------------------------------------------------------------------


def _messages(limit: int) -> list[str]:
    from data.chitchat import iter_messages

    return [m["text"] for m in iter_messages(limit=limit) if m["text"].strip()]


def word_ids(n: int) -> list[int]:
    """n word ids of consecutive real chat messages (BOS, words, EOS), 10,000-word vocabulary."""
    from data.tokenize import tokenize
    from data.vocab import BOS, EOS, WordVocab

    texts = _messages(20_000)
    tokens = [tokenize(t) for t in texts]
    vocab = WordVocab.build(tokens)
    ids: list[int] = []
    for toks in tokens:
        ids += [BOS, *vocab.encode(toks), EOS]
        if len(ids) >= n + WINDOW:
            break
    return ids[: n + WINDOW]


def ten_word_messages(n: int, workdir: Path) -> list[list[int]]:
    """Piece ids of the first n 10-word chat messages (whitespace words)."""
    from data.subword import train_subword

    texts = _messages(20_000)
    tok = train_subword(texts, workdir / "subword")
    ten = [t for t in texts if len(t.split()) == 10][:n]
    return [tok.encode(t) for t in ten]


MODELS = ("cifg", "transformer", "proofreader")


def export_all(workdir: Path, log, models: tuple[str, ...] = MODELS) -> list[dict]:
    """Exports every file of `models`; returns one spec per file (or file pair) to time."""
    import torch

    from models import export as ex
    from models.cifg import CIFGConfig, CIFGLanguageModel
    from models.proofreader import Proofreader, ProofreaderConfig
    from models.transformer_lm import TransformerLM, TransformerLMConfig

    specs = []
    lms = {
        "cifg": CIFGLanguageModel(CIFGConfig(), generator=torch.Generator().manual_seed(SEED)),
        "transformer": TransformerLM(
            TransformerLMConfig(), generator=torch.Generator().manual_seed(SEED)
        ),
    }
    for kind, model in lms.items():
        if kind not in models:
            continue
        model.eval()
        for fmt, suffix in (("onnx", ".onnx"), ("executorch", ".pte")):
            for int8 in (False, True):
                path = workdir / f"{kind}{'.int8' if int8 else ''}{suffix}"
                t0 = time.perf_counter()
                if fmt == "onnx" and int8:
                    ex.quantize_onnx(workdir / f"{kind}.onnx", path)
                else:
                    ex.export_next_word(model, path, fmt, int8)
                print(f"  exported {path.name} ({time.perf_counter() - t0:.1f} s)", file=log)
                specs.append({
                    "model": kind, "format": fmt, "int8": int8, "files": [str(path)],
                    "parameters": model.num_parameters(),
                    "state_dims": [model.config.embed_dim, model.config.hidden_dim]
                    if kind == "cifg" else None,
                })
    if "proofreader" not in models:
        return specs
    proof = Proofreader(ProofreaderConfig())
    proof.reset_parameters(torch.Generator().manual_seed(SEED))
    proof.eval()
    onnx_float: list[Path] = []
    for fmt in ("onnx", "executorch"):
        for int8 in (False, True):
            t0 = time.perf_counter()
            if fmt == "onnx" and int8:  # as the LMs: onnxruntime's quantizer on the float files
                paths = [ex.quantize_onnx(p, p.with_suffix(".int8.onnx")) for p in onnx_float]
            else:
                paths = list(ex.export_proofreader(proof, workdir, fmt, int8))
                onnx_float = paths if fmt == "onnx" else onnx_float
            print(f"  exported {', '.join(p.name for p in paths)} "
                  f"({time.perf_counter() - t0:.1f} s)", file=log)
            specs.append({
                "model": "proofreader", "format": fmt, "int8": int8,
                "files": [str(p) for p in paths], "parameters": proof.num_parameters(),
                "config": proof.config.to_dict(),
            })
    return specs


# --- the timed run (subprocess) ------------------------------------------------------------


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak).

    Not `ru_maxrss`: Linux carries that over `execve`, so a child would report its parent's
    peak (the exporting parent's, here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _percentiles(seconds: list[float]) -> dict:
    import numpy as np

    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "calls": len(ms),
    }


def worker(spec: dict, core: int) -> dict:
    """Runs in the pinned subprocess: loads the file(s), times the calls, reports."""
    os.sched_setaffinity(0, {core})
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from models import export as ex

    if spec["format"] == "executorch":
        import executorch.runtime  # noqa: F401  (imported before the baseline, as onnxruntime)
    else:
        import onnxruntime  # noqa: F401
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    runners = [ex.open_runner(p) for p in spec["files"]]
    load_s = time.perf_counter() - t0
    work = spec["workload"]
    passes = []
    for _ in range(spec["repeat"]):
        seconds: list[float] = []
        if spec["model"] == "cifg":
            (run,) = runners
            ids = np.asarray(work["ids"], dtype=np.int64)
            p, hidden = spec["state_dims"]
            h = np.zeros((1, p), dtype=np.float32)
            c = np.zeros((1, hidden), dtype=np.float32)
            for i in range(len(ids) - WINDOW):
                x = ids[i : i + 1]
                t = time.perf_counter()
                _, h, c = run(x, h, c)
                seconds.append(time.perf_counter() - t)
        elif spec["model"] == "transformer":
            (run,) = runners
            ids = np.asarray(work["ids"], dtype=np.int64)
            for i in range(len(ids) - WINDOW):
                window = ids[None, i : i + WINDOW]
                t = time.perf_counter()
                run(window)
                seconds.append(time.perf_counter() - t)
        else:
            from models.proofreader import ProofreaderConfig

            proof = ex.ExportedProofreader(*runners, ProofreaderConfig(**spec["config"]))
            for src in work["messages"]:
                t = time.perf_counter()
                proof.greedy([src], max_len=len(src) + 1)
                seconds.append(time.perf_counter() - t)
        warm = 50 if spec["model"] != "proofreader" else 5
        passes.append(_percentiles(seconds[warm:]))
    best = min(passes, key=lambda p: p["p50_ms"])
    return {
        **best,
        "passes": passes,
        "load_s": load_s,
        "rss_before_load_mib": base / 1024,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
    }


# --- parent --------------------------------------------------------------------------------


def _core_busy() -> dict[int, float]:
    """Share of each usable core busy over one second (from /proc/stat)."""

    def read() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
        return out

    a = read()
    time.sleep(1.0)
    b = read()
    return {
        c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1])
        for c in os.sched_getaffinity(0)
        if c in a and c in b
    }


def run_worker(spec: dict, core: int, workdir: Path) -> dict:
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", str(spec_path),
           "--core", str(core)]
    with OtherLoad() as load:
        proc = subprocess.run(cmd, env=single_thread_env(), capture_output=True, text=True,
                              cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["other_load_cores"] = load.cores
    return result


def machine(busy: dict[int, float]) -> dict:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "models", "benchmarks"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores_usable": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "os": platform.platform(),
        "commit": commit + (" + uncommitted changes" if dirty else ""),
        "core_busy_at_start": busy,
        "load_average_1_5_15min": list(os.getloadavg()),
    }


def _versions() -> dict:
    out = {}
    for dist in ("torch", "onnxruntime", "onnx", "onnxscript", "executorch", "torchao", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| model | runtime | weights | file size | latency p50 | p95 | peak RSS (before load) "
        "| other load |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        unit = "per message" if r["model"] == "proofreader" else "per prediction"
        lines.append(
            f"| {r['model']} | {'ONNX Runtime' if r['format'] == 'onnx' else 'ExecuTorch'} | "
            f"{'int8' if r['int8'] else 'float32'} | {r['bytes'] / 1e6:.2f} MB | "
            f"{r['p50_ms']:.3f} ms {unit} | {r['p95_ms']:.3f} ms | "
            f"{r['peak_rss_mib']:.0f} MiB ({r['rss_before_load_mib']:.0f}) | "
            f"{r['other_load_cores']:.2f} |"
        )
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        name = f"{r['model']} {r['format']} {'int8' if r['int8'] else 'float32'}"
        if r["model"] == "cifg" and r["int8"]:
            out.append({"name": f"{name}: file size (bytes)", "value": r["bytes"],
                        "goal": GOAL_CIFG_INT8_BYTES, "met": r["bytes"] <= GOAL_CIFG_INT8_BYTES})
        if r["model"] == "cifg":
            out.append({"name": f"{name}: p50 ms per prediction", "value": r["p50_ms"],
                        "goal": GOAL_CIFG_P50_MS, "met": r["p50_ms"] <= GOAL_CIFG_P50_MS})
        if r["model"] == "proofreader":
            out.append({"name": f"{name}: p50 ms per 10-word message", "value": r["p50_ms"],
                        "goal": GOAL_PROOF_P50_MS, "met": r["p50_ms"] <= GOAL_PROOF_P50_MS})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="next-word predictions per pass")
    ap.add_argument("--messages", type=int, default=200, help="10-word messages per pass")
    ap.add_argument("--repeat", type=int, default=3, help="passes per file; the best p50 counts")
    ap.add_argument("--core", type=int, help="core to pin to (default: the least busy one)")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    ap.add_argument("--workdir", type=Path, help="keep the exported files here")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                    help="which models to export and time (default: all)")
    ap.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker is not None:
        print(json.dumps(worker(json.loads(args._worker.read_text()), args.core)))
        return
    if args.steps < 100 or args.messages < 10 or args.repeat < 1:
        ap.error("--steps >= 100, --messages >= 10 and --repeat >= 1")
    sys.path.insert(0, str(ROOT))
    busy = _core_busy()
    core = args.core if args.core is not None else min(busy, key=busy.get)
    info = machine(busy)
    info["core"] = core
    log = sys.stderr
    print(f"core busy shares at start: {busy}; pinning to core {core}", file=log)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="kbsim-bench-models-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        specs = export_all(workdir, log, tuple(args.models))
        ids = word_ids(args.steps) if set(args.models) - {"proofreader"} else []
        messages = ten_word_messages(args.messages, workdir) if "proofreader" in args.models \
            else []
        rows = []
        for spec in specs:
            work = {"messages": messages} if spec["model"] == "proofreader" else {"ids": ids}
            spec = {**spec, "workload": work, "repeat": args.repeat}
            res = run_worker(spec, core, workdir)
            row = {k: v for k, v in spec.items() if k not in ("workload", "config")}
            row["bytes"] = sum(Path(p).stat().st_size for p in spec["files"])
            row["file_bytes"] = {Path(p).name: Path(p).stat().st_size for p in spec["files"]}
            row["files"] = [Path(p).name for p in spec["files"]]
            row.update(res)
            rows.append(row)
            print(f"  {row['model']} {row['format']} {'int8' if row['int8'] else 'float'}: "
                  f"{row['p50_ms']:.3f} ms p50, {row['bytes'] / 1e6:.2f} MB", file=log)
    finally:
        if tmp is not None:
            tmp.cleanup()
    checks = goals(rows)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{when}; {info['cpu']}; pinned to core {core}, one thread; best of {args.repeat}; "
          f"models untrained (random init, seed {SEED})\n")
    print(table(rows))
    print("\n| goal | measured | target | |\n|---|---:|---:|---|")
    for c in checks:
        print(f"| {c['name']} | {c['value']:,.3f} | <= {c['goal']:,} | "
              f"{'met' if c['met'] else 'MISSED'} |")
    loaded = [f"{r['model']} {r['format']}" for r in rows if r["other_load_cores"] > 1.1]
    if loaded:
        print("\nWARNING: other programs used more than the other core during: "
              + "; ".join(loaded))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": when,
            "command": "python benchmarks/bench_models.py " + " ".join(sys.argv[1:]),
            "machine": info,
            "versions": _versions(),
            "settings": {"models": args.models, "steps": args.steps, "messages": args.messages,
                         "repeat": args.repeat, "window": WINDOW, "seed": SEED,
                         "trained": False},
            "results": rows,
            "goals": checks,
        }, indent=2) + "\n")
        print(f"\nresults written to {args.json}", file=log)


if __name__ == "__main__":
    main()
