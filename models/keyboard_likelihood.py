"""The keyboard's error model scored instead of sampled: log P(typed word | intended word).

`keyboard_sim` draws typing errors; a decoder needs the probability of what was typed under each
word the typist might have meant. `KeyboardLikelihood` computes it for keyboard_sim's generative
model (engine.py), channel by channel:

* Touch: a tap aimed at a key lands at the key centre plus the profile's offset (mirrored in x
  for the right thumb of a two-thumb typist) plus N(0, sigma) noise per axis, and is read as the
  key whose decoding cell holds it. The probability of each key is the Gaussian mass over its
  cells: sums of products of 1-D normal CDF differences (cells are rectangles; cells on the
  keyboard's border reach to infinity, as `Layout.decode` clips points there). This is computed
  once per (layout, profile) as `touch_table[decode layer, aimed key, decoded key]`. Shift and
  layer-switch taps are modelled as the engine plays them: the first missed modifier tap types
  the key it hit, and the character's own tap is then read on the layer still showing.
* Slips per keystroke, partitioned as the engine partitions one uniform: space insertion
  (letters above the space bar), omission, double tap, neighbour touch (a uniform neighbour,
  before or after), each scaled by the profile's place weights; a slipped keystroke has no touch
  error. Transpositions of adjacent letters (rate x cross_hand_factor across digits, x place
  weight), with the engine's rule that a run of firings keeps every other one.
* Habits on the clean word: dropped apostrophes and punctuation, dropped capitals, simplified
  accents; a character a habit changed is typed exactly. Optionally (with a `Lexicon`) the
  whole-word misspelling and real-word channels.

The channels combine by a dynamic program over alignments that sums every way the intended
characters can emit the typed string (the forward algorithm, not Viterbi): the result is the
exact marginal probability under the model, so `exp(log_prob)` over all typed strings sums to 1.
Where this is an approximation:

* The FFitts speed term (the part of the spread that depends on the distance from the digit's
  previous tap, `touch.tap_spread`) is left out: the table uses the profile's absolute spread.
  For the presets it adds under 1% to sigma on most taps (about 0.3 mm in quadrature with
  1.7 mm); `tests/test_keyboard_likelihood.py` measures the effect against the simulator.
* A word is scored as if typed after a space (the keyboard on its letters layer).
* Dropped apostrophes and punctuation are summed over exactly for up to `MAX_DROPS` droppable
  characters in a word; longer runs ("!!!!!!") count at most that many drops.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from keyboard_sim.channels import Channel
from keyboard_sim.layout import Layout, load_layout
from keyboard_sim.lexicon import Lexicon, load_lexicon, match_case
from keyboard_sim.profile import Posture, TypistProfile, load_profile
from keyboard_sim.touch import digits
from keyboard_sim.unicode_tables import APOSTROPHES, PUNCTUATION, tables

# Most droppable characters (apostrophes, punctuation) per word summed over: the chance of more
# drops in one word is below rate^4 (1e-4 at the default 0.1) of the word's mass.
MAX_DROPS = 3
# Emission probabilities below this are dropped from the per-character tables (speed only; the
# mass lost is far below any probability a decoder acts on).
_TINY = 1e-12


class LikelihoodError(ValueError):
    """An intended or typed word that the model cannot score (names the word and the reason)."""


@dataclass(frozen=True)
class _Unit:
    """One character of the intended text as the dynamic program sees it.

    habit: Emissions of the character when a habit changed it (typed exactly), with their
        probability. free: Probability that no habit changed it. emit: Emissions when it is
        typed (slips and touch), summing to 1. pair_p: Probability that a transposition with the
        next character fires (0 when the pair is not eligible). swapped: That pair typed swapped.
    """

    habit: tuple[tuple[str, float], ...]
    free: float
    emit: dict
    pair_p: float
    swapped: str


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (exact at +-inf)."""
    erf = np.vectorize(math.erf, otypes=[float])
    return 0.5 * (1.0 + erf(z / math.sqrt(2.0)))


class KeyboardLikelihood:
    """log P(typed | intended) under keyboard_sim's error model for one layout and typist.

    Construction does no work; the touch table and per-word programs are built on first use and
    cached (one instance per (layout, profile)).

    Args:
        layout: A `Layout` or shipped layout name.
        profile: A `TypistProfile` or preset name ("raw", "committed", a posture).
        lexicon: With a `Lexicon` (or a source name such as "codespell"), also the whole-word
            misspelling and real-word channels at the profile's rates; None leaves them out.
        cache_size: Intended words whose compiled programs are kept.
    """

    def __init__(self, layout: Layout | str = "en-US", profile: TypistProfile | str = "raw",
                 *, lexicon: Lexicon | str | None = None, cache_size: int = 100_000) -> None:
        self.layout = load_layout(layout)
        self.profile = load_profile(profile)
        self._lexicon_spec = lexicon
        self.rates = {c: float(r) for c, r in self.profile.rates.items()}
        self._cache: dict[str, tuple] = {}
        self._cache_size = int(cache_size)
        self._emit_cache: dict[tuple, dict] = {}

    def __repr__(self) -> str:
        return f"KeyboardLikelihood({self.layout.name!r}, {self.profile.name!r})"

    # ------------------------------------------------------------------------- touch table
    @cached_property
    def touch_table(self) -> np.ndarray:
        """P(decoded key | aimed key, decode layer), shape (n_layers, n_keys, n_keys).

        Row [l, j] is the distribution of the key read on layer l (global key index) for a tap
        aimed at key j's centre with the profile's offset and absolute spread. Rows are exact
        Gaussian masses over the layout's decoding cells and sum to 1.
        """
        L, prof = self.layout, self.profile
        a = L.arrays
        xe, ye, owner = L.grid
        n_keys = len(L.keys)
        dig = digits(prof.posture, np.arange(n_keys), L)
        if prof.posture == Posture.TWO_THUMBS:
            ox = (1 - 2 * dig) * prof.offset_x_mm
        else:
            ox = np.full(n_keys, prof.offset_x_mm)
        mx = a["cx"] + ox
        my = a["cy"] + prof.offset_y_mm

        def axis_mass(edges: np.ndarray, mean: np.ndarray, sigma: float) -> np.ndarray:
            inner = edges[1:-1]
            if sigma > 0:
                cdf = _phi((inner[None, :] - mean[:, None]) / sigma)
            else:  # exact taps: P(X < edge); a point on an edge is read in the cell right of it
                cdf = (mean[:, None] < inner[None, :]).astype(float)
            ones = np.ones((len(mean), 1))
            full = np.concatenate([0 * ones, cdf, ones], axis=1)
            return np.diff(full, axis=1)  # (keys, cells along the axis)

        px = axis_mass(xe, mx, prof.sigma_x_mm)
        py = axis_mass(ye, my, prof.sigma_y_mm)
        mass = (py[:, :, None] * px[:, None, :]).reshape(n_keys, -1)  # (aimed, cell)
        out = np.zeros((owner.shape[0], n_keys, n_keys))
        for layer in range(owner.shape[0]):
            onehot = np.zeros((owner[layer].size, n_keys))
            onehot[np.arange(owner[layer].size), owner[layer].ravel()] = 1.0
            out[layer] = mass @ onehot
        return out

    def substitution_probs(self, char: str) -> dict[str, float]:
        """What a tap aimed at `char`'s key types, given that no slip or habit intervened.

        Includes the effect of shift and layer-switch taps for characters that need them
        (typed from the letters layer). '' stands for a function key (nothing typed).

        Raises:
            LikelihoodError: `char` is not one character the layout can type.
        """
        plan = self._plan(char)
        if plan[0][0] < 0:
            raise LikelihoodError(f"character {char!r}: the layout {self.layout.name} cannot "
                                  "type it")
        key, mods = plan[0]
        return dict(self._touch_emission(char, key, mods))

    # ------------------------------------------------------------------ per-character plans
    @cached_property
    def _static(self) -> dict:
        L = self.layout
        nb_table, nb_count = L.neighbors
        return {
            "key_char": ["" if cp < 0 else chr(cp) for cp in L.key_cp.tolist()],
            "layer": L.arrays["layer"].tolist(),
            "shift_key": L.find_key("letters", action="shift"),
            "nb": [[int(k) for k in nb_table[i, : nb_count[i]]] for i in range(len(L.keys))],
            "above": L.space_row["above"].tolist(),
            "digit": digits(self.profile.posture, np.arange(len(L.keys)), L).tolist(),
            "tables": tables(),
        }

    def _plan(self, text: str) -> list[tuple[int, tuple[int, ...]]]:
        """(main key or -1, modifier taps) per character, as the engine plans them after a
        space (keyboard on the letters group)."""
        L = self.layout
        plan = L.plan
        cps = np.array([ord(c) for c in text], dtype=np.uint32)
        cid = plan.lookup(cps).tolist()
        shift_key = self._static["shift_key"]
        state = 0
        out = []
        for ch, c in zip(text, cid, strict=True):
            if c < 0:
                out.append((-1, ()))
                continue
            group = int(plan.group[c])
            mods: list[int] = []
            if group == -1:
                key = int(plan.key_in_group[c, state])
                if key < 0:
                    key = int(plan.key[c])
            else:
                key = int(plan.key[c])
                if group != state:
                    mods.extend(int(k) for k in L.switch_keys[state, group] if k >= 0)
            if plan.shift[c] and shift_key >= 0:
                mods.append(shift_key)
            if ch == " ":
                state = 0
            elif group >= 0:
                state = group
            out.append((key, tuple(mods)))
        return out

    def _touch_emission(self, char: str, key: int, mods: tuple[int, ...]) -> dict[str, float]:
        """Emissions of one typed character when only the touch model acts (sums to 1)."""
        ck = (char, key, mods)
        hit = self._emit_cache.get(ck)
        if hit is not None:
            return hit
        T = self.touch_table
        st = self._static
        kc, layer = st["key_char"], st["layer"]

        def main_tap(decode_layer: int) -> list[tuple[str, float]]:
            row = T[decode_layer, key]
            return [(char if k == key else kc[k], float(row[k]))
                    for k in np.flatnonzero(row > _TINY).tolist()]

        dist: dict[str, float] = {}
        p_ok = 1.0
        for m in mods:
            row = T[layer[m], m]
            after = main_tap(layer[m])  # the key's tap read on the layer still showing
            for h in np.flatnonzero(row > _TINY).tolist():
                if h == m:
                    continue
                ph = p_ok * float(row[h])
                for s, pk in after:
                    e = kc[h] + s
                    dist[e] = dist.get(e, 0.0) + ph * pk
            p_ok *= float(row[m])
        for s, pk in main_tap(layer[key]):
            dist[s] = dist.get(s, 0.0) + p_ok * pk
        self._emit_cache[ck] = dist
        return dist

    # ----------------------------------------------------------------------- compilation
    def _habit_options(self, text: str) -> tuple[list[int], list[list[tuple[str, float]]]]:
        """Droppable positions, and per character the habits that change it (protected)."""
        T = self._static["tables"]
        r = self.rates
        n = len(text)
        is_letter = [self._is(T["is_letter"], c) for c in text]
        droppable, changes = [], []
        for i, c in enumerate(text):
            opts: list[tuple[str, float]] = []
            inner = (c in APOSTROPHES and 0 < i < n - 1 and is_letter[i - 1]
                     and is_letter[i + 1])
            if inner and r[Channel.DROP_APOSTROPHE] > 0:
                droppable.append(i)
            elif c in PUNCTUATION and r[Channel.DROP_PUNCTUATION] > 0:
                droppable.append(i)
            else:
                lo = hi = 0.0  # the engine's partition: capital first, then accent
                cp = ord(c)
                if cp < len(T["is_upper"]) and T["is_upper"][cp]:
                    hi = min(1.0, r[Channel.DROP_CAPITAL])
                    if hi > 0:
                        opts.append((chr(int(T["lower"][cp])), hi))
                    lo = hi
                if is_letter[i] and cp < len(T["accent_base"]) and T["accent_base"][cp] != cp:
                    p = min(1.0, lo + r[Channel.SIMPLIFY_ACCENT]) - lo
                    if p > 0:
                        opts.append((chr(int(T["accent_base"][cp])), p))
            changes.append(opts)
        return droppable, changes

    @staticmethod
    def _is(table: np.ndarray, c: str) -> bool:
        cp = ord(c)
        return bool(table[cp]) if cp < len(table) else False

    def _units(self, t1: str, src: list[int], changes: list[list[tuple[str, float]]]):
        """The dynamic program's units for one intended text after drops (`t1`)."""
        prof, r, st = self.profile, self.rates, self._static
        T = st["tables"]
        n = len(t1)
        plan = self._plan(t1)
        is_letter = [self._is(T["is_letter"], c) for c in t1]
        care = self._care(t1, is_letter)
        units = []
        for i, c in enumerate(t1):
            key, mods = plan[i]
            habit = tuple(changes[i])
            free = 1.0 - sum(p for _, p in habit)
            if key < 0:  # passthrough: typed as is
                units.append(_Unit(habit, free, {c: 1.0}, 0.0, ""))
                continue
            emit: dict[str, float] = {}
            slips = []
            if c != " ":
                w = care[i]
                if st["above"][key]:
                    slips.append((" ", r[Channel.SPACE_INSERTION]))
                slips.append(("", r[Channel.OMISSION] * w))
                slips.append((c + c, r[Channel.DOUBLE_TAP] * w))
                nbs = st["nb"][key]
                if nbs:
                    slips.append((None, r[Channel.NEIGHBOR_INSERTION] * w))
            lo = 0.0
            for e, rate in slips:
                p = min(1.0, lo + rate) - min(1.0, lo)
                lo += rate
                if p <= 0:
                    continue
                if e is None:
                    each = p / (2 * len(nbs))
                    for nb in nbs:
                        for s in (st["key_char"][nb] + c, c + st["key_char"][nb]):
                            emit[s] = emit.get(s, 0.0) + each
                else:
                    emit[e] = emit.get(e, 0.0) + p
            p_touch = 1.0 - min(1.0, lo)
            if p_touch > 0:
                for s, p in self._touch_emission(c, key, mods).items():
                    emit[s] = emit.get(s, 0.0) + p_touch * p
            pair_p, swapped = 0.0, ""
            rt = r[Channel.TRANSPOSITION]
            if (rt > 0 and i + 1 < n and is_letter[i] and is_letter[i + 1] and plan[i + 1][0] >= 0
                    and t1[i + 1] != c and src[i + 1] == src[i] + 1):
                rate = rt
                if st["digit"][key] != st["digit"][plan[i + 1][0]]:
                    rate = min(1.0, rt * prof.cross_hand_factor)
                pair_p = min(1.0, rate * care[i])
                swapped = t1[i + 1] + c
            units.append(_Unit(habit, free, emit, pair_p, swapped))
        return units

    def _care(self, t1: str, is_letter: list[bool]) -> list[float]:
        """The profile's place weight of each character (engine `_place_factor`)."""
        w = self.profile.place_weights
        n = len(t1)
        wordchar = [is_letter[i] or (t1[i] in APOSTROPHES and 0 < i < n - 1 and is_letter[i - 1]
                                     and is_letter[i + 1]) for i in range(n)]
        care = [1.0] * n
        for i in range(n):
            if not is_letter[i]:
                continue
            start = i == 0 or not wordchar[i - 1]
            end = i == n - 1 or not wordchar[i + 1]
            care[i] = w[0] if start else (w[2] if end else w[1])
        return care

    @cached_property
    def lexicon(self) -> Lexicon | None:
        """The lexicon of the word channels, loaded on first use (None: channels left out)."""
        spec = self._lexicon_spec
        if spec is None or isinstance(spec, Lexicon):
            return spec
        return load_lexicon(spec)

    def _compile(self, intended: str) -> tuple:
        """(word-level exact outputs, keyboard weight, [(variant prob, units)]) for a word."""
        got = self._cache.get(intended)
        if got is not None:
            return got
        droppable, changes = self._habit_options(intended)
        r = self.rates
        variants = []
        for k in range(min(len(droppable), MAX_DROPS) + 1):
            for dropped in itertools.combinations(droppable, k):
                p = 1.0
                for i in droppable:
                    rate = (r[Channel.DROP_APOSTROPHE] if intended[i] in APOSTROPHES
                            else r[Channel.DROP_PUNCTUATION])
                    p *= rate if i in dropped else 1.0 - rate
                if p <= 0:
                    continue
                keep = [i for i in range(len(intended)) if i not in dropped]
                t1 = "".join(intended[i] for i in keep)
                units = self._units(t1, keep, [changes[i] for i in keep])
                variants.append((p, units))
        exact: dict[str, float] = {}
        kb = 1.0
        lex = self.lexicon
        T = self._static["tables"]
        if lex is not None and intended and all(
                self._is(T["is_letter"], c) or c in APOSTROPHES for c in intended):
            key = intended.lower()
            for table, rate in ((lex.misspellings, r[Channel.MISSPELLING]),
                                (lex.confusions, r[Channel.REAL_WORD])):
                options = table.get(key)
                if options and rate > 0:
                    kb -= rate
                    for opt in options:
                        s = match_case(intended, opt)
                        exact[s] = exact.get(s, 0.0) + rate / len(options)
        got = (exact, max(kb, 0.0), variants)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[intended] = got
        return got

    # ------------------------------------------------------------------------- scoring
    @staticmethod
    def _forward(units: list[_Unit], typed: str) -> float:
        """P(typed | units): sum over alignments (see module docstring), with one bit of state:
        whether the previous character was typed alone while it could have been swapped with
        this one (then that swap must not have fired, if this one is typed freely)."""
        n, m = len(units), len(typed)
        f0 = [[0.0] * (m + 1) for _ in range(n + 1)]
        f1 = [[0.0] * (m + 1) for _ in range(n + 1)]
        f0[0][0] = 1.0
        for i, u in enumerate(units):
            prev_p = units[i - 1].pair_p if i else 0.0
            nxt0, nxt1 = f0[i + 1], f1[i + 1]
            single = nxt1 if u.pair_p > 0 else nxt0
            emit = u.emit
            for j in range(m + 1):
                a0, a1 = f0[i][j], f1[i][j]
                if a0 == 0.0 and a1 == 0.0:
                    continue
                for e, p in u.habit:
                    if typed.startswith(e, j):
                        nxt0[j + len(e)] += (a0 + a1) * p
                w = (a0 + a1 * (1.0 - prev_p)) * u.free
                if w == 0.0:
                    continue
                p = emit.get("")
                if p:
                    single[j] += w * p
                if j < m:
                    p = emit.get(typed[j])
                    if p:
                        single[j + 1] += w * p
                    if j + 1 < m:
                        two = typed[j : j + 2]
                        p = emit.get(two)
                        if p:
                            single[j + 2] += w * p
                        if u.pair_p > 0 and two == u.swapped:
                            f0[i + 2][j + 2] += w * units[i + 1].free * u.pair_p
        return f0[n][m] + f1[n][m]

    def prob(self, typed: str, intended: str) -> float:
        """P(typed | intended) (see `log_prob`)."""
        for name, s in (("typed", typed), ("intended", intended)):
            if not isinstance(s, str):
                raise TypeError(f"{name} must be a str, got {type(s).__name__}")
        if any(c.isspace() for c in intended):
            raise LikelihoodError(f"intended {intended!r}: one word without whitespace expected")
        exact, kb, variants = self._compile(intended)
        total = exact.get(typed, 0.0)
        if kb > 0:
            total += kb * sum(p * self._forward(units, typed) for p, units in variants)
        return total

    def log_prob(self, typed: str, intended: str) -> float:
        """log P(typed word | intended word) under the keyboard's error model (natural log).

        Returns -inf where the model cannot produce `typed` from `intended` (e.g. "Teh" from
        "the": a lowercase letter never comes out capitalised).

        Raises:
            LikelihoodError: `intended` holds whitespace (score words one at a time).
            TypeError: either argument is not a str.
        """
        p = self.prob(typed, intended)
        return math.log(p) if p > 0 else -math.inf

    def log_probs(self, typed: str, candidates: Sequence[str]) -> np.ndarray:
        """`log_prob(typed, c)` for each candidate, as a float64 array."""
        return np.array([self.log_prob(typed, c) for c in candidates], dtype=np.float64)
