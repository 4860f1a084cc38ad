"""Centralised training of the proofreader on a built dataset's (noisy, clean) pairs.

    config = ProofreaderTrainConfig.load("configs/proofreader.yaml")
    summary = train_proofreader(config, "runs/proofreader")
    corrector = load_corrector("runs/proofreader")   # ProofreaderCorrector, guard on

Training pools the training users' early pairs of a `kbsim data build` folder (clients in id
order), batches them with a seeded loader, and teaches the decoder with teacher forcing (cross
entropy over the clean side's pieces, optional label smoothing) under AdamW with a linear warmup
and a cosine decay. Every `eval_every` steps it measures the validation users' pairs: token loss
and accuracy over all of them, and, on an evenly spaced sample of `eval_messages`, greedy
decoding's exact-match rate and character error rate (CER) of the typed and of the decoded text
against the clean one. Each evaluation is a row of `metrics.csv`; checkpoints go to
`checkpoints/step-NNNNNNNN/` through `models.checkpoint` (safetensors and JSON, never pickle).

The output folder:

    config.json             the training config
    subword.model/.json     the tokenizer, copied from the data folder (a run is self-contained)
    metrics.csv             one row per evaluation
    tb/                     the same rows as TensorBoard scalars (train/loss, val/cer_after, ...)
    checkpoints/step-*/     model, optimizer and RNG state (models.checkpoint's layout)
    summary.json            what `train_proofreader` returns, written when the run finishes

Resume is exact, as in `models.train`: a run stopped at any step (`max_steps`, a crash, a kill)
and started again on the same folder ends with the same weights, bit for bit, as one that never
stopped. The newest checkpoint holds everything the rest of the run depends on: weights,
AdamW's moments, torch's RNG (dropout), the training loss summed since the last evaluation,
and the step, from which the learning rate (a function of the step) and the position in the data
follow: epoch e's batch order is a pure function of (seed, e) (its own loader seeded with
`derive_seed(seed, "proofreader", "order", e)`), so the rest of an epoch is found by skipping
the batches already consumed. metrics.csv rows and TensorBoard events written after that
checkpoint are dropped, so the logs read as one run (the `seconds` column goes on from the
checkpoint's clock).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from data.record import derive_seed
from models.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    save_step_checkpoint,
)
from models.proofreader import Proofreader, ProofreaderConfig, ProofreaderCorrector, strip_ids
from models.train import summary_writer


@dataclass(frozen=True)
class ProofreaderTrainConfig:
    """How the proofreader is trained.

    The defaults fit a CPU: on the 30,000-message build (14.6k training pairs) 4,000 steps of
    32 messages are about nine epochs.

    Attributes:
        data_dir: A finished `kbsim data build` folder (with pairs and a subword model).
        model: `ProofreaderConfig` fields to override; vocab_size defaults to the tokenizer's
            and must equal it.
        steps: Optimizer steps.
        batch_size: Messages per step.
        lr: Peak learning rate, reached after `warmup_steps`.
        min_lr_ratio: The cosine decay ends at lr * min_lr_ratio.
        warmup_steps: Linear warmup from 0 (Vaswani et al. 2017 warm a Transformer up).
        weight_decay: AdamW's decoupled weight decay (on matrices only, not on biases, norms
            or positions).
        betas: AdamW's (beta1, beta2); 0.98 as in Vaswani et al. 2017.
        label_smoothing: Target smoothing of the cross entropy (0.1 in Vaswani et al. 2017).
        grad_clip: Clip the gradient's global norm to this (0 turns clipping off).
        seed: Run seed: initial weights, batch order and dropout derive from it.
        eval_every: Steps between evaluations (the last step is always evaluated).
        eval_messages: Validation messages decoded per evaluation (0: none).
        eval_batch_size: Messages per evaluation batch.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        keep_checkpoints: Newest checkpoints kept.
        max_len: Longest source and target in pieces (cut beyond).
        train_split / train_period / val_split / val_period: Which users and messages.
        device: "cpu" or a torch device string such as "cuda".
    """

    data_dir: str
    model: Mapping = field(default_factory=dict)
    steps: int = 4000
    batch_size: int = 32
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    eval_messages: int = 300
    eval_batch_size: int = 64
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    max_len: int = 128
    train_split: str = "train"
    train_period: str = "early"
    val_split: str = "val"
    val_period: str = "early"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ValueError(f"data_dir must be a non-empty path string, got {self.data_dir!r}")
        if not isinstance(self.model, Mapping):
            raise ValueError(f"model must be a mapping of ProofreaderConfig fields, got "
                             f"{type(self.model).__name__}")
        object.__setattr__(self, "model", dict(self.model))
        ProofreaderConfig.from_dict({"vocab_size": 2000, **self.model})  # checks the fields
        for name, lo in (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("seed", 0),
                         ("eval_every", 1), ("eval_messages", 0), ("eval_batch_size", 1),
                         ("checkpoint_every", 0), ("keep_checkpoints", 1), ("max_len", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        for name, lo, hi in (("lr", 0.0, 1.0), ("min_lr_ratio", 0.0, 1.0),
                             ("weight_decay", 0.0, 1.0), ("label_smoothing", 0.0, 0.999),
                             ("grad_clip", 0.0, math.inf)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        for name in ("train_split", "val_split"):
            if getattr(self, name) not in ("train", "val", "test"):
                raise ValueError(f"{name} must be train, val or test, got {getattr(self, name)!r}")
        for name in ("train_period", "val_period"):
            if getattr(self, name) not in ("early", "late"):
                raise ValueError(f"{name} must be early or late, got {getattr(self, name)!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string, got {self.device!r}")

    def to_dict(self) -> dict:
        """The config as JSON-able values."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ProofreaderTrainConfig:
        """From a mapping (e.g. parsed YAML); it may sit under a `proofreader:` key. Unknown keys
        are an error."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a proofreader training config must be a mapping, got "
                             f"{type(d).__name__}")
        if set(d) == {"proofreader"}:
            d = d["proofreader"]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown proofreader training keys {unknown}; known: "
                             f"{sorted(known)}")
        if "data_dir" not in d:
            raise ValueError("data_dir is required (a kbsim data build folder)")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> ProofreaderTrainConfig:
        """Reads a YAML (.yaml/.yml) or JSON file.

        Raises:
            ValueError: The file is unreadable, not YAML/JSON, or not a valid config (the
                message names the file).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix in (".yaml", ".yml"):
                import yaml

                d = yaml.safe_load(text) or {}
            else:
                d = json.loads(text)
        except Exception as e:  # OSError, yaml.YAMLError, json.JSONDecodeError
            raise ValueError(f"{path}: cannot read the config ({e})") from e
        try:
            config = cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e
        # A relative data folder is taken from the config file's folder.
        data_dir = Path(config.data_dir)
        if not data_dir.is_absolute():
            config = replace(config, data_dir=str((path.parent / data_dir).resolve()))
        return config


# --------------------------------------------------------------------------- metrics


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions each cost 1).

    A shared prefix and suffix are trimmed first: a corrected message mostly equals its
    reference, so the quadratic part runs over the differing middle only.
    """
    if a == b:
        return 0
    lo = 0
    while lo < len(a) and lo < len(b) and a[lo] == b[lo]:
        lo += 1
    hi_a, hi_b = len(a), len(b)
    while hi_a > lo and hi_b > lo and a[hi_a - 1] == b[hi_b - 1]:
        hi_a -= 1
        hi_b -= 1
    a, b = a[lo:hi_a], b[lo:hi_b]
    if not a or not b:
        return len(a) + len(b)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def correction_metrics(noisy: Sequence[str], corrected: Sequence[str],
                       clean: Sequence[str]) -> dict:
    """Exact match, CER before and after (edit distance summed over messages / clean characters
    summed), and the share of messages the corrector changed."""
    if not len(noisy) == len(corrected) == len(clean):
        raise ValueError(f"{len(noisy)} noisy, {len(corrected)} corrected, {len(clean)} clean")
    chars = sum(len(c) for c in clean)
    before = sum(levenshtein(n, c) for n, c in zip(noisy, clean, strict=True))
    after = sum(levenshtein(h, c) for h, c in zip(corrected, clean, strict=True))
    n = max(len(clean), 1)
    return {
        "messages": len(clean),
        "exact_match": sum(h == c for h, c in zip(corrected, clean, strict=True)) / n,
        "exact_match_before": sum(x == c for x, c in zip(noisy, clean, strict=True)) / n,
        "cer_before": before / chars if chars else 0.0,
        "cer_after": after / chars if chars else 0.0,
        "changed": sum(h != x for h, x in zip(corrected, noisy, strict=True)) / n,
    }


def sequence_loss(
    model: Proofreader, src: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, int, int]:
    """Teacher-forced mean cross entropy over a batch's non-PAD targets.

    Args:
        tgt: [B, T] BOS + clean ids + EOS, padded (data.torch_data.PairBatch.tgt).

    Returns:
        (mean loss, target tokens, correctly predicted target tokens).
    """
    pad = model.config.pad_id
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    logits = model(src, tgt_in, src_mask)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt_out.reshape(-1),
                           ignore_index=pad, label_smoothing=label_smoothing)
    real = tgt_out != pad
    hits = int(((logits.argmax(-1) == tgt_out) & real).sum())
    return loss, int(real.sum()), hits


def lr_at(step: int, config: ProofreaderTrainConfig) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warmup, then cosine decay."""
    if step <= config.warmup_steps:
        return config.lr * step / max(config.warmup_steps, 1)
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    low = config.lr * config.min_lr_ratio
    return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- training


def _flat_pairs(by_client: Mapping[str, Sequence]) -> list[tuple[str, str]]:
    return [(p.noisy, p.clean) for c in sorted(by_client) for p in by_client[c]]


def decay_groups(model: Proofreader, weight_decay: float) -> list[dict]:
    # Decay matrices only (as nanoGPT): not biases, norms or position tables.
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() == 2 and "pos" not in name else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: Proofreader, tokenizer, pairs: Sequence[tuple[str, str]],
             decode: Sequence[int], batch_size: int = 64, max_len: int = 128) -> dict:
    """Validation metrics: token loss and accuracy over `pairs`, greedy decoding on `decode`.

    Args:
        pairs: (noisy, clean) texts.
        decode: Indices into `pairs` to decode greedily.
    """
    from data.torch_data import PairDataset, collate_pairs

    model.eval()
    dev = model.embed.weight.device
    ds = PairDataset([n for n, _ in pairs], [c for _, c in pairs], tokenizer, max_len)
    loss_sum, tokens, hits = 0.0, 0, 0
    for start in range(0, len(ds), batch_size):
        b = collate_pairs([ds[i] for i in range(start, min(start + batch_size, len(ds)))],
                          model.config.pad_id)
        loss, n, h = sequence_loss(model, b.src.to(dev), b.src_mask.to(dev), b.tgt.to(dev))
        loss_sum += float(loss) * n
        tokens += n
        hits += h
    out = {"val_loss": loss_sum / max(tokens, 1), "val_token_acc": hits / max(tokens, 1),
           "val_tokens": tokens}
    noisy, clean, hyps = [], [], []
    for start in range(0, len(decode), batch_size):
        idx = decode[start:start + batch_size]
        b = collate_pairs([ds[i] for i in idx], model.config.pad_id)
        res = model.greedy(b.src.to(dev), max_len=max_len, src_mask=b.src_mask.to(dev))
        for row, i in enumerate(idx):
            noisy.append(pairs[i][0])
            clean.append(pairs[i][1])
            hyps.append(tokenizer.decode(strip_ids(res.sequences[row], model.config.eos_id,
                                                   model.config.pad_id)))
    if decode:
        out.update(correction_metrics(noisy, hyps, clean))
    return out


def _spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [(i * n) // k for i in range(k)]


METRIC_COLUMNS = ("step", "epoch", "lr", "train_loss", "seconds", "val_loss", "val_token_acc",
                  "val_tokens", "messages", "exact_match", "exact_match_before", "cer_before",
                  "cer_after", "changed")
# metrics.csv columns written to TensorBoard, with their tags (counts and clock time are not).
TB_TAGS = {"lr": "train/lr", "train_loss": "train/loss", "val_loss": "val/loss",
           "val_token_acc": "val/token_acc", "exact_match": "val/exact_match",
           "exact_match_before": "val/exact_match_before", "cer_before": "val/cer_before",
           "cer_after": "val/cer_after", "changed": "val/changed"}
# Settings that may differ between a run and its resumption: they change what is measured and
# kept, never the weights at a given step. (`steps` sets the cosine schedule, so it may not.)
RESUMABLE_CHANGES = ("eval_every", "eval_messages", "eval_batch_size", "checkpoint_every",
                     "keep_checkpoints")


class ProofreaderTrainError(ValueError):
    """A run that cannot start or go on (e.g. its folder holds another run): says why."""


def epoch_loader(dataset, batch_size: int, seed: int, epoch: int):
    """The batches of epoch `epoch` (0-based), in an order that is a function of (seed, epoch).

    A resumed run rebuilds the epoch it stopped in and skips the batches already consumed.
    """
    from data.torch_data import collate_pairs, make_loader

    return make_loader(dataset, batch_size, derive_seed(seed, "proofreader", "order", epoch),
                       collate_fn=collate_pairs)


def _dataset_fingerprint(data_dir: Path) -> str:
    """sha256 of the build's manifest (it lists every shard's checksum and the data config)."""
    return hashlib.sha256((data_dir / "manifest.json").read_bytes()).hexdigest()


def _check_same_run(saved: Mapping, config: ProofreaderTrainConfig, fingerprint: str,
                    where: Path) -> None:
    now = config.to_dict()
    theirs = saved.get("config", {})
    differ = sorted(k for k in set(theirs) | set(now)
                    if k not in RESUMABLE_CHANGES and theirs.get(k) != now.get(k))
    if differ:
        raise ProofreaderTrainError(
            f"{where}: the checkpoint is of a run with other settings ({', '.join(differ)}); "
            "use a new output folder or the same config")
    if saved.get("dataset") != fingerprint:
        raise ProofreaderTrainError(f"{where}: the checkpoint was trained on another build of "
                                    f"{config.data_dir} (its manifest changed)")


def _rng_generators(device: torch.device) -> dict[str, torch.Generator]:
    # Dropout draws from torch's default generator (and CUDA's on a GPU): saved and restored.
    gens = {"torch": torch.default_generator}
    if device.type == "cuda":
        gens["cuda"] = torch.cuda.default_generators[device.index or 0]
    return gens


class _MetricsCsv:
    """metrics.csv, one row per evaluation, each row flushed and fsynced when written.

    Opening it for a resumed run keeps the rows up to `keep_until` (the checkpoint's step) and
    drops the later ones, which the stopped run wrote after its last checkpoint and the resumed
    run writes again; a fresh run (keep_until None) starts the file anew.
    """

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        kept: list[dict] = []
        if keep_until is not None and path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is not None and tuple(reader.fieldnames) != METRIC_COLUMNS:
                    raise ProofreaderTrainError(
                        f"{path}: columns {reader.fieldnames} differ from this kbsim's "
                        f"{list(METRIC_COLUMNS)}; move the file away to resume")
                for row in reader:
                    step = row.get("step") or ""
                    if (None in row or None in row.values() or not step.isdigit()
                            or int(step) > keep_until):
                        break  # a torn last line, or rows after the checkpoint
                    kept.append(row)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def append(self, row: Mapping) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=METRIC_COLUMNS).writerow(
                {k: row.get(k, "") for k in METRIC_COLUMNS})
            f.flush()
            os.fsync(f.fileno())


def train_proofreader(config: ProofreaderTrainConfig, out_dir: str | Path,
                      progress: bool = False, *, max_steps: int | None = None) -> dict:
    """Trains a proofreader (see the module docstring); returns the run's summary.

    The run is a function of the config: initial weights from a generator seeded with
    derive_seed(seed, "init"), the batch order of epoch e (0-based) from
    derive_seed(seed, "proofreader", "order", e), and dropout from torch's default generator
    seeded with derive_seed(seed, "dropout") inside `torch.random.fork_rng`, so the caller's
    global RNG state is left as it was.

    If `out_dir` holds a checkpoint of the same run (same config up to `RESUMABLE_CHANGES`,
    same data build), training resumes from the newest one and ends with the same weights, bit
    for bit, as a run that never stopped.

    Args:
        config: The training config.
        out_dir: The run's folder (created if missing).
        progress: Write a line per evaluation to stderr.
        max_steps: Stop (with a checkpoint) once the run has made this many steps in all,
            before config.steps; running again goes on from there.

    Returns:
        A JSON-able dict: parameters, steps (made so far), total_steps, finished, resumed_from
        (the step resumed at, or None), epochs, train and validation pair counts, seconds, the
        last evaluation's metrics ("final"), the model config and the paths written.

    Raises:
        ProofreaderTrainError: `out_dir` holds another run's checkpoint, or a metrics.csv of
            other columns.
        CheckpointError: The checkpoint to resume from is corrupt or does not fit.
    """
    from data.built import BuiltDataset
    from data.torch_data import pooled

    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = BuiltDataset(config.data_dir)
    tokenizer = data.subword()
    model_cfg = ProofreaderConfig.from_dict({"vocab_size": tokenizer.vocab_size, **config.model})
    if model_cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size {model_cfg.vocab_size} differs from the data's "
                         f"subword model ({tokenizer.vocab_size} pieces)")
    if config.max_len > model_cfg.max_len:
        raise ValueError(f"max_len {config.max_len} exceeds the model's max_len "
                         f"{model_cfg.max_len}")
    train_ds = pooled(data.pair_datasets(config.train_split, config.train_period,
                                         config.max_len))
    if len(train_ds) == 0:
        raise ProofreaderTrainError(f"{config.data_dir}: no {config.train_split} "
                                    f"({config.train_period}) pairs to train on")
    val_pairs = _flat_pairs(data.client_pairs(config.val_split, config.val_period))
    decode_idx = _spaced(len(val_pairs), config.eval_messages)
    fingerprint = _dataset_fingerprint(Path(config.data_dir))
    per_epoch = math.ceil(len(train_ds) / config.batch_size)
    stop = config.steps if max_steps is None else min(config.steps, max_steps)

    for name in ("subword.model", "subword.json"):
        shutil.copyfile(Path(config.data_dir) / name, out / name)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")

    dev = torch.device(config.device)
    ckpt_root = out / "checkpoints"
    state = {"config": config.to_dict(), "model_config": model_cfg.to_dict(),
             "dataset": fingerprint, "batches_per_epoch": per_epoch}
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        generators = _rng_generators(dev)
        for g in generators.values():  # torch.manual_seed would also reseed unforked GPUs
            g.manual_seed(derive_seed(config.seed, "dropout"))
        model = Proofreader(model_cfg)
        model.reset_parameters(torch.Generator().manual_seed(derive_seed(config.seed, "init")))
        model.to(dev)
        optimizer = torch.optim.AdamW(decay_groups(model, config.weight_decay), lr=config.lr,
                                      betas=config.betas)
        step, resumed_from, elapsed = 0, None, 0.0
        window_loss, window_n = 0.0, 0
        last: dict = {}
        checkpoint = latest_checkpoint(ckpt_root)
        if checkpoint is not None:
            _check_same_run(read_meta(checkpoint)["state"], config, fingerprint, checkpoint)
            saved = load_checkpoint(checkpoint, model, optimizer, generators=generators)
            step = resumed_from = int(saved["step"])
            window_loss, window_n = float(saved["window_loss"]), int(saved["window_n"])
            last, elapsed = dict(saved["metrics"]), float(saved["seconds"])
        started = time.perf_counter() - elapsed
        log = _MetricsCsv(out / "metrics.csv", keep_until=step if checkpoint else None)
        tb = summary_writer(out / "tb", purge_step=step + 1)
        try:
            while step < stop:
                epoch, position = divmod(step, per_epoch)
                batches = epoch_loader(train_ds, config.batch_size, config.seed, epoch)
                for batch in itertools.islice(batches, position, None):
                    step += 1
                    lr = lr_at(step, config)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    model.train()
                    loss, _, _ = sequence_loss(model, batch.src.to(dev),
                                               batch.src_mask.to(dev), batch.tgt.to(dev),
                                               config.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    window_loss += float(loss.detach())
                    window_n += 1
                    if step % config.eval_every == 0 or step == config.steps:
                        row = {"step": step, "epoch": epoch + 1, "lr": lr,
                               "train_loss": window_loss / window_n,
                               "seconds": round(time.perf_counter() - started, 3)}
                        row.update(evaluate(model, tokenizer, val_pairs, decode_idx,
                                            config.eval_batch_size, config.max_len))
                        log.append(row)
                        for key, tag in TB_TAGS.items():
                            if key in row:
                                tb.add_scalar(tag, row[key], step)
                        tb.flush()
                        last = row
                        window_loss, window_n = 0.0, 0
                        if progress:
                            print(_progress_line(row), file=sys.stderr, flush=True)
                    if (config.checkpoint_every and step % config.checkpoint_every == 0) \
                            or step == stop:
                        checkpoint = save_step_checkpoint(
                            ckpt_root, step, model, optimizer,
                            {**state, "step": step, "epoch": step // per_epoch,
                             "position": step % per_epoch, "window_loss": window_loss,
                             "window_n": window_n, "metrics": last,
                             "seconds": time.perf_counter() - started},
                            generators=generators, keep=config.keep_checkpoints)
                    if step >= stop:
                        break
        finally:
            tb.close()
    finished = step >= config.steps
    summary = {
        "parameters": model.num_parameters(),
        "steps": step,
        "total_steps": config.steps,
        "finished": finished,
        "resumed_from": resumed_from,
        "epochs": math.ceil(step / per_epoch),
        "train_pairs": len(train_ds),
        "val_pairs": len(val_pairs),
        "seconds": round(time.perf_counter() - started, 3),
        "final": last,
        "model_config": model_cfg.to_dict(),
        "checkpoint": str(checkpoint),
        "metrics_csv": str(out / "metrics.csv"),
        "tensorboard": str(out / "tb"),
    }
    if finished:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _progress_line(row: Mapping) -> str:
    parts = [f"step {row['step']}", f"train {row['train_loss']:.3f}",
             f"val {row['val_loss']:.3f}", f"acc {row['val_token_acc']:.3f}"]
    if "cer_after" in row:
        parts += [f"exact {row['exact_match']:.3f}",
                  f"CER {row['cer_before']:.4f} -> {row['cer_after']:.4f}"]
    return "proofreader: " + ", ".join(parts) + f" ({row['seconds']:.0f} s)"


# --------------------------------------------------------------------------- loading


def load_proofreader(checkpoint_dir: str | Path, device: str = "cpu") -> Proofreader:
    """A trained proofreader from a checkpoint folder (`checkpoints/step-*`), or the newest
    checkpoint of a run folder. Only safetensors and JSON are read (no pickle).

    Raises:
        CheckpointError: (a ValueError) no checkpoint there, or its files are missing, corrupt
            or do not fit the config they carry (the message names the file).
    """
    path = Path(checkpoint_dir)
    if not (path / "meta.json").exists():
        found = latest_checkpoint(path / "checkpoints")
        if found is None:
            raise CheckpointError(f"{path}: no proofreader checkpoint (meta.json or "
                                  "checkpoints/step-*)")
        path = found
    meta = read_meta(path)
    try:
        cfg = ProofreaderConfig.from_dict(meta["state"]["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / 'meta.json'}: no valid proofreader config ({e})") from e
    model = Proofreader(cfg)
    load_checkpoint(path, model)
    return model.to(device).eval()


def load_corrector(run_dir: str | Path, device: str = "cpu", **kwargs) -> ProofreaderCorrector:
    """The guarded corrector of a training run folder: its newest checkpoint and the tokenizer
    copied beside it. `kwargs` go to `ProofreaderCorrector` (beam, min_gain, ...)."""
    from data.subword import SubwordTokenizer

    run = Path(run_dir)
    model = load_proofreader(run, device)
    tokenizer = SubwordTokenizer.load(run / "subword")
    return ProofreaderCorrector(model, tokenizer, **kwargs)
