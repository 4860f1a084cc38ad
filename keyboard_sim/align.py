"""Align an intended text with what was typed, and label each difference as a simulator channel.

Real logs carry no provenance: to fit the simulator to them (calibrate.py) or to compare them with
simulated pairs (fidelity.py) we recover the edits by aligning the two strings and then name each
edit with the `Channel` the simulator would have used for it. Simulated pairs go through exactly
the same code, so statistics computed on both sides are comparable.

Alignment is the optimal string alignment (restricted Damerau-Levenshtein) distance: unit costs for
substitution, insertion, deletion and transposition of two adjacent characters. Among alignments of
equal cost, a substitution that only drops a capital or an accent is preferred (its cost is 0.99),
so that `The` / `the` aligns T with t rather than by a deletion and an insertion, and a
substitution across character classes (a letter for a full stop) is avoided (1.01) when an
insertion and a deletion explain the difference as well. The common prefix and suffix are
stripped first and the dynamic programme runs in a diagonal band that is widened until it
provably holds the optimum, so a pair costs time in proportion to its length times its number of
errors (the whole 24k-pair Aalto sample aligns in about a second).

Labelling rules, per character operation (what the simulator's channels produce):

====================  ==========================================================================
operation             channel
====================  ==========================================================================
substitute ``c -> n`` `SPACE_SUBSTITUTION` if c is a space; `SPACE_INSERTION` if n is a space;
                      `DROP_CAPITAL` if n is c lower-cased; `SIMPLIFY_ACCENT` if n is c without
                      its diacritics; otherwise `SUBSTITUTION`
delete ``c``          `SPACE_OMISSION` for a space; `DROP_APOSTROPHE` for an apostrophe;
                      `DROP_PUNCTUATION` for one of ``. , ! ? ; :``; otherwise `OMISSION`
insert ``n``          `DOUBLE_TAP` if n equals the typed character before or after it;
                      otherwise `NEIGHBOR_INSERTION`
swap ``ab -> ba``     `TRANSPOSITION`
====================  ==========================================================================

Whole-word rule. A word (a run of letters with inner apostrophes, as the simulator has it) whose
typed form is a confusion-set partner of the intended word is one `REAL_WORD` edit; one whose
typed form is an attested misspelling of it is one `MISSPELLING` edit (both only when a `Lexicon`
is given). Otherwise, a word with two or more *slips* (substitution, omission, insertion,
transposition) of which two touch (no untouched letter between them, `CLUSTER_GAP`) is one
`MISSPELLING`: independent slips at the rates people make them rarely fall on neighbouring
letters, while a word spelled wrongly from memory (``tonite``, ``fittipallid``) changes several
neighbouring letters at once. Slips farther apart stay separate edits, as the simulator samples
them per character.

The rule is a heuristic with measured costs. A real misspelling that differs by one letter
(``suprised``) is labelled as that slip unless the `Lexicon` lists it; a slip that happens to
give a listed misspelling (``teh``) is labelled a misspelling; two slips on neighbouring letters
read as one misspelling, which matters at phone error rates (a gap of one untouched letter, or
two, would merge more of them: at the `raw` preset's 8.5% character error rate the share of
pairs whose labels match the provenance drops from 0.70 to 0.64). `agreement` measures how
often the labels match the simulator's own provenance.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, Protocol

from keyboard_sim import unicode_tables
from keyboard_sim.channels import Channel
from keyboard_sim.pair import Edit, Pair

# Integer costs (hundredths) so that ties are broken without floating point drift.
_UNIT = 100
_NEAR = 99  # a substitution that only drops a capital or an accent
_FAR = 101  # a substitution across classes (letter, digit, space, other): an insertion and a
# deletion of the same total cost are the likelier story ("day." -> "daay" is a double tap and a
# dropped full stop, not y -> a and . -> y)

# Two slips with at most this many untouched intended characters between them make a cluster.
CLUSTER_GAP = 0

PUNCTUATION = frozenset(unicode_tables.PUNCTUATION)
APOSTROPHES = frozenset(unicode_tables.APOSTROPHES)
SLIPS = frozenset(
    {
        Channel.SUBSTITUTION,
        Channel.OMISSION,
        Channel.DOUBLE_TAP,
        Channel.NEIGHBOR_INSERTION,
        Channel.TRANSPOSITION,
    }
)

# A word, as the simulator's word channels see one: letters joined by inner apostrophes (don't).
WORD_RE = re.compile(r"[^\W\d_]+(?:[" + unicode_tables.APOSTROPHES + r"][^\W\d_]+)*")


class Op(NamedTuple):
    """One unit-cost character operation: `clean[clean_start:clean_end]` became
    `noisy[noisy_start:noisy_end]`.

    `kind` is "S" (substitution, 1 -> 1), "D" (deletion, 1 -> 0), "I" (insertion, 0 -> 1) or
    "T" (transposition of two adjacent characters, 2 -> 2).
    """

    kind: str
    clean_start: int
    clean_end: int
    noisy_start: int
    noisy_end: int


class Lexicon(Protocol):
    """The simulator's whole-word error lists (`keyboard_sim.lexicon.Lexicon` fits).

    Both map a lower-case intended word to its alternatives: attested misspellings, and the
    other words of its real-word confusion set.
    """

    misspellings: Mapping[str, Sequence[str]]
    confusions: Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class Alignment:
    """Two strings, the character operations between them and the labelled edits.

    Attributes:
        clean: The intended text.
        noisy: The typed text.
        ops: Unit-cost character operations of an optimal alignment, in text order. Their
            number is the restricted Damerau-Levenshtein distance.
        edits: The operations labelled as channels (a whole-word edit replaces the operations
            inside its word), ordered, disjoint, and consistent with both strings.
    """

    clean: str
    noisy: str
    ops: tuple[Op, ...]
    edits: tuple[Edit, ...]

    @property
    def distance(self) -> int:
        """Restricted Damerau-Levenshtein distance (a transposition counts as one)."""
        return len(self.ops)

    def to_pair(self, id: str = "") -> Pair:
        """The alignment as a `Pair` (no touches)."""
        return Pair(id, self.clean, self.noisy, self.edits)


@lru_cache(maxsize=4096)
def strip_accents(ch: str) -> str:
    """`ch` without combining diacritics (é -> e); unchanged if it has none."""
    decomposed = unicodedata.normalize("NFD", ch)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", base) if base else ch


@lru_cache(maxsize=8192)
def _char_class(c: str) -> int:
    return 0 if c.isalpha() else 1 if c.isdigit() else 2 if c.isspace() else 3


@lru_cache(maxsize=8192)
def _sub_cost(a: str, b: str) -> int:
    if a == b:
        return 0
    if a.lower() == b or (strip_accents(a) == b and a != b):
        return _NEAR
    if _char_class(a) != _char_class(b):
        return _FAR
    return _UNIT


def char_ops(clean: str, noisy: str) -> list[Op]:
    """An optimal restricted Damerau-Levenshtein alignment of two strings, as operations.

    Ties are broken towards matches, then transpositions, then substitutions, then deletions,
    scanning from the end of the strings, so the result is deterministic.
    """
    n_all, m_all = len(clean), len(noisy)
    p = 0
    limit = min(n_all, m_all)
    while p < limit and clean[p] == noisy[p]:
        p += 1
    s = 0
    while s < limit - p and clean[n_all - 1 - s] == noisy[m_all - 1 - s]:
        s += 1
    a = clean[p : n_all - s]
    b = noisy[p : m_all - s]
    n, m = len(a), len(b)
    if n == 0:
        return _slide_left([Op("I", p, p, p + j, p + j + 1) for j in range(m)], clean, noisy)
    if m == 0:
        return _slide_left([Op("D", p + i, p + i + 1, p, p) for i in range(n)], clean, noisy)

    # Cost rows restricted to a diagonal band, widened until the answer provably does not
    # depend on it: a path that leaves the band needs more than `w` insertions or deletions,
    # so costs at least _UNIT * (w + 1) (Ukkonen's cut-off). Typing noise is sparse, so a
    # narrow band usually suffices and long texts cost time in proportion to their length.
    w = 8
    while True:
        lo_off, hi_off = min(0, m - n) - w, max(0, m - n) + w
        rows = _cost_rows(a, b, lo_off, hi_off)
        if rows[n][m] < _UNIT * (w + 1) or (lo_off <= -n and hi_off >= m):
            break
        w *= 4

    ops: list[Op] = []
    i, j = n, m
    while i > 0 or j > 0:
        here = rows[i][j]
        if i > 0 and j > 0:
            ai, bj = a[i - 1], b[j - 1]
            if ai == bj and here == rows[i - 1][j - 1]:
                i -= 1
                j -= 1
                continue
            if (
                i > 1
                and j > 1
                and ai != a[i - 2]
                and ai == b[j - 2]
                and a[i - 2] == bj
                and here == rows[i - 2][j - 2] + _UNIT
            ):
                ops.append(Op("T", p + i - 2, p + i, p + j - 2, p + j))
                i -= 2
                j -= 2
                continue
            if ai != bj and here == rows[i - 1][j - 1] + _sub_cost(ai, bj):
                ops.append(Op("S", p + i - 1, p + i, p + j - 1, p + j))
                i -= 1
                j -= 1
                continue
        if i > 0 and here == rows[i - 1][j] + _UNIT:
            ops.append(Op("D", p + i - 1, p + i, p + j, p + j))
            i -= 1
        else:
            ops.append(Op("I", p + i, p + i, p + j - 1, p + j))
            j -= 1
    ops.reverse()
    return _slide_left(ops, clean, noisy)


_INF = 1 << 60


def _cost_rows(a: str, b: str, lo_off: int, hi_off: int) -> list[list[int]]:
    """Cost matrix rows of aligning a with b, for cells with lo_off <= j - i <= hi_off only
    (the others stay at infinity)."""
    n, m = len(a), len(b)
    prev = [_UNIT * j if j <= hi_off else _INF for j in range(m + 1)]
    prev2: list[int] | None = None
    rows = [prev]
    for i in range(1, n + 1):
        ai = a[i - 1]
        ai_prev = a[i - 2] if i > 1 else ""
        cur = [_INF] * (m + 1)
        if -i >= lo_off:
            cur[0] = _UNIT * i
        for j in range(max(1, i + lo_off), min(m, i + hi_off) + 1):
            bj = b[j - 1]
            best = prev[j - 1] + (0 if ai == bj else _sub_cost(ai, bj))
            d = prev[j] + _UNIT
            if d < best:
                best = d
            ins = cur[j - 1] + _UNIT
            if ins < best:
                best = ins
            if (
                prev2 is not None
                and j > 1
                and ai != ai_prev
                and ai == b[j - 2]
                and ai_prev == bj
            ):
                t = prev2[j - 2] + _UNIT
                if t < best:
                    best = t
            cur[j] = best
        rows.append(cur)
        prev2, prev = prev, cur
    return rows


def _slide_left(ops: list[Op], clean: str, noisy: str) -> list[Op]:
    """Moves each insertion or deletion to the start of the run of equal characters it sits in.

    "see" -> "seee" can insert any of the e's; the first is canonical, and is where the
    simulator records a double tap (on the letter that was typed twice).
    """
    out: list[Op] = []
    for op in ops:
        if op.kind in ("I", "D"):
            k, j = op.clean_start, op.noisy_start
            ch = noisy[j] if op.kind == "I" else clean[k]
            c_floor = out[-1].clean_end if out else 0
            n_floor = out[-1].noisy_end if out else 0
            while (k - 1 >= c_floor and j - 1 >= n_floor and clean[k - 1] == ch
                   and noisy[j - 1] == ch):
                k -= 1
                j -= 1
            if op.kind == "I":
                op = Op("I", k, k, j, j + 1)
            else:
                op = Op("D", k, k + 1, j, j)
        out.append(op)
    return out


def label_op(op: Op, clean: str, noisy: str) -> Channel:
    """The channel the simulator would have used for one character operation."""
    if op.kind == "T":
        return Channel.TRANSPOSITION
    if op.kind == "S":
        c, t = clean[op.clean_start], noisy[op.noisy_start]
        if c.isspace():
            return Channel.SPACE_SUBSTITUTION
        if t.isspace():
            return Channel.SPACE_INSERTION
        if c != t and c.lower() == t:
            return Channel.DROP_CAPITAL
        if strip_accents(c) == t:
            return Channel.SIMPLIFY_ACCENT
        return Channel.SUBSTITUTION
    if op.kind == "D":
        c = clean[op.clean_start]
        if c.isspace():
            return Channel.SPACE_OMISSION
        if c in APOSTROPHES:
            return Channel.DROP_APOSTROPHE
        if c in PUNCTUATION:
            return Channel.DROP_PUNCTUATION
        return Channel.OMISSION
    # Insertion: a repeat of the neighbouring typed character is a double tap.
    t = noisy[op.noisy_start]
    before = noisy[op.noisy_start - 1] if op.noisy_start > 0 else None
    after = noisy[op.noisy_end] if op.noisy_end < len(noisy) else None
    if t == before or t == after:
        return Channel.DOUBLE_TAP
    return Channel.NEIGHBOR_INSERTION


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of `text` (see `WORD_RE`)."""
    return [m.span() for m in WORD_RE.finditer(text)]


def word_index(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """For each character position of `text`, the index of its word in `spans`, or -1."""
    idx = [-1] * len(text)
    for k, (s, e) in enumerate(spans):
        for i in range(s, e):
            idx[i] = k
    return idx


def op_word(op: Op, clean: str, noisy: str, widx: list[int]) -> int:
    """Index of the clean word an operation falls in, or -1 (spaces, punctuation, straddling).

    An insertion belongs to the word of the intended character just before it, or failing that
    just after it, provided the inserted character is itself a word character (an extra space or
    full stop belongs to no word).
    """
    if op.kind == "I":
        if not WORD_RE.fullmatch(noisy[op.noisy_start]):
            return -1
        k = op.clean_start
        if k > 0 and widx[k - 1] >= 0:
            return widx[k - 1]
        if k < len(clean):
            return widx[k]
        return -1
    first = widx[op.clean_start]
    if first < 0:
        return -1
    for i in range(op.clean_start + 1, op.clean_end):
        if widx[i] != first:
            return -1
    return first


def _is_cluster(spans: list[tuple[int, int]]) -> bool:
    """Whether two of the slips' clean spans have at most CLUSTER_GAP untouched characters
    between them."""
    spans = sorted(spans)
    return any(b[0] - a[1] <= CLUSTER_GAP for a, b in zip(spans, spans[1:], strict=False))


def label(
    clean: str, noisy: str, ops: list[Op], lexicon: Lexicon | None = None
) -> tuple[Edit, ...]:
    """Labels aligned operations as channels, merging whole-word errors (see module doc)."""
    if not ops:
        return ()
    channels = [label_op(op, clean, noisy) for op in ops]
    spans = word_spans(clean)
    widx = word_index(clean, spans)
    words = [op_word(op, clean, noisy, widx) for op in ops]

    # Ops of each word, and whether any op straddles the word's boundary (then it stays as is).
    by_word: dict[int, list[int]] = {}
    for k, w in enumerate(words):
        if w >= 0:
            by_word.setdefault(w, []).append(k)
    straddled: set[int] = set()
    for k, op in enumerate(ops):
        if words[k] < 0 and op.clean_end > op.clean_start:
            for i in (op.clean_start, op.clean_end - 1):
                if widx[i] >= 0:
                    straddled.add(widx[i])

    # A merged word takes every op from its first to its last, and any op strictly inside it (an
    # inserted space in a retyped word), so the merged edit stays disjoint from its neighbours.
    groups: dict[int, tuple[int, int, Channel]] = {}  # first op -> (last op, word, channel)
    for w, members in by_word.items():
        if w in straddled:
            continue
        first, last = members[0], members[-1]
        ws, we = spans[w]
        # Widen to every op strictly inside the word (e.g. a space inserted mid-word).
        while first > 0 and ops[first - 1].clean_start > ws:
            first -= 1
        while last + 1 < len(ops) and ops[last + 1].clean_start < we:
            last += 1
        whole: Channel | None = None
        if lexicon is not None:
            ns = ws + _delta(ops[:first])
            typed = noisy[ns : ns + (we - ws) + _delta(ops[first : last + 1])]
            intended = clean[ws:we]
            key, got = intended.lower(), typed.lower()
            if got in lexicon.confusions.get(key, ()):
                whole = Channel.REAL_WORD
            elif got in lexicon.misspellings.get(key, ()):
                whole = Channel.MISSPELLING
        if whole is None:
            slips = [(ops[k].clean_start, ops[k].clean_end) for k in members
                     if channels[k] in SLIPS]
            if len(slips) >= 2 and _is_cluster(slips):
                whole = Channel.MISSPELLING
        if whole is not None:
            groups[first] = (last, w, whole)

    edits: list[Edit] = []
    offset = 0  # noisy index minus clean index, before op k
    k = 0
    while k < len(ops):
        if k in groups:
            last, w, whole = groups[k]
            ws, we = spans[w]
            delta = _delta(ops[k : last + 1])
            edits.append(Edit(whole, ws, we, ws + offset, we + offset + delta))
            offset += delta
            k = last + 1
            continue
        op = ops[k]
        edits.append(Edit(channels[k], *op[1:]))
        offset += (op.noisy_end - op.noisy_start) - (op.clean_end - op.clean_start)
        k += 1
    return tuple(edits)


def _delta(ops: list[Op]) -> int:
    """Length change (noisy minus clean) made by some operations."""
    return sum((o.noisy_end - o.noisy_start) - (o.clean_end - o.clean_start) for o in ops)


def align(clean: str, noisy: str, lexicon: Lexicon | None = None) -> Alignment:
    """Aligns an intended text with a typed one and labels every difference as a channel.

    Args:
        clean: What the person meant to type.
        noisy: What they typed.
        lexicon: The simulator's whole-word error lists, to recognise attested misspellings and
            real-word errors that differ by a single character.

    Returns:
        An `Alignment` whose `edits` turn `clean` into `noisy` (`Pair.is_consistent` holds).
    """
    ops = char_ops(clean, noisy)
    return Alignment(clean, noisy, tuple(ops), label(clean, noisy, ops, lexicon))


def resolve_lexicon(spec: Lexicon | str | None) -> Lexicon | None:
    """A lexicon from a `keyboard_sim.lexicon.load_lexicon` source name, or as given."""
    if spec is None or not isinstance(spec, str):
        return spec
    from keyboard_sim.lexicon import load_lexicon

    return load_lexicon(spec)


def align_pairs(
    pairs: Iterable[tuple[str, str]], lexicon: Lexicon | None = None
) -> list[Alignment]:
    """`align` over (clean, noisy) pairs, in order."""
    return [align(c, n, lexicon) for c, n in pairs]


@dataclass
class Agreement:
    """How well re-aligned labels match a simulator's provenance. Mergeable with `+`.

    Attributes:
        pairs: Pairs compared.
        pairs_equal: Pairs whose re-aligned edit types (as a multiset) equal the provenance's.
        edits: Provenance edits.
        edits_found: Provenance edits with a re-aligned edit of the same type whose clean span
            overlaps it or touches it (insertions and deletions can slide along a repeat).
        by_type: For each provenance type, [edits, edits_found].
        confusion: Counts of (provenance type, aligned type) for unmatched provenance edits
            whose clean span meets an aligned edit of another type.
    """

    pairs: int = 0
    pairs_equal: int = 0
    edits: int = 0
    edits_found: int = 0
    by_type: dict[Channel, list[int]] = field(default_factory=dict)
    confusion: Counter = field(default_factory=Counter)

    def __add__(self, other: Agreement) -> Agreement:
        by_type = {k: list(v) for k, v in self.by_type.items()}
        for k, (n, f) in other.by_type.items():
            cur = by_type.setdefault(k, [0, 0])
            cur[0] += n
            cur[1] += f
        return Agreement(
            self.pairs + other.pairs,
            self.pairs_equal + other.pairs_equal,
            self.edits + other.edits,
            self.edits_found + other.edits_found,
            by_type,
            self.confusion + other.confusion,
        )

    @property
    def pair_rate(self) -> float:
        """Share of pairs whose edit-type multisets agree."""
        return self.pairs_equal / self.pairs if self.pairs else 1.0

    @property
    def edit_rate(self) -> float:
        """Share of provenance edits recovered with the same type (recall)."""
        return self.edits_found / self.edits if self.edits else 1.0


def _meets(a: Edit, b: Edit) -> bool:
    return a.clean_start <= b.clean_end and b.clean_start <= a.clean_end


def agreement(pairs: Iterable[Pair], lexicon: Lexicon | None = None) -> Agreement:
    """Re-aligns simulated pairs and compares the labels with their provenance.

    Passthrough edits (characters the layout cannot type, text unchanged) are left out of the
    provenance side, since alignment sees no difference there.
    """
    out = Agreement()
    for pair in pairs:
        truth = [e for e in pair.edits if e.type != Channel.PASSTHROUGH]
        got = list(align(pair.clean, pair.noisy, lexicon).edits)
        out.pairs += 1
        if Counter(e.type for e in truth) == Counter(e.type for e in got):
            out.pairs_equal += 1
        for e in truth:
            out.edits += 1
            cur = out.by_type.setdefault(e.type, [0, 0])
            cur[0] += 1
            if any(g.type == e.type and _meets(e, g) for g in got):
                out.edits_found += 1
                cur[1] += 1
            else:
                other = next((g.type for g in got if _meets(e, g)), None)
                out.confusion[(e.type, other)] += 1
    return out
