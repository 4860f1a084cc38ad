"""eval: what an experiment measures, and its report.

The public API, loaded lazily (importing `eval` does not import torch or matplotlib):
    CorrectionCounts, evaluate_corrector, correction_counts, Identity   proofreading metrics
    bootstrap_ci, paired_bootstrap_ci, CI, PairedCI                     intervals over messages
    KeystrokeSavings, keystroke_savings, accuracy_by_client_size        next-word metrics
    CanaryConfig, make_canaries, canary_messages, exposures             the privacy audit
    RealSet, load_set, available_sets                                   real-error sets
    realism                                                             simulated vs real errors
    write_report, headline, check                                       report.md / report.html
    score_with_kebbie                                                   kebbie's own protocol
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CorrectionCounts": "eval.correction", "evaluate_corrector": "eval.correction",
    "correction_counts": "eval.correction", "Identity": "eval.correction",
    "bootstrap_ci": "eval.bootstrap", "paired_bootstrap_ci": "eval.bootstrap",
    "CI": "eval.bootstrap", "PairedCI": "eval.bootstrap",
    "KeystrokeSavings": "eval.nwp", "keystroke_savings": "eval.nwp",
    "accuracy_by_client_size": "eval.nwp",
    "CanaryConfig": "eval.canary", "make_canaries": "eval.canary",
    "canary_messages": "eval.canary", "exposures": "eval.canary",
    "RealSet": "eval.real_data", "load_set": "eval.real_data",
    "available_sets": "eval.real_data",
    "realism": "eval.realism",
    "write_report": "eval.report", "headline": "eval.report", "check": "eval.report",
    "score_with_kebbie": "eval.kebbie_adapter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eval' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
