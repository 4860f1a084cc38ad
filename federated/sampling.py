"""Which clients take part in a round: selection, and which of the selected ones report back.

A round's cohort is a pure function of (run seed, round number, the set of client ids), so a
resumed run samples round 7 exactly as an uninterrupted one did, and the order in which client
ids are listed does not matter (they are sorted first). Three selection schemes:

* "uniform": `cohort_size` distinct clients, uniformly without replacement (the fixed-size
  cohorts of cross-device FedAvg, McMahan et al. 2017). With `over_selection` x the server
  selects ceil(cohort_size * (1 + x)) clients and keeps the first `cohort_size` that report
  (Bonawitz et al. 2019, "Towards Federated Learning at Scale: System Design": the
  server selects 130% of the target count to absorb drop-outs, x = 0.3). "First" is the random
  order of selection, which stands in for the order in which devices finish.
* "poisson": every client independently with probability `rate` (the sampling that DP-FedAvg's
  privacy accounting assumes, McMahan et al. 2018, "Learning Differentially Private Recurrent
  Language Models").
* "shuffle": epochs of `cohort_size`-client rounds without repetition. Each epoch is a seeded
  permutation of all clients cut into consecutive cohorts, floor(clients / cohort_size) rounds
  per epoch (`rounds_per_epoch`); the clients left over at the end of the permutation (clients
  mod cohort_size of them) sit that epoch out, and the next epoch is a fresh permutation. No
  client is selected twice within an epoch, which is what DP-FTRL's tree aggregation needs
  (Kairouz et al. 2021, "Practical and Private (Deep) Learning without Sampling or Shuffling":
  each client at most once per tree; `federated.dp_ftrl`).

A selected client then fails to report (`dropped`) through two independent causes: a per-round
`dropout` probability, the same for everyone, and, optionally, its own availability a_c drawn
once per client from Beta(alpha, beta), so that some devices are rarely charging, idle and on
unmetered Wi-Fi (the eligibility conditions of Bonawitz et al. 2019) and others nearly always.

Seeds: the selection of round r from `derive_seed(seed, "sample", r)` (for "shuffle", epoch e's
permutation from `derive_seed(seed, "shuffle", e)`); client c's drop-out in round r from
(seed, "dropout", r, c); its availability a_c from (seed, "availability", c) and whether it is
available in round r from (seed, "available", r, c). Each draw depends only on its
own names, so adding a config option or a round elsewhere never shifts another draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

from data.record import derive_seed, unit_float

SAMPLING_KINDS = ("uniform", "poisson", "shuffle")


class SamplingError(ValueError):
    """A sampling config or population that cannot be used (the message says which and why)."""


def _number(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SamplingError(f"{name} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SamplingConfig:
    """How each round's clients are chosen and which of them report.

    Attributes:
        kind: "uniform" (fixed-size cohort without replacement), "poisson" (each client
            independently with probability `rate`) or "shuffle" (fixed-size cohorts cut from
            one permutation of the clients per epoch: no client twice in an epoch).
        cohort_size: Clients per round; required for "uniform" and "shuffle", unset for
            "poisson".
        rate: Per-client selection probability in (0, 1]; required for "poisson", unset
            otherwise.
        dropout: Probability in [0, 1] that a selected client fails to report, independently
            per (round, client).
        availability: None, or (alpha, beta) > 0: each client c reports only when available,
            with its own probability a_c ~ Beta(alpha, beta) drawn once per client (mean
            alpha / (alpha + beta)); independent of `dropout`.
        over_selection: "uniform" only: select ceil(cohort_size * (1 + over_selection))
            clients (capped at the population) and keep the first `cohort_size` that report;
            0.3 is Gboard's 130% (Bonawitz et al. 2019).
    """

    kind: str = "uniform"
    cohort_size: int | None = None
    rate: float | None = None
    dropout: float = 0.0
    availability: tuple[float, float] | None = None
    over_selection: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SAMPLING_KINDS:
            raise SamplingError(f"unknown sampling kind {self.kind!r}; known: "
                                f"{', '.join(SAMPLING_KINDS)}")
        if self.kind in ("uniform", "shuffle"):
            c = self.cohort_size
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise SamplingError(f"{self.kind} sampling needs cohort_size, an int >= 1, "
                                    f"got {c!r}")
            if self.rate is not None:
                raise SamplingError(f"rate applies to poisson sampling only ({self.kind} "
                                    "sampling uses cohort_size)")
        else:
            if self.rate is None:
                raise SamplingError("poisson sampling needs rate, a number in (0, 1]")
            rate = _number("rate", self.rate)
            if not 0.0 < rate <= 1.0:
                raise SamplingError(f"rate must be in (0, 1], got {self.rate!r}")
            object.__setattr__(self, "rate", rate)
            if self.cohort_size is not None:
                raise SamplingError("cohort_size applies to uniform sampling only (poisson "
                                    "sampling uses rate)")
        dropout = _number("dropout", self.dropout)
        if not 0.0 <= dropout <= 1.0:
            raise SamplingError(f"dropout must be in [0, 1], got {self.dropout!r}")
        object.__setattr__(self, "dropout", dropout)
        over = _number("over_selection", self.over_selection)
        if over < 0:
            raise SamplingError(f"over_selection must be >= 0, got {self.over_selection!r}")
        if over > 0 and self.kind != "uniform":
            raise SamplingError("over_selection applies to uniform sampling only")
        object.__setattr__(self, "over_selection", over)
        if self.availability is not None:
            a = self.availability
            if not isinstance(a, (list, tuple)) or len(a) != 2:
                raise SamplingError(f"availability must be None or (alpha, beta), got {a!r}")
            ab = (_number("availability alpha", a[0]), _number("availability beta", a[1]))
            if min(ab) <= 0:
                raise SamplingError(f"availability (alpha, beta) must both be > 0, got {a!r}")
            object.__setattr__(self, "availability", ab)

    def to_dict(self) -> dict:
        """The config as JSON-able values."""
        d = asdict(self)
        if self.availability is not None:
            d["availability"] = list(self.availability)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SamplingConfig:
        """The inverse of `to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise SamplingError(f"unknown sampling config field(s): {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("availability"), list):
            d["availability"] = tuple(d["availability"])
        return cls(**d)


@dataclass(frozen=True)
class Cohort:
    """One round's clients. Every tuple is in sorted id order; `sampled` is the disjoint union
    of `reporting`, `dropped` and `not_needed`.

    Attributes:
        round: The round number.
        sampled: The clients selected this round.
        reporting: Those whose update reaches the server.
        dropped: Selected but failed to report (drop-out or unavailable).
        not_needed: Reported, but after the server already had `cohort_size` reports
            (over-selection only).
    """

    round: int
    sampled: tuple[str, ...]
    reporting: tuple[str, ...]
    dropped: tuple[str, ...]
    not_needed: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """The cohort as JSON-able values (for round logs)."""
        return {"round": self.round, "sampled": list(self.sampled),
                "reporting": list(self.reporting), "dropped": list(self.dropped),
                "not_needed": list(self.not_needed)}


def _selection_size(config: SamplingConfig, num_clients: int) -> int:
    """How many clients a uniform round selects (cohort_size, raised by over-selection)."""
    if config.cohort_size > num_clients:
        raise SamplingError(f"cohort_size {config.cohort_size} exceeds the {num_clients} "
                            f"clients available")
    # The small slack keeps a product such as 100 * 1.3 = 130.00000000000003 at 130.
    k = math.ceil(config.cohort_size * (1.0 + config.over_selection) - 1e-9)
    return min(num_clients, max(k, config.cohort_size))


@lru_cache(maxsize=1 << 16)
def client_availability(client_id: str, availability: tuple[float, float], seed: int) -> float:
    """Client `client_id`'s probability a_c of being available in any round.

    Drawn once per (seed, client) from Beta(alpha, beta) = `availability`, so it is the same in
    every round and does not depend on which other clients exist.
    """
    rng = np.random.default_rng(derive_seed(seed, "availability", client_id))
    return float(rng.beta(availability[0], availability[1]))


def _reports(config: SamplingConfig, seed: int, round: int, client_id: str) -> bool:
    """Whether a selected client's update reaches the server this round."""
    if config.dropout > 0 and unit_float(seed, "dropout", round, client_id) < config.dropout:
        return False
    if config.availability is not None:
        a_c = client_availability(client_id, config.availability, seed)
        if unit_float(seed, "available", round, client_id) >= a_c:
            return False
    return True


def rounds_per_epoch(config: SamplingConfig, num_clients: int) -> int:
    """Rounds in one epoch of "shuffle" sampling: floor(num_clients / cohort_size) (the
    remaining num_clients mod cohort_size clients of each epoch's permutation sit it out).

    Raises:
        SamplingError: Another sampling kind, num_clients < 1, or a cohort larger than the
            population.
    """
    if config.kind != "shuffle":
        raise SamplingError(f"only shuffle sampling has epochs, not {config.kind}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise SamplingError(f"num_clients must be an int >= 1, got {num_clients!r}")
    if config.cohort_size > num_clients:
        raise SamplingError(f"cohort_size {config.cohort_size} exceeds the {num_clients} "
                            f"clients available")
    return num_clients // config.cohort_size


def sample_round(client_ids: Sequence[str], config: SamplingConfig, seed: int,
                 round: int) -> Cohort:
    """The cohort of one round.

    Args:
        client_ids: The population (distinct strings, any order).
        config: How to sample.
        seed: The run seed.
        round: The round number (>= 0); each round is sampled on its own.

    Returns:
        The selected clients split into reporting, dropped and not needed.

    Raises:
        SamplingError: An empty population, duplicate or non-string ids, or a cohort larger than
            the population.
    """
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise SamplingError(f"round must be an int >= 0, got {round!r}")
    if not all(isinstance(c, str) for c in client_ids):
        raise SamplingError("client ids must be strings")
    ids = sorted(client_ids)
    if not ids:
        raise SamplingError("no clients to sample from")
    dups = [a for a, b in zip(ids[:-1], ids[1:], strict=True) if a == b]
    if dups:
        raise SamplingError(f"duplicate client id {dups[0]!r}")
    rng = np.random.default_rng(derive_seed(seed, "sample", round))
    n = len(ids)
    if config.kind == "uniform":
        # The selection order stands in for the order in which clients finish.
        order = rng.choice(n, size=_selection_size(config, n), replace=False).tolist()
        wanted = config.cohort_size
    elif config.kind == "shuffle":
        epoch, slot = divmod(round, rounds_per_epoch(config, n))
        k = config.cohort_size
        perm = np.random.default_rng(derive_seed(seed, "shuffle", epoch)).permutation(n)
        order = perm[slot * k:(slot + 1) * k].tolist()
        wanted = k
    else:
        order = np.flatnonzero(rng.random(n) < config.rate).tolist()
        wanted = n
    reporting, dropped, not_needed = [], [], []
    for i in order:
        c = ids[i]
        if not _reports(config, seed, round, c):
            dropped.append(c)
        elif len(reporting) < wanted:
            reporting.append(c)
        else:
            not_needed.append(c)
    return Cohort(round=round, sampled=tuple(sorted(ids[i] for i in order)),
                  reporting=tuple(sorted(reporting)), dropped=tuple(sorted(dropped)),
                  not_needed=tuple(sorted(not_needed)))


def sampling_probability(config: SamplingConfig, num_clients: int) -> float:
    """q for privacy accounting: the probability that a given client is selected in a round.

    "poisson": `rate`. "uniform": (clients selected) / num_clients, which is
    cohort_size / num_clients without over-selection. Fixed-size sampling without replacement
    is then accounted as if it were Poisson with this q, the usual approximation for DP-FedAvg
    (McMahan et al. 2018). "shuffle": cohort_size / num_clients, the chance of being in a given
    round; a shuffled epoch is not Poisson sampling, so this q is no basis for amplification
    (the tree mechanism, which shuffle sampling is for, claims none). Drop-outs and
    availability are not credited: a client can only contribute when selected, so selection
    bounds its inclusion probability whatever happens after.

    Raises:
        SamplingError: num_clients < 1, or a cohort larger than the population.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise SamplingError(f"num_clients must be an int >= 1, got {num_clients!r}")
    if config.kind == "poisson":
        return float(config.rate)
    if config.kind == "shuffle":
        rounds_per_epoch(config, num_clients)  # checks the cohort fits
        return config.cohort_size / num_clients
    return _selection_size(config, num_clients) / num_clients
