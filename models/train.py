"""Centralised next-word training: the pooled baseline the federated runs are compared with.

    config = NWPTrainConfig.load("configs/train_nwp.yaml")
    summary = train_nwp(config, "runs/nwp")       # run again on the same folder to resume

Every training user's early messages (a `kbsim data build` folder, `data.built.BuiltDataset`)
are pooled into one dataset and shuffled; the model trains on it with Adam or SGD, is evaluated
on the validation users every `eval_every` steps (`models.nwp.NWPMetrics`), and is
checkpointed every `checkpoint_every` steps. The run folder:

    config.json                   the config as run
    metrics.csv                   one row per evaluation: step, epoch, mean training loss since
                                  the previous row, and the validation metrics
    tb/                           the same rows as TensorBoard scalars
    checkpoints/step-NNNNNNNN/    the newest `keep_checkpoints` checkpoints (models.checkpoint)
    summary.json                  written when the run finishes

Resume is exact: a run stopped at any point (a crash, a kill, `max_steps`) and started again on
the same folder ends with the same weights, bit for bit, as a run that never stopped. It
continues from the newest checkpoint, whose state holds everything the rest of the run
depends on: weights, optimizer moments, torch's RNG (dropout), and the position in the data,
whose order is a pure function of (seed, epoch) (each epoch's shuffle comes from its own
generator seeded with `derive_seed(seed, "nwp", "order", epoch)`), so the rest of an epoch is
found by skipping the batches already consumed. Rows of metrics.csv and TensorBoard events
written after that checkpoint are dropped, so the logs also read as one run.

The learning rate is constant (no schedule), so a run may be extended by raising `steps` or
`epochs` and running again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.config import ConfigError, read_config_file
from data.record import derive_seed
from models.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    save_step_checkpoint,
)

OPTIMIZERS = ("adam", "sgd")
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
CONFIG_JSON = "config.json"
# Settings that may change between a run and its resumption: they set how long the run goes
# and what it writes down, never the weights at a given step.
RESUMABLE_CHANGES = ("steps", "epochs", "eval_every", "checkpoint_every", "keep_checkpoints",
                     "eval_batch_size")


class TrainError(ValueError):
    """A run that cannot start or go on: the message says why."""


@dataclass(frozen=True)
class NWPTrainConfig:
    """A centralised next-word training run.

    Attributes:
        data: A `kbsim data build` folder (a relative path is taken from the config file).
        model: Model kind, one of `models.lm.LM_KINDS` ("cifg", "transformer").
        model_config: The model's config fields (missing ones take its defaults). vocab_size
            is filled in from the dataset's vocabulary; given, it must equal it.
        batch_size: Examples per step (16, the Stack Overflow benchmark's client batch size,
            Reddi et al. 2021 appendix C).
        seq_len: Words per example (20, ditto; `data.torch_data.DEFAULT_SEQ_LEN`).
        optimizer: "adam" or "sgd".
        lr: Learning rate (constant). 1e-3 is Adam's default (Kingma & Ba 2015).
        momentum: SGD momentum (SGD only).
        weight_decay: L2 penalty, as torch's optimizers apply it.
        clip_grad_norm: Clip the gradient's global L2 norm to this (None: no clipping).
        steps: Optimizer steps in all; exclusive with `epochs`.
        epochs: Passes over the training data (a partial last batch counts as a step);
            when neither is given, 1.
        seed: Drives the initial weights, the data order and dropout.
        eval_every: Evaluate (and write a metrics row) every this many steps; 0: at the end
            only. The last step is always evaluated.
        checkpoint_every: Checkpoint every this many steps; the last step always is.
        keep_checkpoints: Keep this many newest checkpoints.
        eval_split: The user split evaluated on ("val"; all its messages, early and late).
        eval_batch_size: Batch size for evaluation (speed only).
        device: Torch device ("cpu", "cuda", "cuda:1").
    """

    data: str
    model: str = "cifg"
    model_config: dict = field(default_factory=dict)
    batch_size: int = 16
    seq_len: int = 20
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_grad_norm: float | None = None
    steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_split: str = "val"
    eval_batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        from models.lm import LM_KINDS

        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data):
            raise ConfigError(f"data must be a dataset folder path, got {self.data!r}")
        object.__setattr__(self, "data", str(self.data))
        if self.model not in LM_KINDS:
            raise ConfigError(f"model must be one of {LM_KINDS}, got {self.model!r}")
        if not isinstance(self.model_config, Mapping):
            raise ConfigError(f"model_config must be a mapping, got {self.model_config!r}")
        object.__setattr__(self, "model_config", dict(self.model_config))
        for name, low in (("batch_size", 1), ("seq_len", 1), ("seed", 0), ("eval_every", 0),
                          ("checkpoint_every", 1), ("keep_checkpoints", 1),
                          ("eval_batch_size", 1)):
            _check_int(name, getattr(self, name), low)
        for name in ("steps", "epochs"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(f"give steps or epochs, not both (steps={self.steps}, "
                              f"epochs={self.epochs})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check_float("lr", self.lr, positive=True)
        _check_float("momentum", self.momentum)
        _check_float("weight_decay", self.weight_decay)
        if self.clip_grad_norm is not None:
            _check_float("clip_grad_norm", self.clip_grad_norm, positive=True)
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"momentum is for sgd only (optimizer is {self.optimizer})")
        if self.eval_split not in ("train", "val", "test"):
            raise ConfigError(f"eval_split must be train, val or test, got {self.eval_split!r}")
        if not isinstance(self.device, str):
            raise ConfigError(f"device must be a string, got {self.device!r}")
        try:
            torch.device(self.device)
        except RuntimeError as e:
            raise ConfigError(f"device {self.device!r}: {e}") from None

    def to_dict(self) -> dict:
        """The config as plain JSON data (`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: Path | None = None) -> NWPTrainConfig:
        """A config from plain data; unknown keys are errors.

        Args:
            d: The fields; `data` is required.
            base_dir: A relative `data` path is taken from here (the config file's folder).
        """
        if not isinstance(d, Mapping):
            raise ConfigError("a training config must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown} "
                              f"(known: {', '.join(sorted(known))})")
        if "data" not in d:
            raise ConfigError("data (the `kbsim data build` folder) is required")
        kwargs = dict(d)
        for name in ("lr", "momentum", "weight_decay", "clip_grad_norm"):
            v = kwargs.get(name)
            if isinstance(v, int) and not isinstance(v, bool):
                kwargs[name] = float(v)  # YAML reads "1" as an int
        if base_dir is not None and isinstance(kwargs["data"], str) \
                and not Path(kwargs["data"]).is_absolute():
            kwargs["data"] = str((base_dir / kwargs["data"]).resolve())
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NWPTrainConfig:
        """Reads a YAML (.yaml/.yml) or JSON config; the fields may also sit under `train:`."""
        path = Path(path)
        d = read_config_file(path, "train")
        try:
            return cls.from_dict(d, base_dir=path.parent)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _check_int(name: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {v!r}")


def _check_float(name: str, v: object, positive: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < 0 or (positive and v == 0):
        raise ConfigError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                          f"got {v!r}")


# --------------------------------------------------------------------------- pieces


def make_optimizer(config: NWPTrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The run's optimizer over all of the model's parameters."""
    params = list(model.parameters())
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate_nwp(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 256,
                 device: str | torch.device = "cpu"):
    """`NWPMetrics` of `model` over every (x, y) example of `dataset`, in eval mode.

    The model's training mode is restored afterwards; no random number is drawn.
    """
    from models.nwp import NWPMetrics

    was_training = model.training
    model.eval()
    total = NWPMetrics()
    try:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for x, y in loader:
            total = total + NWPMetrics.of(model(x.to(device)), y.to(device))
    finally:
        model.train(was_training)
    return total


def epoch_loader(dataset: torch.utils.data.Dataset, batch_size: int, seed: int, epoch: int):
    """The batches of one epoch, in an order that is a function of (seed, epoch) alone."""
    from data.torch_data import make_loader

    return make_loader(dataset, batch_size, derive_seed(seed, "nwp", "order", epoch))


def metric_columns() -> list[str]:
    """The columns of metrics.csv."""
    from models.nwp import NWPMetrics

    return ["step", "epoch", "train_loss", "train_tokens",
            *(f"val_{k}" for k in NWPMetrics().to_dict())]


class MetricsLog:
    """metrics.csv: one row per evaluation, each appended and fsynced in one write.

    Args:
        path: The CSV file.
        keep_until: On opening, drop the rows after this step (those a stopped run wrote after
            its last checkpoint) and any torn last line; None drops all. The first column
            holds the step (or round).
        columns: The CSV's columns (default: `metric_columns()`, this module's).
    """

    def __init__(self, path: Path, keep_until: int | None,
                 columns: list[str] | None = None) -> None:
        from keyboard_sim.io import atomic_write_text

        self.path = path
        self.columns = list(columns) if columns is not None else metric_columns()
        header = ",".join(self.columns)
        kept = []
        if path.exists() and keep_until is not None:
            lines = path.read_text(encoding="utf-8").splitlines()
            if lines and lines[0] != header:
                raise TrainError(f"{path}: columns differ from this kbsim's ({header}); move "
                                 "the file away to resume")
            for line in lines[1:]:
                cells = line.split(",")
                if len(cells) != len(self.columns) or not cells[0].isdigit():
                    break  # a line torn by a crash: nothing after it was written whole
                if int(cells[0]) > keep_until:
                    break
                kept.append(line)
        atomic_write_text(path, "\n".join([header, *kept]) + "\n")

    def append(self, row: Mapping[str, float | int]) -> None:
        line = ",".join(_cell(row[c]) for c in self.columns) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def _cell(v: float | int) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))


def _dataset_fingerprint(root: Path) -> str:
    """sha256 of the build's manifest, which lists every shard's checksum and the config."""
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


def _model_config(config: NWPTrainConfig, vocab_size: int) -> dict:
    from models.lm import lm_config_from_dict

    mc = dict(config.model_config)
    given = mc.setdefault("vocab_size", vocab_size)
    if given != vocab_size:
        raise TrainError(f"model_config.vocab_size is {given}, the dataset's vocabulary has "
                         f"{vocab_size} ids (words + 4 specials): leave it out or make it match")
    try:
        full = lm_config_from_dict(config.model, mc)
    except ValueError as e:
        raise TrainError(f"model_config: {e}") from None
    max_len = getattr(full, "max_len", None)
    if max_len is not None and config.seq_len > max_len:
        raise TrainError(f"seq_len {config.seq_len} exceeds the model's max_len {max_len}")
    return full.to_dict()


def check_same_run(saved: Mapping, now: Mapping, where: Path,
                   resumable: Sequence[str] = RESUMABLE_CHANGES,
                   error: type[TrainError] = TrainError) -> None:
    """Raises `error` unless a checkpoint's saved config equals the config now (both as
    JSON data) in every setting but the `resumable` ones."""
    now = json.loads(json.dumps(now))  # tuples compare as the saved JSON lists
    differ = sorted(k for k in set(saved) | set(now)
                    if k not in resumable and saved.get(k) != now.get(k))
    if differ:
        raise error(f"{where}: the checkpoint is of a run with other settings "
                    f"({', '.join(differ)}); use a new --out folder or the same config")


def _rng_generators(device: torch.device) -> dict[str, torch.Generator]:
    gens = {"torch": torch.default_generator}
    if device.type == "cuda":
        gens["cuda"] = torch.cuda.default_generators[device.index or 0]
    return gens


# --------------------------------------------------------------------------- the run


def train_nwp(config: NWPTrainConfig, out_dir: str | os.PathLike, progress: bool = False,
              *, max_steps: int | None = None) -> dict:
    """Trains a next-word model on the pooled training users; resumes from `out_dir` if it
    holds a checkpoint of the same run. See the module docstring for what is written.

    Args:
        config: The run.
        out_dir: The run folder (created if missing).
        progress: Show a tqdm progress bar on stderr.
        max_steps: Stop once the run has made this many steps in all (checkpointing there),
            before its configured end; running again later goes on to the end.

    Returns:
        A summary: out_dir, step, total_steps, finished, epoch, resumed_from (the step resumed
        at, or None), parameters, train_examples, eval_examples, val (the last evaluation's
        `NWPMetrics.to_dict()`, or None), checkpoint (the newest one's folder), seconds.

    Raises:
        TrainError: Inconsistent settings, or `out_dir` holds another run's checkpoint.
        CheckpointError: The checkpoint to resume from is corrupt or does not match.
        data.store.StoreError: The dataset folder is missing, unfinished or altered.
    """
    from data.built import BuiltDataset
    from data.torch_data import pooled
    from models.lm import build_lm

    if max_steps is not None:
        _check_int("max_steps", max_steps, 1)
    started = time.perf_counter()
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    device = torch.device(config.device)

    ds = BuiltDataset(config.data)
    vocab_size = len(ds.vocab())
    model_config = _model_config(config, vocab_size)
    train_by_client = ds.next_word_datasets("train", "early", config.seq_len)
    eval_by_client = ds.next_word_datasets(config.eval_split, None, config.seq_len)
    if not train_by_client or not eval_by_client:
        which = "train (early)" if not train_by_client else config.eval_split
        raise TrainError(f"{config.data}: no {which} messages to train or evaluate on")
    train_set, eval_set = pooled(train_by_client), pooled(eval_by_client)
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = config.steps if config.steps is not None else (config.epochs or 1) * per_epoch
    stop = min(total, max_steps) if max_steps is not None else total
    fingerprint = _dataset_fingerprint(Path(config.data))

    # Everything random in the run (initial weights, dropout) comes from generators seeded
    # from the config; torch's global generator, which dropout reads, is forked so that the
    # caller's is left as it was.
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        generators = _rng_generators(device)
        for g in generators.values():  # torch.manual_seed would also reseed unforked GPUs
            g.manual_seed(derive_seed(config.seed, "nwp", "dropout"))
        init = torch.Generator().manual_seed(derive_seed(config.seed, "nwp", "init"))
        model = build_lm(config.model, model_config, generator=init).to(device)
        optimizer = make_optimizer(config, model)

        step, resumed_from = 0, None
        train_loss_sum, train_tokens, last_val = 0.0, 0, None
        latest = latest_checkpoint(ckpt_root)
        if latest is not None:
            saved = read_meta(latest)["state"]
            check_same_run(saved.get("config", {}), config.to_dict(), latest)
            if saved.get("dataset") != fingerprint:
                raise TrainError(f"{latest}: the checkpoint was trained on another build of "
                                 f"{config.data} (its manifest changed)")
            state = load_checkpoint(latest, model, optimizer, generators=generators)
            step = resumed_from = int(state["step"])
            train_loss_sum, train_tokens = state["train_loss_sum"], state["train_tokens"]
            last_val = state["val"]

        from keyboard_sim.io import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG_JSON,
                          json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n")
        log = MetricsLog(out / METRICS_CSV, keep_until=step)
        writer = summary_writer(out / "tb", purge_step=step + 1)
        bar = _bar(progress, total, step)
        checkpoint = latest
        try:
            while step < stop:
                epoch, position = divmod(step, per_epoch)
                batches = epoch_loader(train_set, config.batch_size, config.seed, epoch)
                for x, y in itertools.islice(batches, position, None):
                    x, y = x.to(device), y.to(device)
                    loss = _train_step(model, optimizer, x, y, config.clip_grad_norm)
                    tokens = int((y != model.config.pad_id).sum())
                    train_loss_sum += loss * tokens
                    train_tokens += tokens
                    step += 1
                    bar.update(1)
                    if step == total or (config.eval_every and step % config.eval_every == 0):
                        last_val = evaluate_nwp(model, eval_set, config.eval_batch_size,
                                                device).to_dict()
                        row = {"step": step, "epoch": step / per_epoch,
                               "train_loss": (train_loss_sum / train_tokens if train_tokens
                                              else math.nan),
                               "train_tokens": train_tokens,
                               **{f"val_{k}": v for k, v in last_val.items()}}
                        log.append(row)
                        for k, v in row.items():
                            if k not in ("step", "epoch"):
                                writer.add_scalar(k.replace("_", "/", 1), v, step)
                        writer.flush()
                        bar.set_postfix(train_loss=f"{row['train_loss']:.3f}",
                                        val_acc=f"{last_val['accuracy']:.3f}")
                        train_loss_sum, train_tokens = 0.0, 0
                    if step == stop or step % config.checkpoint_every == 0:
                        state = {"config": config.to_dict(), "dataset": fingerprint,
                                 "model_kind": config.model, "model_config": model_config,
                                 "step": step, "epoch": step // per_epoch,
                                 "position": step % per_epoch, "batches_per_epoch": per_epoch,
                                 "total_steps": total, "train_loss_sum": train_loss_sum,
                                 "train_tokens": train_tokens, "val": last_val}
                        checkpoint = save_step_checkpoint(
                            ckpt_root, step, model, optimizer, state, generators=generators,
                            keep=config.keep_checkpoints)
                    if step >= stop:
                        break
        finally:
            bar.close()
            writer.close()

    summary = {
        "out_dir": str(out), "step": step, "total_steps": total, "finished": step >= total,
        "epoch": step / per_epoch, "resumed_from": resumed_from,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(train_set), "eval_examples": len(eval_set), "val": last_val,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "seconds": time.perf_counter() - started,
    }
    if step >= total:
        atomic_write_text(out / SUMMARY_JSON, json.dumps(summary, indent=1) + "\n")
    return summary


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, clip: float | None) -> float:
    from models.nwp import nwp_loss

    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = nwp_loss(model(x), y, model.config.pad_id)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.detach())


def summary_writer(path: Path, purge_step: int):
    """A TensorBoard writer for a run folder that may be resumed: events of steps >=
    `purge_step` that a stopped run logged are hidden, and the new file sorts after the old."""
    from torch.utils.tensorboard import SummaryWriter

    # TensorBoard reads a folder's event files in name order, and a name starts with the second
    # the file was opened ("events.out.tfevents.<seconds>.<host>.<pid>..."): a run resumed in
    # the same second as the one it resumes could sort first. Wait for the next second then.
    newest = max((int(p.name.split(".")[3]) for p in path.glob("events.out.tfevents.*")
                  if p.name.split(".")[3:4] and p.name.split(".")[3].isdigit()), default=None)
    while newest is not None and int(time.time()) <= newest:
        time.sleep(0.05)
    # purge_step hides events a stopped run logged after the checkpoint it resumes from.
    return SummaryWriter(str(path), purge_step=purge_step)


def _bar(enabled: bool, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train nwp",
                unit="step", dynamic_ncols=True)


def load_trained_lm(path: str | os.PathLike) -> nn.Module:
    """The model of a training run folder (its newest checkpoint) or of one checkpoint folder,
    in eval mode on the CPU. Reads only safetensors and JSON.

    Raises:
        CheckpointError: No checkpoint there, or it is corrupt or does not match.
    """
    from models.lm import build_lm

    path = Path(path)
    ckpt = latest_checkpoint(path / "checkpoints") or path
    state = read_meta(ckpt)["state"]
    if "model_kind" not in state or "model_config" not in state:
        raise CheckpointError(f"{ckpt}: not a next-word training checkpoint (no model_kind)")
    try:
        # The initial weights are overwritten: a fresh generator keeps the global one untouched.
        model = build_lm(state["model_kind"], state["model_config"], generator=torch.Generator())
    except ValueError as e:
        raise CheckpointError(f"{ckpt / 'meta.json'}: bad model config ({e})") from None
    load_checkpoint(ckpt, model)
    return model.eval()
