"""The next-word prediction task: loss, mergeable metrics and top-k suggestions.

Works with any model that maps ids (B, T) to logits (B, T, V) (`CIFGLanguageModel`,
`TransformerLM`) and with `data.torch_data.NextWordDataset`'s (x, y) examples, where y is x
shifted by one and PAD after the end.

Accuracy comes in two variants, both counted as top-1 and top-3 hits (Gboard reports top-1 and
top-3 recall, Hard et al. 2018, since the suggestion strip shows three words):

- over all targets but PAD (TFF's Stack Overflow metric `accuracy_with_oov`), and
- over word targets only: not PAD, OOV, EOS (nor BOS, which is never a target). This is TFF's
  `accuracy_no_oov_or_eos` (google-research/federated's Stack Overflow experiments compute it
  beside `accuracy_with_oov` and `accuracy_no_oov`) and is the headline here: predicting "<oov>"
  helps no typist, and the end of a message is no word to suggest. pfl-research's benchmark
  reports "accuracy wo unk" instead, which still counts EOS targets; not computed here.

Predictions are the model's top-k over the whole vocabulary, as in those metrics: a model that
ranks OOV first loses that hit. `suggest` is what a keyboard shows, so it masks OOV (and PAD,
BOS) before taking the top k.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from data.vocab import BOS, EOS, OOV, PAD


def nwp_loss(logits: torch.Tensor, y: torch.Tensor, pad_id: int = PAD) -> torch.Tensor:
    """Mean cross-entropy over the non-PAD targets (0 when every target is PAD).

    Written without data-dependent branches so that it runs under `torch.func.vmap`.

    Args:
        logits: (B, T, V) float.
        y: (B, T) int64 targets.
        pad_id: Targets equal to it are ignored.

    Returns:
        A scalar tensor.
    """
    v = logits.shape[-1]
    losses = F.cross_entropy(logits.reshape(-1, v), y.reshape(-1), reduction="none")  # (B*T,)
    mask = (y.reshape(-1) != pad_id).to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass(frozen=True)
class NWPMetrics:
    """Sums and counts of next-word evaluation; `a + b` merges, so shards add up exactly.

    Counts are integers and add exactly; `loss_sum` is a float64 sum, exact up to rounding.

    Attributes:
        tokens: Targets that are not PAD.
        loss_sum: Summed cross-entropy (nats) over those targets.
        top1_all: Of those, targets that were the model's first choice.
        top3_all: Of those, targets among the model's first three.
        words: Targets that are words: not PAD, OOV, EOS or BOS.
        top1: Of those, first-choice hits (the headline accuracy's numerator).
        top3: Of those, top-three hits.
    """

    tokens: int = 0
    loss_sum: float = 0.0
    top1_all: int = 0
    top3_all: int = 0
    words: int = 0
    top1: int = 0
    top3: int = 0

    def __post_init__(self) -> None:
        for name in ("tokens", "top1_all", "top3_all", "words", "top1", "top3"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"NWPMetrics.{name} must be an int >= 0, got {v!r}")
        if not self.top1_all <= self.top3_all <= self.tokens:
            raise ValueError(f"NWPMetrics: need top1_all <= top3_all <= tokens, got {self}")
        if not self.top1 <= self.top3 <= self.words <= self.tokens:
            raise ValueError(f"NWPMetrics: need top1 <= top3 <= words <= tokens, got {self}")
        ls = self.loss_sum
        if isinstance(ls, bool) or not isinstance(ls, (int, float)) or not ls >= 0:
            raise ValueError(f"NWPMetrics.loss_sum must be a number >= 0, got {ls!r}")
        object.__setattr__(self, "loss_sum", float(ls))

    def __add__(self, other: NWPMetrics) -> NWPMetrics:
        if not isinstance(other, NWPMetrics):
            return NotImplemented
        return NWPMetrics(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def __radd__(self, other: object) -> NWPMetrics:
        # Lets `sum(metrics)` start from 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    @classmethod
    @torch.no_grad()
    def of(
        cls,
        logits: torch.Tensor,
        y: torch.Tensor,
        *,
        pad_id: int = PAD,
        oov_id: int = OOV,
        eos_id: int = EOS,
        bos_id: int = BOS,
    ) -> NWPMetrics:
        """The metrics of one batch.

        Args:
            logits: (B, T, V) float (or (N, V) with y of shape (N,)).
            y: Targets, logits' shape without the last dimension, int64.
            pad_id, oov_id, eos_id, bos_id: The special ids (those of `data.vocab`).

        Raises:
            ValueError: Shapes do not match or V < 3.
        """
        if logits.shape[:-1] != y.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(y.shape)} do not match"
            )
        v = logits.shape[-1]
        if v < 3:
            raise ValueError(f"top-3 needs at least 3 classes, got {v}")
        logits = logits.reshape(-1, v)
        y = y.reshape(-1)
        real = y != pad_id
        word = real & (y != oov_id) & (y != eos_id) & (y != bos_id)
        top3 = logits.topk(3, dim=-1).indices  # (N, 3), best first
        hit1 = top3[:, 0] == y
        hit3 = (top3 == y[:, None]).any(dim=-1)
        ce = F.cross_entropy(logits.float(), y, reduction="none").double()
        return cls(
            tokens=int(real.sum()),
            loss_sum=float(ce[real].sum()),
            top1_all=int((hit1 & real).sum()),
            top3_all=int((hit3 & real).sum()),
            words=int(word.sum()),
            top1=int((hit1 & word).sum()),
            top3=int((hit3 & word).sum()),
        )

    @property
    def loss(self) -> float:
        """Mean cross-entropy per non-PAD target (nan when there are none)."""
        return self.loss_sum / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        """exp(loss) (nan when there are no targets)."""
        return math.exp(self.loss) if self.tokens else math.nan

    @property
    def accuracy(self) -> float:
        """Headline top-1 accuracy over word targets (no PAD/OOV/EOS); nan without any."""
        return self.top1 / self.words if self.words else math.nan

    @property
    def top3_accuracy(self) -> float:
        """Top-3 accuracy over word targets; nan without any."""
        return self.top3 / self.words if self.words else math.nan

    @property
    def accuracy_all(self) -> float:
        """Top-1 accuracy over all non-PAD targets, OOV and EOS included; nan without any."""
        return self.top1_all / self.tokens if self.tokens else math.nan

    @property
    def top3_accuracy_all(self) -> float:
        """Top-3 accuracy over all non-PAD targets; nan without any."""
        return self.top3_all / self.tokens if self.tokens else math.nan

    def to_dict(self) -> dict:
        """The sums and counts, then the derived rates (nan where a denominator is 0)."""
        return {
            **asdict(self),
            "loss": self.loss,
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "top3_accuracy": self.top3_accuracy,
            "accuracy_all": self.accuracy_all,
            "top3_accuracy_all": self.top3_accuracy_all,
        }


def top_k_ids(
    logits: torch.Tensor, k: int = 3, exclude: Iterable[int] = (PAD, BOS, OOV)
) -> torch.Tensor:
    """The k highest-scoring ids, best first, never one of `exclude`: (..., V) -> (..., k).

    Raises:
        ValueError: k < 1, an excluded id is outside the vocabulary, or fewer than k ids remain.
    """
    v = logits.shape[-1]
    banned = sorted(set(exclude))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if banned and not (0 <= banned[0] and banned[-1] < v):
        raise ValueError(f"excluded ids {banned} must be in [0, {v})")
    if k > v - len(banned):
        raise ValueError(f"k={k} but only {v - len(banned)} ids are left after excluding {banned}")
    if banned:
        logits = logits.index_fill(-1, torch.tensor(banned, device=logits.device), -math.inf)
    return logits.topk(k, dim=-1).indices


def suggest(
    model: nn.Module,
    prefix_ids: Sequence[int],
    k: int = 3,
    exclude: Iterable[int] = (PAD, BOS, OOV),
    *,
    add_bos: bool = True,
) -> list[int]:
    """The model's k most likely next words after a prefix, as a keyboard's suggestion strip.

    Runs without gradients and leaves the model's mode alone (call `model.eval()` first if it
    has dropout). A prefix longer than the model's `config.max_len` (if it has one) keeps its
    last `max_len` ids.

    Args:
        model: Maps ids (1, T) to logits (1, T, V).
        prefix_ids: Word ids typed so far in the message (may be empty).
        k: How many suggestions.
        exclude: Ids never suggested: by default PAD, BOS and OOV (EOS may be suggested; it
            means "end of message").
        add_bos: Put BOS before the prefix, as in the training data (`NextWordDataset`).

    Returns:
        k ids, most likely first.
    """
    ids = [BOS, *prefix_ids] if add_bos else list(prefix_ids)
    if not ids:
        raise ValueError("empty prefix with add_bos=False: nothing to predict from")
    max_len = getattr(getattr(model, "config", None), "max_len", None)
    if max_len is not None:
        ids = ids[-max_len:]
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.int64, device=device)  # (1, T)
    with torch.no_grad():
        last = model(x)[0, -1]  # (V,)
        return top_k_ids(last, k, exclude).tolist()
