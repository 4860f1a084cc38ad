"""The report's figures: one function per plot, each writing a PNG and returning its path.

Every function takes the plain data the experiment runner records in results.json (see
eval/report.py for the schema), draws with matplotlib's object API (a `Figure` of its own, no
pyplot and so no global figure state, the Agg renderer, no display needed) inside the default
style, and writes the PNG without the "Software" metadata line, so the same data give the same
bytes on the same matplotlib. Missing numbers (None, NaN) are drawn as gaps, never as zeros.

Raises `PlotError` (a ValueError) when there is nothing to draw, naming the input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from data.record import derive_seed
from keyboard_sim.layout import Layout, load_layout
from keyboard_sim.profile import TypistProfile

DPI = 110
# Pangrams (every letter of the English alphabet at least once) so that every letter key gets
# taps in the touch heatmap; standard English pangrams, lower case so all taps are on the
# letters layer.
PANGRAMS = (
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "sphinx of black quartz judge my vow",
    "how vexingly quick daft zebras jump",
    "the five boxing wizards jump quickly",
)
_STYLE = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 10,
          "legend.fontsize": 8}


class PlotError(ValueError):
    """Nothing to plot, or the data are malformed (the message names which)."""


def _num(x) -> float:
    """A float, NaN for None or anything that is not a number (drawn as a gap)."""
    if isinstance(x, bool) or x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _colors(n: int) -> list:
    """n distinct colours from the tab10 cycle (repeating after ten)."""
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _grouped_bars(ax, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                  horizontal: bool = False) -> None:
    """Bars of several series side by side for each group."""
    k = max(len(series), 1)
    width = 0.8 / k
    pos = np.arange(len(groups), dtype=float)
    for j, ((label, values), color) in enumerate(zip(series, _colors(k), strict=True)):
        offs = pos - 0.4 + width * (j + 0.5)
        vals = [_num(v) for v in values]
        if horizontal:
            ax.barh(offs, vals, height=width, label=label, color=color)
        else:
            ax.bar(offs, vals, width=width, label=label, color=color)
    if horizontal:
        ax.set_yticks(pos, groups)
        ax.invert_yaxis()
    else:
        ax.set_xticks(pos, groups)


# --------------------------------------------------------------------------- touch heatmap


def touch_points(profile: TypistProfile, layout: Layout, texts: Sequence[str], n: int,
                 seed: int) -> np.ndarray:
    """(taps, 2) touch points in mm of `n` texts (cycled from `texts`) typed with `profile`."""
    from keyboard_sim.simulate import simulate

    typed = [texts[i % len(texts)] for i in range(n)]
    pairs = simulate(typed, profile, layout, seed, ids=[f"heatmap-{i}" for i in range(n)],
                     touches=True)
    pts = [(t.x, t.y) for p in pairs for t in (p.touches or ())]
    return np.asarray(pts, dtype=float).reshape(-1, 2)


def touch_heatmap(
    profiles: Sequence[tuple[str, TypistProfile]],
    path: str | Path,
    *,
    layout: Layout | str = "en-US",
    texts: Sequence[str] | None = None,
    n: int = 300,
    seed: int = 0,
    bin_mm: float = 0.5,
) -> Path:
    """Where each typist's taps land: a 2-D histogram of simulated touch points over the keys.

    Args:
        profiles: (name, profile) pairs, one panel each.
        path: The PNG to write.
        layout: The keyboard (its letters layer is drawn; taps on other layers, rare with the
            default lower-case texts, are drawn on the same plane).
        texts: Texts to type (default: `PANGRAMS`, so every letter key is aimed at).
        n: Texts typed per profile (cycled from `texts`, each with its own random draws).
        seed: Run seed; the simulation seed is derived from it, the same for every profile so
            the panels differ only by the profiles.
        bin_mm: Histogram cell size in mm.
    """
    if not profiles:
        raise PlotError("touch_heatmap: no profiles")
    if n < 1:
        raise PlotError(f"touch_heatmap: n must be >= 1, got {n}")
    texts = list(texts) if texts is not None else list(PANGRAMS)
    if not texts:
        raise PlotError("touch_heatmap: no texts to type")
    lay = load_layout(layout)
    sim_seed = derive_seed(seed, "touch_heatmap")
    keys = [k for k in lay.keys if k.layer == "letters"]
    xbins = np.arange(0.0, lay.width_mm + bin_mm, bin_mm)
    ybins = np.arange(0.0, lay.height_mm + bin_mm, bin_mm)
    cols = min(len(profiles), 3)
    rows = math.ceil(len(profiles) / cols)
    panel_w = 4.8
    panel_h = panel_w * lay.height_mm / lay.width_mm + 0.9
    with matplotlib.rc_context(_STYLE):
        fig = _figure(panel_w * cols, panel_h * rows)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (name, prof) in zip(axes, profiles, strict=False):
            pts = touch_points(prof, lay, texts, n, sim_seed)
            h = ax.hist2d(pts[:, 0], pts[:, 1], bins=[xbins, ybins], cmin=1, cmap="viridis")
            for k in keys:
                ax.add_patch(Rectangle((k.x, k.y), k.w, k.h, fill=False, lw=0.6,
                                       edgecolor="0.35"))
                ax.text(k.cx, k.cy, k.label if len(k.label) <= 2 else k.label[:5],
                        ha="center", va="center", fontsize=6, color="0.25", alpha=0.7)
            ax.set_xlim(0, lay.width_mm)
            ax.set_ylim(lay.height_mm, 0)  # y down, as in the layout files
            ax.set_aspect("equal")
            ax.set_xlabel("x (mm)")
            ax.set_ylabel("y (mm)")
            ax.set_title(f"{name} ({prof.posture.value}), {len(pts):,} taps\n"
                         f"sigma {prof.sigma_x_mm:.2f} \u00d7 {prof.sigma_y_mm:.2f} mm, offset "
                         f"({prof.offset_x_mm:+.2f}, {prof.offset_y_mm:+.2f}) mm")
            fig.colorbar(h[3], ax=ax, shrink=0.8, label=f"taps per {bin_mm:g} mm cell")
        for ax in axes[len(profiles):]:
            ax.set_visible(False)
        fig.suptitle(f"Simulated touch points on {lay.name}")
        return _save(fig, path)


# ------------------------------------------------------------------------------ error mix


def error_mix_series(realism: Mapping) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """The edit types seen on either side, and per side (real first, then each profile) its
    label and the share of its edits of each type.

    Raises:
        PlotError: The realism results lack their parts, or neither side has an edit.
    """
    try:
        real = realism["real"]
        profiles = realism["profiles"]
        types = [t for t in real["types"]
                 if real["types"][t] or any(p["simulated"]["types"].get(t, 0)
                                            for p in profiles.values())]
    except (KeyError, TypeError, AttributeError) as e:
        raise PlotError(f"error_mix: realism results lack {e}") from None
    if not types:
        raise PlotError("error_mix: no edits on either side")

    def shares(counts: Mapping) -> list[float]:
        total = sum(counts.values())
        return [counts.get(t, 0) / total if total else math.nan for t in types]

    series = [(f"real ({real['edits']:,} edits)", shares(real["types"]))]
    for name, p in profiles.items():
        d = p["divergence"]
        series.append((f"{name} on {p['layout']}: JSD types {_num(d['types']):.3f} bits "
                       f"({p['simulated']['edits']:,} edits)", shares(p["simulated"]["types"])))
    return types, series


def error_mix(realism: Mapping, path: str | Path) -> Path:
    """Share of each edit type, real held-out pairs against each simulated profile.

    Args:
        realism: `eval.realism.realism()` output.
        path: The PNG to write.
    """
    types, series = error_mix_series(realism)
    real = realism["real"]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.5, 0.12 * len(types) * len(series) + 1.8)
        ax = fig.subplots()
        _grouped_bars(ax, types, series, horizontal=True)
        ax.set_xlabel("share of edits")
        ax.legend(loc="lower right")
        split = realism.get("split", {}).get("compare", {})
        ax.set_title(f"Edit-type mix, simulated vs real: {realism.get('source', '')}, "
                     f"{split.get('pairs', real.get('pairs', 0)):,} held-out pairs")
        return _save(fig, path)


# ------------------------------------------------------------------------ learning curves


def learning_curves(runs: Mapping[str, Mapping], path: str | Path) -> Path:
    """Held-out loss, top-1 and top-3 accuracy per round for each run; for runs with
    differential privacy, the epsilon spent so far on a twin axis of the top-1 panel.

    Args:
        runs: results["nwp"]["runs"]: {run: {"curve": [{"round", "loss", "accuracy",
            "top3_accuracy", "epsilon"}, ...]}}.
        path: The PNG to write.
    """
    curves = {name: r.get("curve") or [] for name, r in runs.items()}
    if not any(curves.values()):
        raise PlotError("learning_curves: no run has a curve")
    colors = dict(zip(curves, _colors(len(curves)), strict=True))
    panels = (("loss", "held-out loss (nats per token)"), ("accuracy", "top-1 accuracy"),
              ("top3_accuracy", "top-3 accuracy"))
    with matplotlib.rc_context(_STYLE):
        fig = _figure(12, 3.6)
        axes = fig.subplots(1, 3)
        twin = None
        for ax, (key, label) in zip(axes, panels, strict=True):
            for name, curve in curves.items():
                if not curve:
                    continue
                x = [_num(p.get("round")) for p in curve]
                ax.plot(x, [_num(p.get(key)) for p in curve], marker="o", ms=3,
                        color=colors[name], label=name)
            ax.set_xlabel("round")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        for name, curve in curves.items():
            eps = [_num(p.get("epsilon")) for p in curve]
            if not any(math.isfinite(e) for e in eps):
                continue
            twin = twin or axes[1].twinx()
            twin.plot([_num(p.get("round")) for p in curve], eps, ls="--", color=colors[name],
                      label=f"{name} epsilon")
        if twin is not None:
            twin.set_ylabel("epsilon spent (dashed)")
            h1, l1 = axes[1].get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            axes[1].legend(h1 + h2, l1 + l2, loc="lower right")
        else:
            axes[1].legend(loc="lower right")
        fig.suptitle("Federated next-word prediction: held-out metrics per round")
        return _save(fig, path)


# ----------------------------------------------------------------- accuracy by client size


def accuracy_by_client_size(by_client_size: Mapping[str, Mapping], path: str | Path) -> Path:
    """Top-1 and top-3 next-word accuracy per client-size bucket, one bar per run.

    Args:
        by_client_size: results["nwp"]["by_client_size"]: {run: {bucket: {"accuracy",
            "top3_accuracy", "clients", "words"}}}; buckets in the order of the first run.
        path: The PNG to write.
    """
    runs = {k: v for k, v in by_client_size.items() if v}
    if not runs:
        raise PlotError("accuracy_by_client_size: no buckets")
    buckets: list[str] = []
    for r in runs.values():
        buckets += [b for b in r if b not in buckets]
    first = next(iter(runs.values()))
    labels = [f"{b}\n{first[b].get('clients', '?')} clients" if b in first else b
              for b in buckets]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(max(6.0, 1.2 * len(buckets) * 2 + 2), 3.6)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (key, title) in zip(axes, (("accuracy", "top-1"), ("top3_accuracy", "top-3")),
                                    strict=True):
            series = [(name, [r.get(b, {}).get(key) for b in buckets])
                      for name, r in runs.items()]
            _grouped_bars(ax, labels, series)
            ax.set_title(f"{title} accuracy")
            ax.set_xlabel("client-size bucket")
            ax.set_ylabel("accuracy")
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend()
        fig.suptitle("Next-word accuracy on held-out clients by client size")
        return _save(fig, path)


# ---------------------------------------------------------------------- fix rate by type


def fix_rate_series(fix_rate_by_type: Mapping[str, Mapping], title: str = ""
                    ) -> tuple[list[str], dict[str, int], list[tuple[str, list[float]]]]:
    """The error types with any error, the errors of each type (the largest total over the
    correctors, which see the same errors), and per corrector its fix rate of each type
    (fixed / total; NaN where it saw none).

    Raises:
        PlotError: No corrector saw any error.
    """
    types: list[str] = []
    for per in fix_rate_by_type.values():
        types += [t for t, c in per.items() if c.get("total") and t not in types]
    if not types:
        raise PlotError(f"fix_rate_by_type{f' ({title})' if title else ''}: no errors counted")
    totals = {t: max(int(per.get(t, {}).get("total") or 0) for per in fix_rate_by_type.values())
              for t in types}

    def rate(c: Mapping | None) -> float:
        if not c or not c.get("total"):
            return math.nan
        return _num(c.get("fixed")) / _num(c["total"])

    series = [(name, [rate(per.get(t)) for t in types])
              for name, per in fix_rate_by_type.items()]
    return types, totals, series


def fix_rate_by_type(fix_rate_by_type: Mapping[str, Mapping], path: str | Path,
                     title: str = "") -> Path:
    """Share of errors of each type that each corrector fixed (fixed / total).

    Args:
        fix_rate_by_type: {corrector: {error type: {"total": int, "fixed": int}}} of one set.
        path: The PNG to write.
        title: What set this is (shown in the title).
    """
    types, totals, series = fix_rate_series(fix_rate_by_type, title)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.5, 0.14 * len(types) * len(series) + 1.8)
        ax = fig.subplots()
        _grouped_bars(ax, [f"{t} (n={totals[t]:,})" for t in types], series, horizontal=True)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fix rate (errors of the type fixed / errors of the type)")
        ax.legend(loc="lower right")
        ax.set_title(f"Fix rate per error type{': ' + title if title else ''}")
        return _save(fig, path)


# ------------------------------------------------------------------------ canary exposure


def canary_exposure(privacy: Mapping, path: str | Path) -> Path:
    """Exposure (bits) of each inserted canary in each run, beside the run's epsilon.

    The dashed line is log2 of the candidate space |R|, the exposure of a canary ranked first
    among all candidates (Carlini et al. 2019, "The Secret Sharer", USENIX Security: exposure =
    log2 |R| - log2 rank); a sampling estimate with N candidates tops out at log2(N + 1).

    Args:
        privacy: results["privacy"]: {"canaries": [{"id", "repetitions", "exposure": {run: bits}}],
            "epsilon": {run: float|None}, "candidate_space_bits": float}.
        path: The PNG to write.
    """
    canaries = list(privacy.get("canaries") or [])
    if not canaries:
        raise PlotError("canary_exposure: no canaries")
    runs: list[str] = []
    for c in canaries:
        runs += [r for r in c.get("exposure", {}) if r not in runs]
    eps = privacy.get("epsilon") or {}

    def run_label(r: str) -> str:
        e = _num(eps.get(r))
        return f"{r} (epsilon {e:.2f})" if math.isfinite(e) else f"{r} (no DP)"

    series = [(run_label(r), [c.get("exposure", {}).get(r) for c in canaries]) for r in runs]
    labels = [f"{c.get('id', i)}\n\u00d7{c.get('repetitions', '?')}"
              for i, c in enumerate(canaries)]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(max(6.0, 0.9 * len(canaries) + 2), 3.8)
        ax = fig.subplots()
        _grouped_bars(ax, labels, series)
        top = _num(privacy.get("candidate_space_bits"))
        if math.isfinite(top):
            ax.axhline(top, ls="--", color="0.4", lw=1,
                       label=f"log2 |R| = {top:.1f} bits (rank 1 of all candidates)")
        ax.set_ylabel("exposure (bits)")
        ax.set_xlabel("canary (times inserted)")
        ax.legend()
        ax.set_title("Canary exposure")
        ax.grid(axis="y", alpha=0.3)
        return _save(fig, path)
