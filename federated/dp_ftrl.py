"""DP-FTRL: the Gaussian noise of each round drawn from a binary tree, as one stage of the
server-side chain.

DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, "Practical and Private (Deep)
Learning without Sampling or Shuffling", ICML) privatises the running sum of the clipped client
updates instead of each round's sum. Round t's clipped sum is leaf t of a binary tree; each node
of the tree (a dyadic block of rounds) gets its own Gaussian noise of standard deviation z * C,
and the released prefix sum over rounds [0, t) is the exact sum plus the noise of the nodes that
cover [0, t): one node per set bit of t (`prefix_nodes`). A client that takes part in at most one
round of a tree touches at most ceil(log2(n + 1)) nodes of a tree of n rounds, which is what the
privacy accounting charges (Kairouz et al. 2021, Appendix D; `federated.accounting`). No
amplification by sampling is claimed, which is why the method fits cross-device training, where
the server cannot sample clients the way Poisson accounting assumes; it is how Gboard's
production language models are trained (Xu et al. 2023, "Federated Learning of Gboard Language
Models with Differential Privacy", ACL Industry).

The chain works round by round, so the stage adds to round t's sum the difference of two
consecutive noisy prefixes, prefix_noise(t + 1) - prefix_noise(t) (`round_noise`): the noise of
the node that completes at leaf t minus the lower nodes it replaces. Summed over the rounds of a
tree these differences are the tree's prefix noise, so with the server optimizer "sgd" (lr eta,
no momentum) the model after t rounds is

    theta_t = theta_0 + eta * (sum of the clipped sums of rounds 0..t-1 + prefix_noise(t)) / m

(m = `expected_clients`, the fixed denominator; the server adds client deltas, so the sign is +):
DP-FTRL of Kairouz et al. 2021 with the update started at theta_0. With server momentum
(FedAvgM) the momentum runs over these differences of the noisy prefix sums, which is their
momentum variant, DP-FTRLM (Kairouz et al. 2021). Adaptive server optimizers
(FedAdam, ...) are allowed but are then a post-processing of the same noisy differences, not the
paper's algorithm.

Restarts: every `restart_rounds` rounds a new tree begins, its prefix from zero; the old tree's
prefix noise is not taken back, so it stays in the model, and training goes on from where the
old tree left it (Kairouz et al. 2021 restart the tree for each new pass over the data). The
accounting composes one event per epoch, each holding that epoch's trees, every client at most
once per epoch (`federated.accounting.tree_dp_event`).

The noise is never stored: node (level, index) of tree k gets its standard normals from a
generator seeded by derive_seed(noise seed, "tree", k, level, index), so it can be drawn again
whenever a later round needs it, and the stage's state is two integers (which tree, which round
of it): JSON-able, checkpointed with the server state, and a resumed run adds the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from data.record import derive_seed
from federated.chain import SUM_DTYPE, Aggregate, Contribution
from federated.dp import DPError, check_stage_settings, clip_contribution

# A tree node as (level, index): it covers rounds [index * 2^level, (index + 1) * 2^level).
Node = tuple[int, int]


def _check_round(name: str, t: object) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise DPError(f"{name} must be an int >= 0, got {t!r}")
    return t


def prefix_nodes(t: int) -> tuple[Node, ...]:
    """The tree nodes whose blocks of rounds partition [0, t): one node per set bit of t,
    highest level first (the dyadic decomposition of Dwork, Naor, Pitassi, Rothblum 2010 and
    Chan, Shi, Song 2011, the tree aggregation DP-FTRL uses).

    For example t = 7 = 0b111 is covered by (2, 0) = [0, 4), (1, 2) = [4, 6) and (0, 6) = [6, 7).
    """
    t = _check_round("t", t)
    nodes, start = [], 0
    for level in reversed(range(t.bit_length())):
        if t >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return tuple(nodes)


def step_nodes(t: int) -> tuple[Node, tuple[Node, ...]]:
    """What changes between the covers of [0, t) and [0, t + 1): (the node added, the nodes
    removed). Adding 1 to t clears its k trailing one-bits and sets bit k, so the node of level
    k that ends at round t replaces the k lowest nodes of t's cover (all of them inside it)."""
    t = _check_round("t", t)
    k = (t ^ (t + 1)).bit_length() - 1  # the number of trailing ones of t
    removed = prefix_nodes(t)[len(prefix_nodes(t)) - k:] if k else ()
    return (k, t >> k), removed


def tree_depth(rounds: int) -> int:
    """How many nodes of a tree of `rounds` rounds one round's leaf lies under, at most:
    ceil(log2(rounds + 1)), the squared sensitivity of the released nodes in units of C^2
    (Kairouz et al. 2021, Appendix D; what dp-accounting's tree event charges)."""
    rounds = _check_round("rounds", rounds)
    return rounds.bit_length()  # = ceil(log2(rounds + 1)) for integers


def node_noise(seed: int, tree: int, node: Node, size: int, std: float) -> torch.Tensor:
    """Node `node` of tree `tree`'s noise: `size` draws of N(0, std^2) in float64, a pure
    function of (seed, tree, level, index)."""
    level, index = node
    g = torch.Generator().manual_seed(derive_seed(seed, "tree", tree, level, index))
    return torch.randn(size, generator=g, dtype=SUM_DTYPE).mul_(std)


def prefix_noise(seed: int, tree: int, t: int, size: int, std: float) -> torch.Tensor:
    """The noise on tree `tree`'s released prefix sum of rounds [0, t): the sum of its covering
    nodes' noise (zeros for t = 0)."""
    total = torch.zeros(size, dtype=SUM_DTYPE)
    for node in prefix_nodes(t):
        total += node_noise(seed, tree, node, size, std)
    return total


def round_noise(seed: int, tree: int, t: int, size: int, std: float) -> torch.Tensor:
    """The noise added to round t of tree `tree`: prefix_noise(t + 1) - prefix_noise(t), drawn
    as (the added node's noise) - (the removed nodes' noise) (`step_nodes`). Each coordinate has
    standard deviation std * sqrt(1 + number of removed nodes)."""
    added, removed = step_nodes(t)
    noise = node_noise(seed, tree, added, size, std)
    for node in removed:
        noise -= node_noise(seed, tree, node, size, std)
    return noise


@dataclass(frozen=True, kw_only=True)
class TreeDP:
    """DP-FTRL's clipping and tree-aggregated Gaussian noise as a `federated.chain.Stage`.

    On each client: clip the update to the fixed norm C (as `federated.dp.GaussianDP` does, with
    the same stats). On the server: add `round_noise` of this round's position in the current
    tree (node noise std z * C), replace the aggregate's weight by `expected_clients`, and move
    to the next round, starting a new tree after `restart_rounds` rounds.

    The guarantee assumes every client contributes at most once per tree (per epoch of trees
    when several share an epoch): pair the stage with sampling that ensures it
    (`federated.sampling`'s "shuffle"), which `federated.config` requires.

    Attributes:
        noise_multiplier: z, each tree node's noise std over C; what the accountant is given
            (with the tree sizes). 0 turns the noise off (clipping only, no privacy).
        expected_clients: The fixed denominator of the mean (the cohort size).
        noise_seed: Seeds every node's noise (`node_noise`); derive it from the run seed.
        clip_norm: The fixed clipping norm C. Adaptive clipping is not supported here: its
            noisy count of unclipped updates would have to be released and accounted together
            with the tree's noise (Xu et al. 2023 combine the two), which this stage does not
            do.
        restart_rounds: Rounds per tree; None never restarts.
        name: The stage's name; prefixes its stats and metrics.
    """

    noise_multiplier: float
    expected_clients: float
    noise_seed: int
    clip_norm: float = 1.0
    restart_rounds: int | None = None
    name: str = "dp"

    def __post_init__(self) -> None:
        check_stage_settings(self)
        s = self.noise_seed
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise DPError(f"noise_seed must be an int >= 0, got {s!r}")
        r = self.restart_rounds
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise DPError(f"restart_rounds must be None or an int >= 1, got {r!r}")

    @property
    def stat_names(self) -> tuple[str, ...]:
        """Per-client stats, as `GaussianDP`'s: the bit 1[norm <= C] and the norm before
        clipping."""
        return (f"{self.name}/unclipped", f"{self.name}/norm")

    def init_state(self) -> dict:
        """Tree 0, round 0 of it."""
        return {"tree": 0, "position": 0}

    def _position(self, state: Mapping) -> tuple[int, int]:
        tree, pos = state.get("tree"), state.get("position")
        for name, v in (("tree", tree), ("position", pos)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DPError(f"tree DP state: {name} must be an int >= 0, got {v!r}")
        if self.restart_rounds is not None and pos >= self.restart_rounds:
            raise DPError(f"tree DP state: position {pos} is past the tree's "
                          f"{self.restart_rounds} rounds (restart_rounds)")
        return tree, pos

    def client(self, c: Contribution, state: Mapping, generator: torch.Generator) -> Contribution:
        """Clips one client's update to C and records its bit and norm.

        Raises:
            DPError: If the contribution's weight is not 1 (the tree's sensitivity is C per
                client) or the update has a non-finite entry.
        """
        return clip_contribution(c, float(self.clip_norm), self.name)

    def server(self, agg: Aggregate, state: Mapping,
               generator: torch.Generator) -> tuple[Aggregate, dict, dict[str, float]]:
        """Adds this round's tree noise to the sum, sets the fixed denominator and moves to the
        next round of the tree (or the first of the next tree).

        `generator` is not drawn from: the noise is a function of (noise_seed, tree, node), so a
        later round can draw a node's noise again. The aggregate passed in is not changed.

        Returns:
            (the noised aggregate with weight `expected_clients`, the next {"tree",
            "position"}, metrics: "<name>/clip_norm", "<name>/noise_std" (of this round's added
            noise, z C sqrt(1 + nodes removed)), "<name>/clipped_fraction" and
            "<name>/mean_norm" (exact, over the clients that reported; 0 when none did),
            "<name>/tree" and "<name>/tree_round" (this round's place)).
        """
        tree, pos = self._position(state)
        clip = float(self.clip_norm)
        node_std = float(self.noise_multiplier) * clip
        total = agg.total
        _, removed = step_nodes(pos)
        if node_std > 0:
            noise = round_noise(self.noise_seed, tree, pos, total.numel(), node_std)
            total = total.to(SUM_DTYPE) + noise.reshape(total.shape)
        out = replace(agg, total=total, weight=float(self.expected_clients))

        unclipped = float(agg.stats.get(f"{self.name}/unclipped", 0.0))
        n = agg.count
        metrics = {
            f"{self.name}/clip_norm": clip,
            f"{self.name}/noise_std": node_std * math.sqrt(1 + len(removed)),
            f"{self.name}/clipped_fraction": (n - unclipped) / n if n else 0.0,
            f"{self.name}/mean_norm": (float(agg.stats.get(f"{self.name}/norm", 0.0)) / n
                                       if n else 0.0),
            f"{self.name}/tree": float(tree),
            f"{self.name}/tree_round": float(pos),
        }
        pos += 1
        if self.restart_rounds is not None and pos == self.restart_rounds:
            tree, pos = tree + 1, 0
        return out, {"tree": tree, "position": pos}, metrics
