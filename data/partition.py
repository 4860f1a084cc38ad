"""Clients and splits: which federated client a message belongs to, and which split a client is in.

In cross-device federated learning a client is one device, and so one person. A corpus with a
user field gives natural clients (`Natural`); one without can be cut into synthetic clients,
either uniformly (`IID`) or with label skew (`Dirichlet`), the two baselines of the federated
literature. Every decision here is a pure function of (run seed, stable names: a record id, a
label, a client id), so a corpus far larger than memory can be partitioned record by record, in
any order and by any number of workers, with the same result. The only state is small and per
client: the counts behind `PerUserCap` and `PartitionStats`.

Splits:
- `user_split` puts whole clients in train, val or test, as federated benchmarks hold out
  clients rather than messages (a test client's typing and words are unseen in training).
- `time_split` / `time_split_index` cut one client's own messages by time, the latest ones for
  test, to measure personalisation on what a user writes next.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np

from data.record import Message, derive_seed, unit_float

OVER_USER_CAP = "over_user_cap"  # reason for a message dropped by `PerUserCap`
SPLITS = ("train", "val", "test")


class PartitionError(ValueError):
    """A record cannot be assigned to a client (e.g. no user, no label); names the record."""


def _where(message: Message) -> str:
    line = f" (line {message.line})" if message.line else ""
    return f"record {message.id!r}{line}"


class Partitioner(Protocol):
    """Maps one message to its client id; a pure function of the message and the config."""

    def client_of(self, message: Message) -> str: ...

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class Natural:
    """Natural clients: one client per user, as in real federated keyboards."""

    def client_of(self, message: Message) -> str:
        """The message's user; an error if the corpus gave it none."""
        if not message.user:
            raise PartitionError(
                f"{_where(message)}: no user, so no natural client (the corpus has no user "
                "field: use an IID or Dirichlet partition instead)")
        return message.user

    def to_dict(self) -> dict:
        return {"kind": "natural"}


@dataclass(frozen=True)
class IID:
    """`n_clients` synthetic clients, each message to one of them uniformly at random.

    The client of a message is a pure function of (seed, message id): streaming, and the same
    whatever order the corpus is read in.
    """

    n_clients: int
    seed: int = 0

    def __post_init__(self) -> None:
        _check_n_clients(self.n_clients)

    def client_of(self, message: Message) -> str:
        """Returns "iid-<k>", k uniform in [0, n_clients) from (seed, message id)."""
        k = min(int(unit_float(self.seed, "iid", message.id) * self.n_clients),
                self.n_clients - 1)
        return f"iid-{k}"

    def to_dict(self) -> dict:
        return {"kind": "iid", "n_clients": self.n_clients, "seed": self.seed}


@dataclass(frozen=True)
class Dirichlet:
    """`n_clients` synthetic clients with label skew controlled by a Dirichlet concentration.

    For each label, a distribution over clients p_label ~ Dirichlet(alpha, ..., alpha) is drawn
    from a generator seeded by (seed, label); each message of that label goes to a client drawn
    from p_label with a uniform number from (seed, message id). Small alpha puts most of a
    label on a few clients (strong skew); large alpha approaches an IID partition.

    This is the per-label allocation of Yurochkin et al. 2019 ("Bayesian nonparametric federated
    learning of neural networks", ICML) and Wang et al. 2020 (FedMA, ICLR), a close relative
    of Hsu et al. 2019 ("Measuring the effects of non-identical data distribution for federated
    visual classification"), who draw each client's label mix from a Dirichlet instead. The
    per-label form is used here because it needs neither the label set nor client sizes in
    advance: every label's draw depends on that label's name only, so it streams.
    """

    n_clients: int
    alpha: float
    seed: int = 0

    def __post_init__(self) -> None:
        _check_n_clients(self.n_clients)
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                and self.alpha > 0):
            raise ValueError(f"Dirichlet alpha must be a finite number > 0, got {self.alpha!r}")

    def label_distribution(self, label: str) -> np.ndarray:
        """p_label: the probability of each client for messages of `label` (read-only)."""
        return _label_cdf(self.seed, self.n_clients, float(self.alpha), label)[0]

    def client_of(self, message: Message) -> str:
        """Returns "dir-<k>", k drawn from p_label by a uniform number from (seed, message id)."""
        if not message.label:
            raise PartitionError(
                f"{_where(message)}: no label, so no Dirichlet (label-skewed) client")
        _, cdf = _label_cdf(self.seed, self.n_clients, float(self.alpha), message.label)
        u = unit_float(self.seed, "dir-msg", message.id) * cdf[-1]
        k = min(int(np.searchsorted(cdf, u, side="right")), self.n_clients - 1)
        return f"dir-{k}"

    def to_dict(self) -> dict:
        return {"kind": "dirichlet", "n_clients": self.n_clients, "alpha": self.alpha,
                "seed": self.seed}


@lru_cache(maxsize=4096)
def _label_cdf(seed: int, n_clients: int, alpha: float,
               label: str) -> tuple[np.ndarray, np.ndarray]:
    # Memoised only for speed: the result is a pure function of the arguments.
    rng = np.random.default_rng(derive_seed(seed, "dirichlet", label))
    p = rng.dirichlet(np.full(n_clients, alpha))
    cdf = np.cumsum(p)
    p.flags.writeable = False
    cdf.flags.writeable = False
    return p, cdf


def _check_n_clients(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_clients must be an integer >= 1, got {n!r}")


def partitioner_from_dict(d: Mapping) -> Partitioner:
    """The inverse of each partitioner's `to_dict` (for manifests)."""
    kinds = {"natural": Natural, "iid": IID, "dirichlet": Dirichlet}
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in kinds:
        raise ValueError(f"unknown partition kind {kind!r}; known: {', '.join(kinds)}")
    try:
        return kinds[kind](**d)
    except TypeError as e:
        raise ValueError(f"partition {kind}: {e}") from None


# --- Per-client cap ------------------------------------------------------------------------


@dataclass(frozen=True)
class PerUserCap:
    """Keep at most `max_messages` messages per client: the first ones in the order given.

    Prolific users would otherwise dominate both centralised training and the sampled cohorts;
    federated benchmarks cap them. For example, the Stack Overflow next-word-prediction setup of
    Reddi et al. 2021 ("Adaptive Federated Optimization", ICLR; google-research/federated)
    keeps at most 1,000 sentences per training client (`max_elements_per_user`).

    "First" means first in the order messages are passed to `admit`: a caller that knows times
    should pass each user's messages in time order, so that the cap keeps the earliest ones.
    The state is a count per client (`CapState`), owned by the caller.
    """

    max_messages: int

    def __post_init__(self) -> None:
        if isinstance(self.max_messages, bool) or not isinstance(self.max_messages, int) \
                or self.max_messages < 1:
            raise ValueError(f"max_messages must be an integer >= 1, got {self.max_messages!r}")

    def init(self) -> CapState:
        """A fresh state: no client seen yet."""
        return CapState()

    def admit(self, state: CapState, client_id: str) -> str | None:
        """Counts one more message of `client_id`; None to keep it, else the drop reason."""
        seen = state.counts[client_id]
        state.counts[client_id] = seen + 1
        if seen < self.max_messages:
            state.kept += 1
            return None
        state.dropped += 1
        return OVER_USER_CAP

    def keep_mask(self, client_ids: Iterable[str]) -> list[bool]:
        """Which of these (in order) the cap keeps, from a fresh state (for in-memory data)."""
        state = self.init()
        return [self.admit(state, c) is None for c in client_ids]


@dataclass
class CapState:
    """Messages seen per client by a `PerUserCap`, and how many were kept and dropped."""

    counts: Counter = field(default_factory=Counter)
    kept: int = 0
    dropped: int = 0


# --- Splits ----------------------------------------------------------------------------------


def user_split(client_id: str, seed: int,
               fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """Returns "train", "val" or "test" for a whole client, a pure function of (seed, client id).

    A uniform number from (seed, "user-split", client id) is compared with the cumulative
    fractions (train, val, test): below train -> "train", below train + val -> "val", else
    "test". Growing the corpus never moves an existing client to another split.
    """
    _check_fractions(fractions)
    train, val, _ = fractions
    u = unit_float(seed, "user-split", client_id)
    if u < train:
        return "train"
    if u < train + val:
        return "val"
    return "test"


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or not all(
            isinstance(f, (int, float)) and math.isfinite(f) and 0 <= f <= 1 for f in fractions):
        raise ValueError(f"split fractions must be three numbers in [0, 1] (train, val, test), "
                         f"got {tuple(fractions)!r}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {tuple(fractions)!r} "
                         f"(sum {sum(fractions)})")


@dataclass(frozen=True)
class UserSplit:
    """Fractions of clients in train / val / test, and the seed that assigns them."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fractions((self.train, self.val, self.test))

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)

    def split_of(self, client_id: str) -> str:
        """The split of one client (see `user_split`)."""
        return user_split(client_id, self.seed, self.fractions)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> UserSplit:
        return cls(**d)


def time_split_count(n: int, test_fraction: float) -> int:
    """How many of a user's `n` messages go to test: ceil(fraction * n), at most n - 1.

    Rounding up gives every user with two or more messages at least one test message whenever
    the fraction is above 0; capping at n - 1 keeps at least one message in train, so a user
    with a single message keeps it in train. The product is rounded to 9 decimals first so
    that e.g. 0.1 * 30 counts as 3, not 4.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"message count must be an integer >= 0, got {n!r}")
    if not (isinstance(test_fraction, (int, float)) and 0 <= test_fraction <= 1):
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    if n <= 1:
        return 0
    return min(n - 1, math.ceil(round(test_fraction * n, 9)))


def time_split_index(k: int, n: int, test_fraction: float) -> str:
    """The split of a user's k-th message (0-based, in time order) out of `n`: streaming form.

    With the per-user counts from a first pass, a second pass that meets each user's messages
    in time order can split them one at a time: the last `time_split_count(n, fraction)` are
    "test", the rest "train".
    """
    if not 0 <= k < n:
        raise ValueError(f"message index {k} out of range for a user with {n} messages")
    return "test" if k >= n - time_split_count(n, test_fraction) else "train"


def time_order(times: Sequence[float | None]) -> list[int]:
    """Positions of one user's messages sorted by time, ties by position.

    A message without a time keeps its place after the message before it: it is sorted as if
    it had its predecessor's time (or minus infinity when it comes first), and ties keep
    position order. So untimed messages keep their order, and a user with no times at all is
    left in position order.
    """
    keys = []
    last = -math.inf
    for i, t in enumerate(times):
        if t is not None:
            if not math.isfinite(float(t)):
                raise ValueError(f"message {i}: time must be finite, got {t!r}")
            last = float(t)
        keys.append((last, i))
    return [i for _, i in sorted(keys)]


def time_split(times: Sequence[float | None], test_fraction: float) -> list[str]:
    """Returns "train" or "test" for each of one user's messages: the latest ones go to test.

    Messages are put in time order (`time_order`: ties by position, untimed messages after
    their predecessor), then the last `time_split_count(len(times), test_fraction)` are "test".
    The result is aligned with `times` (input positions), not with the sorted order.
    """
    order = time_order(times)
    n = len(order)
    out = [""] * n
    for rank, i in enumerate(order):
        out[i] = time_split_index(rank, n, test_fraction)
    return out


# --- Statistics --------------------------------------------------------------------------------


@dataclass
class PartitionStats:
    """Messages per client; mergeable (`+`), so shards and workers add up to the whole.

    Keeps one count per client (the quantiles need them all); shards may share clients.
    """

    counts: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, client_ids: Iterable[str]) -> PartitionStats:
        """Stats of a stream of client ids, one per message."""
        return cls(Counter(client_ids))

    def add(self, client_id: str, messages: int = 1) -> None:
        self.counts[client_id] += messages

    def __add__(self, other: PartitionStats) -> PartitionStats:
        return PartitionStats(self.counts + other.counts)

    @property
    def n_clients(self) -> int:
        return sum(1 for c in self.counts.values() if c > 0)

    @property
    def n_messages(self) -> int:
        return sum(self.counts.values())

    def quantiles(self) -> dict[str, float]:
        """Messages per client: min, p25, p50, p75, max (numpy's linear interpolation)."""
        values = np.array([c for c in self.counts.values() if c > 0], dtype=float)
        if values.size == 0:
            return {"min": 0.0, "p25": 0.0, "p50": 0.0, "p75": 0.0, "max": 0.0}
        q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
        return dict(zip(("min", "p25", "p50", "p75", "max"), map(float, q), strict=True))

    def summary(self) -> dict:
        """A JSON-ready row for the summary table."""
        return {"clients": self.n_clients, "messages": self.n_messages,
                "messages_per_client": self.quantiles()}
