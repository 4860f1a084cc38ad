"""How realistic is the simulator? Error-mix statistics of (clean, typed) pairs and divergences.

`ErrorMix` summarises a set of pairs: which kinds of edit they hold, how many character errors
fall in a word, where in the word the motor slips fall, the character error rate and the share of
texts with any error. Real pairs and simulated pairs are both aligned with `align.align` and
summarised by the same code, so the two mixes differ only where the typing differs (simulated
pairs are re-aligned rather than read from their provenance on purpose: the labelling is then
the same estimator on both sides; `align.agreement` measures how close it is to the provenance).

Divergences are Jensen-Shannon divergences in bits (0 = identical, 1 = disjoint):

- `types`: over the distribution of edit types (share of all edits);
- `position`: over where motor slips fall in their word (five bins of relative position);
- `per_text`: over the number of edits per text (0, 1, 2, 3, 4 or more), which carries the
  amount of error that the two distributions above ignore;
- `combined`: the mean of those three.

`fidelity_report` simulates the intended side of real pairs with a profile and puts the two
mixes side by side; `kbsim fidelity` prints its `to_text()`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keyboard_sim.align import (
    SLIPS,
    Alignment,
    Lexicon,
    align,
    label_op,
    op_word,
    resolve_lexicon,
    word_index,
    word_spans,
)
from keyboard_sim.channels import Channel

POSITION_BINS = 5
WORD_BUCKETS = ("0", "1", "2", "3+")
TEXT_BUCKETS = ("0", "1", "2", "3", "4+")
PLACES = ("first", "middle", "last")
# Display order of edit types: the simulator's channels in declaration order.
TYPE_ORDER = tuple(c for c in Channel if c != Channel.PASSTHROUGH)


@dataclass
class ErrorMix:
    """Error-mix counts of a set of aligned pairs. Mergeable: `a + b` is the mix of both sets.

    Attributes:
        pairs: Pairs counted.
        pairs_with_error: Pairs whose typed text differs from the intended one.
        clean_chars: Characters of intended text.
        distance: Sum of restricted Damerau-Levenshtein distances.
        words: Intended words (see `align.WORD_RE`).
        types: Edits per channel value.
        per_word: Words by number of character operations inside them (0, 1, 2, 3+).
        per_text: Pairs by number of edits (0, 1, 2, 3, 4+).
        positions: Motor slips inside words by relative position in the word (5 bins; a slip
            on character i of an n-letter word is at i / (n - 1)).
        places: Motor slips inside words on the first, a middle or the last character.
    """

    pairs: int = 0
    pairs_with_error: int = 0
    clean_chars: int = 0
    distance: int = 0
    words: int = 0
    types: Counter = field(default_factory=Counter)
    per_word: list[int] = field(default_factory=lambda: [0] * len(WORD_BUCKETS))
    per_text: list[int] = field(default_factory=lambda: [0] * len(TEXT_BUCKETS))
    positions: list[int] = field(default_factory=lambda: [0] * POSITION_BINS)
    places: list[int] = field(default_factory=lambda: [0] * len(PLACES))

    def __add__(self, other: ErrorMix) -> ErrorMix:
        add = lambda a, b: [x + y for x, y in zip(a, b, strict=True)]  # noqa: E731
        return ErrorMix(
            self.pairs + other.pairs,
            self.pairs_with_error + other.pairs_with_error,
            self.clean_chars + other.clean_chars,
            self.distance + other.distance,
            self.words + other.words,
            self.types + other.types,
            add(self.per_word, other.per_word),
            add(self.per_text, other.per_text),
            add(self.positions, other.positions),
            add(self.places, other.places),
        )

    def add(self, a: Alignment) -> None:
        """Counts one aligned pair."""
        self.pairs += 1
        self.pairs_with_error += a.clean != a.noisy
        self.clean_chars += len(a.clean)
        self.distance += a.distance
        for e in a.edits:
            self.types[e.type.value] += 1
        self.per_text[min(len(a.edits), len(TEXT_BUCKETS) - 1)] += 1
        spans = word_spans(a.clean)
        self.words += len(spans)
        in_word = [0] * len(spans)
        if a.ops:
            widx = word_index(a.clean, spans)
            for op in a.ops:
                w = op_word(op, a.clean, a.noisy, widx)
                if w < 0:
                    continue
                in_word[w] += 1
                # Motor slips by their own label, before any whole-word merging.
                if label_op(op, a.clean, a.noisy) not in SLIPS:
                    continue
                i, n = _place_in_word(op, spans[w])
                rel = i / (n - 1) if n > 1 else 0.0
                self.positions[min(int(rel * POSITION_BINS), POSITION_BINS - 1)] += 1
                self.places[_place(i, n)] += 1
        for k in in_word:
            self.per_word[min(k, len(WORD_BUCKETS) - 1)] += 1

    @classmethod
    def of(cls, alignments: Iterable[Alignment]) -> ErrorMix:
        """The mix of some aligned pairs."""
        mix = cls()
        for a in alignments:
            mix.add(a)
        return mix

    @classmethod
    def of_pairs(
        cls, pairs: Iterable[tuple[str, str]], lexicon: Lexicon | None = None
    ) -> ErrorMix:
        """Aligns (clean, noisy) pairs and returns their mix."""
        return cls.of(align(c, n, lexicon) for c, n in pairs)

    # ------------------------------------------------------------------------ summaries
    @property
    def cer(self) -> float:
        """Character error rate: total edit distance over total intended characters."""
        return self.distance / self.clean_chars if self.clean_chars else 0.0

    @property
    def error_share(self) -> float:
        """Share of pairs with any error."""
        return self.pairs_with_error / self.pairs if self.pairs else 0.0

    @property
    def edits(self) -> int:
        """Total labelled edits."""
        return sum(self.types.values())

    def type_distribution(self) -> np.ndarray:
        """Share of edits per type, in `TYPE_ORDER`."""
        return _normalise([self.types.get(c.value, 0) for c in TYPE_ORDER])

    def ops_per_word(self) -> float:
        """Mean character operations per intended word."""
        total = sum(self.per_word)
        if not total:
            return 0.0
        # The 3+ bucket is counted as 3: a lower bound, fine for display.
        return sum(k * n for k, n in enumerate(self.per_word)) / total


def _place_in_word(op, span: tuple[int, int]) -> tuple[int, int]:
    """(index of the slipped letter in its word, word length); an insertion belongs to the
    letter typed before it."""
    ws, we = span
    n = we - ws
    i = op.clean_start - ws - (1 if op.kind == "I" else 0)
    return min(max(i, 0), n - 1), n


def _place(i: int, n: int) -> int:
    """0 first, 1 middle, 2 last letter (a one-letter word's letter is first)."""
    return 0 if i == 0 else (2 if i == n - 1 else 1)


def slip_places(alignments: Iterable[Alignment], kinds: frozenset = SLIPS) -> list[int]:
    """How many slips of `kinds` fall on the first, a middle and the last letter of words."""
    out = [0, 0, 0]
    for a in alignments:
        if not a.ops:
            continue
        spans = word_spans(a.clean)
        widx = word_index(a.clean, spans)
        for op in a.ops:
            w = op_word(op, a.clean, a.noisy, widx)
            if w < 0 or label_op(op, a.clean, a.noisy) not in kinds:
                continue
            out[_place(*_place_in_word(op, spans[w]))] += 1
    return out


def _normalise(counts: Sequence[float]) -> np.ndarray:
    v = np.asarray(counts, dtype=float)
    s = v.sum()
    return v / s if s > 0 else v


def jsd(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits between two count or probability vectors.

    Each vector is normalised first; an all-zero vector against another all-zero vector gives 0,
    against a non-zero one gives 1 (nothing in common).
    """
    p, q = _normalise(p), _normalise(q)
    if p.sum() == 0 and q.sum() == 0:
        return 0.0
    if p.sum() == 0 or q.sum() == 0:
        return 1.0
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


@dataclass(frozen=True)
class Divergence:
    """Jensen-Shannon divergences (bits) between a real and a simulated error mix."""

    types: float
    position: float
    per_text: float

    @property
    def combined(self) -> float:
        """Mean of the three divergences (lower is closer)."""
        return (self.types + self.position + self.per_text) / 3


def divergence(real: ErrorMix, sim: ErrorMix) -> Divergence:
    """How far a simulated error mix is from a real one."""
    return Divergence(
        types=jsd(real.type_distribution(), sim.type_distribution()),
        position=jsd(real.positions, sim.positions),
        per_text=jsd(real.per_text, sim.per_text),
    )


@dataclass(frozen=True)
class FidelityReport:
    """Real and simulated error mixes of the same intended texts, and their divergence."""

    real: ErrorMix
    simulated: ErrorMix
    divergence: Divergence
    profile_name: str
    layout_name: str
    seed: int
    source: str = ""

    def to_dict(self) -> dict:
        """JSON-ready summary (shares and divergences)."""

        def summary(m: ErrorMix) -> dict:
            return {
                "pairs": m.pairs,
                "error_share": m.error_share,
                "cer": m.cer,
                "ops_per_word": m.ops_per_word(),
                "types": {c.value: float(s) for c, s in zip(TYPE_ORDER, m.type_distribution(),
                                                            strict=True)},
                "per_word": dict(zip(WORD_BUCKETS, _normalise(m.per_word).tolist(), strict=True)),
                "per_text": dict(zip(TEXT_BUCKETS, _normalise(m.per_text).tolist(), strict=True)),
                "places": dict(zip(PLACES, _normalise(m.places).tolist(), strict=True)),
                "positions": _normalise(m.positions).tolist(),
            }

        d = self.divergence
        return {
            "source": self.source,
            "profile": self.profile_name,
            "layout": self.layout_name,
            "seed": self.seed,
            "real": summary(self.real),
            "simulated": summary(self.simulated),
            "divergence": {"types": d.types, "position": d.position, "per_text": d.per_text,
                           "combined": d.combined},
        }

    def to_text(self) -> str:
        """Side-by-side table of the real and simulated mixes, then the divergences."""
        r, s = self.real, self.simulated
        rows: list[tuple[str, str, str]] = []

        def pct(x: float, digits: int = 1) -> str:
            return f"{100 * x:.{digits}f}%"

        def section(title: str) -> None:
            rows.append((title, "", ""))

        def shares(labels: Sequence[str], a: Sequence[float], b: Sequence[float]) -> None:
            for lab, x, y in zip(labels, _normalise(a), _normalise(b), strict=True):
                rows.append(("  " + lab, pct(x), pct(y)))

        rows.append(("pairs", f"{r.pairs:,}", f"{s.pairs:,}"))
        rows.append(("texts with any error", pct(r.error_share), pct(s.error_share)))
        rows.append(("character error rate", pct(r.cer, 2), pct(s.cer, 2)))
        rows.append(("edits", f"{r.edits:,}", f"{s.edits:,}"))
        rows.append(("char errors per word", f"{r.ops_per_word():.4f}",
                     f"{s.ops_per_word():.4f}"))
        section("edit types (share of edits)")
        keep = [i for i, c in enumerate(TYPE_ORDER)
                if r.types.get(c.value, 0) or s.types.get(c.value, 0)]
        shares([TYPE_ORDER[i].value for i in keep],
               [r.types.get(TYPE_ORDER[i].value, 0) for i in keep],
               [s.types.get(TYPE_ORDER[i].value, 0) for i in keep])
        section("words by character errors in them")
        shares(WORD_BUCKETS, r.per_word, s.per_word)
        section("texts by number of edits")
        shares(TEXT_BUCKETS, r.per_text, s.per_text)
        section("motor slips by place in word")
        shares(PLACES, r.places, s.places)
        section("motor slips by relative position in word")
        labels = [f"{i / POSITION_BINS:.1f}-{(i + 1) / POSITION_BINS:.1f}"
                  for i in range(POSITION_BINS)]
        shares(labels, r.positions, s.positions)

        width = max(len(a) for a, _, _ in rows) + 2
        head = [
            f"fidelity of profile {self.profile_name!r} on layout {self.layout_name} "
            f"(seed {self.seed})" + (f" against {self.source}" if self.source else ""),
            "",
            f"{'':<{width}}{'real':>12}{'simulated':>12}",
        ]
        body = [f"{a:<{width}}{b:>12}{c:>12}" for a, b, c in rows]
        d = self.divergence
        tail = [
            "",
            "divergence (Jensen-Shannon, bits; 0 = same, 1 = disjoint)",
            f"  {'edit types':<22}{d.types:.4f}",
            f"  {'position in word':<22}{d.position:.4f}",
            f"  {'edits per text':<22}{d.per_text:.4f}",
            f"  {'combined (mean)':<22}{d.combined:.4f}",
        ]
        return "\n".join(head + body + tail) + "\n"


def compare(
    pairs: Sequence[tuple[str, str]],
    profile,
    layout="en-US-physical",
    seed: int = 0,
    *,
    lexicon: Lexicon | str | None = "codespell",
    source: str = "",
) -> FidelityReport:
    """Simulates the intended side of `pairs` and compares the two error mixes.

    Args:
        pairs: Real (clean, typed) pairs.
        profile: A `TypistProfile`, preset name or profile JSON path.
        layout: A `Layout` or layout name.
        seed: Simulation seed (record ids are the pairs' positions).
        lexicon: Word lists for labelling whole-word errors (a `Lexicon`, a `load_lexicon`
            source name, or None for the rule alone). The same one labels both sides.
        source: Where the real pairs came from (for the report).
    """
    from keyboard_sim.layout import load_layout
    from keyboard_sim.profile import load_profile
    from keyboard_sim.simulate import simulate

    lex = resolve_lexicon(lexicon)
    prof = load_profile(profile)
    lay = load_layout(layout)
    clean = [c for c, _ in pairs]
    simulated = simulate(clean, prof, lay, seed)
    real_mix = ErrorMix.of_pairs(pairs, lex)
    sim_mix = ErrorMix.of_pairs(((p.clean, p.noisy) for p in simulated), lex)
    return FidelityReport(real_mix, sim_mix, divergence(real_mix, sim_mix), prof.name, lay.name,
                          seed, source)


def fidelity_report(
    pairs_path: str | Path,
    profile,
    layout="en-US-physical",
    seed: int = 0,
    *,
    limit: int | None = None,
    strip_trailing: bool = True,
    lexicon: Lexicon | str | None = "codespell",
) -> FidelityReport:
    """Reads real pairs from a TSV or JSONL file (see `calibrate.read_pairs`) and compares them
    with the simulator's typing of the same intended texts.

    Args:
        pairs_path: The real pairs.
        profile: A `TypistProfile`, preset name or profile JSON path.
        layout: A `Layout` or layout name.
        seed: Simulation seed.
        limit: Use only the first `limit` pairs.
        strip_trailing: Drop trailing whitespace of both texts first (see `calibrate`).
        lexicon: As for `compare`.
    """
    from keyboard_sim.calibrate import read_pairs

    logged = read_pairs(pairs_path, strip_trailing=strip_trailing)
    if limit is not None:
        logged = logged[:limit]
    if not logged:
        raise ValueError(f"{pairs_path}: no pairs to compare")
    pairs = [(p.clean, p.noisy) for p in logged]
    return compare(pairs, profile, layout, seed, lexicon=lexicon, source=str(pairs_path))
