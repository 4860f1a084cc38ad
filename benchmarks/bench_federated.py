"""Seconds per federated round: kbsim, Flower's simulation engine and centralised training.

    .venv/bin/python benchmarks/bench_federated.py --json runs/bench/federated.json

The standard next-word task (issue 5): the CIFG-LSTM at full size (`CIFGConfig()` with the
data build's 10,004 ids: 1.42M parameters), 50 clients a round, client batch 16, 1 local epoch,
sequence length 20, client SGD at lr 10^-0.5 (the Stack Overflow benchmark's settings, Reddi et
al. 2021 appendix C and D), on the natural users of the default corpus: every training user's
early messages from `kbsim data build configs/data.yaml` (built into `--data` first if missing,
about 40 s). Every run trains the same cohorts: round r's reporting clients from
`federated.sampling.sample_round` (uniform, 50, seed 0), from the same initial weights.

* *kbsim*: `FedAvg` (weighting by examples, server SGD lr 1) for `--rounds` rounds, with the
  sequential engine and with the vmap engine. A round's time covers all a round does:
  sampling the cohort, every client's local training, the chain, the server step.
* *centralised*: the limit that a federated simulation cannot beat: for each of the same rounds,
  the reporting clients' examples pooled and trained once, in shuffled batches of 16, with
  `torch.optim.SGD` (same lr) on one model; the pooling is timed too.
* *Flower*: `federated.flower.run_flower` for `--flower-rounds` rounds: kbsim's client
  training as a Flower ClientApp, Flower's FedAvg strategy, `flwr.simulation.run_simulation`
  on Ray, one actor with one CPU (`--flower-cpus`), with each round's messages naming kbsim's
  cohort. Flower starts Ray and its actors during its round 0, so round 0 is shown apart
  (start-up) and never enters a ratio.

Ratios compare the same rounds only (rounds 1 onward, round 0 being each run's warm-up):
kbsim / centralised over rounds 1..R-1, Flower / kbsim over rounds 1..F-1. kbsim and
centralised run in this process pinned to one core (`--core`, default the least busy) with
`--threads` torch threads (default 1) and every BLAS/OpenMP pool at that size, as the other
benchmarks do, taking turns round by round (round r of each, then round r+1 of each), so that
other programs' load on a shared machine falls on all of them alike; the CPU that other
programs used meanwhile is recorded ("other load"). Flower cannot be pinned
to one core (Ray runs its own services beside the actor), so it gets the machine with one
actor: its server thread and Ray's services may use a second core, which if anything favours
Flower. The script also prints how far Flower's model after its rounds is from kbsim's
sequential model after the same rounds, beside the same distance for kbsim's vmap engine: each
Flower client's reply is kbsim's `train_client` bit for bit, but Flower averages weights in
float32 where kbsim sums deltas in float64, and later rounds' local training (up to 57 steps at
lr 0.32) amplifies those last-bit differences, as it does the vmap engine's.

Prints Markdown tables and, with --json, writes every figure and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from _timing import THREAD_VARS, OtherLoad  # noqa: E402

# Issue 5's goals.
GOAL_KBSIM_OVER_CENTRAL = 1.10  # "kbsim's round time at most 1.10 times the centralised time"
GOAL_FLOWER_OVER_KBSIM = 20.0  # "at least 20 times faster than Flower's simulation engine"
COHORT = 50  # clients a round (Stack Overflow benchmark, Reddi et al. 2021 appendix C)
SEQ_LEN = 20  # data.torch_data.DEFAULT_SEQ_LEN, the Stack Overflow benchmark's length
SEED = 0


def _set_threads(threads: int) -> None:
    """Every BLAS/OpenMP pool at `threads` (read when torch is first imported, and inherited
    by Ray's actors)."""
    os.environ.update(dict.fromkeys(THREAD_VARS, str(threads)))


def load(data: Path, seed: int, model_overrides: dict | None = None):
    """The training clients, the model's config and its initial weights. `model_overrides`
    changes `CIFGConfig` fields (e.g. a smaller hidden size) for a non-standard run."""
    import torch

    from data.built import BuiltDataset
    from data.record import derive_seed
    from federated.client import ClientDataset
    from models.lm import build_lm

    if not (data / "manifest.json").exists():
        kbsim = Path(sys.executable).parent / "kbsim"
        print(f"building the default data into {data} (about 40 s)", file=sys.stderr)
        subprocess.run([str(kbsim), "data", "build", str(ROOT / "configs/data.yaml"),
                        "--out", str(data)], check=True)
    ds = BuiltDataset(data)
    vocab = len(ds.vocab())
    train = {cid: ClientDataset.from_dataset(cid, d) for cid, d in
             ds.next_word_datasets("train", "early", SEQ_LEN).items() if len(d)}
    model_config = {"vocab_size": vocab, **(model_overrides or {})}
    model = build_lm("cifg", model_config,
                     generator=torch.Generator().manual_seed(derive_seed(seed, "bench", "init")))
    return train, model_config, model


class KbsimRun:
    """kbsim FedAvg, one round per `step` call (weighting by examples, server SGD lr 1)."""

    def __init__(self, model, p0, train, cohorts_of, engine: str, client, seed: int,
                 device: str = "cpu") -> None:
        from federated.fedavg import FedAvg, FedAvgConfig

        self.algo = FedAvg(model, FedAvgConfig(client=client, weighting="examples",
                                               engine=engine, device=device))
        self.state = self.algo.init(p0)
        self.train, self.cohorts_of, self.seed = train, cohorts_of, seed
        self.params: list = []  # the weights after each round

    def step(self, r: int) -> int:
        """Round r: sampling, local training, chain, server step; returns its local steps."""
        from federated.run import round_seed

        ids = self.cohorts_of(r)
        self.state, m = self.algo.apply(self.state, [self.train[c] for c in ids],
                                        round_seed(self.seed, r))
        self.params.append(self.state.params)
        return int(m["client_steps"])


class CentralRun:
    """Centralised SGD on one model: round r trains once over its cohort's pooled examples,
    in shuffled batches of the client batch size, at the client lr."""

    def __init__(self, model, p0, train, cohorts_of, client, seed: int,
                 device: str = "cpu") -> None:
        import copy

        import torch

        from federated.params import ParamLayout

        self.model = copy.deepcopy(model)
        ParamLayout.of(self.model).load(self.model, p0)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=client.lr)
        self.train, self.cohorts_of, self.seed = train, cohorts_of, seed
        self.batch_size = client.batch_size

    def step(self, r: int) -> int:
        import torch

        from data.record import derive_seed
        from models.nwp import nwp_loss

        self.model.train()
        ids = self.cohorts_of(r)
        x = torch.cat([self.train[c].x for c in ids]).to(self.device)
        y = torch.cat([self.train[c].y for c in ids]).to(self.device)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "bench", "central", r))
        batches = torch.randperm(len(x), generator=g).split(self.batch_size)
        for idx in batches:
            self.opt.zero_grad(set_to_none=True)
            nwp_loss(self.model(x[idx]), y[idx]).backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the round is done when its last step is
        return len(batches)


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "runs/bench/fed_data",
                    help="the default data build (built here if missing)")
    ap.add_argument("--rounds", type=int, default=5, help="kbsim and centralised rounds")
    ap.add_argument("--flower-rounds", type=int, default=3, help="Flower rounds (>= 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every run")
    ap.add_argument("--flower-cpus", type=int, default=1,
                    help="CPUs Ray may use, one actor each")
    ap.add_argument("--engines", nargs="+", default=["sequential", "vmap"],
                    choices=["sequential", "vmap"])
    ap.add_argument("--no-flower", action="store_true", help="skip the Flower run")
    ap.add_argument("--core", type=int, help="core to pin kbsim and centralised to "
                    "(default: the least busy one)")
    ap.add_argument("--device", default="cpu",
                    help="where every run trains: cpu or cuda (kbsim's clients, centralised "
                    "SGD and Flower's clients alike; Flower's actors then get --flower-gpus)")
    ap.add_argument("--flower-gpus", type=float, default=0.25,
                    help="GPU share of each Flower actor with --device cuda")
    ap.add_argument("--model", type=json.loads, default={}, metavar="JSON",
                    help="CIFGConfig fields to change, e.g. '{\"embed_dim\": 8, \"hidden_dim\": "
                    "16}': not the standard task, but shows where per-client overhead dominates")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = ap.parse_args(argv)
    if args.rounds < 2 or args.flower_rounds < 2 or args.flower_rounds > args.rounds:
        ap.error("need 2 <= --flower-rounds <= --rounds")

    _set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from federated.client import ClientConfig
    from federated.params import ParamLayout
    from federated.sampling import SamplingConfig, sample_round

    t0 = time.perf_counter()
    train, model_config, model = load(args.data, SEED, args.model)
    load_seconds = time.perf_counter() - t0
    ids = sorted(train)
    p0 = ParamLayout.of(model).vector(model)
    client = ClientConfig(batch_size=16, epochs=1)  # lr: DEFAULT_CLIENT_LR = 10^-0.5
    sampling = SamplingConfig(kind="uniform", cohort_size=COHORT)

    def cohorts_of(r: int) -> tuple[str, ...]:
        return sample_round(ids, sampling, SEED, r).reporting

    examples = [sum(len(train[c]) for c in cohorts_of(r)) for r in range(args.rounds)]
    print(f"{len(ids)} training clients, {sum(len(c) for c in train.values()):,} examples; "
          f"{p0.numel():,} parameters; examples per round {examples}", file=sys.stderr)

    allowed = os.sched_getaffinity(0)
    if args.core is not None:
        core = args.core
    else:
        from bench_models import _core_busy  # the least busy core, as bench_models picks

        busy = _core_busy()
        core = min(busy, key=busy.get) if busy else min(allowed)
    os.sched_setaffinity(0, {core})
    # The runs take turns round by round, so that load from other programs on this shared
    # machine falls on all of them alike rather than on whichever ran at the time.
    steppers = {f"kbsim {e}": KbsimRun(model, p0, train, cohorts_of, e, client, SEED,
                                       args.device) for e in args.engines}
    steppers["centralised"] = CentralRun(model, p0, train, cohorts_of, client, SEED, args.device)
    runs: dict[str, dict] = {k: {"round_seconds": [], "local_steps": [],
                                 "other_load_cores": []} for k in steppers}
    for r in range(args.rounds):
        for name, run in steppers.items():
            with OtherLoad() as load_:
                t = time.perf_counter()
                steps = run.step(r)
                secs = time.perf_counter() - t
            runs[name]["round_seconds"].append(secs)
            runs[name]["local_steps"].append(steps)
            runs[name]["other_load_cores"].append(load_.cores)
            print(f"round {r} {name}: {secs:.2f} s, {steps} steps, other load "
                  f"{load_.cores:.2f} cores", file=sys.stderr)
    kbsim_params = steppers["kbsim sequential"].params if "kbsim sequential" in steppers \
        else None
    os.sched_setaffinity(0, allowed)

    flower_check = None
    if not args.no_flower:
        import logging

        from federated.flower import run_flower

        logging.getLogger("flwr").setLevel(logging.WARNING)
        gpus = args.flower_gpus if args.device.startswith("cuda") else 0.0
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": gpus},
                   "init_args": {"num_cpus": args.flower_cpus}}
        with OtherLoad() as load_:
            out = run_flower(train, "cifg", model_config, client, rounds=args.flower_rounds,
                             cohort_size=COHORT, seed=SEED, initial_params=p0,
                             cohorts=lambda r: cohorts_of(r), backend_config=backend,
                             device=args.device)
        runs["Flower"] = {"round_seconds": out["round_seconds"],
                          "setup_seconds": out["setup_seconds"], "seconds": out["seconds"],
                          "other_load_cores": [load_.cores]}
        print(f"Flower: {[round(s, 2) for s in out['round_seconds']]}", file=sys.stderr)
        if kbsim_params is not None:
            ref = kbsim_params[args.flower_rounds - 1]
            flower_check = {"flower": float((out["params"] - ref).abs().max())}
            if "kbsim vmap" in steppers:
                # The spread that float rounding alone makes: kbsim's two engines.
                vmap = steppers["kbsim vmap"].params[args.flower_rounds - 1]
                flower_check["vmap"] = float((vmap - ref).abs().max())

    # Ratios over the same rounds, round 0 (each run's warm-up) left out.
    def timed(name: str, upto: int) -> float:
        return sum(runs[name]["round_seconds"][1:upto])

    ratios = []
    central = timed("centralised", args.rounds)
    for engine in args.engines:
        ratios.append({"ratio": f"kbsim {engine} / centralised", "rounds": f"1-{args.rounds - 1}",
                       "measured": timed(f"kbsim {engine}", args.rounds) / central,
                       "goal": f"<= {GOAL_KBSIM_OVER_CENTRAL:.2f}x",
                       "met": timed(f"kbsim {engine}", args.rounds) / central
                       <= GOAL_KBSIM_OVER_CENTRAL})
    if "Flower" in runs:
        for engine in args.engines:
            v = timed("Flower", args.flower_rounds) / timed(f"kbsim {engine}", args.flower_rounds)
            ratios.append({"ratio": f"Flower / kbsim {engine}",
                           "rounds": f"1-{args.flower_rounds - 1}", "measured": v,
                           "goal": f">= {GOAL_FLOWER_OVER_KBSIM:.0f}x",
                           "met": v >= GOAL_FLOWER_OVER_KBSIM})

    # Seconds per SGD step separate the machinery's cost from the step count: FedAvg takes
    # sum_i ceil(n_i / 16) steps a round, pooled training ceil(sum_i n_i / 16).
    ref_steps = next((r["local_steps"] for r in runs.values() if r.get("local_steps")), [])
    lines = ["| run | rounds | round 0 (s) | s/round, rounds 1+ | SGD steps/round, rounds 1+ | "
             "ms/step, rounds 1+ | other load (cores) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        s = r["round_seconds"]
        steps = r.get("local_steps") or ref_steps[: len(s)]
        lines.append(f"| {name} | {len(s)} | {_fmt(s[0])} | {_fmt(_mean(s[1:]))} | "
                     f"{_fmt(_mean(steps[1:]), 0)} | {_fmt(1000 * sum(s[1:]) / sum(steps[1:]), 1)}"
                     f" | {_fmt(_mean(r['other_load_cores'][1:] or r['other_load_cores']))} |")
    lines += ["", "| ratio (same rounds) | rounds | measured | goal | |", "|---|---|---:|---:|---|"]
    for x in ratios:
        lines.append(f"| {x['ratio']} | {x['rounds']} | {x['measured']:.2f}x | {x['goal']} | "
                     f"{'met' if x['met'] else '**missed**'} |")
    print("\n".join(lines))
    print(f"\nexamples per round: {examples}; data loaded in {load_seconds:.1f} s")
    if flower_check is not None:
        print(f"max abs difference from kbsim sequential's model after {args.flower_rounds} "
              f"rounds: Flower {flower_check['flower']:.2e}"
              + (f", kbsim vmap {flower_check['vmap']:.2e}" if "vmap" in flower_check else ""))

    if args.json:
        import flwr

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "federated",
                                "benchmarks/bench_federated.py"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        result = {
            "date": dt.date.today().isoformat(),
            "commit": commit + (" + uncommitted changes" if dirty else ""),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "torch": torch.__version__,
                        "flwr": flwr.__version__},
            "settings": {"model": model_config, "clients": len(ids), "cohort": COHORT,
                         "batch_size": 16, "epochs": 1,
                         "seq_len": SEQ_LEN, "client_lr": client.lr,
                         "parameters": p0.numel(), "threads": args.threads,
                         "flower_cpus": args.flower_cpus, "pinned_core": core,
                         "device": args.device},
            "examples_per_round": examples, "runs": runs, "ratios": ratios,
            "max_abs_diff_from_kbsim_sequential": flower_check,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
