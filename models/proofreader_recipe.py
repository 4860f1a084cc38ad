"""A CPU training recipe for the proofreader: fresh noise every epoch, copy pairs, length batches.

`models.train_proofreader` trains on one fixed noise draw (the build's round-0 pairs). On a CPU
budget that teaches a small model to memorise that draw rather than to correct: a 1.7M-parameter
model after 2,000 steps of 32 pairs made the validation users' text worse (greedy CER 0.064 ->
0.399). This recipe changes what the model sees, not the model:

* fresh noise each epoch: every training user types its own messages again with its own typist
  (`data.clients.ClientData.pairs(seed, round=epoch)`), so each epoch is a new noise draw of the
  same texts, as a keyboard would see them typed again. Round 0 is the build's materialised
  draw; training uses rounds 1, 2, ... and never the validation or test users;
* copy pairs: a fixed share of each epoch's pairs is (clean, clean), so leaving a correct message
  alone is learnt directly, which is what the over-correction guard relies on;
* length batches: pairs sorted by length (random order among equal lengths) and cut into
  batches of at most `batch_tokens` padded positions, the batches then shuffled, so a batch of
  short chat messages does not pay for one long message's padding.

The model is the ordinary `models.proofreader.Proofreader` and the checkpoints are
`models.train_proofreader`'s layout, so `models.train_proofreader.load_corrector(out_dir)` reads
the result. `tune_guard` picks the corrector's (min_confidence, min_gain) on validation users by
replaying the guard over one decoding pass.

Every random choice derives from (config seed, stable names) through `data.record.derive_seed`:
the noise of epoch e from the build's seed and round e, the copy pairs from (seed, "identity",
e), the batches from (seed, "batches", e), the initial weights from (seed, "init"), dropout from
(seed, "dropout"). A run with a fixed `steps` is a function of its config and data.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.record import derive_seed
from models.proofreader import Proofreader, ProofreaderConfig, ProofreaderCorrector

# The schedule and the weight-decay groups are train_proofreader's (same config fields).
from models.train_proofreader import decay_groups, lr_at

# A copy-friendly small model: 2 + 2 layers at width 160 (1,795,200 parameters with the
# 2,000-piece table), no dropout: every epoch is a new noise draw and a CPU run sees fewer than
# five, so there is little to overfit and dropout only slows learning. Longest pair: 96 pieces
# leaves out 91 of the 80,230 training pairs of the full chit-chat build (typists "raw": noisy
# side median 14 pieces, 99th percentile 75); the corrector leaves a longer message as typed.
DEFAULT_MODEL = {"d_model": 160, "n_heads": 4, "n_encoder_layers": 2, "n_decoder_layers": 2,
                 "d_ff": 640, "max_len": 96, "dropout": 0.0}


class RecipeError(ValueError):
    """A recipe config or input that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class RecipeConfig:
    """How the proofreader is trained by `train_recipe`.

    Attributes:
        model: `ProofreaderConfig` fields (vocab_size comes from the data's tokenizer).
        steps: Optimizer steps; the learning-rate schedule spans them.
        batch_tokens: Padded positions per batch (batch size x longest side in pieces).
        lr: Peak AdamW learning rate, reached after `warmup_steps`. Higher than Vaswani et al.'s
            for a model this small and a run this short.
        warmup_steps: Linear warmup from 0.
        min_lr_ratio: The cosine decay ends at lr * min_lr_ratio.
        weight_decay: AdamW's decoupled decay on matrices (not biases, norms, positions).
        betas: AdamW's (beta1, beta2); 0.98 as in Vaswani et al. 2017.
        label_smoothing: Cross-entropy smoothing (0.1 in Vaswani et al. 2017).
        grad_clip: Global gradient-norm clip (0: off).
        identity_share: Share of each epoch's pairs replaced by (clean, clean) copies.
        seed: Run seed (weights, copy pairs, batches, dropout).
        first_round: Noise round of the first epoch; epoch e uses round first_round + e. Round 0
            is the build's materialised draw (the one validation is measured on, for the
            validation users).
        eval_every: Steps between validation loss measurements (0: none).
        eval_pairs: Validation pairs (evenly spaced) in each loss measurement.
    """

    model: Mapping = field(default_factory=lambda: dict(DEFAULT_MODEL))
    steps: int = 3000
    batch_tokens: int = 2048
    lr: float = 2e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    identity_share: float = 0.1
    seed: int = 0
    first_round: int = 1
    eval_every: int = 500
    eval_pairs: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.model, Mapping):
            raise RecipeError(f"model must be a mapping of ProofreaderConfig fields, got "
                              f"{type(self.model).__name__}")
        object.__setattr__(self, "model", dict(self.model))
        try:
            ProofreaderConfig.from_dict({"vocab_size": 2000, **self.model})
        except ValueError as e:
            raise RecipeError(f"model: {e}") from e
        for name, lo in (("steps", 1), ("batch_tokens", 2), ("warmup_steps", 0), ("seed", 0),
                         ("first_round", 0), ("eval_every", 0), ("eval_pairs", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise RecipeError(f"{name} must be an int >= {lo}, got {v!r}")
        for name, lo, hi in (("lr", 0.0, 1.0), ("min_lr_ratio", 0.0, 1.0),
                             ("weight_decay", 0.0, 1.0), ("label_smoothing", 0.0, 0.999),
                             ("grad_clip", 0.0, math.inf), ("identity_share", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise RecipeError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
        if self.lr == 0:
            raise RecipeError("lr must be > 0")
        b = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(b) != 2 or not all(isinstance(x, (int, float)) and 0 <= x < 1 for x in b):
            raise RecipeError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(b[0]), float(b[1])))

    def to_dict(self) -> dict:
        """The config as JSON-able values."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> RecipeConfig:
        """From `to_dict`'s output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"unknown recipe keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @property
    def max_len(self) -> int:
        """Longest source and longest target (BOS and EOS counted) in pieces."""
        return int(self.model.get("max_len", ProofreaderConfig.max_len))


# --------------------------------------------------------------------------- data pipeline


def epoch_pairs(pool: Mapping, seed: int, round: int) -> list[tuple[str, str]]:
    """Every client's (noisy, clean) pairs typed afresh in noise round `round`.

    Args:
        pool: Client id -> `data.clients.ClientData` (e.g. `BuiltDataset.client_pool(...)`).
        seed: The build's seed (`BuiltDataset.config.seed`): with it, round 0 equals the
            build's materialised pairs.
        round: The noise round; another round is another draw of the same texts.

    Returns:
        (noisy, clean) texts, clients in id order, each client's messages in time order.
    """
    out: list[tuple[str, str]] = []
    for client in sorted(pool):
        out.extend((p.noisy, p.clean) for p in pool[client].pairs(seed, round=round))
    return out


def with_identity(pairs: Sequence[tuple[str, str]], share: float,
                  rng: np.random.Generator) -> list[tuple[str, str]]:
    """The pairs with round(share * len) of them, chosen at random, replaced by (clean, clean).

    Replacing rather than adding keeps an epoch's size and its texts the same; a message is
    either typed with noise or shown already correct, never both in one epoch.
    """
    if not 0.0 <= share <= 1.0:
        raise RecipeError(f"identity share must be in [0, 1], got {share!r}")
    out = list(pairs)
    k = int(round(share * len(out)))
    for i in rng.choice(len(out), size=k, replace=False) if k else ():
        out[int(i)] = (out[int(i)][1], out[int(i)][1])
    return out


def encode_pairs(pairs: Sequence[tuple[str, str]], tokenizer, max_len: int):
    """Subword ids of each pair: (src ids, BOS + clean ids + EOS); pairs that do not fit
    `max_len` on either side are left out (they are counted, not cut: a cut target would teach
    the model to stop mid-message).

    Returns:
        (encoded pairs, indices of the pairs kept, number left out).
    """
    encoded, kept = [], []
    for i, (noisy, clean) in enumerate(pairs):
        src = tokenizer.encode(noisy)
        tgt = [tokenizer.bos_id, *tokenizer.encode(clean), tokenizer.eos_id]
        if 0 < len(src) <= max_len and len(tgt) <= max_len:
            encoded.append((src, tgt))
            kept.append(i)
    return encoded, kept, len(pairs) - len(kept)


def length_batches(lengths: Sequence[int], batch_tokens: int,
                   rng: np.random.Generator) -> list[list[int]]:
    """Indices grouped into batches of similar length, in random batch order.

    Items are sorted by length (ties in random order), then cut greedily into batches whose
    padded size, batch size x longest item, is at most `batch_tokens` (an item longer than
    that is a batch of its own); the batches are then shuffled. Every index appears once.

    Args:
        lengths: Each item's length (e.g. the longer of its source and target, in pieces).
        batch_tokens: Most padded positions per batch.
        rng: Draws the tie order and the batch order.
    """
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise RecipeError(f"batch_tokens must be an int >= 1, got {batch_tokens!r}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and lengths.min() < 1:
        raise RecipeError(f"item {int(lengths.argmin())} has length {int(lengths.min())} < 1")
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        # Sorted ascending, so item i is the longest of the batch it joins.
        if current and (len(current) + 1) * int(lengths[i]) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return [batches[j] for j in rng.permutation(len(batches)).tolist()]


def collate(encoded: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int):
    """(src [B, S], src_mask [B, S], tgt [B, T]) int64/bool tensors, padded with pad_id."""
    b = len(encoded)
    s = max(len(x) for x, _ in encoded)
    t = max(len(y) for _, y in encoded)
    src = torch.full((b, s), pad_id, dtype=torch.int64)
    tgt = torch.full((b, t), pad_id, dtype=torch.int64)
    for row, (x, y) in enumerate(encoded):
        src[row, : len(x)] = torch.tensor(x, dtype=torch.int64)
        tgt[row, : len(y)] = torch.tensor(y, dtype=torch.int64)
    mask = torch.arange(s)[None, :] < torch.tensor([len(x) for x, _ in encoded])[:, None]
    return src, mask, tgt


def epoch_batches(pool: Mapping, data_seed: int, tokenizer, config: RecipeConfig,
                  epoch: int) -> tuple[list, list[list[int]], dict]:
    """One epoch's training data: fresh noise, copy pairs, encoded, in length batches.

    Returns:
        (encoded pairs, batches of indices into them, counts: pairs, identity, dropped).
    """
    pairs = epoch_pairs(pool, data_seed, config.first_round + epoch)
    rng = np.random.default_rng(derive_seed(config.seed, "identity", epoch))
    pairs = with_identity(pairs, config.identity_share, rng)
    encoded, _, dropped = encode_pairs(pairs, tokenizer, config.max_len)
    lengths = [max(len(x), len(y)) for x, y in encoded]
    batches = length_batches(lengths, config.batch_tokens,
                             np.random.default_rng(derive_seed(config.seed, "batches", epoch)))
    counts = {"pairs": len(pairs), "kept": len(encoded), "dropped": dropped,
              "identity": int(round(config.identity_share * len(pairs))),
              "batches": len(batches)}
    return encoded, batches, counts


# --------------------------------------------------------------------------- training


def _loss(model: Proofreader, src, mask, tgt, smoothing: float):
    logits = model(src, tgt[:, :-1], mask)
    out = tgt[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), out.reshape(-1),
                           ignore_index=model.config.pad_id, label_smoothing=smoothing)
    real = out != model.config.pad_id
    hits = int(((logits.argmax(-1) == out) & real).sum())
    return loss, int(real.sum()), hits


@torch.no_grad()
def pair_loss(model: Proofreader, encoded: Sequence, batch_tokens: int = 4096) -> dict:
    """Teacher-forced loss (no smoothing) and token accuracy over encoded pairs."""
    model.eval()
    lengths = [max(len(x), len(y)) for x, y in encoded]
    loss_sum, tokens, hits = 0.0, 0, 0
    for batch in length_batches(lengths, batch_tokens, np.random.default_rng(0)):
        src, mask, tgt = collate([encoded[i] for i in batch], model.config.pad_id)
        loss, n, h = _loss(model, src, mask, tgt, 0.0)
        loss_sum += float(loss) * n
        tokens += n
        hits += h
    return {"val_loss": loss_sum / max(tokens, 1), "val_token_acc": hits / max(tokens, 1)}


def spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    return list(range(n)) if k >= n else [(i * n) // k for i in range(k)]


def train_recipe(config: RecipeConfig, data_dir: str | Path, out_dir: str | Path,
                 log: Callable[[str], None] | None = None) -> dict:
    """Trains a proofreader on a built dataset's training users with the recipe.

    Writes, under `out_dir`: subword.model/.json (copied), recipe.json, metrics.jsonl (one
    line per loss measurement), checkpoints/step-N/ (models.checkpoint, the final step), and
    summary.json. `models.train_proofreader.load_corrector(out_dir)` loads the result.

    Args:
        config: The recipe.
        data_dir: A finished `kbsim data build` folder with a subword model.
        out_dir: The run's folder (created; its files are overwritten).
        log: Called with a progress line per measurement and per epoch (None: silent).

    Returns:
        The summary (also in summary.json).
    """
    from data.built import BuiltDataset
    from models.checkpoint import save_step_checkpoint

    say = log or (lambda _line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = BuiltDataset(data_dir)
    tokenizer = data.subword()
    model_cfg = ProofreaderConfig.from_dict({"vocab_size": tokenizer.vocab_size, **config.model})
    pool = data.client_pool("train", "early")
    val = [(p.noisy, p.clean) for ps in data.client_pairs("val", "early").values() for p in ps]
    val_encoded, _, _ = encode_pairs([val[i] for i in spaced(len(val), config.eval_pairs)],
                                     tokenizer, config.max_len)
    for name in ("subword.model", "subword.json"):
        shutil.copyfile(Path(data_dir) / name, out / name)
    (out / "recipe.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")

    model = Proofreader(model_cfg)
    model.reset_parameters(torch.Generator().manual_seed(derive_seed(config.seed, "init")))
    optimizer = torch.optim.AdamW(decay_groups(model, config.weight_decay), lr=config.lr,
                                  betas=config.betas)
    started = time.perf_counter()
    step, epoch = 0, 0
    window, window_n, seen = 0.0, 0, 0
    last: dict = {}
    with torch.random.fork_rng(devices=[]), open(out / "metrics.jsonl", "w") as metrics:
        # Dropout draws from torch's default generator: seed it inside the fork, which gives
        # the caller's state back afterwards (as train_proofreader does).
        torch.default_generator.manual_seed(derive_seed(config.seed, "dropout"))
        while step < config.steps:
            t0 = time.perf_counter()
            encoded, batches, counts = epoch_batches(pool, data.config.seed, tokenizer, config,
                                                     epoch)
            say(f"epoch {epoch}: round {config.first_round + epoch}, {counts['kept']:,} pairs "
                f"({counts['identity']:,} copies, {counts['dropped']:,} too long), "
                f"{counts['batches']:,} batches, made in {time.perf_counter() - t0:.1f} s")
            for batch in batches:
                step += 1
                lr = lr_at(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                model.train()
                src, mask, tgt = collate([encoded[i] for i in batch], model_cfg.pad_id)
                loss, _, _ = _loss(model, src, mask, tgt, config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                window += float(loss.detach())
                window_n += 1
                seen += len(batch)
                final = step == config.steps
                if (config.eval_every and step % config.eval_every == 0) or final:
                    row = {"step": step, "epoch": epoch, "lr": lr, "pairs_seen": seen,
                           "train_loss": window / max(window_n, 1),
                           "seconds": round(time.perf_counter() - started, 1)}
                    if val_encoded:
                        row.update(pair_loss(model, val_encoded))
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    window, window_n, last = 0.0, 0, row
                    say(f"step {step}: lr {lr:.2e}, train {row['train_loss']:.3f}"
                        + (f", val {row['val_loss']:.3f} acc {row['val_token_acc']:.3f}"
                           if "val_loss" in row else "") + f" ({row['seconds']:.0f} s)")
                if final:
                    break
            epoch += 1
    state = {"model_config": model_cfg.to_dict(), "recipe": config.to_dict(), "step": step,
             "metrics": last}
    ckpt = save_step_checkpoint(out / "checkpoints", step, model, optimizer, state, keep=1)
    summary = {"parameters": model.num_parameters(), "steps": step, "epochs": epoch,
               "pairs_seen": seen, "seconds": round(time.perf_counter() - started, 1),
               "final": last, "model_config": model_cfg.to_dict(), "checkpoint": str(ckpt)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def steps_for_budget(seconds_per_step: float, budget_s: float, floor: int = 1) -> int:
    """Optimizer steps that fit a time budget at a measured pace (at least `floor`)."""
    if not seconds_per_step > 0:
        raise RecipeError(f"seconds_per_step must be > 0, got {seconds_per_step!r}")
    return max(floor, int(budget_s / seconds_per_step))


# --------------------------------------------------------------------------- guard


def guard_decisions(corrector: ProofreaderCorrector, noisy: Sequence[str]) -> list[dict]:
    """The corrector's decisions with its guard open (every finished, different hypothesis is
    "corrected" unless its gain is negative), so that any stricter guard can be replayed on
    them with `apply_guard` without decoding again. Each decision also keeps the message as
    typed under "typed"."""
    open_guard = ProofreaderCorrector(corrector.model, corrector.tokenizer, beam=corrector.beam,
                                      min_gain=0.0, min_confidence=-math.inf,
                                      length_penalty=corrector.length_penalty,
                                      batch_size=corrector.batch_size, name=corrector.name)
    decisions = open_guard.decide(noisy)
    for d, typed in zip(decisions, noisy, strict=True):
        d["typed"] = typed  # decide() overwrites "text" with the hypothesis it accepts
    return decisions


def apply_guard(decisions: Sequence[Mapping], min_confidence: float,
                min_gain: float | None) -> list[str]:
    """The output `ProofreaderCorrector` would give with these thresholds (rules 1-3 of its
    docstring), replayed from `guard_decisions`. min_gain None drops rule 3 (no copy check)."""
    out = []
    for d in decisions:
        ok = (d["reason"] in ("corrected", "low_confidence", "low_gain")
              and d["confidence"] >= min_confidence
              and (min_gain is None or d["gain"] >= min_gain))
        out.append(d["hypothesis"] if ok else d["typed"])
    return out


def tune_guard(decisions: Sequence[Mapping], noisy: Sequence[str], clean: Sequence[str],
               confidences: Sequence[float] = tuple(math.log(p) for p in
                                                    (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9,
                                                     0.95, 0.99)),
               gains: Sequence[float] = (0.0, 0.02, 0.05, 0.1, 0.2)) -> dict:
    """The (min_confidence, min_gain) of the grid with the lowest CER on these pairs.

    Ties go to the stricter guard (fewer changes). Use validation users only: thresholds
    tuned on the test users would make the test figures optimistic.

    Returns:
        {"min_confidence", "min_gain", "metrics"} of the best setting.
    """
    from models.train_proofreader import correction_metrics

    best = None
    for mc in confidences:
        for mg in gains:
            m = correction_metrics(noisy, apply_guard(decisions, mc, mg), clean)
            key = (round(m["cer_after"], 9), m["changed"], -mc, -mg)
            if best is None or key < best[0]:
                best = (key, {"min_confidence": mc, "min_gain": mg, "metrics": m})
    return best[1]


def report(noisy: Sequence[str], corrected: Sequence[str], clean: Sequence[str]) -> dict:
    """`correction_metrics` plus over-correction: the share of already-correct messages
    (typed == meant) that were changed, and the share of wrong ones that became exact."""
    from models.train_proofreader import correction_metrics

    m = correction_metrics(noisy, corrected, clean)
    ok = [i for i, (n, c) in enumerate(zip(noisy, clean, strict=True)) if n == c]
    bad = [i for i in range(len(clean)) if noisy[i] != clean[i]]
    m["clean_changed"] = sum(corrected[i] != noisy[i] for i in ok) / max(len(ok), 1)
    m["noisy_fixed"] = sum(corrected[i] == clean[i] for i in bad) / max(len(bad), 1)
    m["clean_messages"] = len(ok)
    return m


