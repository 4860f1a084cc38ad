"""Canary exposure: how much a trained next-word model memorised secrets seen in training.

Carlini et al. 2019 ("The Secret Sharer: Evaluating and Testing Unintended Memorization in
Neural Networks", USENIX Security) insert random "canary" sequences into the training data and
measure each one's exposure; Ramaswamy et al. 2020 ("Training Production Language Models
without Memorizing User Data", arXiv:2009.10031) did the same for Gboard's federated models,
with canaries repeated a varying number of times in some users' data, with and without
differential privacy. Here:

* A canary is a fixed prefix (e.g. "my secret code is") followed by k words drawn uniformly,
  with replacement, from a candidate pool: the vocabulary's alphabetic words (`str.isalpha`,
  so every word is one token of `data.tokenize` and reads as a word), in vocabulary order (most
  frequent first), the first `pool_size` of them when it is set. The space of random parts R
  has |R| = pool^k elements.
* `make_canaries` draws the canaries and gives each to one client (distinct clients), with a
  repetition count; `canary_messages` are the extra training messages (each canary's text,
  repeated that many times), for `federated.run.run_federated(extra_train_messages=...)` or a
  centralised run. A repetition count of 0 makes a reference canary that is never inserted.
* Log-perplexity (Carlini et al.'s definition, in bits) of a canary's random part given its
  prefix: the sum over its k words of -log2 P(word | BOS, prefix, earlier words), from one
  forward pass (end of message not included).
* Rank and exposure. Carlini et al. define rank as the canary's position among all of R ordered
  by log-perplexity, and exposure = log2 |R| - log2 rank. R is too large to score, so exposure
  is estimated by sampling (Carlini et al. estimate it from sampled candidates, and extrapolate
  with a skew-normal fitted to their log-perplexities; the plain sampling estimate is used
  here): N candidates are drawn from R as the canary was, the canary's rank among them is
  r = 1 + (candidates with lower log-perplexity), its rank in R is estimated as
  |R| * r / (N + 1), so exposure ~= log2((N + 1) / r), between 0 and log2(N + 1). A canary the
  model never saw is exchangeable with the candidates, so r is uniform on 1..N + 1 and its
  expected exposure is log2(N + 1) - log2((N + 1)!) / (N + 1) (about log2(e) = 1.44 bits);
  one the model memorised has r = 1 and the cap log2(N + 1).

The differential-privacy epsilon to report beside exposure comes from the training run's
accountant (`federated.accounting`); this module only measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from data.record import derive_seed
from data.tokenize import tokenize
from data.vocab import BOS, WordVocab


class CanaryError(ValueError):
    """A canary setting or input that cannot be used (the message names it and why)."""


def _check_int(name: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise CanaryError(f"CanaryConfig.{name} must be an int >= {low}, got {v!r}")


@dataclass(frozen=True)
class CanaryConfig:
    """How canaries are made and scored.

    Attributes:
        prefix: The fixed words before each canary's random part; each must be one token of
            `data.tokenize.tokenize` (so training and scoring see the same ids). May be empty.
        k: Random words per canary.
        repetitions: Repetition counts (distinct, >= 0): each gets `per_repetition` canaries,
            inserted that many times into their client's training data; 0 makes reference
            canaries that are never inserted.
        per_repetition: Canaries per repetition count.
        candidates: N, the random candidates each canary's rank is estimated against.
        pool_size: Use only the first `pool_size` pool words (None: all of them).
        seed: Seeds the canaries' words and clients, and each canary's candidates.
    """

    prefix: tuple[str, ...] = ("my", "secret", "code", "is")
    k: int = 3
    repetitions: tuple[int, ...] = (0, 1, 4, 16)
    per_repetition: int = 4
    candidates: int = 1000
    pool_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.prefix, str) or not isinstance(self.prefix, Sequence):
            raise CanaryError(f"CanaryConfig.prefix must be a sequence of words: {self.prefix!r}")
        prefix = tuple(self.prefix)
        for w in prefix:
            if not isinstance(w, str) or tokenize(w) != [w]:
                raise CanaryError(
                    f"CanaryConfig.prefix: {w!r} is not one word token (data.tokenize.tokenize "
                    f"gives {tokenize(w) if isinstance(w, str) else 'nothing'})"
                )
        object.__setattr__(self, "prefix", prefix)
        _check_int("k", self.k, 1)
        if isinstance(self.repetitions, (str, bytes)) or not isinstance(
            self.repetitions, Sequence
        ):
            raise CanaryError(f"CanaryConfig.repetitions must be a sequence of ints: "
                              f"{self.repetitions!r}")
        reps = tuple(self.repetitions)
        if not reps:
            raise CanaryError("CanaryConfig.repetitions is empty")
        for r in reps:
            _check_int("repetitions[...]", r, 0)
        if len(set(reps)) != len(reps):
            raise CanaryError(f"CanaryConfig.repetitions has repeats: {reps!r}")
        object.__setattr__(self, "repetitions", reps)
        _check_int("per_repetition", self.per_repetition, 1)
        _check_int("candidates", self.candidates, 1)
        if self.pool_size is not None:
            _check_int("pool_size", self.pool_size, 2)
        _check_int("seed", self.seed, 0)

    @property
    def n_canaries(self) -> int:
        """How many canaries `make_canaries` makes."""
        return len(self.repetitions) * self.per_repetition

    def to_dict(self) -> dict:
        """The settings as plain data."""
        d = asdict(self)
        d["prefix"], d["repetitions"] = list(self.prefix), list(self.repetitions)
        return d


@dataclass(frozen=True)
class Canary:
    """One canary: its words, its client and how often it is inserted.

    Attributes:
        id: "canary-r<repetitions>-<index>", unique within a `make_canaries` call.
        client: The client whose training data gets it.
        repetitions: Times it is inserted (0: a reference canary, never inserted).
        prefix: The fixed words before the random part.
        words: The random part (k pool words).
    """

    id: str
    client: str
    repetitions: int
    prefix: tuple[str, ...]
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        """The message inserted into training: the words joined by single spaces."""
        return " ".join((*self.prefix, *self.words))


@dataclass(frozen=True)
class CanaryResult:
    """The exposure of one canary under one model.

    Attributes:
        canary_id, client, repetitions: As the `Canary`.
        log_perplexity: Of its random part given the prefix, in bits.
        rank: 1 + the candidates with lower log-perplexity.
        candidates: N, the candidates sampled.
        log2_space: log2 |R| = k * log2(pool size), Carlini et al.'s exposure upper bound.
        exposure: log2((N + 1) / rank), the sampling estimate.
    """

    canary_id: str
    client: str
    repetitions: int
    log_perplexity: float
    rank: int
    candidates: int
    log2_space: float
    exposure: float

    @property
    def max_exposure(self) -> float:
        """The estimate's cap, log2(N + 1) (rank 1)."""
        return math.log2(self.candidates + 1)

    def to_dict(self) -> dict:
        """The fields and `max_exposure` as plain data."""
        return {**asdict(self), "max_exposure": self.max_exposure}


def canary_pool(vocab: WordVocab, config: CanaryConfig) -> tuple[str, ...]:
    """The words canaries and candidates are drawn from (see the module docstring).

    Raises:
        CanaryError: Fewer than 2 alphabetic words, or fewer than `config.pool_size`.
    """
    pool = tuple(w for w in vocab.words if w.isalpha())
    want = config.pool_size if config.pool_size is not None else 2
    if len(pool) < want:
        raise CanaryError(
            f"the vocabulary has {len(pool)} alphabetic words; the canary pool needs {want}"
        )
    return pool if config.pool_size is None else pool[: config.pool_size]


def make_canaries(
    vocab: WordVocab, client_ids: Sequence[str], config: CanaryConfig
) -> list[Canary]:
    """The config's canaries: `per_repetition` for each repetition count, on distinct clients.

    Each canary's words come from a generator seeded with (seed, "canary", "words", repetition,
    index), and the clients from one seeded draw without replacement over the sorted client
    ids, so the result depends on the seed and the set of ids, not on their order.

    Raises:
        CanaryError: A repeated or non-str client id, fewer clients than canaries, or a pool
            too small (`canary_pool`).
    """
    if isinstance(client_ids, str) or not isinstance(client_ids, Sequence):
        raise CanaryError(f"client_ids must be a sequence of ids, got {type(client_ids).__name__}")
    for c in client_ids:
        if not isinstance(c, str):
            raise CanaryError(f"client ids must be str, got {c!r}")
    ids = sorted(client_ids)
    for a, b in zip(ids, ids[1:], strict=False):
        if a == b:
            raise CanaryError(f"client id {a!r} is given twice")
    if len(ids) < config.n_canaries:
        raise CanaryError(
            f"{config.n_canaries} canaries need as many distinct clients, got {len(ids)}"
        )
    pool = canary_pool(vocab, config)
    pick = np.random.default_rng(derive_seed(config.seed, "canary", "clients"))
    clients = [ids[i] for i in pick.choice(len(ids), size=config.n_canaries, replace=False)]
    out = []
    for r in config.repetitions:
        for i in range(config.per_repetition):
            rng = np.random.default_rng(derive_seed(config.seed, "canary", "words", r, i))
            words = tuple(pool[j] for j in rng.integers(0, len(pool), size=config.k))
            out.append(Canary(f"canary-r{r}-{i}", clients[len(out)], r, config.prefix, words))
    return out


def canary_messages(canaries: Sequence[Canary]) -> dict[str, list[str]]:
    """The extra training messages per client: each canary's text, `repetitions` times.

    Clients in sorted order; reference canaries (0 repetitions) add nothing.
    """
    out: dict[str, list[str]] = {}
    for c in sorted(canaries, key=lambda c: (c.client, c.id)):
        if c.repetitions > 0:
            out.setdefault(c.client, []).extend([c.text] * c.repetitions)
    return out


@torch.no_grad()
def log_perplexities(
    model: nn.Module,
    vocab: WordVocab,
    prefix: Sequence[str],
    words: Sequence[Sequence[str]],
    *,
    batch_size: int = 1024,
) -> np.ndarray:
    """Log-perplexity in bits of each word sequence after BOS and `prefix` (Carlini et al.).

    Every sequence must have the same length; the model scores them in batches of
    `batch_size` (one forward pass each), in eval mode, its mode restored afterwards.

    Returns:
        float64 array (len(words),): sum over each sequence's words of -log2 P(word | before).

    Raises:
        CanaryError: Sequences of different or zero length, or logits that do not match the
            vocabulary.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CanaryError(f"batch_size must be an int >= 1, got {batch_size!r}")
    lengths = {len(w) for w in words}
    if len(lengths) > 1 or 0 in lengths:
        raise CanaryError(f"word sequences must share one length >= 1, got lengths {lengths}")
    if not words:
        return np.zeros(0)
    p = vocab.encode(list(prefix)) if prefix else []
    ids = torch.tensor([vocab.encode(list(w)) for w in words], dtype=torch.int64)  # (M, k)
    k = ids.shape[1]
    head = torch.tensor([BOS, *p], dtype=torch.int64)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in range(0, ids.shape[0], batch_size):
            part = ids[s : s + batch_size]
            x = torch.cat([head.expand(part.shape[0], -1), part[:, :-1]], dim=1)  # (b, 1+P+k-1)
            logits = model(x.to(device))
            if logits.shape[:2] != x.shape or logits.shape[-1] != len(vocab):
                raise CanaryError(
                    f"model gave logits of shape {tuple(logits.shape)} for ids {tuple(x.shape)} "
                    f"and a vocabulary of {len(vocab)} ids"
                )
            logp = torch.log_softmax(logits[:, -k:].double(), dim=-1)  # (b, k, V)
            nats = -logp.gather(2, part.to(device)[:, :, None]).squeeze(2).sum(dim=1)
            out.append(nats.cpu().numpy() / math.log(2))
    finally:
        model.train(was_training)
    return np.concatenate(out)


def sampled_exposure(canary_lp: float, candidate_lps: np.ndarray) -> tuple[int, float]:
    """(rank, exposure) of a canary among N sampled candidates' log-perplexities.

    rank = 1 + candidates with a strictly lower log-perplexity; exposure = log2((N + 1) / rank)
    (see the module docstring).

    Raises:
        CanaryError: No candidates, or a log-perplexity that is nan.
    """
    lps = np.asarray(candidate_lps, dtype=np.float64)
    if lps.ndim != 1 or lps.size == 0:
        raise CanaryError(f"need a non-empty 1-d array of candidate scores, got {lps.shape}")
    if math.isnan(canary_lp) or np.isnan(lps).any():
        raise CanaryError("a log-perplexity is nan")
    rank = 1 + int((lps < canary_lp).sum())
    return rank, math.log2(lps.size + 1) - math.log2(rank)


def candidate_generator(config: CanaryConfig, canary: Canary) -> np.random.Generator:
    """The default source of a canary's candidates: seeded with (seed, "canary", "candidates",
    canary id), so every model is scored against the same candidates."""
    return np.random.default_rng(derive_seed(config.seed, "canary", "candidates", canary.id))


def exposure(
    model: nn.Module,
    vocab: WordVocab,
    canary: Canary,
    config: CanaryConfig,
    generator: np.random.Generator | None = None,
    *,
    batch_size: int = 1024,
) -> CanaryResult:
    """The canary's exposure under the model, against `config.candidates` random candidates.

    Args:
        model: Maps ids (B, T) to logits (B, T, V), V = len(vocab).
        vocab: The model's vocabulary (the one the canaries were made with).
        canary: From `make_canaries` with this vocabulary and config.
        config: The canary settings.
        generator: Draws the candidates; None: `candidate_generator(config, canary)`.
        batch_size: Sequences per forward pass (the result does not depend on it beyond
            float rounding).

    Raises:
        CanaryError: The canary does not fit the config (prefix, k) or has a word outside the
            pool (made with another vocabulary or config).
    """
    pool = canary_pool(vocab, config)
    if canary.prefix != config.prefix or len(canary.words) != config.k:
        raise CanaryError(
            f"{canary.id}: prefix {canary.prefix} and {len(canary.words)} words do not match the "
            f"config's prefix {config.prefix} and k={config.k}"
        )
    index = {w: i for i, w in enumerate(pool)}
    missing = [w for w in canary.words if w not in index]
    if missing:
        raise CanaryError(f"{canary.id}: words {missing} are not in the canary pool")
    rng = generator if generator is not None else candidate_generator(config, canary)
    draws = rng.integers(0, len(pool), size=(config.candidates, config.k))
    seqs = [canary.words, *(tuple(pool[j] for j in row) for row in draws)]
    lps = log_perplexities(model, vocab, config.prefix, seqs, batch_size=batch_size)
    rank, exp = sampled_exposure(float(lps[0]), lps[1:])
    return CanaryResult(
        canary_id=canary.id,
        client=canary.client,
        repetitions=canary.repetitions,
        log_perplexity=float(lps[0]),
        rank=rank,
        candidates=config.candidates,
        log2_space=config.k * math.log2(len(pool)),
        exposure=exp,
    )


def exposures(
    model: nn.Module,
    vocab: WordVocab,
    canaries: Sequence[Canary],
    config: CanaryConfig,
    *,
    batch_size: int = 1024,
) -> list[CanaryResult]:
    """`exposure` of each canary, each with its default candidates (`candidate_generator`)."""
    return [exposure(model, vocab, c, config, batch_size=batch_size) for c in canaries]


def mean_exposure_by_repetition(results: Sequence[CanaryResult]) -> dict[int, float]:
    """Mean exposure per repetition count, counts ascending (the report's exposure curve)."""
    groups: dict[int, list[float]] = {}
    for r in results:
        groups.setdefault(r.repetitions, []).append(r.exposure)
    return {rep: float(np.mean(groups[rep])) for rep in sorted(groups)}
