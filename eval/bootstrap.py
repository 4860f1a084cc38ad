"""Confidence intervals by bootstrap over messages, for metrics of summed accumulators.

The unit resampled is the message: per-message accumulators (e.g. `CorrectionCounts`) are drawn
with replacement, summed, and the metric is computed on the sum, exactly as it is computed on
the whole corpus. The interval is the percentile interval: the (1 - level)/2 and
(1 + level)/2 quantiles of the resampled metric (Efron & Tibshirani 1993, "An Introduction to
the Bootstrap", ch. 13). A paired bootstrap draws the same messages for two systems and reports
the interval of the difference, as in significance testing of one system against another on one
test set (Koehn 2004, "Statistical significance tests for machine translation evaluation").

Speed: the accumulators are turned into a numeric matrix once (one row a message, one column a
summed field); a resample is a vector of multinomial counts (how many times each message was
drawn), and its sum is `counts @ matrix`. Only the metric runs once per resample, on an
accumulator rebuilt from the summed row.

Accumulators this works on: frozen dataclasses, all of one type, whose fields are each an int,
a float, or a keyed table: a tuple of rows `(key: str, number, ...)` with distinct keys and the
same number of numbers in every row (`CorrectionCounts.by_type`). A table is summed key by key,
and a key whose numbers are all zero is left out of the rebuilt table (it is the same as an
absent key), so the class must accept the rows sorted by key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

T = TypeVar("T")

# Resamples drawn per block, bounded so one block's counts matrix stays near 32 MB.
_BLOCK_CELLS = 4_000_000


class BootstrapInputError(ValueError):
    """The accumulators or the options cannot be bootstrapped (the reason is named)."""


class CI(NamedTuple):
    """A point estimate on all messages and its percentile interval."""

    estimate: float
    lo: float
    hi: float


class PairedCI(NamedTuple):
    """The gain metric(b) - metric(a) on all messages, its percentile interval, and the share
    of resamples in which the gain is <= 0 (a one-sided p-value-like figure)."""

    gain: float
    lo: float
    hi: float
    share_not_better: float


class _Table:
    """Accumulators as a numeric matrix, and the way back from a summed row."""

    def __init__(self, items: Sequence[Any], what: str) -> None:
        if len(items) == 0:
            raise BootstrapInputError(f"{what}: no messages to resample")
        cls = type(items[0])
        if not dataclasses.is_dataclass(cls):
            raise BootstrapInputError(
                f"{what}: items must be dataclass accumulators, got {cls.__name__}"
            )
        for i, it in enumerate(items):
            if type(it) is not cls:
                raise BootstrapInputError(
                    f"{what}: item {i} is a {type(it).__name__}, item 0 a {cls.__name__}"
                )
        self.cls = cls
        # Each column: (field name, key or None, position in the row or None).
        self.columns: list[tuple[str, str | None, int | None]] = []
        self.float_cols: list[bool] = []
        self.tables: dict[str, tuple[list[str], int]] = {}
        init_fields = [f for f in dataclasses.fields(cls) if f.init]
        first = items[0]
        for f in init_fields:
            v = getattr(first, f.name)
            if isinstance(v, bool):
                raise BootstrapInputError(f"{what}: field {f.name} is a bool, not a count")
            if isinstance(v, (int, float)):
                self.columns.append((f.name, None, None))
                self.float_cols.append(isinstance(v, float))
            elif isinstance(v, tuple):
                keys, width, is_float = self._table_shape(items, f.name, what)
                self.tables[f.name] = (keys, width)
                for k in keys:
                    for j in range(width):
                        self.columns.append((f.name, k, j))
                        self.float_cols.append(is_float[j])
            else:
                raise BootstrapInputError(
                    f"{what}: field {f.name} is a {type(v).__name__}; only int, float and keyed "
                    f"tuples can be summed"
                )
        col_index = {c: i for i, c in enumerate(self.columns)}
        m = np.zeros((len(items), len(self.columns)), dtype=np.float64)
        for i, it in enumerate(items):
            for f in init_fields:
                v = getattr(it, f.name)
                if f.name in self.tables:
                    for row in v:
                        for j, x in enumerate(row[1:]):
                            m[i, col_index[(f.name, row[0], j)]] = x
                else:
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        raise BootstrapInputError(
                            f"{what}: item {i} field {f.name} is {v!r}, not a number"
                        )
                    m[i, col_index[(f.name, None, None)]] = v
        is_float = np.array(self.float_cols, dtype=bool)
        self.int_idx = np.flatnonzero(~is_float)
        self.float_idx = np.flatnonzero(is_float)
        self.matrix = m
        self.n = len(items)
        # Integer fields are summed with a float64 product, which is exact while every
        # resample's sum stays below 2**53 (n messages drawn, each at most the column's max).
        bound = float(np.abs(m[:, self.int_idx]).max(initial=0.0)) * self.n
        if bound >= 2.0**53:
            raise BootstrapInputError(f"{what}: integer fields too large to sum exactly")

    @staticmethod
    def _table_shape(
        items: Sequence[Any], name: str, what: str
    ) -> tuple[list[str], int, list[bool]]:
        keys: set[str] = set()
        width: int | None = None
        is_float: list[bool] = []
        for i, it in enumerate(items):
            seen: set[str] = set()
            for row in getattr(it, name):
                bad = (
                    not isinstance(row, tuple)
                    or len(row) < 2
                    or not isinstance(row[0], str)
                    or any(isinstance(x, bool) or not isinstance(x, (int, float))
                           for x in row[1:])
                )
                if bad or row[0] in seen or (width is not None and len(row) - 1 != width):
                    raise BootstrapInputError(
                        f"{what}: item {i} field {name} row {row!r} is not (key, number, ...) "
                        f"with a distinct key and the same width as the other rows"
                    )
                seen.add(row[0])
                if width is None:
                    width = len(row) - 1
                    is_float = [False] * width
                is_float = [
                    f or isinstance(x, float) for f, x in zip(is_float, row[1:], strict=True)
                ]
                keys.add(row[0])
        return sorted(keys), width or 0, is_float

    def rebuild(self, ints: np.ndarray, floats: np.ndarray) -> Any:
        """The accumulator whose fields are one summed row."""
        values: dict[str, Any] = {}
        tables: dict[str, dict[str, list]] = {name: {} for name in self.tables}
        row_vals: list[Any] = [None] * len(self.columns)
        for pos, c in enumerate(self.int_idx):
            row_vals[c] = int(ints[pos])
        for pos, c in enumerate(self.float_idx):
            row_vals[c] = float(floats[pos])
        for (name, key, j), v in zip(self.columns, row_vals, strict=True):
            if key is None:
                values[name] = v
            else:
                tables[name].setdefault(key, [0] * self.tables[name][1])[j] = v
        for name, rows in tables.items():
            values[name] = tuple(
                (k, *vals) for k, vals in sorted(rows.items()) if any(x != 0 for x in vals)
            )
        return self.cls(**values)

    def sums(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Summed integer and float columns for a (resamples, messages) matrix of draws."""
        s = counts.astype(np.float64) @ self.matrix
        return np.rint(s[:, self.int_idx]).astype(np.int64), s[:, self.float_idx]

    def total(self) -> Any:
        """The accumulator of all messages, each once."""
        ints, floats = self.sums(np.ones((1, self.n)))
        return self.rebuild(ints[0], floats[0])


def _check_options(n: int, level: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BootstrapInputError(f"n (resamples) must be an int >= 1, got {n!r}")
    if not 0.0 < level < 1.0:
        raise BootstrapInputError(f"level must be in (0, 1), got {level!r}")


def _resampled(
    tables: Sequence[_Table], metrics: Sequence[Callable[[Any], float]], n: int, seed: int
) -> np.ndarray:
    """Metric of each table's resampled sum, shape (len(tables), n); the same draws for all."""
    m = tables[0].n
    rng = np.random.default_rng(seed)
    p = np.full(m, 1.0 / m)
    out = np.empty((len(tables), n), dtype=np.float64)
    block = max(1, min(n, _BLOCK_CELLS // m))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        counts = rng.multinomial(m, p, size=hi - lo)  # (resamples, messages), rows sum to m
        for t, (table, metric) in enumerate(zip(tables, metrics, strict=True)):
            ints, floats = table.sums(counts)
            for r in range(hi - lo):
                out[t, lo + r] = metric(table.rebuild(ints[r], floats[r]))
    return out


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    # Resamples where the metric is undefined (nan: e.g. no message of some kind was drawn)
    # are left out; the interval is then conditional on the metric being defined.
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = 1.0 - level
    lo, hi = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(
    per_message: Sequence[T],
    metric: Callable[[T], float],
    *,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CI:
    """A metric of summed accumulators, with a percentile bootstrap interval over messages.

    Args:
        per_message: One accumulator per message (see the module docstring for the types).
        metric: Maps a summed accumulator to a number, e.g. `lambda c: c.wer_after`.
        n: Resamples.
        level: Coverage of the interval.
        seed: Seeds the numpy Generator that draws the resamples (derive it with
            `data.record.derive_seed` to keep runs independent).

    Returns:
        `CI(estimate, lo, hi)`: the metric of the sum of all messages and the interval. Resamples
        where the metric is nan are left out; if all are, lo and hi are nan.

    Raises:
        BootstrapInputError: No messages, mixed or unsupported accumulator types, or bad options.
    """
    _check_options(n, level)
    table = _Table(per_message, "bootstrap_ci")
    estimate = float(metric(table.total()))
    values = _resampled([table], [metric], n, seed)[0]
    return CI(estimate, *_interval(values, level))


def paired_bootstrap_ci(
    a: Sequence[T],
    b: Sequence[T],
    metric: Callable[[T], float],
    *,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedCI:
    """The gain metric(b) - metric(a) of two systems on the same messages, with its interval.

    Each resample draws the same messages for both systems, so the interval reflects how much
    the gain depends on which messages were tested, not the spread of either system alone.

    Args:
        a: Per-message accumulators of the baseline.
        b: Per-message accumulators of the system compared, message i the same as in `a`.
        metric: Maps a summed accumulator to a number.
        n: Resamples.
        level: Coverage of the interval.
        seed: Seeds the numpy Generator that draws the resamples.

    Returns:
        `PairedCI(gain, lo, hi, share_not_better)`: the gain on all messages, its percentile
        interval, and the share of resamples where the gain is <= 0 (for a metric where lower
        is better, such as WER, pass its negation or read the share as "not worse"). Resamples
        where either metric is nan are left out.

    Raises:
        BootstrapInputError: `a` and `b` differ in length, or as for `bootstrap_ci`.
    """
    _check_options(n, level)
    if len(a) != len(b):
        raise BootstrapInputError(
            f"paired_bootstrap_ci: a has {len(a)} messages, b has {len(b)}; they must be the same "
            f"messages"
        )
    ta = _Table(a, "paired_bootstrap_ci (a)")
    tb = _Table(b, "paired_bootstrap_ci (b)")
    gain = float(metric(tb.total()) - metric(ta.total()))
    va, vb = _resampled([ta, tb], [metric, metric], n, seed)
    diff = vb - va
    finite = diff[np.isfinite(diff)]
    share = float(np.mean(finite <= 0.0)) if finite.size else math.nan
    return PairedCI(gain, *_interval(diff, level), share)
