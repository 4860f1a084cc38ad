"""The intent presets hit their published error rates on messages they were not fitted on."""

from __future__ import annotations

import pytest

from keyboard_sim import presets, simulate

chitchat = pytest.importorskip("data.chitchat")


@pytest.fixture(scope="module")
def held_out():
    # presets were fitted on the first 5,000 messages; check on the next 5,000.
    msgs = [m["text"] for m in chitchat.iter_messages(10_000)]
    return msgs[5000:]


@pytest.mark.parametrize(
    "name,target", [("raw", presets.RAW_TARGET_CER), ("committed", presets.COMMITTED_TARGET_CER)]
)
def test_preset_error_rate(held_out, name, target):
    from keyboard_sim.stats import PairStats

    cer = PairStats.of(simulate(held_out, name, "en-US", seed=1)).cer
    # Within 10% of the target (relative): a different slice and seed than the fit.
    assert abs(cer - target) < 0.1 * target, (name, cer, target)
