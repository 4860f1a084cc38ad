"""Secure aggregation's semantics: fixed-point updates summed modulo 2^k.

With secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS) the server learns only the sum of the clients' vectors,
and that sum is computed over integers modulo 2^k (the clients' pairwise masks cancel only in
modular arithmetic). Real updates must therefore be quantized to fixed point first, and whatever
does not fit is lost: coordinates beyond the range are clamped, the rest are rounded to one of
2^bits levels, and a sum that reaches 2^k wraps around. This stage simulates exactly that, so
users see what the quantization does to accuracy; the masking itself is omitted, since the masks
cancel and change nothing the server sees.

Encoding one coordinate x, with bound B and L = 2^bits - 1 levels above zero:

    x' = clamp(x, -B, B);  u = (x' + B) * L / (2B) in [0, L];  q = floor(u) + 1[r < u - floor(u)]

with r uniform in [0, 1): stochastic rounding, unbiased (E[q] = u), so the decoded mean has no
quantization bias, only variance. The sum of n encoded vectors is reduced modulo 2^k and decoded
as S * 2B / L - n * B. When n * L >= 2^k the sum can wrap and the decoded sum is then wrong; the
stage reports that as the metric "<name>/may_wrap" rather than fixing it, since a deployment
would get the same wrong sum.

The aggregate's total is kept in float64 (`federated.chain.SUM_DTYPE`), where integers are exact
below 2^53: `modulus_bits` is at most 52, and with it a sum that stays below 2^k is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from federated.chain import SUM_DTYPE, Aggregate, Contribution

# float64 holds every integer below 2^53 exactly; the modular sum must stay in that range.
MAX_MODULUS_BITS = 52


class SecAggError(ValueError):
    """A secure-aggregation setting or input that cannot be used; the message says why."""


def quantization_step(bound: float, bits: int) -> float:
    """The width of one quantization level: 2 * bound / (2^bits - 1)."""
    return 2.0 * bound / (2 ** bits - 1)


def encode(vector: torch.Tensor, bound: float, bits: int,
           generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Clamps a vector to [-bound, bound] and stochastically rounds it to integers in
    [0, 2^bits - 1] (the fixed-point encoding secure aggregation sums).

    Draws one uniform float64 from `generator` per coordinate, in order.

    Args:
        vector: A 1-D float tensor (a client's weighted delta).
        bound: B > 0, the largest magnitude kept per coordinate.
        bits: The number of bits per coordinate.
        generator: The client's generator for the rounding.

    Returns:
        (the integer codes as a float64 tensor, the number of coordinates that were clamped).

    Raises:
        SecAggError: If the vector has a non-finite entry.
    """
    x = vector.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise SecAggError("cannot encode an update with a non-finite entry (inf or nan)")
    clamped = int((x.abs() > bound).sum())
    levels = 2 ** bits - 1
    u = (x.clamp(-bound, bound) + bound).mul_(levels / (2.0 * bound)).clamp_(0.0, levels)
    low = u.floor()
    r = torch.rand(u.shape, generator=generator, dtype=torch.float64)
    return low.add_((r < u.sub_(low)).to(torch.float64)), clamped


def modular_sum(total: torch.Tensor, modulus_bits: int) -> torch.Tensor:
    """An integer-valued sum reduced modulo 2^modulus_bits (what secure aggregation reveals).

    Exact for integer values whose magnitude is below 2^53 (float64).
    """
    return torch.remainder(total.to(SUM_DTYPE), float(2 ** modulus_bits))


def decode(total: torch.Tensor, count: int, bound: float, bits: int) -> torch.Tensor:
    """The float sum of `count` encoded vectors from the sum of their codes: each code q stands
    for q * step - bound, so the sum is total * step - count * bound (float64)."""
    return total.to(SUM_DTYPE) * quantization_step(bound, bits) - count * bound


def max_clients(bits: int, modulus_bits: int) -> int:
    """The most vectors whose codes can be summed modulo 2^modulus_bits without wrapping:
    floor((2^modulus_bits - 1) / (2^bits - 1))."""
    return (2 ** modulus_bits - 1) // (2 ** bits - 1)


@dataclass(frozen=True)
class SecAgg:
    """Secure aggregation's quantization and modular sum as a `federated.chain.Stage`.

    On each client: clamp, scale and stochastically round the contribution's vector to integer
    codes (its weight is left as it is). On the server: reduce the sum of codes modulo
    2^modulus_bits and decode it back to a float sum (weight and count unchanged).

    Attributes:
        bound: B, each coordinate of a (weighted) contribution is clamped to [-B, B]; clamped
            coordinates are counted in the stat "<name>/clamped".
        bits: Bits per coordinate: 2^bits levels, 2^bits - 1 steps over [-B, B] (16 by default,
            a common fixed-point width; it is a simulation knob, not a published constant).
        modulus_bits: k, the sum is taken modulo 2^k (32 by default, the word size of the
            modular arithmetic; at most 52 so that float64 sums stay exact). It must leave room
            for the number of clients summed: see `max_clients`.
        name: The stage's name; prefixes its stats and metrics.
    """

    bound: float
    bits: int = 16
    modulus_bits: int = 32
    name: str = "secagg"

    def __post_init__(self) -> None:
        if not (isinstance(self.bound, int | float) and math.isfinite(self.bound)
                and self.bound > 0):
            raise SecAggError(f"bound must be finite and > 0, got {self.bound}")
        for field_name in ("bits", "modulus_bits"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SecAggError(f"{field_name} must be an int, got {value!r}")
        if not 1 <= self.bits <= self.modulus_bits:
            raise SecAggError(f"bits must be in [1, modulus_bits={self.modulus_bits}], got "
                              f"{self.bits}")
        if self.modulus_bits > MAX_MODULUS_BITS:
            raise SecAggError(f"modulus_bits must be <= {MAX_MODULUS_BITS} (float64 sums are "
                              f"exact only below 2^53), got {self.modulus_bits}")
        if not self.name or "/" in self.name:
            raise SecAggError(f"name must be non-empty and without '/', got {self.name!r}")

    @property
    def stat_names(self) -> tuple[str, ...]:
        """Per-client stats: "clamped" counts coordinates clamped to [-bound, bound]."""
        return (f"{self.name}/clamped",)

    @property
    def step(self) -> float:
        """The quantization step 2 * bound / (2^bits - 1): each client's decoded coordinate is
        within one step of its clamped value."""
        return quantization_step(self.bound, self.bits)

    def init_state(self) -> dict:
        """No state across rounds."""
        return {}

    def client(self, c: Contribution, state: Mapping, generator: torch.Generator) -> Contribution:
        """Encodes one contribution's vector to integer codes (float64); records the number of
        clamped coordinates. Draws one uniform per coordinate from `generator`."""
        codes, clamped = encode(c.vector, self.bound, self.bits, generator)
        stats = dict(c.stats)
        stats[f"{self.name}/clamped"] = float(clamped)
        return replace(c, vector=codes, stats=stats)

    def server(self, agg: Aggregate, state: Mapping,
               generator: torch.Generator) -> tuple[Aggregate, dict, dict[str, float]]:
        """Reduces the sum of codes modulo 2^modulus_bits and decodes it (no randomness).

        Returns:
            (the decoded aggregate, {}, metrics: "<name>/may_wrap" (1 when count * (2^bits - 1)
            >= 2^modulus_bits, i.e. the decoded sum may be wrong), "<name>/clamped_fraction" (of
            all coordinates summed), "<name>/step" (the quantization step)).
        """
        total = decode(modular_sum(agg.total, self.modulus_bits), agg.count, self.bound,
                       self.bits)
        coords = agg.count * agg.total.numel()
        clamped = float(agg.stats.get(f"{self.name}/clamped", 0.0))
        metrics = {
            f"{self.name}/may_wrap": float(agg.count > max_clients(self.bits, self.modulus_bits)),
            f"{self.name}/clamped_fraction": clamped / coords if coords else 0.0,
            f"{self.name}/step": self.step,
        }
        return replace(agg, total=total), {}, metrics
