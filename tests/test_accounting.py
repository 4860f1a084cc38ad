"""Tests for federated.accounting: the same numbers as dp_accounting called directly (RDP and
PLD), ledger composition and merging, monotonicity, noise calibration round trips, JSON, errors.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from federated.accounting import (
    ACCOUNTANTS,
    AccountingError,
    PrivacyLedger,
    dp_event,
    epsilon,
    noise_multiplier_for_epsilon,
    tree_dp_event,
    tree_epsilon,
    tree_noise_multiplier_for_epsilon,
    tree_schedule,
)

DELTA = 1e-5


def _direct(event, accountant):
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    acc.compose(event)
    return acc.get_epsilon(DELTA)


def _poisson_gaussian(z, q, rounds):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)


@pytest.mark.parametrize("accountant, z, q, rounds", [
    ("rdp", 1.0, 0.01, 100),
    ("rdp", 0.8, 1.0, 3),
    ("pld", 2.0, 0.05, 5),
])
def test_epsilon_equals_dp_accounting_directly(accountant, z, q, rounds):
    want = _direct(_poisson_gaussian(z, q, rounds), accountant)
    assert epsilon(z, q, rounds, DELTA, accountant) == want
    assert 0 < want < math.inf
    assert dp_event(z, q, rounds) == _poisson_gaussian(z, q, rounds)


def test_ledger_of_mixed_events_equals_composed_event():
    ledger = PrivacyLedger().add(1.0, 0.01, 40).add(2.0, 0.02, 10).add(1.0, 0.01, 5)
    assert ledger.events == ((1.0, 0.01, 40), (2.0, 0.02, 10), (1.0, 0.01, 5))
    assert ledger.rounds == 55
    want = _direct(dp_accounting.ComposedDpEvent([
        _poisson_gaussian(1.0, 0.01, 40), _poisson_gaussian(2.0, 0.02, 10),
        _poisson_gaussian(1.0, 0.01, 5)]), "rdp")
    assert ledger.epsilon(DELTA) == want


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_ledger_three_plus_two_rounds_is_five(accountant):
    z, q = 2.0, 0.05
    merged = PrivacyLedger(accountant).add(z, q, 3).add(z, q, 2)
    assert merged.events == ((z, q, 5),)
    five = epsilon(z, q, 5, DELTA, accountant)
    assert merged.epsilon(DELTA) == five
    # Unmerged, the two events compose to the same epsilon (PLD: up to its discretisation).
    unmerged = PrivacyLedger(accountant, ((z, q, 3), (z, q, 2)))
    assert unmerged.epsilon(DELTA) == pytest.approx(five, rel=1e-6)


def test_monotone_in_rounds_noise_and_q():
    by_rounds = [epsilon(1.0, 0.02, r, DELTA) for r in (1, 10, 100, 1000)]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4
    by_noise = [epsilon(z, 0.02, 100, DELTA) for z in (0.6, 1.0, 2.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4
    by_q = [epsilon(1.0, q, 100, DELTA) for q in (0.001, 0.01, 0.1)]
    assert by_q == sorted(by_q) and len(set(by_q)) == 3


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_edge_cases(accountant):
    assert epsilon(0.0, 0.1, 10, DELTA, accountant) == math.inf
    assert epsilon(1.0, 0.1, 0, DELTA, accountant) == 0.0
    assert epsilon(1.0, 0.0, 10, DELTA, accountant) == 0.0
    assert epsilon(0.0, 0.0, 10, DELTA, accountant) == 0.0  # nobody took part
    assert PrivacyLedger(accountant).epsilon(DELTA) == 0.0
    assert PrivacyLedger(accountant).add(1.0, 0.1, 2).add(0.0, 0.1).epsilon(DELTA) == math.inf
    assert isinstance(dp_event(1.0, 0.1, 0), dp_accounting.NoOpDpEvent)


@pytest.mark.parametrize("z0, q, rounds", [(1.3, 0.01, 200), (0.9, 1.0, 1)])
def test_noise_multiplier_for_epsilon_round_trips_rdp(z0, q, rounds):
    target = epsilon(z0, q, rounds, DELTA)
    z = noise_multiplier_for_epsilon(target, q, rounds, DELTA)
    # z0 meets the target exactly, so the smallest z is z0 and the bracket's upper end lies
    # within rtol = 1e-3 above it.
    assert z0 <= z <= z0 * 1.0011
    assert epsilon(z, q, rounds, DELTA) <= target
    assert epsilon(z * (1 - 1e-3), q, rounds, DELTA) > target


def test_noise_multiplier_for_epsilon_pld():
    # A loose rtol keeps the PLD bisection to a few evaluations (each ~0.3 s).
    z = noise_multiplier_for_epsilon(2.0, 1.0, 1, DELTA, "pld", rtol=0.1)
    assert epsilon(z, 1.0, 1, DELTA, "pld") <= 2.0
    assert epsilon(z * 0.9, 1.0, 1, DELTA, "pld") > 2.0
    # PLD is tighter than RDP, so it needs less noise for the same target.
    assert z < noise_multiplier_for_epsilon(2.0, 1.0, 1, DELTA, "rdp", rtol=0.1)


def test_noise_multiplier_for_epsilon_impossible_targets():
    # RDP's conversion to (epsilon, delta) has a floor set by the largest Renyi order (1024):
    # at delta 1e-10 it is of order log(1/delta) / 1023 = 0.0225 (dp_accounting's tighter
    # conversion gives about 0.015), so epsilon 1e-3 is out of reach for any z.
    with pytest.raises(AccountingError, match="no noise multiplier"):
        noise_multiplier_for_epsilon(1e-3, 1.0, 10, 1e-10)
    # Even z = 2**-10 spends less than 1e9 in one round: the target constrains nothing.
    with pytest.raises(AccountingError, match="does not constrain"):
        noise_multiplier_for_epsilon(1e9, 1.0, 1, DELTA)


def test_ledger_json_round_trip():
    ledger = PrivacyLedger("pld").add(1.1, 0.01, 7).add(0.9, 0.02)
    back = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert back == ledger
    assert back.events == ((1.1, 0.01, 7), (0.9, 0.02, 1))
    assert ledger.add(0.9, 0.02, 0) is ledger


def test_ledger_is_usable_without_dp_accounting():
    # federated/ must import for non-DP runs where dp_accounting is not installed.
    code = ("import sys; sys.modules['dp_accounting'] = None\n"
            "from federated.accounting import PrivacyLedger\n"
            "l = PrivacyLedger().add(1.0, 0.1, 3)\n"
            "assert PrivacyLedger.from_dict(l.to_dict()) == l\n"
            "try:\n    l.epsilon(1e-5)\nexcept ImportError:\n    print('needs dp_accounting')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "needs dp_accounting"


# ------------------------------------------------------------------- DP-FTRL's trees


def _direct_trees(z, epochs):
    """dp_accounting called directly: one single-epoch tree event per epoch, composed, with the
    neighbouring relation its RDP accountant requires for them."""
    relation = dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    acc = rdp.RdpAccountant(neighboring_relation=relation)
    acc.compose(dp_accounting.ComposedDpEvent(
        [dp_accounting.SingleEpochTreeAggregationDpEvent(z, list(c)) for c in epochs]))
    return acc.get_epsilon(DELTA)


def test_tree_schedule_cuts_epochs_into_trees():
    assert tree_schedule(10, 4, 2) == ((2, 2), (2, 2), (2,))
    assert tree_schedule(9, 4, 4) == ((4,), (4,), (1,))
    assert tree_schedule(3, 6, 3) == ((3,),)
    assert tree_schedule(0, 4, 4) == ()
    with pytest.raises(AccountingError, match="must divide"):
        tree_schedule(10, 4, 3)


def test_tree_ledger_after_every_round_equals_dp_accounting_directly():
    # 6 rounds an epoch, a tree every 3 (a restart mid-epoch), 14 rounds: 2 epochs and a part.
    z, per_epoch, restart = 1.1, 6, 3
    ledger = PrivacyLedger()
    for r in range(14):
        ledger = ledger.add_tree_round(z, new_epoch=r % per_epoch == 0,
                                       new_tree=r % restart == 0)
        epochs = tree_schedule(r + 1, per_epoch, restart)
        assert ledger.tree_epochs == tuple((z, c) for c in epochs)
        assert ledger.rounds == r + 1
        want = _direct_trees(z, epochs)
        assert ledger.epsilon(DELTA) == want
        assert tree_epsilon(z, r + 1, per_epoch, restart, DELTA) == want
    # Epoch 0's trees: [3, 3]; then [3, 3]; then [2] so far.
    assert ledger.tree_epochs == ((z, (3, 3)), (z, (3, 3)), (z, (2,)))
    assert tree_dp_event(z, (3, 3)) == dp_accounting.SingleEpochTreeAggregationDpEvent(z, [3, 3])
    back = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert back == ledger


def test_tree_epsilon_grows_with_the_tree_depth_and_the_epochs():
    # A single tree of n rounds costs like one Gaussian of multiplier z / sqrt(depth):
    # depth 1, 2, 2, 3 for n = 1, 2, 3, 4 (ceil(log2(n + 1))).
    eps = [tree_epsilon(1.0, n, 8, 8, DELTA) for n in (1, 2, 3, 4)]
    assert eps[0] < eps[1] == eps[2] < eps[3]
    assert tree_epsilon(1.0, 16, 8, 8, DELTA) > tree_epsilon(1.0, 8, 8, 8, DELTA)
    assert tree_epsilon(0.0, 3, 8, 8, DELTA) == math.inf
    assert tree_epsilon(1.0, 0, 8, 8, DELTA) == 0.0


def test_tree_noise_multiplier_for_epsilon_round_trips():
    target = tree_epsilon(1.7, 20, 8, 4, DELTA)
    z = tree_noise_multiplier_for_epsilon(target, 20, 8, 4, DELTA)
    assert 1.7 <= z <= 1.7 * 1.0011
    assert tree_epsilon(z, 20, 8, 4, DELTA) <= target
    assert tree_epsilon(z * (1 - 1e-3), 20, 8, 4, DELTA) > target


def test_tree_rounds_refuse_pld_and_gaussian_rounds():
    with pytest.raises(AccountingError, match="pld accountant cannot account tree"):
        tree_epsilon(1.0, 4, 4, 4, DELTA, "pld")
    with pytest.raises(AccountingError, match="pld accountant cannot account tree"):
        PrivacyLedger("pld").add_tree_round(1.0, new_epoch=True, new_tree=True)
    with pytest.raises(AccountingError, match="pld accountant cannot account tree"):
        tree_noise_multiplier_for_epsilon(1.0, 4, 4, 4, DELTA, "pld")
    mixed = PrivacyLedger().add(1.0, 0.1).add_tree_round(1.0, new_epoch=True, new_tree=True)
    with pytest.raises(AccountingError, match="neighbouring relations"):
        mixed.epsilon(DELTA)
    ledger = PrivacyLedger().add_tree_round(1.0, new_epoch=True, new_tree=True)
    with pytest.raises(AccountingError, match="changed within an epoch"):
        ledger.add_tree_round(2.0, new_epoch=False, new_tree=True)
    # A ledger saved before tree rounds existed (no "tree_epochs") still loads.
    assert PrivacyLedger.from_dict({"accountant": "rdp", "events": [[1.0, 0.1, 3]]}) \
        == PrivacyLedger().add(1.0, 0.1, 3)
    assert "tree_epochs" not in PrivacyLedger().add(1.0, 0.1).to_dict()


@pytest.mark.parametrize("call, match", [
    (lambda: epsilon(-1.0, 0.1, 1, DELTA), "noise_multiplier"),
    (lambda: epsilon(1.0, 1.5, 1, DELTA), "sampling_probability"),
    (lambda: epsilon(1.0, 0.1, -1, DELTA), "rounds"),
    (lambda: epsilon(1.0, 0.1, 1.5, DELTA), "rounds"),
    (lambda: epsilon(1.0, 0.1, 1, 0.0), "delta"),
    (lambda: epsilon(1.0, 0.1, 1, DELTA, "gdp"), "unknown accountant"),
    (lambda: noise_multiplier_for_epsilon(0.0, 0.1, 1, DELTA), "target_epsilon"),
    (lambda: noise_multiplier_for_epsilon(1.0, 0.0, 1, DELTA), "must be > 0"),
    (lambda: noise_multiplier_for_epsilon(1.0, 0.1, 0, DELTA), "must be > 0"),
    (lambda: PrivacyLedger("gdp"), "unknown accountant"),
    (lambda: PrivacyLedger(events=((1.0, 0.1),)), "an event is"),
    (lambda: PrivacyLedger().add(1.0, 0.1, -2), "rounds"),
    (lambda: PrivacyLedger.from_dict({"accountant": "rdp", "spent": 1.0}), "spent"),
    (lambda: PrivacyLedger(tree_epochs=((1.0, ()),)), "tree sizes"),
    (lambda: PrivacyLedger(tree_epochs=((1.0,),)), "a tree epoch is"),
    (lambda: tree_dp_event(-1.0, (2,)), "noise_multiplier"),
    (lambda: tree_noise_multiplier_for_epsilon(1.0, 0, 4, 4, DELTA), "rounds"),
])
def test_errors(call, match):
    with pytest.raises(AccountingError, match=match):
        call()
