"""Fit a typist profile to real (intended, typed) pairs, so the simulator types like the logs.

The estimator, in three steps:

1. **Align and count.** Each pair is aligned and its edits labelled as channels (align.py). For
   every rated channel the eligible units of the intended text are counted with the simulator's
   own definitions (channels.UNIT, engine.py): typeable non-space characters for omissions and
   insertions, spaces for space-bar slips, letters above the space bar, uppercase letters,
   accented letters, punctuation marks, inner apostrophes, words with an attested misspelling,
   words in a real-word confusion set, and pairs of adjacent distinct letters (split by whether
   one digit or two type them). The first estimate of each rate is count / units. The
   transposition rate is the same-digit rate; `cross_hand_factor` is the ratio of the
   cross-digit to the same-digit rate when both have at least `MIN_EVENTS` events.

2. **Touch model.** Substitutions of a character (letter, digit or punctuation mark on the
   letters/shift layers) by the character of another key there are touch misses. For a
   Gaussian tap with spread (sigma_x, sigma_y) and offset (o_x, o_y) the probability of landing
   on each neighbouring key follows from the layout's geometry; it is integrated exactly over a
   fine grid around every key (normal CDF differences per axis, the layout's own decoder
   deciding which key owns each cell, so edge keys, staggered rows, the space bar and function
   keys count as they do in the simulator). Four moments are matched, first by bisection one
   parameter at a time and then jointly by damped Gauss-Newton: the rate of visible misses
   per tap (-> spread), the share of misses that change row (-> sigma_y / sigma_x), and the
   mean displacement from the intended to the typed key centre (-> offset; mirrored for the
   right thumb in two-thumb typing, as touch.py mirrors it). With fewer than `MIN_TOUCH`
   misses only the spread is fitted and the base profile's ratio and offset are kept. The spread
   found is the total one; the speed-accuracy (FFitts) part that touch.py adds for the base
   profile's speed is subtracted in quadrature to give sigma_a.

3. **Refinement by simulated moments** (`refine` rounds). Labels are not a perfect inverse of
   the channels: an omission of a full stop reads as a dropped punctuation mark, a transposition
   that happens to give a listed misspelling reads as a misspelling, a touch miss that lands on
   the space bar reads as a space-bar slip, and channels compete for the same unit. So the
   intended texts are simulated with the current profile, aligned and labelled the same way,
   and each rate is multiplied by (real count / simulated count) of its label, and the touch
   spread is rescaled so that the simulated substitutions of any kind match the real count
   (shift slips such as `?` -> `/` and `o` -> `O`, which no touch geometry explains, are
   absorbed into the spread, so its fitted value leans wide). Same-digit and cross-digit
   transpositions are matched separately when both are seen, which refits `cross_hand_factor`.
   Each round simulates the intended texts several times over (about `refine_texts` texts, at
   most 8 copies, fresh random draws each) so the simulated counts are less noisy than the real
   ones; with a fixed seed (common random numbers) this settles in two or three rounds.

Validation (tests/test_calibrate.py): 6,000 chat messages simulated with known settings give
every rate back within 4/sqrt(n) of the truth (n its labelled edits), the spread within 5-10%
and the offsets within a few tenths of a millimetre; on real typing, a profile calibrated on
half the Aalto participants is far closer to the other half than the physical preset
(scripts/realism_aalto.py).

Limits. Each rate is a per-unit probability averaged over all typists in the data (one profile,
not a population). Units consumed by other edits are not removed from the denominators (a bias
of the order of the rates themselves, which step 3 absorbs). Rates of channels the data has no
units for (no accented letters in English) keep the base profile's value. A channel the data
never shows gets rate 0. Substitutions that are not spatial (a cognitive letter confusion) are
read as touch misses and widen the fitted spread. Trailing whitespace of the typed text is
dropped by default (`strip_trailing`): in transcription logs it is a stray key press before
submitting, and the simulator does not model it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from keyboard_sim import unicode_tables
from keyboard_sim.align import (
    WORD_RE,
    Alignment,
    Lexicon,
    align,
    resolve_lexicon,
    word_spans,
)
from keyboard_sim.channels import PLACE_WEIGHTED, RATED, Channel
from keyboard_sim.layout import Layout, load_layout
from keyboard_sim.profile import POSTURES, Posture, TypistProfile, load_profile
from keyboard_sim.touch import digits, tap_spread

MIN_EVENTS = 20  # events per side needed to fit cross_hand_factor
MIN_TOUCH = 30  # touch misses needed to fit the spread's shape and the offset
REACH = 3.5  # keys around the aimed key that a tap is integrated over
_CLEAN_FIELDS = ("target", "clean", "intended")
_NOISY_FIELDS = ("typed", "noisy", "transcribed")
_GROUP_FIELDS = ("participant_id", "user", "sender", "client_id")


# --------------------------------------------------------------------------- reading pairs


@dataclass(frozen=True, slots=True)
class LoggedPair:
    """One real pair from a log: who typed it, what they meant and what they typed."""

    line: int
    group: str
    clean: str
    noisy: str


def normalise(text: str, strip_trailing: bool = True) -> str:
    """The text with trailing whitespace removed when `strip_trailing` (see module doc)."""
    return text.rstrip() if strip_trailing else text


def read_pairs(path: str | Path, *, strip_trailing: bool = True) -> list[LoggedPair]:
    """Reads real pairs from a TSV file with a header, or from JSONL.

    TSV: tab-separated with a header naming the intended column (`target`, `clean` or
    `intended`) and the typed one (`typed`, `noisy` or `transcribed`); a `participant_id`,
    `user`, `sender` or `client_id` column, if present, names who typed it (as in
    ../shared/data/typing/aalto_typed_pairs_dev.tsv). Fields may be quoted CSV-style.
    JSONL: one object a line with the same field names (so `kbsim simulate` output reads too).

    Raises:
        ValueError: naming the file, the line and the reason for an unreadable line, a missing
            field or a non-string value.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            head = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if head.lstrip().startswith("{"):
        return _read_jsonl(path, strip_trailing)
    return _read_tsv(path, strip_trailing)


def _pick(names: Sequence[str], wanted: Sequence[str]) -> str | None:
    return next((w for w in wanted if w in names), None)


def _read_tsv(path: Path, strip_trailing: bool) -> list[LoggedPair]:
    out: list[LoggedPair] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            if header is None:
                return out
            header = [h.strip().lstrip("\ufeff") for h in header]
            c_name = _pick(header, _CLEAN_FIELDS)
            n_name = _pick(header, _NOISY_FIELDS)
            if c_name is None or n_name is None:
                raise ValueError(
                    f"{path} line 1: header needs an intended column ({'/'.join(_CLEAN_FIELDS)})"
                    f" and a typed column ({'/'.join(_NOISY_FIELDS)}), got {header}"
                )
            ci, ni = header.index(c_name), header.index(n_name)
            g_name = _pick(header, _GROUP_FIELDS)
            gi = header.index(g_name) if g_name else None
            for row in reader:
                line = reader.line_num
                if not row or row == [""]:
                    continue
                if len(row) <= max(ci, ni, gi or 0):
                    raise ValueError(f"{path} line {line}: expected {len(header)} fields, "
                                     f"got {len(row)}")
                group = row[gi] if gi is not None else ""
                out.append(LoggedPair(line, group, normalise(row[ci], strip_trailing),
                                      normalise(row[ni], strip_trailing)))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: invalid UTF-8 ({e})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: malformed TSV ({e})") from None
    return out


def _read_jsonl(path: Path, strip_trailing: bool) -> list[LoggedPair]:
    out: list[LoggedPair] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {line_no}: invalid UTF-8 ({e})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {line_no}: bad JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path} line {line_no}: expected a JSON object")
            c_name = _pick(list(obj), _CLEAN_FIELDS)
            n_name = _pick(list(obj), _NOISY_FIELDS)
            if c_name is None or n_name is None:
                raise ValueError(f"{path} line {line_no}: needs an intended field "
                                 f"({'/'.join(_CLEAN_FIELDS)}) and a typed field "
                                 f"({'/'.join(_NOISY_FIELDS)})")
            clean, noisy = obj[c_name], obj[n_name]
            if not isinstance(clean, str) or not isinstance(noisy, str):
                raise ValueError(f"{path} line {line_no}: {c_name!r} and {n_name!r} must be "
                                 "strings")
            g_name = _pick(list(obj), _GROUP_FIELDS)
            group = str(obj[g_name]) if g_name else ""
            out.append(LoggedPair(line_no, group, normalise(clean, strip_trailing),
                                  normalise(noisy, strip_trailing)))
    return out


def split_groups(pairs: Sequence[LoggedPair], salt: str = "kbsim") -> tuple[list, list]:
    """Splits pairs into two halves by typist, deterministically (a stable hash of the group).

    Every pair of one typist lands in the same half, so the halves share no typist.
    """
    import hashlib

    a, b = [], []
    for p in pairs:
        h = hashlib.blake2b(f"{salt}\x1f{p.group}".encode(), digest_size=8).digest()
        (a if h[0] & 1 == 0 else b).append(p)
    return a, b


# ------------------------------------------------------------------------------- counting


@dataclass
class Counts:
    """Labelled edits and eligible units of a set of pairs. Mergeable with `+`.

    Attributes:
        texts: Pairs counted.
        edits: Labelled edits per channel value.
        units: Eligible units per rated channel value (transposition: all letter pairs).
        trans_edits: Transpositions by (same digit, cross digit).
        trans_units: Adjacent distinct letter pairs by (same digit, cross digit).
        taps: Intended non-space characters per key index on the letters/shift layers (the
            taps the touch model is fitted on).
        misses: Touch misses per (intended key, typed key): substitutions by another key.
    """

    texts: int = 0
    edits: Counter = field(default_factory=Counter)
    units: Counter = field(default_factory=Counter)
    trans_edits: list[int] = field(default_factory=lambda: [0, 0])
    trans_units: list[int] = field(default_factory=lambda: [0, 0])
    taps: Counter = field(default_factory=Counter)
    misses: Counter = field(default_factory=Counter)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.texts + other.texts,
            self.edits + other.edits,
            self.units + other.units,
            [a + b for a, b in zip(self.trans_edits, other.trans_edits, strict=True)],
            [a + b for a, b in zip(self.trans_units, other.trans_units, strict=True)],
            self.taps + other.taps,
            self.misses + other.misses,
        )

    @property
    def n_misses(self) -> int:
        """Touch misses counted."""
        return sum(self.misses.values())

    @property
    def n_taps(self) -> int:
        """Taps counted (see `taps`)."""
        return sum(self.taps.values())


@dataclass(frozen=True)
class _CharInfo:
    typeable: bool
    key: int  # key typing the character on the letters/shift layers, or -1
    letter: bool
    above_space: bool
    has_neighbor: bool
    upper: bool
    accented: bool
    digit: int


class UnitCounter:
    """Counts units and labelled edits with the simulator's definitions for one layout."""

    def __init__(self, layout: Layout, posture: Posture, lexicon: Lexicon | None) -> None:
        self.layout = layout
        self.posture = posture
        self.lexicon = lexicon
        self._info: dict[str, _CharInfo] = {}

    def info(self, ch: str) -> _CharInfo:
        got = self._info.get(ch)
        if got is not None:
            return got
        L = self.layout
        cid = int(L.plan.lookup(np.array([ord(ch)], dtype=np.uint32))[0])
        typeable = cid >= 0
        key = int(L.plan.key_in_group[cid, 0]) if typeable else -1
        main_key = int(L.plan.key[cid]) if typeable else -1
        nb_table, nb_count = L.neighbors
        letter = ch.isalpha()
        lower = ch.lower()
        upper = letter and len(lower) == 1 and lower != ch
        accented = letter and unicode_tables.tables()["accent_base"][ord(ch)] != ord(ch) \
            if ord(ch) < unicode_tables.BMP else False
        digit = -1
        if key >= 0:
            digit = int(digits(self.posture, np.array([key]), L)[0])
        got = _CharInfo(
            typeable=typeable,
            key=key,
            letter=letter,
            above_space=bool(typeable and ch != " " and L.space_row["above"][main_key]),
            has_neighbor=bool(typeable and nb_count[main_key] > 0),
            upper=upper,
            accented=bool(accented),
            digit=digit,
        )
        self._info[ch] = got
        return got

    def count(self, a: Alignment, units: bool = True) -> Counts:
        """Labelled edits of `a` and, if `units`, the units and taps of `a.clean`."""
        c = Counts(texts=1)
        text = a.clean
        if units:
            self._count_units(c, text)
        for e in a.edits:
            c.edits[e.type.value] += 1
            if e.type == Channel.TRANSPOSITION:
                p, q = self.info(text[e.clean_start]), self.info(text[e.clean_start + 1])
                c.trans_edits[int(p.digit != q.digit)] += 1
            elif e.type == Channel.SUBSTITUTION and e.noisy_end - e.noisy_start == 1:
                p = self.info(text[e.clean_start])
                t = a.noisy[e.noisy_start]
                if p.key >= 0 and t != " ":
                    q = self.info(t)
                    # Another key: a touch miss. The same key in another case (a shift slip)
                    # is no spatial evidence; refinement still matches its count.
                    if q.key >= 0 and q.key != p.key:
                        c.misses[(p.key, q.key)] += 1
        return c

    def _count_units(self, c: Counts, text: str) -> None:
        units = c.units
        infos = [self.info(ch) for ch in text]
        n = len(text)
        for i, (ch, inf) in enumerate(zip(text, infos, strict=True)):
            if ch in _PUNCT:
                units[Channel.DROP_PUNCTUATION.value] += 1
            if inf.upper:
                units[Channel.DROP_CAPITAL.value] += 1
            if inf.accented:
                units[Channel.SIMPLIFY_ACCENT.value] += 1
            if (ch in _APOS and 0 < i < n - 1 and infos[i - 1].letter
                    and infos[i + 1].letter):
                units[Channel.DROP_APOSTROPHE.value] += 1
            if not inf.typeable:
                continue
            if ch == " ":
                units[Channel.SPACE_OMISSION.value] += 1
                units[Channel.SPACE_SUBSTITUTION.value] += 1
                continue
            units[Channel.OMISSION.value] += 1
            units[Channel.DOUBLE_TAP.value] += 1
            if inf.has_neighbor:
                units[Channel.NEIGHBOR_INSERTION.value] += 1
            if inf.above_space:
                units[Channel.SPACE_INSERTION.value] += 1
            if inf.key >= 0:
                c.taps[inf.key] += 1
            if (i + 1 < n and inf.letter and infos[i + 1].letter and infos[i + 1].typeable
                    and text[i + 1] != ch):
                cross = int(inf.digit != infos[i + 1].digit)
                c.trans_units[cross] += 1
                units[Channel.TRANSPOSITION.value] += 1
        if self.lexicon is not None:
            for m in WORD_RE.finditer(text):
                w = m.group().lower()
                if self.lexicon.misspellings.get(w):
                    units[Channel.MISSPELLING.value] += 1
                if self.lexicon.confusions.get(w):
                    units[Channel.REAL_WORD.value] += 1

    def count_all(self, alignments: Iterable[Alignment], units: bool = True) -> Counts:
        """Merged counts of many alignments."""
        total = Counts()
        for a in alignments:
            _merge_into(total, self.count(a, units))
        return total


_PUNCT = frozenset(unicode_tables.PUNCTUATION)
_APOS = frozenset(unicode_tables.APOSTROPHES)


def _merge_into(total: Counts, c: Counts) -> Counts:
    """In-place `total + c` (cheaper than building a new Counts per text)."""
    total.texts += c.texts
    total.edits.update(c.edits)
    total.units.update(c.units)
    for i in range(2):
        total.trans_edits[i] += c.trans_edits[i]
        total.trans_units[i] += c.trans_units[i]
    total.taps.update(c.taps)
    total.misses.update(c.misses)
    return total


# ---------------------------------------------------------------------------- touch model


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (numpy has no erf; math.erf per element is exact and cheap here)."""
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * (1.0 + erf(np.asarray(z, dtype=float) / math.sqrt(2.0)).astype(float))


class TouchGeometry:
    """Where a Gaussian tap aimed at each letter key lands, integrated over the layout.

    For each key a window of +-`reach` keys around its centre is cut into cells of 1/`per_key`
    of a key; the layout's decoder says which key owns each cell. `moments` then gives, for a
    spread and offset, the visible-miss rate and the shape of the misses, weighted by how often
    each key is aimed at.
    """

    def __init__(self, layout: Layout, posture: Posture, taps: Counter,
                 reach: float = REACH, per_key: int = 12) -> None:
        a = layout.arrays
        self.keys = sorted(taps)
        self.weights = np.array([taps[k] for k in self.keys], dtype=float)
        self.pitch = layout.pitch_mm
        hs = [a["y1"][k] - a["y0"][k] for k in self.keys]
        self.row_h = float(np.median(hs)) if hs else self.pitch
        step_x, step_y = self.pitch / per_key, self.row_h / per_key
        nx, ny = int(2 * reach * per_key), int(2 * reach * per_key)
        self.ex = (np.arange(nx + 1) - nx / 2) * step_x  # cell edges relative to the centre
        self.ey = (np.arange(ny + 1) - ny / 2) * step_y
        xc = (self.ex[:-1] + self.ex[1:]) / 2
        yc = (self.ey[:-1] + self.ey[1:]) / 2
        X, Y = np.meshgrid(xc, yc)
        # Keys whose tap types a character other than a space (a visible substitution).
        typed_char = np.array([bool(t) and t != " " for t in layout.key_text])
        K = len(self.keys)
        self.visible = np.zeros((K, ny, nx))
        self.dx = np.zeros((K, ny, nx))
        self.dy = np.zeros((K, ny, nx))
        self.row_change = np.zeros((K, ny, nx))
        self.sign = np.ones(K)
        if posture == Posture.TWO_THUMBS and K:
            self.sign = np.where(digits(posture, np.array(self.keys), layout) == 1, -1.0, 1.0)
        for i, k in enumerate(self.keys):
            owner = layout.decode(np.full(X.size, a["layer"][k]), a["cx"][k] + X.ravel(),
                                  a["cy"][k] + Y.ravel()).reshape(X.shape)
            vis = typed_char[owner] & (owner != k)
            self.visible[i] = vis
            self.dx[i] = np.where(vis, a["cx"][owner] - a["cx"][k], 0.0) * self.sign[i]
            self.dy[i] = np.where(vis, a["cy"][owner] - a["cy"][k], 0.0)
            self.row_change[i] = vis & (np.abs(self.dy[i]) >= self.row_h / 2)

    def moments(self, sx: float, sy: float, ox: float, oy: float) -> tuple[float, ...]:
        """(visible miss rate, share of misses changing row, mean dx, mean dy) of misses."""
        if not self.keys:
            return 0.0, 0.0, 0.0, 0.0
        sx, sy = max(sx, 1e-6), max(sy, 1e-6)
        # Per key: probability mass of each column and row (offset mirrored per key's digit).
        px = np.diff(_phi((self.ex[None, :] - ox * self.sign[:, None]) / sx), axis=1)
        py = np.diff(_phi((self.ey - oy) / sy))
        mass = py[None, :, None] * px[:, None, :]
        w = self.weights / self.weights.sum()
        vis = np.einsum("kij,kij->k", mass, self.visible)
        v = float(w @ vis)
        if v <= 0:
            return 0.0, 0.0, 0.0, 0.0
        rc = float(w @ np.einsum("kij,kij->k", mass, self.row_change)) / v
        mx = float(w @ np.einsum("kij,kij->k", mass, self.dx)) / v
        my = float(w @ np.einsum("kij,kij->k", mass, self.dy)) / v
        return v, rc, mx, my


def observed_touch(counts: Counts, layout: Layout, posture: Posture,
                   reach: float = REACH) -> tuple[tuple[float, ...], int]:
    """The four touch moments of counted pairs (see `TouchGeometry.moments`), and the number
    of misses they rest on.

    A substitution by a key more than `reach` keys away is left out: no Gaussian tap of a
    plausible spread gets there, so it is some other error (and the model window ends there).
    """
    taps = counts.n_taps
    if not taps or not counts.misses:
        return (0.0, 0.0, 0.0, 0.0), 0
    a = layout.arrays
    row_h = float(np.median([a["y1"][k] - a["y0"][k] for k in counts.taps]))
    pitch = layout.pitch_mm
    n = 0
    rc = mx = my = 0.0
    for (k, t), c in counts.misses.items():
        sign = 1.0
        if posture == Posture.TWO_THUMBS:
            d = digits(posture, np.array([k]), layout)[0]
            sign = -1.0 if d == 1 else 1.0
        dx, dy = (a["cx"][t] - a["cx"][k]) * sign, a["cy"][t] - a["cy"][k]
        if abs(dx) > reach * pitch or abs(dy) > reach * row_h:
            continue
        n += c
        mx += c * dx
        my += c * dy
        rc += c * (abs(dy) >= row_h / 2)
    if not n:
        return (0.0, 0.0, 0.0, 0.0), 0
    return (n / taps, rc / n, mx / n, my / n), n


def _bisect(f, target: float, lo: float, hi: float, iters: int = 40) -> float:
    """x in [lo, hi] with f(x) = target for increasing f (clamped to the ends)."""
    f_lo, f_hi = f(lo), f(hi)
    if target <= f_lo:
        return lo
    if target >= f_hi:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _solve(geom: TouchGeometry, params: list[float], idx: int, target: float, lo: float,
           hi: float) -> None:
    """Sets params[idx] (in [lo, hi]) so that moment idx matches `target`; others held."""

    def moment(x: float) -> float:
        p = list(params)
        p[idx] = x
        return geom.moments(p[0], p[0] * p[1], p[2], p[3])[idx]

    params[idx] = _bisect(moment, target, lo, hi, 40 if idx == 0 else 30)


@dataclass(frozen=True)
class TouchFit:
    """Total (effective) spread and offset of taps, and what went into them."""

    sigma_x: float
    sigma_y: float
    offset_x: float
    offset_y: float
    misses: int
    taps: int
    shape_fitted: bool


def fit_touch(geom: TouchGeometry, observed: tuple[float, ...], base: TypistProfile,
              misses: int, rounds: int = 6) -> TouchFit:
    """Matches the touch moments by bisection, one parameter at a time (see module doc)."""
    v_obs, rc_obs, mx_obs, my_obs = observed
    taps = int(geom.weights.sum())
    if taps == 0:
        return TouchFit(base.sigma_x_mm, base.sigma_y_mm, base.offset_x_mm, base.offset_y_mm,
                        misses, taps, False)
    # No miss at all: half a miss (a continuity correction) rather than a spread of zero.
    v_target = max(v_obs, 0.5 / taps)
    ratio = base.sigma_y_mm / base.sigma_x_mm if base.sigma_x_mm > 0 else 1.0
    # Parameters: [spread, sigma_y / sigma_x, offset_x, offset_y].
    params = [1.0, ratio, base.offset_x_mm, base.offset_y_mm]
    hi = 2.0 * max(geom.pitch, geom.row_h)
    shape = misses >= MIN_TOUCH
    _solve(geom, params, 0, v_target, 1e-3, hi)
    if shape:
        for _ in range(rounds):
            _solve(geom, params, 1, rc_obs, 0.2, 5.0)
            _solve(geom, params, 0, v_target, 1e-3, hi)
            _solve(geom, params, 2, mx_obs, -0.45 * geom.pitch, 0.45 * geom.pitch)
            _solve(geom, params, 3, my_obs, -0.45 * geom.row_h, 0.45 * geom.row_h)
            _solve(geom, params, 0, v_target, 1e-3, hi)
        _gauss_newton(geom, params, (v_target, rc_obs, mx_obs, my_obs))
    s, ratio, ox, oy = params
    return TouchFit(s, s * ratio, ox, oy, misses, taps, shape)


def _gauss_newton(geom: TouchGeometry, params: list[float], target: tuple[float, ...],
                  iters: int = 25) -> None:
    """Polishes all four touch parameters at once (damped Gauss-Newton, numeric Jacobian).

    One-at-a-time bisection gets close but crawls along the ridge where spread and offset trade
    off; this finishes the job. Parameters are updated in place, and only if the fit improves.
    """
    lo = np.array([math.log(1e-3), math.log(0.2), -0.45 * geom.pitch, -0.45 * geom.row_h])
    hi = np.array([math.log(2.0 * max(geom.pitch, geom.row_h)), math.log(5.0),
                   0.45 * geom.pitch, 0.45 * geom.row_h])
    scale = np.array([1.0, 1.0, geom.pitch, geom.row_h])

    def resid(x: np.ndarray) -> np.ndarray:
        s, r = math.exp(x[0]), math.exp(x[1])
        m = geom.moments(s, s * r, x[2], x[3])
        if m[0] <= 0:
            return np.full(4, np.inf)
        return np.array([math.log(m[0] / target[0]), m[1] - target[1],
                         (m[2] - target[2]) / scale[2], (m[3] - target[3]) / scale[3]])

    x = np.array([math.log(params[0]), math.log(params[1]), params[2], params[3]])
    r = resid(x)
    cost = float(r @ r)
    for _ in range(iters):
        if cost < 1e-14:
            break
        h = 1e-5 * scale
        J = np.empty((4, 4))
        for j in range(4):
            xj = x.copy()
            xj[j] += h[j]
            J[:, j] = (resid(xj) - r) / h[j]
        if not np.all(np.isfinite(J)):
            break
        step = np.linalg.lstsq(J, -r, rcond=None)[0]
        t, improved = 1.0, False
        while t > 1e-3:
            cand = np.clip(x + t * step, lo, hi)
            rc = resid(cand)
            c = float(rc @ rc)
            if c < cost:
                x, r, cost, improved = cand, rc, c, True
                break
            t /= 2
        if not improved:
            break
    params[:] = [math.exp(x[0]), math.exp(x[1]), float(x[2]), float(x[3])]


def mean_relative_variance(texts: Sequence[str], layout: Layout, profile: TypistProfile,
                           limit: int = 5000) -> float:
    """Mean FFitts relative variance (mm^2) of non-space taps in `texts` at `profile`'s speed.

    Taps are the typeable characters of each text on its own (shift and layer-switch taps are
    left out: an approximation of the digit's travel that touch.py computes exactly).
    """
    if profile.keystroke_ms <= 0 or not texts:
        return 0.0
    L = layout
    cx_l, cy_l, first_l, counted, keys_l = [], [], [], [], []
    for text in texts[:limit]:
        start = len(cx_l)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        cid = L.plan.lookup(cps)
        for ch, c in zip(text, cid, strict=True):
            if c < 0:
                continue
            k = int(L.plan.key[c])
            keys_l.append(k)
            cx_l.append(L.arrays["cx"][k])
            cy_l.append(L.arrays["cy"][k])
            first_l.append(start)
            counted.append(ch != " ")
    if not cx_l:
        return 0.0
    cx, cy = np.array(cx_l), np.array(cy_l)
    dig = digits(profile.posture, np.array(keys_l), L)
    bare = dataclasses.replace(profile, sigma_x_mm=0.0, sigma_y_mm=0.0)
    rel, _, _, _ = tap_spread(bare, cx, cy, dig, np.array(first_l))
    keep = np.array(counted)
    return float(np.mean(rel[keep] ** 2)) if keep.any() else 0.0


# ------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class Calibration:
    """A fitted profile and the evidence behind it.

    Attributes:
        profile: The fitted profile.
        counts: Labelled edits and units of the real pairs.
        touch: The touch fit (total spread before the speed term is taken out).
        notes: One line per decision worth knowing (kept rates, unfitted shapes).
        history: Per refinement round, {channel: simulated count} and the touch miss rate.
    """

    profile: TypistProfile
    counts: Counts
    touch: TouchFit
    notes: tuple[str, ...]
    history: tuple[dict, ...]

    def to_text(self) -> str:
        """The fitted rates next to their evidence, one line per channel."""
        c, p = self.counts, self.profile
        lines = [f"calibrated profile {p.name!r} from {c.texts:,} pairs", "",
                 f"{'channel':<22}{'edits':>8}{'units':>10}{'rate':>10}"]
        for ch in RATED:
            lines.append(f"{ch.value:<22}{c.edits.get(ch.value, 0):>8}"
                         f"{c.units.get(ch.value, 0):>10}{p.rates[ch]:>10.5f}")
        t = self.touch
        lines += [
            "",
            f"touch: {t.misses} misses in {t.taps:,} taps -> sigma_x {p.sigma_x_mm:.2f} mm,"
            f" sigma_y {p.sigma_y_mm:.2f} mm, offset ({p.offset_x_mm:+.2f}, "
            f"{p.offset_y_mm:+.2f}) mm",
            f"cross_hand_factor {p.cross_hand_factor:.2f}",
            "place weights (first, middle, last letter of a word): "
            + ", ".join(f"{w:.2f}" for w in p.place_weights),
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _rates_from_counts(counts: Counts, base: TypistProfile, notes: list[str]) -> dict:
    rates = {c.value: float(r) for c, r in base.rates.items()}
    for ch in RATED:
        units = counts.units.get(ch.value, 0)
        if ch == Channel.TRANSPOSITION:
            continue
        if units == 0:
            notes.append(f"{ch.value}: no units in the data, base rate kept")
            continue
        rates[ch.value] = min(1.0, counts.edits.get(ch.value, 0) / units)
    return rates


def _transposition(counts: Counts, base: TypistProfile, notes: list[str]) -> tuple[float, float]:
    (e_same, e_cross), (u_same, u_cross) = counts.trans_edits, counts.trans_units
    # Transpositions labelled outside letter pairs (letter and space) count on the same side.
    extra = counts.edits.get(Channel.TRANSPOSITION.value, 0) - e_same - e_cross
    f = base.cross_hand_factor
    if e_same >= MIN_EVENTS and e_cross >= MIN_EVENTS and u_same and u_cross:
        f = (e_cross / u_cross) / (e_same / u_same)
        f = float(min(max(f, 0.1), 20.0))
    else:
        notes.append(f"cross_hand_factor: too few transpositions ({e_same} same-digit, "
                     f"{e_cross} cross-digit), base value kept")
    denom = u_same + f * u_cross
    if denom == 0:
        notes.append("transposition: no letter pairs in the data, base rate kept")
        return float(base.rates[Channel.TRANSPOSITION]), f
    return min(1.0, (e_same + e_cross + max(extra, 0)) / denom), f


def calibrate_detailed(
    pairs: Iterable[tuple[str, str]],
    layout: Layout | str = "en-US-physical",
    base: TypistProfile | str | None = None,
    *,
    refine: int = 3,
    seed: int = 0,
    lexicon: Lexicon | str | None = "codespell",
    strip_trailing: bool = True,
    name: str = "calibrated",
    refine_texts: int = 20000,
) -> Calibration:
    """Fits a profile to real pairs and returns it with its evidence (see module doc).

    Args:
        pairs: (intended, typed) pairs.
        layout: The keyboard the pairs were typed on.
        base: Profile whose posture, speed and Fitts parameters are kept, and whose rates stand
            where the data has no units. Default: the "physical" preset for a physical layout,
            "two_thumbs" otherwise.
        refine: Rounds of refinement by simulated moments (0: the closed-form counts only).
        seed: Simulation seed for the refinement.
        lexicon: Word lists for whole-word errors (see `align.align`); the simulator uses the
            "codespell" one by default.
        strip_trailing: Drop trailing whitespace of both texts first.
        name: Name of the fitted profile.
        refine_texts: Simulate about this many texts per refinement round (the intended texts,
            repeated with fresh random draws up to 8 times).
    """
    lay = load_layout(layout)
    if base is None:
        base = POSTURES["physical"] if lay.kind == "physical" else POSTURES["two_thumbs"]
    base = load_profile(base)
    lex = resolve_lexicon(lexicon)
    norm = [(normalise(c, strip_trailing), normalise(n, strip_trailing)) for c, n in pairs]
    if not norm:
        raise ValueError("no pairs to calibrate on")
    counter = UnitCounter(lay, base.posture, lex)
    aligned = [align(c, n, lex) for c, n in norm]
    counts = counter.count_all(aligned)
    notes: list[str] = []
    from keyboard_sim.fidelity import slip_places

    real_places = slip_places(aligned, PLACE_WEIGHTED)
    letter_places = _letter_places(c for c, _ in norm)
    weights = _place_weights(real_places, letter_places, (1.0, 1.0, 1.0), notes)

    rates = _rates_from_counts(counts, base, notes)
    rates[Channel.TRANSPOSITION.value], cross = _transposition(counts, base, notes)

    geom = TouchGeometry(lay, base.posture, counts.taps)
    observed, n_touch = observed_touch(counts, lay, base.posture)
    touch = fit_touch(geom, observed, base, n_touch)
    if n_touch < counts.n_misses:
        notes.append(f"touch: {counts.n_misses - n_touch} substitutions more than {REACH} keys "
                     "away left out of the touch fit")
    if not touch.shape_fitted:
        notes.append(f"touch: only {n_touch} misses, spread scaled with the base "
                     "profile's ratio and offset kept")
    clean_texts = [c for c, _ in norm]
    rel_var = mean_relative_variance(clean_texts, lay, base)

    def build(t: TouchFit, rates: dict, cross: float, weights=weights) -> TypistProfile:
        # Total spread -> absolute precision: take out the speed term in quadrature, keeping at
        # least a tenth of the total so that the profile stays a Gaussian.
        sx = math.sqrt(max(t.sigma_x**2 - rel_var, (0.1 * t.sigma_x) ** 2))
        sy = math.sqrt(max(t.sigma_y**2 - rel_var, (0.1 * t.sigma_y) ** 2))
        return dataclasses.replace(
            base, name=name, sigma_x_mm=sx, sigma_y_mm=sy, offset_x_mm=t.offset_x,
            offset_y_mm=t.offset_y, cross_hand_factor=cross, place_weights=weights,
            rates=MappingProxyType(dict(rates)),
        )

    profile = build(touch, rates, cross)
    history: list[dict] = []
    if refine > 0 and clean_texts:
        from keyboard_sim.simulate import simulate

        # Simulate the intended texts `reps` times (distinct record ids) so that the simulated
        # side's own noise is small next to the real counts' (at most 8 times: beyond that the
        # real counts' noise dominates anyway).
        reps = min(8, max(1, math.ceil(refine_texts / len(clean_texts))))
        sim_texts = clean_texts * reps
        sim_ids = [f"{r}:{i}" for r in range(reps) for i in range(len(clean_texts))]
        sub, trans = Channel.SUBSTITUTION.value, Channel.TRANSPOSITION.value
        for _ in range(refine):
            sim = simulate(sim_texts, profile, lay, seed, ids=sim_ids)
            sim_aligned = [align(p.clean, normalise(p.noisy, strip_trailing), lex) for p in sim]
            sc = counter.count_all(sim_aligned, units=False)
            # Where slips fall in words: scale each place's weight by real / simulated share.
            sim_places = slip_places(sim_aligned, PLACE_WEIGHTED)
            weights = _place_weights(real_places, letter_places, weights, notes,
                                     sim_places=sim_places)
            history.append({"edits": {k: v / reps for k, v in sc.edits.items()},
                            "miss_rate": sc.n_misses / max(counts.n_taps * reps, 1)})
            for ch in RATED:
                real_n, sim_n = counts.edits.get(ch.value, 0), sc.edits.get(ch.value, 0) / reps
                if counts.units.get(ch.value, 0) == 0 and ch != Channel.TRANSPOSITION:
                    continue
                if real_n == 0:
                    rates[ch.value] = 0.0
                elif sim_n > 0:
                    rates[ch.value] = min(1.0, rates[ch.value] * real_n / sim_n)
            # Transpositions: same-digit and cross-digit rates separately when both are seen.
            real_t, sim_t = counts.trans_edits, [x / reps for x in sc.trans_edits]
            if min(real_t) >= MIN_EVENTS and min(sim_t) > 0 and sc.edits.get(trans, 0) > 0:
                # Undo the total-count update above, then scale each side on its own.
                r_same = rates[trans] * (sc.edits[trans] / reps) / counts.edits[trans]
                r_cross = r_same * cross * real_t[1] / sim_t[1]
                r_same *= real_t[0] / sim_t[0]
                rates[trans] = min(1.0, r_same)
                cross = float(min(max(r_cross / r_same, 0.1), 20.0)) if r_same > 0 else cross
            # Rescale the spread so that the simulator makes as many substitutions of any kind
            # as the logs (shift slips and non-spatial confusions are absorbed into it).
            real_sub, sim_sub = counts.edits.get(sub, 0), sc.edits.get(sub, 0) / reps
            if sim_sub > 0 and real_sub > 0:
                v_model = geom.moments(touch.sigma_x, touch.sigma_y, touch.offset_x,
                                       touch.offset_y)[0]
                r = touch.sigma_y / touch.sigma_x
                params = [touch.sigma_x, r, touch.offset_x, touch.offset_y]
                _solve(geom, params, 0, v_model * real_sub / sim_sub, 1e-3,
                       2.0 * max(geom.pitch, geom.row_h))
                touch = dataclasses.replace(touch, sigma_x=params[0], sigma_y=params[0] * r)
            profile = build(touch, rates, cross, weights)
    return Calibration(profile, counts, touch, tuple(notes), tuple(history))


def _letter_places(texts: Iterable[str]) -> list[int]:
    """Letters that are first, middle and last in their word (a one-letter word: first), as
    `fidelity.ErrorMix.places` places slips."""
    out = [0, 0, 0]
    for text in texts:
        for s, e in word_spans(text):
            n = e - s
            out[0] += 1
            if n >= 2:
                out[2] += 1
                out[1] += n - 2
    return out


def _place_weights(real: Sequence[int], letters: Sequence[int], current: Sequence[float],
                   notes: list[str], sim_places: Sequence[int] | None = None) -> tuple:
    """Place weights (first, middle, last) that put slips where the real ones fall.

    Without `sim_places`: real share of slips at each place over the share of letters there.
    With it: `current` scaled by real over simulated share. Either way normalised so that the
    letters' mean weight is 1 (the fitted rates keep their meaning), and kept at `current`
    where a place has fewer than MIN_EVENTS real slips.
    """
    real_n, sum_real = np.asarray(real, float), float(sum(real))
    share_letters = np.asarray(letters, float) / max(sum(letters), 1)
    if sum_real == 0 or (real_n < MIN_EVENTS).any() or (share_letters == 0).any():
        if sim_places is None:
            notes.append(f"place weights: too few slips by place ({list(real)}), kept at "
                         f"{tuple(current)}")
        return tuple(float(w) for w in current)
    share_real = real_n / sum_real
    if sim_places is None:
        w = share_real / share_letters
    else:
        sim_n = np.asarray(sim_places, float)
        if (sim_n == 0).any():
            return tuple(float(w) for w in current)
        w = np.asarray(current, float) * share_real / (sim_n / sim_n.sum())
    w = w / float((w * share_letters).sum())
    return tuple(round(float(x), 4) for x in w)


def calibrate(
    pairs: Iterable[tuple[str, str]],
    layout: Layout | str = "en-US-physical",
    base: TypistProfile | str | None = None,
    **kwargs,
) -> TypistProfile:
    """Fits a typist profile (channel rates, touch spread and offset) to real pairs.

    See `calibrate_detailed` for the arguments and the module doc for the estimator.
    """
    return calibrate_detailed(pairs, layout, base, **kwargs).profile


def calibrate_file(
    pairs_path: str | Path,
    layout: Layout | str = "en-US-physical",
    base: TypistProfile | str | None = None,
    **kwargs,
) -> TypistProfile:
    """`calibrate` on pairs read from a TSV or JSONL file (see `read_pairs`)."""
    strip = kwargs.get("strip_trailing", True)
    logged = read_pairs(pairs_path, strip_trailing=strip)
    if not logged:
        raise ValueError(f"{pairs_path}: no pairs to calibrate on")
    return calibrate([(p.clean, p.noisy) for p in logged], layout, base, **kwargs)
