"""DP-FedAvg's Gaussian mechanism as one stage of the server-side chain, with fixed or adaptive
clipping.

Each client's update is clipped to L2 norm C on its way to the sum, so adding or removing one
client moves the sum by at most C; the server adds Gaussian noise of standard deviation z * C to
the sum and divides it by a fixed denominator, the expected number of clients, rather than by the
number that reported (which would itself reveal who took part). This is the Gaussian mechanism of
DP-FedAvg (McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent
Language Models", ICLR, Algorithm 1 with the fixed-denominator estimator f~_f).

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
with Adaptive Clipping", NeurIPS) replaces the hand-tuned C by an online estimate of the
gamma-quantile of the update norms. Each client also reports one bit, b = 1[norm <= C]; the
server releases the noisy fraction of unclipped updates and moves C geometrically:

    b~ = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2        (m = expected clients)
    C  <- C * exp(-eta_C * (b~ - gamma))

The bits are centred at 1/2 before the noise (the server knows m, so it adds the 1/2 back), which
halves their sensitivity to adding or removing one client: the bit query then has noise
multiplier 2 * sigma_b. Releasing both queries in a round is one Gaussian mechanism of overall
multiplier z with z^-2 = z_delta^-2 + (2 sigma_b)^-2 (Andrew et al. 2021, Sec. 3), so the update
noise is raised to z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) to keep the privacy of z.

Which multiplier the accountant takes: always `GaussianDP.noise_multiplier` (the overall z),
with the sampling rate of the cohort, once per round; `update_noise_multiplier` is only what the
update noise uses.

The exact clipped fraction and mean norm this stage reports as metrics are simulation
diagnostics, not private releases; only the noisy sum and, when adaptive, the noisy fraction are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from federated.chain import SUM_DTYPE, Aggregate, Contribution

# Andrew et al. 2021 (Sec. 3 and their experiments) recommend sigma_b = m / 20 for the noise on
# the count of unclipped updates, m the expected number of clients per round; TensorFlow
# Federated's and Flower's adaptive-clipping defaults use the same 0.05 * m.
DEFAULT_COUNT_NOISE_FRACTION = 1.0 / 20.0


class DPError(ValueError):
    """A differential-privacy setting or input that cannot be used; the message says why."""


def clip_by_norm(vector: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, float]:
    """Scales `vector` down to L2 norm `max_norm` when it is longer (DP-FedAvg's per-client
    clipping, McMahan et al. 2018, Algorithm 1).

    The norm is computed in float64 so that a long float32 vector's norm is not the clipping's
    weak point; the clipped vector keeps the input's dtype, so its norm is at most `max_norm` up
    to that dtype's rounding (a relative 1e-6 for float32).

    Args:
        vector: A 1-D float tensor (a client's model delta).
        max_norm: The clipping norm C, > 0 (may be inf: no clipping).

    Returns:
        (the clipped vector, the norm before clipping). A vector already within `max_norm` is
        returned as is (the same tensor, not a copy).

    Raises:
        DPError: If `max_norm` is not positive or the vector has a non-finite entry (its norm,
            and so its contribution, could not be bounded).
    """
    if not max_norm > 0:
        raise DPError(f"the clipping norm must be > 0, got {max_norm}")
    norm = float(torch.linalg.vector_norm(vector, dtype=torch.float64))
    if not math.isfinite(norm):
        raise DPError("cannot clip an update with a non-finite entry (inf or nan)")
    if norm <= max_norm:
        return vector, norm
    return vector * (max_norm / norm), norm


def clip_contribution(c: Contribution, clip: float, name: str) -> Contribution:
    """One client's contribution clipped to norm `clip`, with the stats the DP stages record:
    "<name>/unclipped" (the bit 1[norm <= clip]) and "<name>/norm" (the norm before clipping).

    Raises:
        DPError: If the contribution's weight is not 1: DP-FedAvg bounds every client's
            contribution by C, which a weight (an example count) would scale (TensorFlow
            Federated's DP aggregators likewise require unweighted aggregation); or if the
            update has a non-finite entry.
    """
    if c.weight != 1:
        raise DPError(f"differential privacy needs uniform client weights (weight 1), got "
                      f"{c.weight}: one client's contribution must be bounded by the clip "
                      "norm alone")
    vector, norm = clip_by_norm(c.vector, clip)
    stats = dict(c.stats)
    stats[f"{name}/unclipped"] = 1.0 if norm <= clip else 0.0
    stats[f"{name}/norm"] = norm
    return replace(c, vector=vector, stats=stats)


def effective_noise_multiplier(update_noise_multiplier: float, count_noise_std: float) -> float:
    """The overall noise multiplier z of one adaptive-clipping round: noise multiplier
    `update_noise_multiplier` on the clipped updates and noise of standard deviation
    `count_noise_std` on the centred bits, z = (z_delta^-2 + (2 sigma_b)^-2)^(-1/2) (Andrew et al.
    2021, Sec. 3). This z is what a privacy accountant must be given.

    Zero noise on either query means no privacy: the result is 0.
    """
    if update_noise_multiplier < 0 or count_noise_std < 0:
        raise DPError("noise multipliers and standard deviations must be >= 0, got "
                      f"{update_noise_multiplier} and {count_noise_std}")
    if update_noise_multiplier == 0 or count_noise_std == 0:
        return 0.0
    return (update_noise_multiplier ** -2 + (2.0 * count_noise_std) ** -2) ** -0.5


def adaptive_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """The noise multiplier z_delta the clipped updates need when adaptive clipping also releases
    a noisy count, so that the round as a whole has multiplier `noise_multiplier` (z):
    z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) (Andrew et al. 2021, Sec. 3; the inverse of
    `effective_noise_multiplier`).

    Args:
        noise_multiplier: The overall z the privacy accountant is given; 0 means no privacy is
            claimed, and then the updates get no noise (returns 0).
        count_noise_std: sigma_b, the standard deviation of the noise on the sum of centred bits.

    Raises:
        DPError: If sigma_b <= z / 2: the count alone would then spend the whole budget and no
            update noise could make up the difference.
    """
    if noise_multiplier < 0 or count_noise_std < 0:
        raise DPError("noise multipliers and standard deviations must be >= 0, got "
                      f"{noise_multiplier} and {count_noise_std}")
    if noise_multiplier == 0:
        return 0.0
    if 2.0 * count_noise_std <= noise_multiplier:
        raise DPError(
            f"count noise std {count_noise_std} is too small for noise multiplier "
            f"{noise_multiplier}: adaptive clipping needs 2 * sigma_b > z (Andrew et al. 2021 "
            "recommend sigma_b = expected_clients / 20)")
    return (noise_multiplier ** -2 - (2.0 * count_noise_std) ** -2) ** -0.5


def check_stage_settings(stage) -> None:
    """The settings every DP stage has: noise_multiplier >= 0, expected_clients > 0 and
    clip_norm > 0 (all finite), and a name for its stats; raises `DPError`."""
    if not (math.isfinite(stage.noise_multiplier) and stage.noise_multiplier >= 0):
        raise DPError(f"noise_multiplier must be finite and >= 0, got {stage.noise_multiplier}")
    if not (math.isfinite(stage.expected_clients) and stage.expected_clients > 0):
        raise DPError(f"expected_clients must be > 0, got {stage.expected_clients}")
    if not (math.isfinite(stage.clip_norm) and stage.clip_norm > 0):
        raise DPError(f"clip_norm must be finite and > 0, got {stage.clip_norm}")
    if not stage.name or "/" in stage.name:
        raise DPError(f"name must be non-empty and without '/', got {stage.name!r}")


@dataclass(frozen=True, kw_only=True)
class GaussianDP:
    """DP-FedAvg's clipping and Gaussian noise as a `federated.chain.Stage`.

    On each client: clip the update to the current clipping norm C and record whether it was
    within C. On the server: add N(0, (z_delta C)^2) to every coordinate of the sum, replace the
    aggregate's weight by `expected_clients` (the fixed denominator), and, when adaptive, move C
    toward the `target_quantile` of the update norms.

    Attributes:
        noise_multiplier: The overall z, the one the privacy accountant is given. With fixed
            clipping the sum gets noise of standard deviation z * C; with adaptive clipping the
            update noise is raised to `update_noise_multiplier` so the round keeps privacy z.
            0 turns the update noise off (clipping only, no privacy); the count's noise is set
            apart by `count_noise_std`.
        expected_clients: The fixed denominator of the mean: q * N under Poisson sampling of N
            clients at rate q, the cohort size under uniform sampling (McMahan et al. 2018).
        clip_norm: The fixed clipping norm C, or the initial one when adaptive (Andrew et al.
            2021 start from 0.1 and let it adapt).
        target_quantile: gamma, the fraction of updates meant to stay unclipped (e.g. 0.5, Andrew
            et al.'s default); None keeps C fixed.
        clip_learning_rate: eta_C of the geometric update (0.2, Andrew et al. 2021's default).
        count_noise_std: sigma_b, the noise on the sum of centred bits; None means
            expected_clients / 20 (Andrew et al. 2021's recommendation).
        name: The stage's name; prefixes its stats and metrics.
    """

    noise_multiplier: float
    expected_clients: float
    clip_norm: float = 1.0
    target_quantile: float | None = None
    clip_learning_rate: float = 0.2
    count_noise_std: float | None = None
    name: str = "dp"

    def __post_init__(self) -> None:
        check_stage_settings(self)
        if self.target_quantile is not None and not 0 < self.target_quantile < 1:
            raise DPError(f"target_quantile must be in (0, 1), got {self.target_quantile}")
        if not (math.isfinite(self.clip_learning_rate) and self.clip_learning_rate > 0):
            raise DPError(f"clip_learning_rate must be > 0, got {self.clip_learning_rate}")
        if self.count_noise_std is not None and not (
                math.isfinite(self.count_noise_std) and self.count_noise_std >= 0):
            raise DPError(f"count_noise_std must be finite and >= 0, got {self.count_noise_std}")
        if self.adaptive:
            # Fails here, at configuration time, when sigma_b is too small for z.
            adaptive_noise_multiplier(self.noise_multiplier, self.bits_noise_std)

    @property
    def adaptive(self) -> bool:
        """Whether the clipping norm adapts (a target quantile is set)."""
        return self.target_quantile is not None

    @property
    def bits_noise_std(self) -> float:
        """sigma_b in use: `count_noise_std`, or expected_clients / 20 when unset."""
        if self.count_noise_std is not None:
            return float(self.count_noise_std)
        return DEFAULT_COUNT_NOISE_FRACTION * self.expected_clients

    @property
    def update_noise_multiplier(self) -> float:
        """The multiplier of the noise on the sum of updates: z with fixed clipping, z_delta
        (`adaptive_noise_multiplier`) with adaptive clipping. Not the accountant's input."""
        if not self.adaptive:
            return float(self.noise_multiplier)
        return adaptive_noise_multiplier(self.noise_multiplier, self.bits_noise_std)

    @property
    def stat_names(self) -> tuple[str, ...]:
        """Per-client stats: "unclipped" is the bit b = 1[norm <= C]; "norm" is the norm before
        clipping (for the mean-norm metric)."""
        return (f"{self.name}/unclipped", f"{self.name}/norm")

    def init_state(self) -> dict:
        """The clipping norm of the first round."""
        return {"clip_norm": float(self.clip_norm)}

    def client(self, c: Contribution, state: Mapping, generator: torch.Generator) -> Contribution:
        """Clips one client's update to the round's clipping norm and records its bit and norm.

        Raises:
            DPError: If the contribution's weight is not 1: DP-FedAvg bounds every client's
                contribution by C, which a weight (an example count) would scale (TensorFlow
                Federated's DP aggregators likewise require unweighted aggregation); or if the
                update has a non-finite entry.
        """
        return clip_contribution(c, float(state["clip_norm"]), self.name)

    def server(self, agg: Aggregate, state: Mapping,
               generator: torch.Generator) -> tuple[Aggregate, dict, dict[str, float]]:
        """Adds the Gaussian noise to the sum, sets the fixed denominator and, when adaptive,
        computes next round's clipping norm.

        Draws from `generator` in a fixed order: one standard normal per coordinate of the sum
        (float64; none when the update noise is 0), then, when adaptive, one for the count (none
        when sigma_b is 0). The aggregate passed in is not changed.

        Returns:
            (the noised aggregate with weight `expected_clients`, {"clip_norm": next C}, metrics:
            "<name>/clip_norm" (this round's C), "<name>/noise_std" (of the noise on the sum),
            "<name>/clipped_fraction" and "<name>/mean_norm" (exact, over the clients that
            reported; 0 when none did), and when adaptive "<name>/unclipped_fraction_noisy" (the
            released b~) and "<name>/next_clip_norm").
        """
        clip = float(state["clip_norm"])
        noise_std = self.update_noise_multiplier * clip
        total = agg.total
        if noise_std > 0:
            noise = torch.randn(total.shape, generator=generator, dtype=SUM_DTYPE)
            total = total.to(SUM_DTYPE) + noise.mul_(noise_std)
        out = replace(agg, total=total, weight=float(self.expected_clients))

        unclipped = float(agg.stats.get(f"{self.name}/unclipped", 0.0))
        n = agg.count
        metrics = {
            f"{self.name}/clip_norm": clip,
            f"{self.name}/noise_std": noise_std,
            f"{self.name}/clipped_fraction": (n - unclipped) / n if n else 0.0,
            f"{self.name}/mean_norm": (float(agg.stats.get(f"{self.name}/norm", 0.0)) / n
                                       if n else 0.0),
        }
        new_clip = clip
        if self.adaptive:
            sigma_b = self.bits_noise_std
            centred = unclipped - 0.5 * n
            if sigma_b > 0:
                centred += sigma_b * float(torch.randn((), generator=generator,
                                                       dtype=SUM_DTYPE))
            fraction = centred / self.expected_clients + 0.5
            new_clip = clip * math.exp(-self.clip_learning_rate
                                       * (fraction - float(self.target_quantile)))
            metrics[f"{self.name}/unclipped_fraction_noisy"] = fraction
            metrics[f"{self.name}/next_clip_norm"] = new_clip
        return out, {"clip_norm": new_clip}, metrics
