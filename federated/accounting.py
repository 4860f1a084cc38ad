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
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dp_accounting

ACCOUNTANTS = ("rdp", "pld")

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


def _epsilon_of(events: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    import dp_accounting
    from dp_accounting import pld, rdp

    _check_accountant(accountant)
    _check_delta(delta)
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
    t = target_epsilon
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise AccountingError(f"target_epsilon must be a finite number > 0, got {t!r}")
    _, q, rounds = _check_event(1.0, sampling_probability, rounds)
    if q == 0 or rounds == 0:
        raise AccountingError("sampling_probability and rounds must be > 0: with no "
                              "participation every noise multiplier spends epsilon 0")
    _check_accountant(accountant)
    _check_delta(delta)
    if not 0 < rtol < 1:
        raise AccountingError(f"rtol must be in (0, 1), got {rtol!r}")

    def meets(z: float) -> bool:
        return epsilon(z, q, rounds, delta, accountant) <= t

    lo, hi = 1.0, 1.0  # epsilon(lo) > target >= epsilon(hi) once bracketed
    if meets(1.0):
        lo = 0.5
        while meets(lo):
            hi, lo = lo, lo / 2
            if lo < _MIN_NOISE:
                raise AccountingError(
                    f"every noise multiplier down to {hi:g} spends at most epsilon {t:g} over "
                    f"{rounds} rounds at q={q:g}: the target does not constrain the noise")
    else:
        hi = 2.0
        while not meets(hi):
            lo, hi = hi, hi * 2
            if hi > _MAX_NOISE:
                raise AccountingError(
                    f"no noise multiplier up to {lo:g} reaches epsilon {t:g} at delta {delta:g} "
                    f"over {rounds} rounds at q={q:g} with the {accountant} accountant")
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class PrivacyLedger:
    """What a run has spent so far: its rounds as (noise multiplier, q, rounds) events.

    Pure and JSON-able: `add` returns a new ledger, so it checkpoints with the server state and a
    resumed run carries on where it stopped. Consecutive rounds with the same (z, q) merge into
    one event.

    Attributes:
        accountant: "rdp" or "pld", used by `epsilon`.
        events: (noise_multiplier, sampling_probability, rounds) in the order they happened.
    """

    accountant: str = "rdp"
    events: tuple[tuple[float, float, int], ...] = ()

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

    @property
    def rounds(self) -> int:
        """Total rounds recorded."""
        return sum(e[2] for e in self.events)

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
        return PrivacyLedger(self.accountant, tuple(events))

    def epsilon(self, delta: float) -> float:
        """The epsilon spent by all recorded rounds together, at `delta` (0.0 when empty)."""
        return _epsilon_of(list(self.events), delta, self.accountant)

    def to_dict(self) -> dict:
        """The ledger as JSON-able values."""
        return {"accountant": self.accountant, "events": [list(e) for e in self.events]}

    @classmethod
    def from_dict(cls, d: Mapping) -> PrivacyLedger:
        """The inverse of `to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {"accountant", "events"})
        if unknown:
            raise AccountingError(f"unknown privacy ledger field(s): {', '.join(unknown)}")
        return cls(d.get("accountant", "rdp"), tuple(tuple(e) for e in d.get("events", ())))
