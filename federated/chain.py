"""The server-side chain: what happens to client updates between training and the server step.

Each sampled client that reports turns its model delta into a `Contribution` (its delta times
its aggregation weight, and that weight). The contributions pass through an ordered chain of
`Stage`s on their way to the sum and the sum passes back through them in reverse:

    client:  delta -> Contribution -> stage[0].client -> stage[1].client -> ...   (per client)
    sum:     Aggregate = sum of contributions (exact merge: ranks and shards add up)
    server:  ... -> stage[1].server -> stage[0].server -> mean = total / weight

so a stage that encodes on the client (secure-aggregation quantization) decodes first on the
server, and a stage that clips on the client (differential privacy) adds its noise to the
decoded sum. Differential privacy is one more stage, not a branch in the trainer (pfl-research's
postprocessors, Granqvist et al. 2024). A chain of no stages is plain FedAvg aggregation.

Stages are stateless objects: what they carry across rounds (an adaptive clipping norm) is a
JSON-able dict returned by `init_state` and threaded explicitly through `server`, so the server
state checkpoints as plain data. Randomness comes from the generators passed in (one per client
for client steps, one per stage for the server step), derived from (run seed, round, names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

# The sum is kept in float64: contributions of thousands of clients add up without the float32
# rounding that would make the result depend on their order more than it must.
SUM_DTYPE = torch.float64


@dataclass(frozen=True)
class Contribution:
    """One client's update on its way to the sum.

    Attributes:
        vector: 1-D tensor: the client's delta times `weight` (float), or an encoded integer
            vector once a stage (secure aggregation) has encoded it.
        weight: The client's aggregation weight (its number of examples, or 1 for uniform).
        stats: Per-client numbers the stages record, summed over clients (e.g. "dp/clipped":
            1.0 when this update was clipped).
    """

    vector: torch.Tensor
    weight: float
    stats: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """A sum of contributions: `a + b` merges exactly (up to float rounding), so a cohort split
    over ranks or chunks sums to the single-process aggregate.

    Attributes:
        total: Sum of the contributions' vectors (float64; integer-valued when encoded).
        weight: Sum of their weights (a stage may replace it by a fixed denominator).
        count: Number of contributions summed.
        stats: Sum of their stats, key by key.
    """

    total: torch.Tensor
    weight: float
    count: int
    stats: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def zeros(cls, size: int, stat_names: Sequence[str] = ()) -> Aggregate:
        """The empty sum of vectors of `size` elements."""
        return cls(torch.zeros(size, dtype=SUM_DTYPE), 0.0, 0, {k: 0.0 for k in stat_names})

    @classmethod
    def of(cls, c: Contribution) -> Aggregate:
        """The sum of one contribution."""
        return cls(c.vector.to(SUM_DTYPE), float(c.weight), 1, dict(c.stats))

    def __add__(self, other: Aggregate) -> Aggregate:
        if not isinstance(other, Aggregate):
            return NotImplemented
        if self.total.shape != other.total.shape:
            raise ValueError(f"cannot add aggregates of {tuple(self.total.shape)} and "
                             f"{tuple(other.total.shape)} elements")
        stats = dict(self.stats)
        for k, v in other.stats.items():
            stats[k] = stats.get(k, 0.0) + v
        return Aggregate(self.total + other.total, self.weight + other.weight,
                         self.count + other.count, stats)

    def add_(self, c: Contribution) -> Aggregate:
        """Adds one contribution into this aggregate's `total` in place (no copy of the vector);
        returns the aggregate with the scalars updated."""
        self.total.add_(c.vector.to(SUM_DTYPE))
        stats = dict(self.stats)
        for k, v in c.stats.items():
            stats[k] = stats.get(k, 0.0) + v
        return replace(self, weight=self.weight + float(c.weight), count=self.count + 1,
                       stats=stats)

    def pack(self, stat_names: Sequence[str]) -> torch.Tensor:
        """total, weight, count and the named stats as one float64 vector (for one all-reduce).

        Integer-valued totals below 2**53 pack exactly.
        """
        scalars = [self.weight, float(self.count), *(self.stats.get(k, 0.0) for k in stat_names)]
        return torch.cat([self.total.to(SUM_DTYPE), torch.tensor(scalars, dtype=SUM_DTYPE)])

    @classmethod
    def unpack(cls, packed: torch.Tensor, stat_names: Sequence[str]) -> Aggregate:
        """Inverse of `pack`."""
        n = len(stat_names)
        total, scalars = packed[: -(n + 2)], packed[-(n + 2):].tolist()
        return cls(total.clone(), scalars[0], int(round(scalars[1])),
                   dict(zip(stat_names, scalars[2:], strict=True)))


class Stage(Protocol):
    """One step of the server-side chain.

    Attributes:
        name: Short unique name; prefixes the stage's stats and metrics ("dp/clipped").
        stat_names: The per-client stats `client` records (summed in the aggregate).
    """

    name: str
    stat_names: tuple[str, ...]

    def init_state(self) -> dict:
        """The stage's state before the first round (JSON-able: numbers, strings, lists)."""
        ...

    def client(self, c: Contribution, state: Mapping, generator: torch.Generator) -> Contribution:
        """Processes one client's contribution (clip, encode); must not change `state`."""
        ...

    def server(self, agg: Aggregate, state: Mapping,
               generator: torch.Generator) -> tuple[Aggregate, dict, dict[str, float]]:
        """Processes the sum (decode, add noise); returns (aggregate, new state, metrics)."""
        ...


def stat_names(stages: Sequence[Stage]) -> list[str]:
    """Every stat the chain's stages record, in chain order."""
    return [k for s in stages for k in s.stat_names]


def run_client(stages: Sequence[Stage], c: Contribution, states: Sequence[Mapping],
               generators: Sequence[torch.Generator]) -> Contribution:
    """One client's contribution through every stage's `client` step, in chain order."""
    for stage, state, g in zip(stages, states, generators, strict=True):
        c = stage.client(c, state, g)
    return c


def run_server(stages: Sequence[Stage], agg: Aggregate, states: Sequence[Mapping],
               generators: Sequence[torch.Generator]
               ) -> tuple[torch.Tensor, list[dict], dict[str, float]]:
    """The sum through every stage's `server` step in reverse order, then its weighted mean.

    Returns:
        (mean update as float32, the stages' new states in chain order, their metrics). The
        mean is zero when nothing was aggregated (every sampled client dropped out).
    """
    new_states = list(states)
    metrics: dict[str, float] = {}
    for i in reversed(range(len(stages))):
        agg, new_states[i], m = stages[i].server(agg, states[i], generators[i])
        metrics.update(m)
    if agg.weight > 0:
        mean = (agg.total / agg.weight).to(torch.float32)
    else:
        mean = torch.zeros_like(agg.total, dtype=torch.float32)
    return mean, new_states, metrics
