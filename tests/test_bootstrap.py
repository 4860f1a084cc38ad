"""Tests for eval.bootstrap: goldens worked by hand, determinism, width, paired gains."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import eval.bootstrap as bootstrap
from eval.bootstrap import (
    CI,
    BootstrapInputError,
    PairedCI,
    bootstrap_ci,
    paired_bootstrap_ci,
)
from eval.correction import CorrectionCounts, Identity, evaluate_corrector
from keyboard_sim import Channel, Edit, simulate
from models.nwp import NWPMetrics


def wer(c: CorrectionCounts) -> float:
    return c.wer_after


def two_messages() -> list[CorrectionCounts]:
    # Message a: one word, right ("cat" kept). Message b: one word, wrong ("cta" left).
    return [
        CorrectionCounts.of("cat", "cat", "cat"),
        CorrectionCounts.of("cta", "cat", "cta"),
    ]


def test_two_message_bootstrap_by_hand():
    # Resampling two messages gives {a, a}, {a, b}, {b, b} with probabilities 1/4, 1/2, 1/4,
    # so the resampled WER is 0, 1/2 or 1. On all messages WER = 1/2.
    # level 0.95: the 2.5% quantile is 0 (P(0) = 1/4 > 2.5%), the 97.5% quantile is 1.
    est, lo, hi = bootstrap_ci(two_messages(), wer, n=2000, seed=3)
    assert (est, lo, hi) == (0.5, 0.0, 1.0)
    # level 0.4: quantiles 0.3 and 0.7 both fall among the resamples at 1/2 (cumulative
    # shares 1/4 < 0.3 and 0.7 < 3/4).
    assert bootstrap_ci(two_messages(), wer, n=2000, level=0.4, seed=3) == CI(0.5, 0.5, 0.5)


def test_paired_two_message_bootstrap_by_hand():
    # Baseline a leaves both typos; system b fixes the first ("teh" -> "the") only.
    # messages_fixed_share: a is 0 in every resample; b is 1, 1/2 or 0 for {1,1}, {1,2}, {2,2}.
    # The gain on all messages is 1/2; it is <= 0 only for {2,2}: probability 1/4.
    a = [CorrectionCounts.of("teh", "the", "teh"), CorrectionCounts.of("cta", "cat", "cta")]
    b = [CorrectionCounts.of("teh", "the", "the"), CorrectionCounts.of("cta", "cat", "cta")]
    r = paired_bootstrap_ci(a, b, lambda c: c.messages_fixed_share, n=4000, seed=5)
    assert isinstance(r, PairedCI)
    assert (r.gain, r.lo, r.hi) == (0.5, 0.0, 1.0)
    # Binomial standard error sqrt(0.25 * 0.75 / 4000) = 0.0068; tolerance 4.4 of them.
    assert r.share_not_better == pytest.approx(0.25, abs=0.03)


def simulated_counts(n: int, seed: int = 0) -> list[CorrectionCounts]:
    base = ["Hello there, how are you doing today?", "I can't believe it's already Monday.",
            "the cat sat on the mat", "see you at 5 then"]
    pairs = simulate([base[i % len(base)] for i in range(n)], "raw", seed=seed)
    return evaluate_corrector(Identity(), [p.noisy for p in pairs], [p.clean for p in pairs],
                              [p.edits for p in pairs])


def test_estimate_is_the_whole_sum_and_the_interval_holds_it():
    per = simulated_counts(200)
    est, lo, hi = bootstrap_ci(per, lambda c: c.cer_before, n=300, seed=1)
    assert est == sum(per).cer_before
    assert lo < est < hi
    # A keyed field (fix rate per channel) resamples too.
    est, lo, hi = bootstrap_ci(per, lambda c: c.fix_rate(Channel.SUBSTITUTION), n=100)
    assert (est, lo, hi) == (0.0, 0.0, 0.0)  # no correction fixes nothing


def test_same_seed_same_interval_and_chunking_does_not_matter(monkeypatch):
    per = simulated_counts(60)
    a = bootstrap_ci(per, wer, n=200, seed=9)
    assert bootstrap_ci(per, wer, n=200, seed=9) == a
    assert bootstrap_ci(per, wer, n=200, seed=10) != a
    # Resamples drawn 7 at a time instead of all at once: the same draws, the same interval.
    monkeypatch.setattr(bootstrap, "_BLOCK_CELLS", 7 * len(per))
    assert bootstrap_ci(per, wer, n=200, seed=9) == a


def test_interval_narrows_with_more_messages():
    small = bootstrap_ci(simulated_counts(50), wer, n=400, seed=2)
    large = bootstrap_ci(simulated_counts(800), wer, n=400, seed=2)
    # Width scales as 1/sqrt(messages): 16 times the messages, about a quarter of the width.
    assert (large.hi - large.lo) < 0.5 * (small.hi - small.lo)


def test_width_matches_the_normal_approximation():
    # 400 one-word messages, 120 of them wrong: WER = 0.3, standard error
    # sqrt(0.3 * 0.7 / 400) = 0.0229, so a 95% interval of about +-1.96 * 0.0229 = +-0.0449.
    per = [CorrectionCounts.of("cta" if i < 120 else "cat", "cat", "cta" if i < 120 else "cat")
           for i in range(400)]
    est, lo, hi = bootstrap_ci(per, wer, n=2000, seed=4)
    assert est == pytest.approx(0.3)
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(0.21 / 400), rel=0.15)
    assert lo < 0.3 < hi


def test_paired_identical_systems_gain_nothing():
    per = simulated_counts(80)
    r = paired_bootstrap_ci(per, per, wer, n=200, seed=0)
    assert r == PairedCI(0.0, 0.0, 0.0, 1.0)


def test_paired_gain_of_a_better_system():
    pairs = simulate(["the cat sat on the mat", "see you at 5 then"] * 40, "raw", seed=6)
    base = [CorrectionCounts.of(p.noisy, p.clean, p.noisy, p.edits) for p in pairs]
    # The system restores every second message exactly.
    better = [CorrectionCounts.of(p.noisy, p.clean, p.clean if i % 2 else p.noisy, p.edits)
              for i, p in enumerate(pairs)]
    r = paired_bootstrap_ci(base, better, lambda c: -c.wer_after, n=500, seed=1)
    assert r.gain == pytest.approx(sum(base).wer_after - sum(better).wer_after)
    assert 0 < r.lo < r.gain < r.hi and r.share_not_better == 0.0


def test_generic_over_summable_dataclasses():
    # NWPMetrics: int counts and a float loss sum.
    per = [NWPMetrics(tokens=2, loss_sum=0.5 * i, top1_all=1, top3_all=2, words=1, top1=1,
                      top3=1) for i in range(30)]
    est, lo, hi = bootstrap_ci(per, lambda m: m.loss_sum / m.tokens, n=300)
    total = sum(per)
    assert est == pytest.approx(total.loss_sum / total.tokens)
    assert lo < est < hi
    # A keyed table that appears in some messages only: absent keys are zeros, and a resample
    # without the key has it absent (the metric is then nan and left out of the interval).
    per = [CorrectionCounts(by_type=(("omission", 1, i % 2),)) if i < 5 else CorrectionCounts()
           for i in range(40)]
    est, lo, hi = bootstrap_ci(per, lambda c: c.fix_rate("omission"), n=300)
    assert est == pytest.approx(2 / 5) and 0.0 <= lo <= est <= hi <= 1.0


@dataclass(frozen=True)
class Named:
    label: str = ""


def test_bad_input_is_named():
    per = two_messages()
    with pytest.raises(BootstrapInputError, match="no messages"):
        bootstrap_ci([], wer)
    with pytest.raises(BootstrapInputError, match="level"):
        bootstrap_ci(per, wer, level=1.0)
    with pytest.raises(BootstrapInputError, match="n \\(resamples\\)"):
        bootstrap_ci(per, wer, n=0)
    with pytest.raises(BootstrapInputError, match="item 1 is a NWPMetrics"):
        bootstrap_ci([per[0], NWPMetrics()], wer)
    with pytest.raises(BootstrapInputError, match="field label is a str"):
        bootstrap_ci([Named("x")], lambda x: 0.0)
    with pytest.raises(BootstrapInputError, match="a has 2 messages, b has 1"):
        paired_bootstrap_ci(per, per[:1], wer)
    with pytest.raises(BootstrapInputError, match="dataclass"):
        bootstrap_ci([1, 2], float)


def test_all_nan_metric_gives_nan_interval():
    per = [CorrectionCounts.of("a", "a", "a", (Edit(Channel.PASSTHROUGH, 0, 1, 0, 1),))]
    est, lo, hi = bootstrap_ci(per, lambda c: c.fix_rate("omission"), n=20)
    assert math.isnan(est) and math.isnan(lo) and math.isnan(hi)
    assert np.isnan(paired_bootstrap_ci(per, per, lambda c: c.fix_rate("omission"), n=5)[3])
