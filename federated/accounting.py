"""Privacy accounting for DP-FedAvg: the (epsilon, delta) spent by rounds of noisy aggregation.

Each round of DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent
Language Models") samples clients, clips each client's update to norm S and adds Gaussian noise
of standard deviation z * S to the sum, z being the noise multiplier. One round is therefore a
Gaussian mechanism of noise multiplier z applied to a Poisson sample of the clients with
probability q, and a run is that event composed over its rounds. The privacy unit is the client
(user-level differential privacy), with the add-or-remove-one neighbouring relation that
Poisson subsampling amplification is stated for.

Fixed-size cohorts drawn without replacement (`federated.sampling`'s "uniform" kind) are
accounted as if Poisson with q = selected / population: the approximation DP-FedAvg uses and
that the issue allows. It is not a proof for fixed-size sampling; use Poisson sampling where the
guarantee must hold exactly.

The numbers come from Google's `dp_accounting` package: the Renyi-DP accountant ("rdp",
Mironov 2017; Mironov, Talwar and Zhang 2019 for the subsampled Gaussian) or the privacy-loss
distribution accountant ("pld", Koskela et al. 2020 / Doroshenko et al. 2022), which is tighter
and slower. `dp_accounting` is imported only when a number is computed, so a `PrivacyLedger` can
be built, saved and read back without it.

DP-FTRL's tree aggregation (`federated.dp_ftrl`; Kairouz et al. 2021, "Practical and Private
(Deep) Learning without Sampling or Shuffling") is accounted with dp-accounting's
`SingleEpochTreeAggregationDpEvent(z, step_counts)`: the trees (their rounds, `step_counts`) of
one epoch in which every client contributes at most once, charged as one Gaussian mechanism of
squared sensitivity ceil(log2(largest tree + 1)) (Kairouz et al. 2021, Appendix D), under the
neighbouring relation that replaces one client's data by a zero contribution. Epochs compose.
Only the RDP accountant implements the event, and that relation is not the add-or-remove one of
the Poisson-sampled rounds, so a ledger holds tree rounds or DP-FedAvg rounds, never both.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dp_accounting

ACCOUNTANTS = ("rdp", "pld")
# dp-accounting implements the tree-aggregation event in its RDP accountant only (0.6:
# rdp_privacy_accountant handles SingleEpochTreeAggregationDpEvent, the PLD accountant does not).
TREE_ACCOUNTANTS = ("rdp",)

# The bracket that `noise_multiplier_for_epsilon` searches: below 2**-10 (about 0.001) the
# Gaussian noise is negligible next to the clipped update and epsilon runs to the thousands;
# above 2**20 (about 1e6) every practical target is met long before.
_MIN_NOISE = 2.0**-10
_MAX_NOISE = 2.0**20


class AccountingError(ValueError):
    """A privacy accounting input that cannot be used (the message says which and why)."""


def _check_event(noise_multiplier: float, sampling_probability: float, rounds: int
                 ) -> tuple[float, float, int]:
    z, q = noise_multiplier, sampling_probability
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not (math.isfinite(z) and z >= 0):
        raise AccountingError(f"noise_multiplier must be a finite number >= 0, got {z!r}")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
        raise AccountingError(f"sampling_probability must be a number in [0, 1], got {q!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise AccountingError(f"rounds must be an int >= 0, got {rounds!r}")
    return float(z), float(q), rounds


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise AccountingError(f"unknown accountant {accountant!r}; known: {', '.join(ACCOUNTANTS)}")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
        raise AccountingError(f"delta must be a number in (0, 1), got {delta!r}")


def _unbounded(z: float, q: float, rounds: int) -> bool:
    """True when the event releases a client's update without noise (epsilon is infinite)."""
    return z == 0.0 and q > 0.0 and rounds > 0


def dp_event(noise_multiplier: float, sampling_probability: float,
             rounds: int) -> dp_accounting.DpEvent:
    """The `dp_accounting` event of `rounds` rounds of DP-FedAvg.

    Args:
        noise_multiplier: z, the noise standard deviation over the clipping norm (>= 0).
        sampling_probability: q, the probability that a client takes part in a round.
        rounds: Number of rounds (>= 0; zero rounds is the no-op event).

    Returns:
        SelfComposed(PoissonSampled(q, Gaussian(z)), rounds), or NoOp for zero rounds.
    """
    import dp_accounting

    z, q, rounds = _check_event(noise_multiplier, sampling_probability, rounds)
    if rounds == 0:
        return dp_accounting.NoOpDpEvent()
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)


def _check_tree_epoch(noise_multiplier: float, step_counts: object
                      ) -> tuple[float, tuple[int, ...]]:
    z, _, _ = _check_event(noise_multiplier, 0.0, 0)
    if not isinstance(step_counts, (list, tuple)) or not step_counts or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in step_counts):
        raise AccountingError(f"an epoch's tree sizes must be a non-empty sequence of ints >= 1, "
                              f"got {step_counts!r}")
    return z, tuple(step_counts)


def _check_tree_accountant(accountant: str) -> None:
    _check_accountant(accountant)
    if accountant not in TREE_ACCOUNTANTS:
        raise AccountingError(f"the {accountant} accountant cannot account tree aggregation "
                              "(dp-accounting implements its event for RDP only); use accountant "
                              "rdp")


def tree_dp_event(noise_multiplier: float, step_counts: tuple[int, ...] | list[int]
                  ) -> dp_accounting.DpEvent:
    """The `dp_accounting` event of one epoch of DP-FTRL: trees of `step_counts` rounds in which
    every client contributes at most once in all.

    Args:
        noise_multiplier: z, each tree node's noise std over the clipping norm (>= 0).
        step_counts: The rounds of each tree of the epoch (restarts start a new tree), >= 1 each.

    Returns:
        SingleEpochTreeAggregationDpEvent(z, list(step_counts)).
    """
    import dp_accounting

    z, counts = _check_tree_epoch(noise_multiplier, step_counts)
    return dp_accounting.SingleEpochTreeAggregationDpEvent(z, list(counts))


def tree_schedule(rounds: int, rounds_per_epoch: int, restart_rounds: int
                  ) -> tuple[tuple[int, ...], ...]:
    """The trees of `rounds` rounds of DP-FTRL grouped by epoch: epochs of `rounds_per_epoch`
    rounds (the last one possibly partial), each cut into trees of `restart_rounds` rounds.

    Raises:
        AccountingError: Counts that are not ints >= 1 (rounds >= 0), or `restart_rounds` not a
            divisor of `rounds_per_epoch` (a tree would then span two epochs, and a client could
            contribute to it twice).
    """
    for name, v, low in (("rounds", rounds, 0), ("rounds_per_epoch", rounds_per_epoch, 1),
                         ("restart_rounds", restart_rounds, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise AccountingError(f"{name} must be an int >= {low}, got {v!r}")
    if rounds_per_epoch % restart_rounds:
        raise AccountingError(f"restart_rounds {restart_rounds} must divide the "
                              f"{rounds_per_epoch} rounds of an epoch")
    epochs = []
    for start in range(0, rounds, rounds_per_epoch):
        n = min(rounds_per_epoch, rounds - start)
        full, rest = divmod(n, restart_rounds)
        epochs.append((restart_rounds,) * full + ((rest,) if rest else ()))
    return tuple(epochs)


def _epsilon_of(events: list[tuple[float, float, int]], delta: float, accountant: str,
                tree_epochs: list[tuple[float, tuple[int, ...]]] = ()) -> float:
    import dp_accounting
    from dp_accounting import pld, rdp

    _check_accountant(accountant)
    _check_delta(delta)
    if tree_epochs:
        _check_tree_accountant(accountant)
        if any(e[1] > 0 and e[2] > 0 for e in events):
            raise AccountingError(
                "a ledger cannot compose tree-aggregation rounds with Poisson-sampled Gaussian "
                "rounds: dp-accounting states them under different neighbouring relations "
                "(replace-by-zero and add-or-remove)")
        if any(z == 0.0 for z, _ in tree_epochs):
            return math.inf
        acc = rdp.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
        with _quiet_absl():
            acc.compose(dp_accounting.ComposedDpEvent(
                [tree_dp_event(z, counts) for z, counts in tree_epochs]))
            return float(acc.get_epsilon(delta))
    if any(_unbounded(*e) for e in events):
        return math.inf
    events = [e for e in events if e[1] > 0 and e[2] > 0]
    if not events:
        return 0.0
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    with _quiet_absl():
        if len(events) == 1:
            acc.compose(dp_event(*events[0]))
        else:
            acc.compose(dp_accounting.ComposedDpEvent([dp_event(*e) for e in events]))
        return float(acc.get_epsilon(delta))


@contextlib.contextmanager
def _quiet_absl():
    """Silences dp_accounting's absl warnings while it runs (RDP warns, for every round, of
    each order whose series it cannot sum; that order is then left out of the minimum over
    orders, which is correct), restoring the logger's level afterwards."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def epsilon(noise_multiplier: float, sampling_probability: float, rounds: int, delta: float,
            accountant: str = "rdp") -> float:
    """The epsilon of `rounds` rounds of DP-FedAvg at `delta`.

    Args:
        noise_multiplier: z (>= 0); 0 means no noise and an infinite epsilon.
        sampling_probability: q in [0, 1] (see `federated.sampling.sampling_probability`).
        rounds: Number of rounds (>= 0).
        delta: The delta of the (epsilon, delta) guarantee, in (0, 1).
        accountant: "rdp" or "pld".

    Returns:
        epsilon (math.inf when z is 0, 0.0 for no rounds or q = 0).
    """
    return _epsilon_of([_check_event(noise_multiplier, sampling_probability, rounds)], delta,
                       accountant)


def tree_epsilon(noise_multiplier: float, rounds: int, rounds_per_epoch: int,
                 restart_rounds: int, delta: float, accountant: str = "rdp") -> float:
    """The epsilon of `rounds` rounds of DP-FTRL at `delta` (`tree_schedule` gives the trees).

    Args:
        noise_multiplier: z of each tree node (>= 0); 0 means an infinite epsilon.
        rounds: Number of rounds (>= 0).
        rounds_per_epoch: Rounds in which every client contributes at most once.
        restart_rounds: Rounds per tree, a divisor of `rounds_per_epoch`.
        delta: The delta of the guarantee, in (0, 1).
        accountant: "rdp" (the only one that implements tree aggregation).

    Returns:
        epsilon (0.0 for no rounds).
    """
    z, _, _ = _check_event(noise_multiplier, 0.0, 0)
    schedule = tree_schedule(rounds, rounds_per_epoch, restart_rounds)
    return _epsilon_of([], delta, accountant, [(z, counts) for counts in schedule])


def noise_multiplier_for_epsilon(target_epsilon: float, sampling_probability: float,
                                 rounds: int, delta: float, accountant: str = "rdp", *,
                                 rtol: float = 1e-3) -> float:
    """The smallest noise multiplier whose `rounds` rounds spend at most `target_epsilon`.

    Epsilon falls as the noise multiplier grows, so the answer is bracketed by doubling (or
    halving) from z = 1 and then narrowed by bisection to within `rtol` of the exact smallest
    z; the value returned is the upper end of the bracket, so its epsilon is <= the target.

    Args:
        target_epsilon: The privacy budget (> 0).
        sampling_probability: q in (0, 1].
        rounds: Number of rounds (>= 1).
        delta: The delta of the guarantee, in (0, 1).
        accountant: "rdp" or "pld".
        rtol: Relative width of the final bracket.

    Raises:
        AccountingError: Invalid inputs, or a target no noise multiplier in
            [2**-10, 2**20] meets (or every one meets, so that the target does not constrain
            the noise).
    """
    _check_target(target_epsilon, rtol)
    _, q, rounds = _check_event(1.0, sampling_probability, rounds)
    if q == 0 or rounds == 0:
        raise AccountingError("sampling_probability and rounds must be > 0: with no "
                              "participation every noise multiplier spends epsilon 0")
    _check_accountant(accountant)
    _check_delta(delta)
    return _smallest_noise(lambda z: epsilon(z, q, rounds, delta, accountant), target_epsilon,
                           rtol, f"over {rounds} rounds at q={q:g}", delta, accountant)


def tree_noise_multiplier_for_epsilon(target_epsilon: float, rounds: int, rounds_per_epoch: int,
                                      restart_rounds: int, delta: float,
                                      accountant: str = "rdp", *, rtol: float = 1e-3) -> float:
    """The smallest tree-node noise multiplier whose `rounds` rounds of DP-FTRL spend at most
    `target_epsilon` (`tree_epsilon`), found by the same bracketing and bisection as
    `noise_multiplier_for_epsilon`.

    Raises:
        AccountingError: Invalid inputs (as `tree_epsilon`'s, rounds >= 1), or a target no
            noise multiplier in [2**-10, 2**20] meets (or every one meets).
    """
    _check_target(target_epsilon, rtol)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise AccountingError(f"rounds must be an int >= 1, got {rounds!r}")
    tree_schedule(rounds, rounds_per_epoch, restart_rounds)
    _check_tree_accountant(accountant)
    _check_delta(delta)
    return _smallest_noise(
        lambda z: tree_epsilon(z, rounds, rounds_per_epoch, restart_rounds, delta, accountant),
        target_epsilon, rtol, f"over {rounds} tree rounds", delta, accountant)


def _check_target(t: float, rtol: float) -> None:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise AccountingError(f"target_epsilon must be a finite number > 0, got {t!r}")
    if not 0 < rtol < 1:
        raise AccountingError(f"rtol must be in (0, 1), got {rtol!r}")


def _smallest_noise(epsilon_of: Callable[[float], float], t: float, rtol: float, what: str,
                    delta: float, accountant: str) -> float:
    """The bracketing and bisection of `noise_multiplier_for_epsilon` for any epsilon(z) that
    falls as z grows; `what` describes the event in errors."""

    def meets(z: float) -> bool:
        return epsilon_of(z) <= t

    lo, hi = 1.0, 1.0  # epsilon(lo) > target >= epsilon(hi) once bracketed
    if meets(1.0):
        lo = 0.5
        while meets(lo):
            hi, lo = lo, lo / 2
            if lo < _MIN_NOISE:
                raise AccountingError(
                    f"every noise multiplier down to {hi:g} spends at most epsilon {t:g} "
                    f"{what}: the target does not constrain the noise")
    else:
        hi = 2.0
        while not meets(hi):
            lo, hi = hi, hi * 2
            if hi > _MAX_NOISE:
                raise AccountingError(
                    f"no noise multiplier up to {lo:g} reaches epsilon {t:g} at delta {delta:g} "
                    f"{what} with the {accountant} accountant")
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class PrivacyLedger:
    """What a run has spent so far: its DP-FedAvg rounds as (noise multiplier, q, rounds) events,
    or its DP-FTRL rounds as epochs of trees.

    Pure and JSON-able: `add` and `add_tree_round` return a new ledger, so it checkpoints with
    the server state and a resumed run carries on where it stopped. Consecutive rounds with the
    same (z, q) merge into one event.

    Attributes:
        accountant: "rdp" or "pld", used by `epsilon` ("rdp" only for tree rounds).
        events: (noise_multiplier, sampling_probability, rounds) in the order they happened.
        tree_epochs: (noise_multiplier, rounds of each tree) per epoch of tree aggregation (every
            client at most once per epoch), in order; the last one may still be growing.
    """

    accountant: str = "rdp"
    events: tuple[tuple[float, float, int], ...] = ()
    tree_epochs: tuple[tuple[float, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        _check_accountant(self.accountant)
        if not isinstance(self.events, (list, tuple)):
            raise AccountingError(f"events must be a sequence of (noise_multiplier, "
                                  f"sampling_probability, rounds), got {self.events!r}")
        events = []
        for e in self.events:
            if not isinstance(e, (list, tuple)) or len(e) != 3:
                raise AccountingError(f"an event is (noise_multiplier, sampling_probability, "
                                      f"rounds), got {e!r}")
            events.append(_check_event(*e))
        object.__setattr__(self, "events", tuple(events))
        if not isinstance(self.tree_epochs, (list, tuple)):
            raise AccountingError(f"tree_epochs must be a sequence of (noise_multiplier, tree "
                                  f"sizes), got {self.tree_epochs!r}")
        epochs = []
        for e in self.tree_epochs:
            if not isinstance(e, (list, tuple)) or len(e) != 2:
                raise AccountingError(f"a tree epoch is (noise_multiplier, tree sizes), "
                                      f"got {e!r}")
            epochs.append(_check_tree_epoch(*e))
        object.__setattr__(self, "tree_epochs", tuple(epochs))
        if epochs:
            _check_tree_accountant(self.accountant)

    @property
    def rounds(self) -> int:
        """Total rounds recorded."""
        return sum(e[2] for e in self.events) + sum(sum(c) for _, c in self.tree_epochs)

    def add(self, noise_multiplier: float, sampling_probability: float,
            rounds: int = 1) -> PrivacyLedger:
        """This ledger with `rounds` more rounds of (z, q) (merged into the last event when it
        has the same z and q; zero rounds change nothing)."""
        z, q, rounds = _check_event(noise_multiplier, sampling_probability, rounds)
        if rounds == 0:
            return self
        events = list(self.events)
        if events and events[-1][:2] == (z, q):
            events[-1] = (z, q, events[-1][2] + rounds)
        else:
            events.append((z, q, rounds))
        return PrivacyLedger(self.accountant, tuple(events), self.tree_epochs)

    def add_tree_round(self, noise_multiplier: float, *, new_epoch: bool,
                       new_tree: bool) -> PrivacyLedger:
        """This ledger with one more round of DP-FTRL with tree-node noise multiplier z.

        Args:
            noise_multiplier: z.
            new_epoch: The round starts an epoch (and so a tree): a new tree event.
            new_tree: The round starts a tree within the current epoch (a restart).
                The first round recorded always starts an epoch.

        Raises:
            AccountingError: z differs from the current epoch's without a new epoch.
        """
        z, _, _ = _check_event(noise_multiplier, 0.0, 0)
        epochs = list(self.tree_epochs)
        if new_epoch or not epochs:
            epochs.append((z, (1,)))
        else:
            last_z, counts = epochs[-1]
            if last_z != z:
                raise AccountingError(f"the noise multiplier changed within an epoch of trees "
                                      f"({last_z} to {z})")
            counts = (*counts, 1) if new_tree else (*counts[:-1], counts[-1] + 1)
            epochs[-1] = (z, counts)
        return PrivacyLedger(self.accountant, self.events, tuple(epochs))

    def epsilon(self, delta: float) -> float:
        """The epsilon spent by all recorded rounds together, at `delta` (0.0 when empty)."""
        return _epsilon_of(list(self.events), delta, self.accountant, list(self.tree_epochs))

    def to_dict(self) -> dict:
        """The ledger as JSON-able values ("tree_epochs" only when there are tree rounds)."""
        d = {"accountant": self.accountant, "events": [list(e) for e in self.events]}
        if self.tree_epochs:
            d["tree_epochs"] = [[z, list(c)] for z, c in self.tree_epochs]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> PrivacyLedger:
        """The inverse of `to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {"accountant", "events", "tree_epochs"})
        if unknown:
            raise AccountingError(f"unknown privacy ledger field(s): {', '.join(unknown)}")
        trees = d.get("tree_epochs", ())
        if isinstance(trees, (list, tuple)):
            trees = tuple((e[0], tuple(e[1])) if isinstance(e, (list, tuple)) and len(e) == 2
                          and isinstance(e[1], (list, tuple)) else e for e in trees)
        return cls(d.get("accountant", "rdp"), tuple(tuple(e) for e in d.get("events", ())),
                   trees)
