"""Next-word evaluation a keyboard user feels: keystroke savings, and accuracy by client size.

Top-1/top-3 accuracy and perplexity are `models.nwp.NWPMetrics` (its headline is the accuracy
over word targets, without OOV and EOS, as TFF's Stack Overflow `accuracy_no_oov_or_eos`); this
module adds what the report needs beside them.

Keystroke savings (`keystroke_savings`). The user types each word of a message character by
character. Before each character, the first one included, the suggestion strip shows the model's
k best words (given the message's earlier words, from BOS, as the LM sees them in
`data.torch_data.NextWordDataset`) among the vocabulary words that start with what is typed so
far; PAD, BOS, EOS and OOV are never shown. When the intended word is shown the user taps it,
and the word's characters not yet typed are saved. A word outside the vocabulary is never shown
and is typed in full. The conventions, chosen so that the rate reads as "the share of characters
a user would not have to type":

* Characters are those of the word tokens (`data.tokenize.tokenize`), in the vocabulary's form
  (lowercased when the vocabulary is); spaces are not counted, neither typed nor saved: the
  tokenizer keeps no spacing ("hi," is two tokens with none between), and a tapped suggestion
  is followed by an automatic space that replaces the one the user would have typed.
  `KeystrokeSavings.ksr` = saved / chars is the headline.
* The tap itself is free in `ksr`. Trnka & McCoy 2008 ("Evaluating Word Prediction: Framing
  Keystroke Savings", ACL) frame keystroke savings as the share of keystrokes saved, where
  choosing a prediction is itself a keystroke; `ksr_tap_cost` counts each tap as one typed
  character, and `ksr_with_spaces` counts one space after every word, saved by every tap (the
  automatic space). All three come from the same sums.
* Words tapped before their first character are next-word predictions, the others
  completions; kebbie (FleksySDK's keyboard benchmark) reports "next-word prediction" and
  "auto-completion" apart, and `predicted` / `completed` keep both counts.
* As in the Stack Overflow preprocessing, only a message's first `seq_len` words are scored;
  `cut` counts the words left out.

Accuracy by client size (`accuracy_by_client_size`): `NWPMetrics` of each bucket of clients by
their number of examples, for the report's plot of accuracy against client size (clients with
few messages are most of a natural federated population, Hard et al. 2018).
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from data.tokenize import tokenize
from data.torch_data import DEFAULT_SEQ_LEN, NextWordDataset, pooled
from data.vocab import BOS, PAD, SPECIALS, WordVocab
from models.nwp import NWPMetrics
from models.train import evaluate_nwp

# Client-size bucket edges (examples per client) for `accuracy_by_client_size`: roughly
# logarithmic, so that each bucket of a natural chat population holds enough clients to plot.
DEFAULT_SIZE_EDGES = (1, 10, 50, 100, 500)


class NWPEvalError(ValueError):
    """Input that the next-word evaluation cannot score (the message names it and why)."""


def _check_count(owner: str, name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{owner}.{name} must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class KeystrokeSavings:
    """Sums of the suggestion-strip simulation; `a + b` merges, so shards add up exactly.

    Attributes:
        messages: Messages scored.
        words: Word tokens scored (a message's first `seq_len`).
        chars: Their characters, spaces not counted.
        in_vocab: Of those words, the ones in the vocabulary (the only ones that can be shown).
        completed: Words entered by tapping a suggestion (one tap each).
        predicted: Of those, words tapped before typing any of their characters.
        saved: Characters not typed thanks to the taps.
        cut: Words past `seq_len`, not scored.
    """

    messages: int = 0
    words: int = 0
    chars: int = 0
    in_vocab: int = 0
    completed: int = 0
    predicted: int = 0
    saved: int = 0
    cut: int = 0

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            _check_count("KeystrokeSavings", name, v)
        if not self.predicted <= self.completed <= self.in_vocab <= self.words:
            raise ValueError(
                f"KeystrokeSavings: need predicted <= completed <= in_vocab <= words, got {self}"
            )
        # Every tap saves at least one character, and no word saves more than it has.
        if not self.completed <= self.saved <= self.chars:
            raise ValueError(f"KeystrokeSavings: need completed <= saved <= chars, got {self}")

    def __add__(self, other: KeystrokeSavings) -> KeystrokeSavings:
        if not isinstance(other, KeystrokeSavings):
            return NotImplemented
        return KeystrokeSavings(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def __radd__(self, other: object) -> KeystrokeSavings:
        # Lets `sum(parts)` start from 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    @property
    def ksr(self) -> float:
        """Headline keystroke savings rate: saved / chars (spaces out, taps free); nan if empty."""
        return self.saved / self.chars if self.chars else math.nan

    @property
    def ksr_tap_cost(self) -> float:
        """Savings with each tap costing one keystroke: (saved - completed) / chars."""
        return (self.saved - self.completed) / self.chars if self.chars else math.nan

    @property
    def ksr_with_spaces(self) -> float:
        """Savings with one space after every word, the space saved by each tap (the keyboard
        adds it) and the tap free: (saved + completed) / (chars + words)."""
        n = self.chars + self.words
        return (self.saved + self.completed) / n if n else math.nan

    @property
    def completion_rate(self) -> float:
        """Share of scored words entered by a tap; nan if none."""
        return self.completed / self.words if self.words else math.nan

    @property
    def prediction_rate(self) -> float:
        """Share of scored words tapped before their first character (next-word prediction)."""
        return self.predicted / self.words if self.words else math.nan

    def to_dict(self) -> dict:
        """The sums, then the rates (nan where a denominator is 0)."""
        return {
            **asdict(self),
            "ksr": self.ksr,
            "ksr_tap_cost": self.ksr_tap_cost,
            "ksr_with_spaces": self.ksr_with_spaces,
            "completion_rate": self.completion_rate,
            "prediction_rate": self.prediction_rate,
        }


def _successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with `prefix` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < sys.maxunicode:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


class _SortedWords:
    """The vocabulary's words in string order, so the words with a prefix are one range."""

    def __init__(self, vocab: WordVocab):
        words = vocab.words
        idx = sorted(range(len(words)), key=words.__getitem__)
        self.words = [words[i] for i in idx]
        # order[p] is the id of the p-th word in string order.
        self.order = torch.tensor(idx, dtype=torch.int64) + len(SPECIALS)
        self.pos = {w: p for p, w in enumerate(self.words)}
        self._ranges: dict[str, tuple[list[int], list[int]]] = {}

    def prefix_ranges(self, word: str) -> tuple[list[int], list[int]]:
        """[lo_j, hi_j) of the words that start with word[:j], for j = 0 .. len(word) - 1."""
        got = self._ranges.get(word)
        if got is None:
            los, his = [], []
            n = len(self.words)
            for j in range(len(word)):
                p = word[:j]
                lo = bisect.bisect_left(self.words, p)
                nxt = _successor(p)
                hi = n if nxt is None else bisect.bisect_left(self.words, nxt, lo)
                los.append(lo)
                his.append(hi)
            got = self._ranges[word] = (los, his)
        return got


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_positive(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")


@torch.no_grad()
def keystroke_savings(
    model: nn.Module,
    vocab: WordVocab,
    texts: Sequence[str],
    k: int = 3,
    seq_len: int = DEFAULT_SEQ_LEN,
    tokenizer: Callable[[str], list[str]] = tokenize,
    *,
    batch_size: int = 64,
) -> KeystrokeSavings:
    """Simulates typing `texts` with a k-word suggestion strip (see the module docstring).

    One forward pass per batch of messages gives the logits for every word position. For the
    prefix filter the words are in string order, so the words that start with the typed
    characters are one range, and the intended word's rank among them is the count of larger
    logits in that range (a cumulative sum over the range); ties are resolved in the intended
    word's favour (float logits seldom tie). The model's mode is restored afterwards.

    Args:
        model: Maps ids (B, T) to logits (B, T, V) with V = len(vocab), causally (position t
            sees ids 0..t only), e.g. `models.cifg.CIFGLanguageModel`.
        vocab: The model's vocabulary.
        texts: Messages, as the user meant them.
        k: Suggestions shown (Gboard's strip shows three).
        seq_len: Words scored per message (the rest counted in `cut`).
        tokenizer: Text to word tokens (the one the vocabulary was built with).
        batch_size: Messages per forward pass (the result does not depend on it).

    Returns:
        The sums; `.ksr` is the headline rate.

    Raises:
        NWPEvalError: A text is not a str (names its index), the model's output does not
            match the vocabulary, or k, seq_len or batch_size is not an int >= 1.
    """
    for name, v in (("k", k), ("seq_len", seq_len), ("batch_size", batch_size)):
        try:
            _check_positive(name, v)
        except ValueError as e:
            raise NWPEvalError(str(e)) from None
    if len(vocab.words) == 0:
        raise NWPEvalError("the vocabulary has no words to suggest")
    sw = _SortedWords(vocab)
    device = _model_device(model)
    order = sw.order.to(device)
    lower = vocab.lowercase
    was_training = model.training
    model.eval()
    total = KeystrokeSavings()
    try:
        for start in range(0, len(texts), batch_size):
            keys_batch: list[list[str]] = []
            cut = 0
            for i in range(start, min(start + batch_size, len(texts))):
                text = texts[i]
                if not isinstance(text, str):
                    raise NWPEvalError(f"text {i}: expected a str, got {type(text).__name__}")
                tokens = tokenizer(text)
                cut += max(0, len(tokens) - seq_len)
                keys_batch.append([t.lower() if lower else t for t in tokens[:seq_len]])
            total = total + _score_batch(model, vocab, sw, order, keys_batch, k, device, cut)
    finally:
        model.train(was_training)
    return total


def _score_batch(
    model: nn.Module,
    vocab: WordVocab,
    sw: _SortedWords,
    order: torch.Tensor,
    keys_batch: list[list[str]],
    k: int,
    device: torch.device,
    cut: int,
) -> KeystrokeSavings:
    """The savings of one batch of messages, each given as its scored word keys."""
    words = sum(len(keys) for keys in keys_batch)
    chars = sum(len(w) for keys in keys_batch for w in keys)
    # Word positions that can be suggested: (message, position, key).
    targets = [
        (b, t, w) for b, keys in enumerate(keys_batch) for t, w in enumerate(keys) if w in sw.pos
    ]
    saved = completed = predicted = 0
    if targets:
        width = max(len(keys) for keys in keys_batch)
        x = torch.full((len(keys_batch), width), PAD, dtype=torch.int64)
        for b, keys in enumerate(keys_batch):
            # Position t predicts word t from BOS and words 0..t-1 (the last word is no input).
            x[b, : len(keys)] = torch.tensor([BOS, *vocab.encode(keys)][: len(keys)])
        logits = model(x.to(device))  # (B, T, V)
        if logits.shape[:2] != x.shape or logits.shape[-1] != len(vocab):
            raise NWPEvalError(
                f"model gave logits of shape {tuple(logits.shape)} for ids {tuple(x.shape)} and "
                f"a vocabulary of {len(vocab)} ids"
            )
        # Chunks of target positions bound the (chunk, words) tensors' memory.
        chunk = 256
        for c in range(0, len(targets), chunk):
            part = targets[c : c + chunk]
            s, f, p = _rank_savings(logits, sw, order, part, k)
            saved, completed, predicted = saved + s, completed + f, predicted + p
    return KeystrokeSavings(
        messages=len(keys_batch),
        words=words,
        chars=chars,
        in_vocab=len(targets),
        completed=completed,
        predicted=predicted,
        saved=saved,
        cut=cut,
    )


def _rank_savings(
    logits: torch.Tensor,
    sw: _SortedWords,
    order: torch.Tensor,
    targets: list[tuple[int, int, str]],
    k: int,
) -> tuple[int, int, int]:
    """(saved chars, taps, taps before any character) for in-vocabulary target positions."""
    device = logits.device
    n = len(targets)
    bi = torch.tensor([b for b, _, _ in targets], device=device)
    ti = torch.tensor([t for _, t, _ in targets], device=device)
    pos = torch.tensor([sw.pos[w] for _, _, w in targets], device=device)
    rows = logits[bi, ti][:, order].float()  # (n, W): word logits in string order
    mine = rows.gather(1, pos[:, None])  # (n, 1): the intended word's logit
    above = torch.zeros(n, rows.shape[1] + 1, dtype=torch.int64, device=device)
    above[:, 1:] = (rows > mine).cumsum(dim=1)  # above[:, p]: larger logits among words < p
    lens = [len(w) for _, _, w in targets]
    width = max(lens)
    lo = torch.zeros(n, width, dtype=torch.int64)
    hi = torch.zeros(n, width, dtype=torch.int64)
    for i, (_, _, w) in enumerate(targets):
        los, his = sw.prefix_ranges(w)
        lo[i, : len(los)] = torch.tensor(los)
        hi[i, : len(his)] = torch.tensor(his)
    rank = above.gather(1, hi.to(device)) - above.gather(1, lo.to(device))  # (n, width)
    length = torch.tensor(lens, device=device)
    j = torch.arange(width, device=device)
    shown = (rank < k) & (j[None, :] < length[:, None])  # shown before typing character j
    hit = shown.any(dim=1)
    first = torch.where(shown, j[None, :], width).min(dim=1).values  # chars typed before the tap
    saved = int((length - first)[hit].sum())
    return saved, int(hit.sum()), int((hit & (first == 0)).sum())


def _check_edges(edges: Sequence[int]) -> tuple[int, ...]:
    edges = tuple(edges)
    if not edges:
        raise ValueError("edges must hold at least one client size")
    for e in edges:
        if isinstance(e, bool) or not isinstance(e, int) or e < 0:
            raise ValueError(f"edges must be ints >= 0, got {edges!r}")
    if any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must increase strictly, got {edges!r}")
    return edges


def size_bucket_labels(edges: Sequence[int] = DEFAULT_SIZE_EDGES) -> list[str]:
    """Bucket names for edges: (1, 10, 50) -> "1-9", "10-49", "50+" ("1" for a one-size bucket).

    Raises:
        ValueError: The edges are not strictly increasing ints >= 0.
    """
    edges = _check_edges(edges)
    labels = [str(a) if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges, edges[1:],
                                                                          strict=False)]
    return [*labels, f"{edges[-1]}+"]


def client_size_buckets(
    sizes: Mapping[str, int], edges: Sequence[int] = DEFAULT_SIZE_EDGES
) -> dict[str, list[str]]:
    """The clients of each size bucket, every bucket present (possibly empty), in edge order.

    A client of size n falls in the bucket [edges[i], edges[i + 1]) that holds n, or in the last
    one when n >= edges[-1]; client ids within a bucket are sorted.

    Raises:
        ValueError: Bad edges, or a client whose size is not an int or is below edges[0] (named).
    """
    edges = _check_edges(edges)
    labels = size_bucket_labels(edges)
    out: dict[str, list[str]] = {label: [] for label in labels}
    for client in sorted(sizes):
        n = sizes[client]
        if isinstance(n, bool) or not isinstance(n, int) or n < edges[0]:
            raise ValueError(
                f"client {client!r}: size {n!r} is not an int >= the first edge {edges[0]}"
            )
        out[labels[bisect.bisect_right(edges, n) - 1]].append(client)
    return out


def accuracy_by_client_size(
    model: nn.Module,
    datasets_by_client: Mapping[str, NextWordDataset],
    edges: Sequence[int] = DEFAULT_SIZE_EDGES,
    *,
    batch_size: int = 256,
) -> dict[str, NWPMetrics]:
    """Next-word metrics of each bucket of clients by number of examples (messages).

    Each bucket's `NWPMetrics` is of all its clients' examples pooled (the same as the sum of
    the clients' own metrics, since they merge exactly), so `.accuracy` weights clients by their
    word count; an empty bucket gets `NWPMetrics()` (rates nan). The sum over buckets equals
    the metrics of all clients. Labels as `size_bucket_labels`.

    Args:
        model: Maps ids (B, T) to logits (B, T, V).
        datasets_by_client: Each client's examples (e.g. `data.torch_data.next_word_datasets`).
        edges: Increasing client sizes where buckets start, e.g. (1, 10, 50): 1-9, 10-49, 50+.
        batch_size: Examples per forward pass.

    Raises:
        ValueError: As `client_size_buckets` (a client with fewer examples than edges[0]).
    """
    sizes = {c: len(ds) for c, ds in datasets_by_client.items()}
    buckets = client_size_buckets(sizes, edges)
    device = _model_device(model)
    out = {}
    for label, clients in buckets.items():
        members = {c: datasets_by_client[c] for c in clients if sizes[c] > 0}
        out[label] = (
            evaluate_nwp(model, pooled(members), batch_size=batch_size, device=device)
            if members
            else NWPMetrics()
        )
    return out

