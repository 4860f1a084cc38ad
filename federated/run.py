"""A federated training run on a built dataset's users: rounds, logs, evaluation, checkpoints.

    config = FederatedConfig.load("configs/federated.yaml")
    summary = run_federated(config, "runs/fed")      # run again on the same folder to resume

Each training user (early messages of the `train` split of a `kbsim data build` folder) is a
client holding its own next-word examples. Round r samples a cohort (`federated.sampling`,
seeded by (seed, round)), the reporting clients train and send updates, the server chain and
optimizer make the next model (`federated.fedavg`), and the privacy ledger records the round
(`federated.accounting`). The run folder:

    config.json                   the config as run
    metrics.csv                   one row per round: cohort (sampled, reporting, dropped),
                                  training loss, update norms, the chain's metrics, epsilon
    eval.csv                      one row per evaluation on the held-out users (NWPMetrics)
    tb/                           both as TensorBoard scalars
    checkpoints/step-NNNNNNNN/    server state after round NNNNNNNN (models.checkpoint
                                  save_tensors: weights, optimizer moments; JSON: stage states,
                                  privacy ledger, round)
    summary.json                  written when the run finishes

Resume is exact: everything a round does is a function of the server state and (seed, round),
so a run killed at any point and started again on its folder continues from its newest
checkpoint and ends with the same weights as a run that never stopped. Log rows written after
that checkpoint are dropped.

With torchrun the cohort is split across ranks (`federated.distributed`); only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from data.config import ConfigError
from data.record import derive_seed
from federated.accounting import PrivacyLedger
from federated.chain import Aggregate, run_server
from federated.client import ClientDataset
from federated.config import RESUMABLE_CHANGES, FederatedConfig
from federated.distributed import Group, group_from_env
from federated.fedavg import FedAvg, FedAvgConfig, FedAvgError, ServerState
from federated.sampling import rounds_per_epoch, sample_round, sampling_probability
from models.checkpoint import (
    latest_checkpoint,
    load_tensors,
    prune_checkpoints,
    save_tensors,
    step_dir,
)
from models.train import MetricsLog, TrainError, check_same_run, summary_writer

METRICS_CSV = "metrics.csv"
EVAL_CSV = "eval.csv"
SUMMARY_JSON = "summary.json"
CONFIG_JSON = "config.json"
ROUND_COLUMNS = ["round", "sampled", "reporting", "dropped", "not_needed", "clients", "train_loss",
                 "train_tokens", "train_examples", "client_steps", "update_norm",
                 "server_update_norm", "epsilon", "seconds"]


class FederatedError(TrainError):
    """A federated run that cannot start or go on: the message says why."""


def round_seed(seed: int, round: int) -> int:
    """The seed of everything random in `round` (fedjax derives it from (seed, round) too)."""
    return derive_seed(seed, "federated", "round", round)


def tree_rounds(config: FederatedConfig, num_clients: int) -> tuple[int, int]:
    """(rounds per epoch of shuffle sampling, rounds per tree) of a `dp.mechanism: tree` run.

    Raises:
        FederatedError: `dp.restart_rounds` does not divide the epoch (a tree would span two
            epochs and could hold a client twice).
    """
    epoch = rounds_per_epoch(config.sampling, num_clients)
    restart = config.dp.restart_rounds or epoch
    if epoch % restart:
        raise FederatedError(
            f"dp.restart_rounds {restart} must divide the {epoch} rounds of an epoch "
            f"({num_clients} clients // cohort_size {config.sampling.cohort_size}), so that no "
            "tree spans two epochs")
    return epoch, restart


def noise_multiplier(config: FederatedConfig, num_clients: int) -> float:
    """The DP noise multiplier z of a run: given, or the smallest that keeps its rounds within
    `dp.target_epsilon` at `dp.delta` (for the tree: z of each tree node)."""
    dp = config.dp
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    from federated.accounting import (
        noise_multiplier_for_epsilon,
        tree_noise_multiplier_for_epsilon,
    )

    if dp.mechanism == "tree":
        epoch, restart = tree_rounds(config, num_clients)
        return tree_noise_multiplier_for_epsilon(dp.target_epsilon, config.rounds, epoch,
                                                 restart, dp.delta, dp.accountant)
    q = sampling_probability(config.sampling, num_clients)
    return noise_multiplier_for_epsilon(dp.target_epsilon, q, config.rounds, dp.delta,
                                        dp.accountant)


def client_device(device: str) -> str:
    """The device this process's clients train on: "cuda" under torchrun means the GPU of the
    process's LOCAL_RANK (one GPU per process, as torchrun lays them out)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def build_stages(config: FederatedConfig, num_clients: int) -> list:
    """The server chain the config asks for: [GaussianDP or TreeDP][, SecAgg]."""
    stages = []
    if config.dp is not None and config.dp.mechanism == "tree":
        from federated.dp_ftrl import TreeDP

        _, restart = tree_rounds(config, num_clients)
        # The tree's node noise is drawn again in later rounds, so it is seeded by the run, not
        # by the round (federated.dp_ftrl).
        stages.append(TreeDP(noise_multiplier=noise_multiplier(config, num_clients),
                             expected_clients=config.sampling.cohort_size,
                             noise_seed=derive_seed(config.seed, "federated", "tree noise"),
                             clip_norm=config.dp.clip_norm, restart_rounds=restart))
    elif config.dp is not None:
        from federated.dp import GaussianDP

        dp = config.dp
        s = config.sampling
        expected = s.cohort_size if s.kind == "uniform" else s.rate * num_clients
        z = noise_multiplier(config, num_clients)
        stages.append(GaussianDP(noise_multiplier=z, expected_clients=expected,
                                 clip_norm=dp.clip_norm, target_quantile=dp.target_quantile,
                                 clip_learning_rate=dp.clip_learning_rate,
                                 count_noise_std=dp.count_noise_std))
    if config.secagg is not None:
        from federated.secagg import SecAgg

        sa = config.secagg
        stages.append(SecAgg(bound=sa.bound, bits=sa.bits, modulus_bits=sa.modulus_bits))
    return stages


def _model(config: FederatedConfig, vocab_size: int) -> tuple[torch.nn.Module, dict]:
    from models.lm import build_lm, lm_config_from_dict

    mc = dict(config.model_config)
    given = mc.setdefault("vocab_size", vocab_size)
    if given != vocab_size:
        raise FederatedError(f"model_config.vocab_size is {given}, the dataset's vocabulary "
                             f"has {vocab_size} ids: leave it out or make it match")
    try:
        full = lm_config_from_dict(config.model, mc)
    except ValueError as e:
        raise FederatedError(f"model_config: {e}") from None
    if getattr(full, "dropout", 0.0):
        raise FederatedError("federated training needs a dropout-free model (dropout: 0)")
    if getattr(full, "max_len", config.seq_len) < config.seq_len:
        raise FederatedError(f"seq_len {config.seq_len} exceeds the model's max_len")
    init = torch.Generator().manual_seed(derive_seed(config.seed, "federated", "init"))
    return build_lm(config.model, full.to_dict(), generator=init), full.to_dict()


def _metric_names(algo: FedAvg, state: ServerState) -> list[str]:
    """The chain's server metrics, found by running it once on an empty aggregate."""
    gens = [torch.Generator().manual_seed(0) for _ in algo.stages]
    agg = Aggregate.zeros(algo.layout.numel, algo.stat_names)
    return sorted(run_server(algo.stages, agg, state.stage_states, gens)[2])


def _state_tensors(state: ServerState) -> dict[str, torch.Tensor]:
    return {"params": state.params, **{f"opt/{k}": v for k, v in state.opt_state.items()}}


def _state_from(tensors: dict[str, torch.Tensor], saved: dict) -> ServerState:
    opt = {k[4:]: v for k, v in tensors.items() if k.startswith("opt/")}
    return ServerState(int(saved["round"]), tensors["params"], opt,
                       tuple(dict(s) for s in saved["stage_states"]))


def _fingerprint(root: Path) -> str:
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


@torch.no_grad()
def evaluate(model: torch.nn.Module, params: torch.Tensor, algo: FedAvg, dataset,
             batch_size: int, group: Group) -> dict:
    """`NWPMetrics` of the server's weights on `dataset`, sharded over ranks and merged."""
    from models.nwp import NWPMetrics

    algo.layout.load(model, params)
    model.eval()
    total = NWPMetrics()
    n = len(dataset)
    idx = torch.arange(n)
    mine = idx[group.rank::group.world]
    for start in range(0, len(mine), batch_size):
        x, y = dataset[mine[start:start + batch_size]]
        total = total + NWPMetrics.of(model(x), y)
    # Merge the raw sums over ranks (to_dict holds derived rates, which do not add).
    raw = [total.tokens, total.loss_sum, total.top1_all, total.top3_all, total.words,
           total.top1, total.top3]
    s = group.all_reduce_sum(raw)
    merged = NWPMetrics(int(round(s[0])), s[1], *(int(round(v)) for v in s[2:]))
    return merged.to_dict()


class _Pooled:
    """Every held-out example as two tensors (x, y), indexable by an index tensor."""

    def __init__(self, datasets: dict) -> None:
        seqs = [d.sequences for d in datasets.values()]
        self.sequences = torch.cat(seqs) if seqs else torch.zeros(0, 2, dtype=torch.int64)

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.sequences[idx]
        return rows[:, :-1], rows[:, 1:]


def run_federated(config: FederatedConfig, out_dir: str | Path, progress: bool = False, *,
                  max_rounds: int | None = None, group: Group | None = None,
                  extra_train_messages: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Runs (or resumes) a federated training run; see the module docstring.

    Args:
        config: The run.
        out_dir: The run folder (created if missing).
        progress: A tqdm bar over rounds on stderr (rank 0).
        max_rounds: Stop after this many rounds in all (checkpointing there); running again
            goes on to `config.rounds`.
        group: The torch.distributed group; default from the environment (torchrun).
        extra_train_messages: Messages added to the end of some training clients' data
            (client id -> texts), e.g. the canaries of a privacy audit (`eval.canary`). Part
            of the run's identity: a resumed run must be given the same ones.

    Returns:
        A summary: out_dir, round, rounds, finished, resumed_from, parameters, clients,
        eval (the last evaluation), epsilon, delta, seconds, seconds_per_round.

    Raises:
        FederatedError: Inconsistent settings, or `out_dir` holds another run's checkpoint.
        models.checkpoint.CheckpointError: The checkpoint to resume is corrupt.
        data.store.StoreError: The dataset folder is missing, unfinished or altered.
    """
    from data.built import BuiltDataset
    from keyboard_sim.io import atomic_write_text

    started = time.perf_counter()
    group = group or group_from_env()
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"

    ds = BuiltDataset(config.data)
    vocab = ds.vocab()
    model, model_config = _model(config, len(vocab))
    texts = ds.client_texts("train", "early")
    extra = {c: list(ms) for c, ms in sorted((extra_train_messages or {}).items())}
    for cid, messages in extra.items():
        if cid not in texts:
            raise FederatedError(f"extra_train_messages: {cid!r} is not a training client")
        texts[cid] = [*texts[cid], *messages]
    from data.torch_data import next_word_datasets

    train = {cid: ClientDataset.from_dataset(cid, d) for cid, d in
             next_word_datasets(texts, vocab, config.seq_len).items() if len(d)}
    held_out = _Pooled(ds.next_word_datasets(config.eval_split, None, config.seq_len))
    if not train or not len(held_out):
        which = "train (early)" if not train else config.eval_split
        raise FederatedError(f"{config.data}: no {which} messages to train or evaluate on")
    ids = sorted(train)
    stages = build_stages(config, len(ids))
    try:
        algo = FedAvg(model, FedAvgConfig(config.client, config.server, config.weighting,
                                          config.engine, config.vmap_chunk,
                                          client_device(config.device)), stages)
    except FedAvgError as e:
        raise FederatedError(str(e)) from None
    q = sampling_probability(config.sampling, len(ids))
    tree = config.dp is not None and config.dp.mechanism == "tree"
    epoch_rounds, tree_size = tree_rounds(config, len(ids)) if tree else (0, 0)
    ledger = PrivacyLedger(config.dp.accountant) if config.dp is not None else None
    fingerprint = _fingerprint(Path(config.data))
    if extra:
        fingerprint += "+" + hashlib.sha256(json.dumps(extra).encode()).hexdigest()

    state = algo.init(algo.layout.vector(model))
    resumed_from, last_eval = None, None
    latest = latest_checkpoint(ckpt_root)
    if latest is not None:
        tensors, saved = load_tensors(latest)
        _same_run(saved.get("config", {}), config, latest)
        if saved.get("dataset") != fingerprint:
            raise FederatedError(f"{latest}: the checkpoint was trained on other data (another "
                                 f"build of {config.data}, or other extra_train_messages)")
        state = _state_from(tensors, saved)
        resumed_from = state.round
        last_eval = saved.get("eval")
        if ledger is not None:
            ledger = PrivacyLedger.from_dict(saved["ledger"])
    stop = min(config.rounds, max_rounds) if max_rounds is not None else config.rounds

    metric_names = _metric_names(algo, state)
    from models.nwp import NWPMetrics

    eval_columns = ["round", *NWPMetrics().to_dict()]
    columns = [*ROUND_COLUMNS, *metric_names]
    log = eval_log = writer = None
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG_JSON,
                          json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n")
        log = MetricsLog(out / METRICS_CSV, keep_until=state.round, columns=columns)
        eval_log = MetricsLog(out / EVAL_CSV, keep_until=state.round, columns=eval_columns)
        writer = summary_writer(out / "tb", purge_step=state.round + 1)
    from tqdm import tqdm

    bar = tqdm(total=config.rounds, initial=state.round, disable=not (progress and group.is_main),
               desc="federated", unit="round", dynamic_ncols=True)
    checkpoint = latest
    round_seconds = []
    try:
        while state.round < stop:
            t0 = time.perf_counter()
            r = state.round
            seed = round_seed(config.seed, r)
            cohort = sample_round(ids, config.sampling, config.seed, r)
            mine = [train[c] for c in group.shard(cohort.reporting)]
            state, m = algo.apply(state, mine, seed,
                                  reduce=lambda a: group.all_reduce_aggregate(a, algo.stat_names))
            evaluated = state.round == config.rounds or (
                config.eval_every and state.round % config.eval_every == 0)
            checkpointed = state.round == stop or state.round % config.checkpoint_every == 0
            epsilon = math.nan
            if ledger is not None and tree:
                ledger = ledger.add_tree_round(stages[0].noise_multiplier,
                                               new_epoch=r % epoch_rounds == 0,
                                               new_tree=r % tree_size == 0)
            elif ledger is not None:
                ledger = ledger.add(stages[0].noise_multiplier, q)
            # RDP takes ~50 ms; PLD up to seconds, so it is computed when logged at length.
            if ledger is not None and (config.dp.accountant == "rdp" or evaluated
                                       or checkpointed):
                epsilon = ledger.epsilon(config.dp.delta)
            seconds = time.perf_counter() - t0
            round_seconds.append(seconds)
            row = {"round": state.round, "sampled": len(cohort.sampled),
                   "reporting": len(cohort.reporting), "dropped": len(cohort.dropped),
                   "not_needed": len(cohort.not_needed),
                   **m, "epsilon": epsilon, "seconds": seconds}
            row.update({k: m.get(k, math.nan) for k in metric_names})
            if evaluated:
                last_eval = evaluate(model, state.params, algo, held_out,
                                     config.eval_batch_size, group)
            if group.is_main:
                log.append(row)
                for k in columns[1:]:
                    writer.add_scalar(f"round/{k}", row[k], state.round)
                if evaluated:
                    eval_log.append({"round": state.round, **last_eval})
                    for k, v in last_eval.items():
                        writer.add_scalar(f"{config.eval_split}/{k}", v, state.round)
                writer.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{m['train_loss']:.3f}",
                            **({"eps": f"{epsilon:.2f}"} if ledger is not None else {}))
            if checkpointed:
                saved = {"config": config.to_dict(), "dataset": fingerprint,
                         "model_kind": config.model, "model_config": model_config,
                         "round": state.round, "stage_states": list(state.stage_states),
                         "ledger": ledger.to_dict() if ledger is not None else None,
                         "eval": last_eval}
                checkpoint = step_dir(ckpt_root, state.round)
                if group.is_main:
                    save_tensors(checkpoint, _state_tensors(state), saved)
                    prune_checkpoints(ckpt_root, config.keep_checkpoints)
                group.barrier()
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    algo.layout.load(model, state.params)
    summary = {
        "out_dir": str(out), "round": state.round, "rounds": config.rounds,
        "finished": state.round >= config.rounds, "resumed_from": resumed_from,
        "parameters": algo.layout.numel, "clients": len(ids), "eval": last_eval,
        "epsilon": ledger.epsilon(config.dp.delta) if ledger is not None and ledger.rounds
        else None,
        "delta": config.dp.delta if config.dp is not None else None,
        "noise_multiplier": stages[0].noise_multiplier if config.dp is not None else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "seconds": time.perf_counter() - started,
        "seconds_per_round": (sum(round_seconds) / len(round_seconds) if round_seconds
                              else None),
        "world_size": group.world, "rank": group.rank,
    }
    if group.is_main and state.round >= config.rounds:
        atomic_write_text(out / SUMMARY_JSON, json.dumps(summary, indent=1) + "\n")
    return summary


def _same_run(saved: dict, config: FederatedConfig, where: Path) -> None:
    # A checkpoint written before a setting existed lacks it: read back through the config
    # class, the missing setting takes its default, which is what that run did.
    try:
        saved = FederatedConfig.from_dict(saved).to_dict()
    except (ConfigError, ValueError, TypeError):
        pass  # compared as saved: any difference is reported below
    saved = json.loads(json.dumps(saved))
    free = set(RESUMABLE_CHANGES)
    if config.dp is not None and config.dp.target_epsilon is not None:
        free.discard("rounds")  # the noise multiplier was chosen for that many rounds
    check_same_run(saved, config.to_dict(), where, tuple(free), FederatedError)


def load_federated_model(path: str | Path) -> torch.nn.Module:
    """The global model of a federated run folder (its newest checkpoint) or of one checkpoint
    folder, in eval mode on the CPU."""
    from models.checkpoint import CheckpointError
    from models.lm import build_lm

    path = Path(path)
    ckpt = latest_checkpoint(path / "checkpoints") or path
    tensors, saved = load_tensors(ckpt)
    if "model_kind" not in saved or "params" not in tensors:
        raise CheckpointError(f"{ckpt}: not a federated run checkpoint")
    model = build_lm(saved["model_kind"], saved["model_config"], generator=torch.Generator())
    from federated.params import ParamLayout

    layout = ParamLayout.of(model)
    if tensors["params"].shape != (layout.numel,):
        raise CheckpointError(f"{ckpt}: weights do not match the model config")
    layout.load(model, tensors["params"])
    return model.eval()
