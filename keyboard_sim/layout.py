"""Keyboard layouts: key geometry in millimetres, layers, long presses, and decoding of taps.

A layout is a data file (keyboard_sim/layouts/NAME.json, written by scripts/make_layouts.py).
This module only reads geometry and answers questions about it: which key types a character
(and what layer switches, shift taps or long presses it costs), which key lies under a point,
which keys neighbour a key. What goes wrong when a person types is the noise model's business
(engine.py), not the layout's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

# Layer groups: a typist is in one group at a time; switching costs taps on switch keys.
# Group 0 holds the letters layer, its shift layer and long presses on them.
GROUP_OF_LAYER = {"letters": 0, "shift": 0, "numbers": 1, "symbols": 2}
# Which digit presses a key, when a layout says (`hand` of a key): ten-finger typists press the
# space bar with a thumb, neither hand's fingers.
HANDS = ("left", "right", "thumb")


@dataclass(frozen=True)
class Key:
    """One key on one layer: a rectangle in mm (origin top-left, y down)."""

    label: str
    layer: str
    x: float
    y: float
    w: float
    h: float
    text: str | None = None
    action: str | None = None
    hand: int | None = None  # index in HANDS; None: by position (see Layout.hands)

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True, eq=False)
class CharPlan:
    """How each typeable character is typed, as arrays indexed by character id.

    Attributes:
        cps: Sorted code points of typeable characters (char id = index here).
        key: Global index of the key tapped for the character (its primary layer).
        group: Layer group the character needs, or -1 if every group has it (space, . and ,).
        shift: Whether a shift tap comes first.
        long_press: Whether the key is long-pressed (an accent from the key's popup).
        key_in_group: For each group, the key typing the character there, or -1.
    """

    cps: np.ndarray
    key: np.ndarray
    group: np.ndarray
    shift: np.ndarray
    long_press: np.ndarray
    key_in_group: np.ndarray

    @cached_property
    def _dense(self) -> np.ndarray:
        """Char id for every code point up to the largest typeable one (-1 elsewhere)."""
        top = int(self.cps.max()) + 1 if len(self.cps) else 1
        table = np.full(top, -1, dtype=np.int32)
        table[self.cps.astype(np.int64)] = np.arange(len(self.cps), dtype=np.int32)
        return table

    def lookup(self, cps: np.ndarray) -> np.ndarray:
        """Char ids for code points, -1 where the layout cannot type the character."""
        table = self._dense
        inside = cps < len(table)
        return np.where(inside, table[np.where(inside, cps, 0)], -1)


class Layout:
    """A keyboard layout loaded from its data file. Use `load_layout(name)`."""

    def __init__(self, spec: dict, source: str = "<dict>") -> None:
        self.source = source
        try:
            self.name: str = spec["name"]
            self.kind: str = spec.get("kind", "phone")
            self.language: str = spec.get("language", "")
            self.description: str = spec.get("description", "")
            self.width_mm = float(spec["width_mm"])
            self.height_mm = float(spec["height_mm"])
            layers = spec["layers"]
            self.long_press: dict[str, list[str]] = dict(spec.get("long_press", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"layout {source}: missing or invalid field ({e})") from None
        if "letters" not in layers:
            raise ValueError(f"layout {source}: needs a 'letters' layer")
        unknown = sorted(set(layers) - set(GROUP_OF_LAYER))
        if unknown:
            raise ValueError(f"layout {source}: unknown layer(s) {unknown}")
        keys: list[Key] = []
        for layer, items in layers.items():
            for i, k in enumerate(items):
                try:
                    hand = k.get("hand")
                    if hand not in (None, *HANDS):
                        raise ValueError(f"hand must be one of {', '.join(HANDS)}, got {hand!r}")
                    key = Key(k["label"], layer, float(k["x"]), float(k["y"]), float(k["w"]),
                              float(k["h"]), k.get("text"), k.get("action"),
                              None if hand is None else HANDS.index(hand))
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"layout {source}: layer {layer} key {i}: {e}") from None
                if key.w <= 0 or key.h <= 0:
                    raise ValueError(f"layout {source}: layer {layer} key {i} has no area")
                keys.append(key)
        self.keys: tuple[Key, ...] = tuple(keys)
        self.layer_names: tuple[str, ...] = tuple(layers)

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {len(self.keys)} keys, layers={list(self.layer_names)})"

    # ----------------------------------------------------------------------- geometry arrays
    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Per-key arrays (global key index): rectangle, centre, layer index, group."""
        k = self.keys
        return {
            "x0": np.array([q.x for q in k]),
            "y0": np.array([q.y for q in k]),
            "x1": np.array([q.x + q.w for q in k]),
            "y1": np.array([q.y + q.h for q in k]),
            "cx": np.array([q.cx for q in k]),
            "cy": np.array([q.cy for q in k]),
            "layer": np.array([self.layer_names.index(q.layer) for q in k], dtype=np.int32),
            "group": np.array([GROUP_OF_LAYER[q.layer] for q in k], dtype=np.int32),
        }

    @cached_property
    def key_text(self) -> list[str]:
        """What each key types ('' for function keys)."""
        return [q.text or "" for q in self.keys]

    @cached_property
    def hands(self) -> np.ndarray:
        """Digit (0 left, 1 right, 2 thumb) that taps each key with two thumbs or ten fingers.

        A key's own `hand` field wins (physical layouts give the touch-typing split); otherwise
        keys left of the middle, or centred on it, go to the left thumb.
        """
        mid = self.width_mm / 2
        return np.array([q.hand if q.hand is not None else int(q.cx > mid + 1e-6)
                         for q in self.keys], dtype=np.int32)

    @cached_property
    def key_cp(self) -> np.ndarray:
        """Code point each key types (its text's first character), -1 for function keys."""
        return np.array([ord(t[0]) if t else -1 for t in self.key_text], dtype=np.int32)

    @cached_property
    def pitch_mm(self) -> float:
        """Width of a letter key (the most common text-key width on the letters layer)."""
        widths = [round(q.w, 2) for q in self.keys if q.layer == "letters" and q.text
                  and q.text.isalpha()]
        values, counts = np.unique(widths, return_counts=True)
        return float(values[np.argmax(counts)])

    def layer_keys(self, layer: str) -> list[int]:
        """Global indices of the keys on `layer`."""
        return [i for i, q in enumerate(self.keys) if q.layer == layer]

    def find_key(self, layer: str, *, text: str | None = None, action: str | None = None) -> int:
        """Global index of the first key on `layer` with this text or action, or -1."""
        for i, q in enumerate(self.keys):
            if q.layer == layer and ((text is not None and q.text == text)
                                     or (action is not None and q.action == action)):
                return i
        return -1

    # ------------------------------------------------------------------------------ decoding
    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x_edges, y_edges, owner[layer, row, col]): an exact decoding grid.

        The cells are the rectangles between consecutive key edges, so every cell lies inside
        one key or in a gap, and decoding a point is two binary searches and a lookup. A gap
        cell goes to the nearest key of its row (keyboards extend the touch area of edge keys
        to the screen edge); points off the keyboard go to the nearest edge cell.
        """
        a = self.arrays
        xe = np.unique(np.round(np.concatenate([a["x0"], a["x1"], [0.0, self.width_mm]]), 6))
        ye = np.unique(np.round(np.concatenate([a["y0"], a["y1"], [0.0, self.height_mm]]), 6))
        xc = (xe[:-1] + xe[1:]) / 2
        yc = (ye[:-1] + ye[1:]) / 2
        owner = np.empty((len(self.layer_names), len(yc), len(xc)), dtype=np.int32)
        for li in range(len(self.layer_names)):
            idx = np.flatnonzero(a["layer"] == li)
            x0, x1, y0, y1 = (a[k][idx] for k in ("x0", "x1", "y0", "y1"))
            dx = np.maximum(np.maximum(x0[:, None] - xc[None, :], xc[None, :] - x1[:, None]), 0)
            dy = np.maximum(np.maximum(y0[:, None] - yc[None, :], yc[None, :] - y1[:, None]), 0)
            # Distance: rows first (a key of the same row always beats another row), then x.
            d = dy[:, :, None] * 1e6 + dx[:, None, :]
            owner[li] = idx[np.argmin(d, axis=0)]
        return xe, ye, owner

    @cached_property
    def _bins(self):
        """Uniform 0.05 mm bins over each axis mapping a coordinate to its grid cell exactly.

        A bin holds at most one cell edge (keys are far wider than a bin): the cell is the bin's
        first cell, plus one if the coordinate is at or past the edge inside the bin.
        """
        xe, ye, _ = self.grid
        out = []
        for edges in (xe, ye):
            step = min(0.05, float(np.diff(edges).min()) / 2)
            n = int(np.ceil((edges[-1] - edges[0]) / step)) + 1
            left = edges[0] + step * np.arange(n)
            first = np.clip(np.searchsorted(edges, left, side="right") - 1, 0, len(edges) - 2)
            nxt = np.searchsorted(edges, left, side="right")
            edge_in = np.full(n, np.inf)
            inside = (nxt < len(edges)) & (edges[np.minimum(nxt, len(edges) - 1)] < left + step)
            edge_in[inside] = edges[nxt[inside]]
            edge_in[first >= len(edges) - 2] = np.inf  # no cell beyond the last
            out.append((edges[0], 1.0 / step, first, edge_in))
        return out

    def decode(self, layer: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Global index of the key under each point (x, y in mm) on each layer index."""
        _, _, owner = self.grid
        idx = []
        for (origin, inv, first, edge_in), v in zip(self._bins, (x, y), strict=True):
            v = np.asarray(v, dtype=np.float64)
            k = np.clip(((v - origin) * inv).astype(np.int64), 0, len(first) - 1)
            idx.append(first[k] + (v >= edge_in[k]))
        return owner[layer, idx[1], idx[0]]

    # ----------------------------------------------------------------------------- planning
    @cached_property
    def plan(self) -> CharPlan:
        """How every typeable character is typed (cheapest way, letters layer first)."""
        best: dict[str, tuple[int, int, bool, bool]] = {}  # char -> (cost, key, shift, long)
        by_group: dict[str, dict[int, int]] = {}
        shift_cost = {"letters": 1, "shift": 2, "numbers": 2, "symbols": 3}
        for i, q in enumerate(self.keys):
            if q.text is None:
                continue
            cost = shift_cost[q.layer]
            cand = (cost, i, q.layer == "shift", False)
            if q.text not in best or cand[0] < best[q.text][0]:
                best[q.text] = cand
            by_group.setdefault(q.text, {}).setdefault(GROUP_OF_LAYER[q.layer], i)
        for base, accents in self.long_press.items():
            for layer in ("letters", "shift"):
                ki = self.find_key(layer, text=base)
                if ki < 0:
                    continue
                for ch in accents:
                    # A long press and the slide to the accent cost two keystrokes (plus shift).
                    cand = (shift_cost[layer] + 1, ki, layer == "shift", True)
                    if ch not in best or cand[0] < best[ch][0]:
                        best[ch] = cand
                    by_group.setdefault(ch, {}).setdefault(0, ki)
        groups = sorted({GROUP_OF_LAYER[n] for n in self.layer_names})
        chars = sorted(c for c in best if len(c) == 1)
        cps = np.array([ord(c) for c in chars], dtype=np.uint32)
        key = np.array([best[c][1] for c in chars], dtype=np.int32)
        shift = np.array([best[c][2] for c in chars], dtype=bool)
        long_press = np.array([best[c][3] for c in chars], dtype=bool)
        kig = np.full((len(chars), 3), -1, dtype=np.int32)
        group = np.empty(len(chars), dtype=np.int32)
        for j, c in enumerate(chars):
            for g, ki in by_group.get(c, {}).items():
                kig[j, g] = ki
            neutral = all(kig[j, g] >= 0 for g in groups) and len(groups) > 1
            group[j] = -1 if neutral else GROUP_OF_LAYER[self.keys[key[j]].layer]
        return CharPlan(cps, key, group, shift, long_press, kig)

    @cached_property
    def switch_keys(self) -> np.ndarray:
        """[from_group, to_group, step] -> key tapped to switch groups (-1 pads unused steps)."""
        out = np.full((3, 3, 2), -1, dtype=np.int32)
        main = {0: "letters", 1: "numbers", 2: "symbols"}
        for src, src_layer in main.items():
            if src_layer not in self.layer_names:
                continue
            for dst, dst_layer in main.items():
                if dst == src or dst_layer not in self.layer_names:
                    continue
                path = self._switch_path(src_layer, dst_layer)
                if path is not None and len(path) <= 2:
                    out[src, dst, : len(path)] = path
        return out

    def _switch_path(self, src: str, dst: str) -> list[int] | None:
        """Shortest sequence of layer-switch key taps from layer src to layer dst (BFS)."""
        frontier, seen = [(src, [])], {src}
        while frontier:
            nxt = []
            for layer, path in frontier:
                for i, q in enumerate(self.keys):
                    if q.layer != layer or not (q.action or "").startswith("layer:"):
                        continue
                    target = q.action.split(":", 1)[1]
                    if target == dst:
                        return [*path, i]
                    if target not in seen and target in self.layer_names:
                        seen.add(target)
                        nxt.append((target, [*path, i]))
            frontier = nxt
        return None

    @cached_property
    def neighbors(self) -> tuple[np.ndarray, np.ndarray]:
        """(table, count): text keys touching each key on its layer (padded with -1)."""
        a = self.arrays
        n = len(self.keys)
        gap = 0.5  # mm: rectangles closer than this are neighbours
        lists = []
        for i in range(n):
            same = (a["layer"] == a["layer"][i]) & (np.arange(n) != i)
            dx = np.maximum(np.maximum(a["x0"] - a["x1"][i], a["x0"][i] - a["x1"]), 0)
            dy = np.maximum(np.maximum(a["y0"] - a["y1"][i], a["y0"][i] - a["y1"]), 0)
            near = same & (dx < gap) & (dy < gap)
            lists.append([j for j in np.flatnonzero(near) if self.keys[j].text])
        width = max(1, max(len(v) for v in lists))
        table = np.full((n, width), -1, dtype=np.int32)
        for i, v in enumerate(lists):
            table[i, : len(v)] = v
        return table, np.array([len(v) for v in lists], dtype=np.int32)

    @cached_property
    def space_row(self) -> dict:
        """Geometry of the space bar and the letter keys directly above it (letters layer).

        Returns dict with `space` (key index), `above_y` (centre y of the row above),
        `x_lo`/`x_hi` (x range of text keys above the space bar), and `above` (bool per key:
        a letter key on the letters or shift layer whose rectangle sits above the space bar).
        """
        a = self.arrays
        space = self.find_key("letters", text=" ")
        above = np.zeros(len(self.keys), dtype=bool)
        if space < 0:
            return {"space": -1, "above_y": 0.0, "x_lo": 0.0, "x_hi": 0.0, "above": above}
        sx0, sx1, sy0 = a["x0"][space], a["x1"][space], a["y0"][space]
        for i, q in enumerate(self.keys):
            if q.layer in ("letters", "shift") and q.text and q.text.isalpha():
                if abs(a["y1"][i] - sy0) < 0.5 and a["x1"][i] > sx0 and a["x0"][i] < sx1:
                    above[i] = True
        lo = a["x0"][above].min() if above.any() else sx0
        hi = a["x1"][above].max() if above.any() else sx1
        row_h = float(np.median(a["y1"][above] - a["y0"][above])) if above.any() else 0.0
        return {"space": space, "above_y": float(sy0 - row_h / 2), "x_lo": float(lo),
                "x_hi": float(hi), "above": above}

    def key_center(self, ch: str) -> tuple[float, float] | None:
        """Centre (mm) of the key typing `ch` on the letters/shift layer (accents: their base)."""
        if len(ch) != 1:
            return None
        cid = self.plan.lookup(np.array([ord(ch)], dtype=np.uint32))[0]
        if cid < 0:
            return None
        ki = self.plan.key_in_group[cid, 0]
        if ki < 0:
            return None
        return (float(self.arrays["cx"][ki]), float(self.arrays["cy"][ki]))


def _layout_dir():
    return resources.files("keyboard_sim") / "layouts"


def available_layouts() -> list[str]:
    """Names of the layouts shipped with the package."""
    return sorted(p.name[:-5] for p in _layout_dir().iterdir() if p.name.endswith(".json"))


@lru_cache(maxsize=32)
def _load_shipped(name: str) -> Layout:
    path = _layout_dir() / f"{name}.json"
    return Layout(json.loads(path.read_text(encoding="utf-8")), source=f"{name}.json")


def load_layout(spec: str | Path | Layout) -> Layout:
    """A shipped layout by name, a layout JSON file by path, or a `Layout` as is."""
    if isinstance(spec, Layout):
        return spec
    name = str(spec)
    if name in available_layouts():
        return _load_shipped(name)
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"layout file {path}: cannot read JSON ({e})") from None
        return Layout(data, source=str(path))
    raise ValueError(
        f"unknown layout {name!r}; shipped layouts: {', '.join(available_layouts())} "
        "(or give a path to a layout .json file)"
    )
