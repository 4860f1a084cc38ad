"""Proofreading and auto-correction metrics on (noisy, clean, prediction) triples.

A corrector reads what the typist produced (`noisy`) and returns its `prediction`; `clean` is
what was meant. Every metric here is a ratio of integer counts, and the counts of one message
are held in a `CorrectionCounts`; counts add (`a + b`, `sum(...)`), and every rate is computed
from the summed counts, so a corpus scored in shards gives exactly the answer of the whole
corpus (corpus-level rates, as the M2 scorer and ERRANT compute them, not means of per-message
rates).

What is compared, with nothing normalised (no case folding, no punctuation stripping):

* Characters: the strings as given, spaces included, one code point a unit.
* Words: the strings split on runs of whitespace (`str.split()`); a word is a maximal run of
  non-whitespace characters, punctuation attached ("sat." is one word).

Definitions (each one a ratio of fields of `CorrectionCounts`; an undefined ratio, 0/0, is
`nan` except where its source fixes a convention, said below):

* Character and word error rate before and after correction (CER, WER): substitutions +
  deletions + insertions of the minimum-edit alignment of the clean text (reference) with the
  noisy text (before) or the prediction (after), counted with jiwer's alignment, summed over
  messages and divided by the summed length of the clean texts (Morris, Maier & Green 2004,
  the definition jiwer implements).
* Edit precision, recall and F0.5. An edit is a span of noisy words and the words that replace
  it. Gold edits turn the noisy text into the clean one, system edits turn it into the
  prediction; both are read off jiwer's character alignment with the noisy text as the
  reference, so an exact correction gives exactly the gold edits. Words of the two sides that
  share an aligned character (a match or a substitution) are linked, and a linked group is one
  edit unless it is one word left unchanged: "teh" -> "the" is one edit, "thecat" -> "the cat"
  one, and neighbouring typos stay separate edits, so fixing one of them earns credit for it. A
  word with no aligned character was inserted (it joins the group of the word it was inserted
  into, or the other words inserted at the same place) or deleted. A true positive is a system
  edit equal to a gold edit (same noisy span, same replacement). P = TP / system edits,
  R = TP / gold edits, F0.5 = 1.25 P R / (0.25 P + R): the M2 scorer's measure (Dahlmeier & Ng
  2012, "Better evaluation for grammatical error correction") and ERRANT's (Bryant, Felice &
  Briscoe 2017, "Automatic annotation and evaluation of error types for grammatical error
  correction"), with ERRANT's conventions for empty sets: P = 1 with no system edits, R = 1
  with no gold edits, F = 0 when P + R = 0. The grouping rule is ours: ERRANT merges tokens
  with linguistic rules this word-level tool does not have.
* Messages fixed: of messages with an error (noisy != clean), the share with prediction ==
  clean.
* Message over-correction: of messages without an error (noisy == clean), the share with
  prediction != clean.
* Word-level auto-correction, as kebbie (FleksySDK/kebbie, the open mobile keyboard benchmark,
  `kebbie/scorer.py` and its "How testing is done" page) reports it. kebbie scores each clean
  word: with no typo, a kept word is a true negative and a changed one a false positive; with a
  typo, a restored word is a true positive and anything else a false negative. Precision =
  TP / (TP + FP), recall = TP / (TP + FN), F-beta with kebbie's `DEFAULT_BETA` = 0.9 (precision
  weighs slightly more than recall), accuracy = (TP + TN) / all; kebbie returns 0 for 0/0, and
  so do these. kebbie types one word at a time; here a clean word "has a typo" when the word
  alignment clean <-> noisy does not match it to an identical noisy word, and "is restored" when
  the alignment clean <-> prediction matches it to an identical word. Noisy words that match no
  clean word (an extra word) are outside this measure (WER counts them).
* Word over-correction: of clean words that were right in the noisy text, the share that are
  wrong in the prediction (kebbie's FP / (FP + TN)).
* Fix rate per error type, from the simulator's provenance (`keyboard_sim.Edit`): an edit is
  fixed when every clean word its clean span touches is restored in the prediction (restored as
  above). A span touches a word when the two overlap or meet as closed intervals of character
  offsets, so an omitted space touches both words it separated and an inserted letter at a
  word's edge touches that word. Where words cannot tell, because the edit touches no word
  (whitespace inside a run of spaces) or every word it touches is already right in the noisy
  text (a space typed twice: whitespace-split words do not see it), the edit counts as fixed
  only when the whole prediction equals the clean text. `PASSTHROUGH` edits mark untypeable
  characters, not errors, and are not counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import jiwer
from jiwer.transforms import AbstractTransform

from keyboard_sim.channels import Channel
from keyboard_sim.pair import Edit

# kebbie's auto-correction F-score weight (kebbie/scorer.py `DEFAULT_BETA`; documented on its
# "How testing is done" page: "We currently use beta = 0.9"). Early kebbie releases used 1.
AUTOCORRECT_BETA = 0.9
# The M2 scorer's and ERRANT's F-score weight: precision counts twice as much as recall
# (Dahlmeier & Ng 2012; Bryant et al. 2017).
EDIT_BETA = 0.5

_WORD = re.compile(r"\S+")


class CorrectionInputError(ValueError):
    """A triple, its provenance, or a corrector's output cannot be scored (the record is named)."""


class Corrector(Protocol):
    """What `evaluate_corrector` needs: a name and a batch `correct`."""

    name: str

    def correct(self, texts: Sequence[str]) -> list[str]: ...


class Identity:
    """The no-correction baseline: returns the noisy text unchanged.

    Its scores are the "before" side of every comparison: edit precision 1 (no edits), recall 0,
    and no over-correction.
    """

    def __init__(self, name: str = "no correction") -> None:
        self.name = name

    def correct(self, texts: Sequence[str]) -> list[str]:
        """Returns the texts as they are."""
        return list(texts)


def split_words(text: str) -> list[str]:
    """The words of a text: maximal runs of non-whitespace characters, as `str.split()`."""
    return text.split()


def word_spans(text: str) -> list[tuple[int, int]]:
    """The character span `[start, end)` of each word of `split_words(text)`, in order."""
    return [m.span() for m in _WORD.finditer(text)]


class _SplitWords(AbstractTransform):
    # jiwer's default word transform collapses and strips spaces and splits on " " only; this
    # splits exactly as `split_words` does and changes nothing else.
    def process_string(self, s: str) -> list[list[str]]:
        return [s.split()]

    def process_list(self, inp: list[str]) -> list[list[str]]:
        return [s.split() for s in inp]


class _Chars(AbstractTransform):
    # jiwer's default character transform strips leading and trailing spaces; this keeps them.
    def process_string(self, s: str) -> list[list[str]]:
        return [list(s)]

    def process_list(self, inp: list[str]) -> list[list[str]]:
        return [list(s) for s in inp]


_WORDS_T = _SplitWords()
_CHARS_T = _Chars()


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _fbeta(p: float, r: float, beta: float) -> float:
    b2 = beta * beta
    den = b2 * p + r
    return (1 + b2) * p * r / den if den else 0.0


@dataclass(frozen=True)
class CorrectionCounts:
    """Integer sums from which every correction metric is computed; `a + b` merges exactly.

    Attributes:
        messages: Messages scored.
        chars: Characters of the clean texts (the CER denominator).
        char_errors_before: Character substitutions + deletions + insertions, clean vs noisy.
        char_errors_after: The same, clean vs prediction.
        words: Words of the clean texts (the WER denominator, and kebbie's word count).
        word_errors_before: Word substitutions + deletions + insertions, clean vs noisy.
        word_errors_after: The same, clean vs prediction.
        gold_edits: Word edits noisy -> clean.
        system_edits: Word edits noisy -> prediction.
        correct_edits: System edits equal to a gold edit (true positives).
        messages_with_errors: Messages with noisy != clean.
        messages_fixed: Of those, messages with prediction == clean.
        messages_broken: Of the messages with noisy == clean, those with prediction != clean.
        words_typo: Clean words not kept in the noisy text (kebbie TP + FN).
        words_typo_fixed: Of those, words restored in the prediction (kebbie TP).
        words_broken: Clean words kept in the noisy text but not in the prediction (kebbie FP).
        by_type: Provenance fix counts, `(channel value, edits, fixed)` sorted by channel; a
            channel with no edits is absent.
    """

    messages: int = 0
    chars: int = 0
    char_errors_before: int = 0
    char_errors_after: int = 0
    words: int = 0
    word_errors_before: int = 0
    word_errors_after: int = 0
    gold_edits: int = 0
    system_edits: int = 0
    correct_edits: int = 0
    messages_with_errors: int = 0
    messages_fixed: int = 0
    messages_broken: int = 0
    words_typo: int = 0
    words_typo_fixed: int = 0
    words_broken: int = 0
    by_type: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        for name in _COUNT_FIELDS:
            v = getattr(self, name)
            if type(v) is not int or v < 0:  # bool (an int subclass) is not a count
                raise ValueError(f"CorrectionCounts.{name} must be an int >= 0, got {v!r}")
        checks = (
            (self.correct_edits <= min(self.gold_edits, self.system_edits),
             "correct_edits <= gold_edits and system_edits"),
            (self.messages_fixed <= self.messages_with_errors <= self.messages,
             "messages_fixed <= messages_with_errors <= messages"),
            (self.messages_broken <= self.messages - self.messages_with_errors,
             "messages_broken <= messages - messages_with_errors"),
            (self.words_typo_fixed <= self.words_typo <= self.words,
             "words_typo_fixed <= words_typo <= words"),
            (self.words_broken <= self.words - self.words_typo,
             "words_broken <= words - words_typo"),
        )
        for ok, what in checks:
            if not ok:
                raise ValueError(f"CorrectionCounts: need {what}, got {self}")
        rows = []
        for row in self.by_type:
            if (
                type(row) is not tuple
                or len(row) != 3
                or type(row[0]) is not str
                or type(row[1]) is not int
                or type(row[2]) is not int
                or not 0 <= row[2] <= row[1]
            ):
                raise ValueError(
                    f"CorrectionCounts.by_type rows must be (str, total, fixed) with "
                    f"0 <= fixed <= total, got {row!r}"
                )
            if row[1]:  # a channel with no edits is the same as an absent one
                rows.append(row)
        rows.sort()
        keys = [r[0] for r in rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"CorrectionCounts.by_type has a channel twice: {keys}")
        object.__setattr__(self, "by_type", tuple(rows))

    def __add__(self, other: CorrectionCounts) -> CorrectionCounts:
        if not isinstance(other, CorrectionCounts):
            return NotImplemented
        merged: dict[str, list[int]] = {}
        for key, total, fixed in self.by_type + other.by_type:
            acc = merged.setdefault(key, [0, 0])
            acc[0] += total
            acc[1] += fixed
        sums = {name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS}
        return CorrectionCounts(
            **sums, by_type=tuple((k, t, x) for k, (t, x) in sorted(merged.items()))
        )

    def __radd__(self, other: object) -> CorrectionCounts:
        # Lets `sum(counts)` start from 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    @classmethod
    def of(
        cls,
        noisy: str,
        clean: str,
        prediction: str,
        edits: Sequence[Edit] | None = None,
    ) -> CorrectionCounts:
        """The counts of one message.

        Args:
            noisy: What was typed.
            clean: What was meant.
            prediction: The corrector's output for `noisy`.
            edits: The simulator's provenance of `noisy` (`Pair.edits`), for the fix rate per
                error type; None leaves `by_type` empty.

        Raises:
            CorrectionInputError: A text is not a str, or the edits do not turn `clean` into
                `noisy`.
        """
        return correction_counts([noisy], [clean], [prediction], [edits])[0]

    # --- error rates -------------------------------------------------------------------------

    @property
    def cer_before(self) -> float:
        """Character error rate of the noisy texts."""
        return _ratio(self.char_errors_before, self.chars)

    @property
    def cer_after(self) -> float:
        """Character error rate of the predictions."""
        return _ratio(self.char_errors_after, self.chars)

    @property
    def wer_before(self) -> float:
        """Word error rate of the noisy texts."""
        return _ratio(self.word_errors_before, self.words)

    @property
    def wer_after(self) -> float:
        """Word error rate of the predictions."""
        return _ratio(self.word_errors_after, self.words)

    # --- edits (M2 / ERRANT) -----------------------------------------------------------------

    @property
    def edit_precision(self) -> float:
        """Share of system edits that are gold edits (1 with no system edits, as ERRANT)."""
        return self.correct_edits / self.system_edits if self.system_edits else 1.0

    @property
    def edit_recall(self) -> float:
        """Share of gold edits the system made (1 with no gold edits, as ERRANT)."""
        return self.correct_edits / self.gold_edits if self.gold_edits else 1.0

    @property
    def edit_f05(self) -> float:
        """F0.5 of edit precision and recall (0 when both are 0)."""
        return _fbeta(self.edit_precision, self.edit_recall, EDIT_BETA)

    # --- messages ----------------------------------------------------------------------------

    @property
    def messages_fixed_share(self) -> float:
        """Of messages with an error, the share corrected exactly."""
        return _ratio(self.messages_fixed, self.messages_with_errors)

    @property
    def message_overcorrection_rate(self) -> float:
        """Of messages without an error, the share the corrector changed."""
        return _ratio(self.messages_broken, self.messages - self.messages_with_errors)

    # --- words (kebbie) ----------------------------------------------------------------------

    @property
    def word_overcorrection_rate(self) -> float:
        """Of clean words right in the noisy text, the share wrong in the prediction."""
        return _ratio(self.words_broken, self.words - self.words_typo)

    @property
    def autocorrect_precision(self) -> float:
        """kebbie's TP / (TP + FP) over clean words (0 when undefined, as kebbie)."""
        den = self.words_typo_fixed + self.words_broken
        return self.words_typo_fixed / den if den else 0.0

    @property
    def autocorrect_recall(self) -> float:
        """kebbie's TP / (TP + FN) over clean words (0 when undefined, as kebbie)."""
        return self.words_typo_fixed / self.words_typo if self.words_typo else 0.0

    def autocorrect_fbeta(self, beta: float = AUTOCORRECT_BETA) -> float:
        """kebbie's F-beta of `autocorrect_precision` and `autocorrect_recall` (0 if both 0)."""
        return _fbeta(self.autocorrect_precision, self.autocorrect_recall, beta)

    @property
    def autocorrect_accuracy(self) -> float:
        """kebbie's (TP + TN) / all clean words (0 with no words, as kebbie)."""
        tn = self.words - self.words_typo - self.words_broken
        return (self.words_typo_fixed + tn) / self.words if self.words else 0.0

    # --- provenance --------------------------------------------------------------------------

    def fix_rate(self, channel: Channel | str) -> float:
        """Share of the simulator's edits of one channel that the prediction fixed."""
        key = Channel(channel).value
        for k, total, fixed in self.by_type:
            if k == key:
                return fixed / total
        return math.nan

    @property
    def fix_rates(self) -> dict[str, float]:
        """Fix rate of each channel with at least one edit, keyed by channel value."""
        return {k: fixed / total for k, total, fixed in self.by_type}

    def to_dict(self) -> dict[str, Any]:
        """The rates (and the totals behind them), JSON-ready except that 0/0 is `nan`."""
        return {
            "messages": self.messages,
            "words": self.words,
            "chars": self.chars,
            "cer_before": self.cer_before,
            "cer_after": self.cer_after,
            "wer_before": self.wer_before,
            "wer_after": self.wer_after,
            "edit_precision": self.edit_precision,
            "edit_recall": self.edit_recall,
            "edit_f05": self.edit_f05,
            "messages_fixed_share": self.messages_fixed_share,
            "message_overcorrection_rate": self.message_overcorrection_rate,
            "word_overcorrection_rate": self.word_overcorrection_rate,
            "autocorrect_precision": self.autocorrect_precision,
            "autocorrect_recall": self.autocorrect_recall,
            "autocorrect_fbeta": self.autocorrect_fbeta(),
            "autocorrect_accuracy": self.autocorrect_accuracy,
            "fix_rate": self.fix_rates,
            "counts": {k: v for k, v in asdict(self).items() if k != "by_type"},
        }


_COUNT_FIELDS = tuple(f.name for f in fields(CorrectionCounts) if f.name != "by_type")


# --- alignment helpers -----------------------------------------------------------------------


def _error_count(chunks: Iterable[Any]) -> int:
    # Substitutions + deletions + insertions of one jiwer alignment.
    n = 0
    for c in chunks:
        if c.type == "insert":
            n += c.hyp_end_idx - c.hyp_start_idx
        elif c.type != "equal":
            n += c.ref_end_idx - c.ref_start_idx
    return n


def _kept(chunks: Iterable[Any]) -> set[int]:
    # Reference word indices matched to an identical hypothesis word.
    out: set[int] = set()
    for c in chunks:
        if c.type == "equal":
            out.update(range(c.ref_start_idx, c.ref_end_idx))
    return out


def _word_of_char(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    # For each character, the index of the word it belongs to (-1 for whitespace).
    spans = word_spans(text)
    owner = [-1] * len(text)
    for k, (s, e) in enumerate(spans):
        owner[s:e] = [k] * (e - s)
    return owner, spans


def _edits(
    chunks: Sequence[Any], src: str, dst: str
) -> set[tuple[int, int, tuple[str, ...]]]:
    """Word edits turning `src` into `dst`, from their character alignment (src the reference).

    Words of the two texts that share an aligned character (a match or a substitution) are
    linked; a linked group is one edit unless it is one word left unchanged. A `dst` word with
    no aligned character was inserted: inside a `src` word it joins that word's group, between
    words it joins the other words inserted at the same place. A `src` word with no aligned
    character was deleted. An edit is (start, end, replacement) over `src` word indices.
    """
    s_owner, s_spans = _word_of_char(src)
    d_owner, d_spans = _word_of_char(dst)
    ns = len(s_spans)
    parent = list(range(ns + len(d_spans)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    linked = [False] * len(d_spans)
    inserted_at: dict[int, int] = {}  # dst word -> src character index where it is inserted
    for c in chunks:
        if c.type in ("equal", "substitute"):
            for t in range(c.ref_end_idx - c.ref_start_idx):
                a, b = s_owner[c.ref_start_idx + t], d_owner[c.hyp_start_idx + t]
                if a >= 0 and b >= 0:
                    union(a, ns + b)
                    linked[b] = True
                elif b >= 0:  # a dst word character where src has a space: inserted there
                    inserted_at.setdefault(b, c.ref_start_idx + t)
        elif c.type == "insert":
            for j in range(c.hyp_start_idx, c.hyp_end_idx):
                b = d_owner[j]
                if b >= 0:
                    inserted_at.setdefault(b, c.ref_start_idx)
    places: dict[int, int] = {}  # insertion point between src words -> first dst word there
    for b, r in inserted_at.items():
        if linked[b]:
            continue
        inside = [k for k, (ws, we) in enumerate(s_spans) if ws < r < we]
        if inside:
            union(inside[0], ns + b)
        else:
            p = sum(1 for ws, _ in s_spans if ws < r)
            if p in places:
                union(places[p], ns + b)
            else:
                places[p] = ns + b
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for k in range(ns):
        groups.setdefault(find(k), ([], []))[0].append(k)
    for b in range(len(d_spans)):
        groups.setdefault(find(ns + b), ([], []))[1].append(b)
    point = {find(v): p for p, v in places.items()}
    s_words = [src[a:e] for a, e in s_spans]
    d_words = [dst[a:e] for a, e in d_spans]
    out: set[tuple[int, int, tuple[str, ...]]] = set()
    for root, (ks, bs) in groups.items():
        repl = tuple(d_words[b] for b in bs)
        if ks:
            if len(ks) == 1 and len(bs) == 1 and s_words[ks[0]] == repl[0]:
                continue
            out.add((ks[0], ks[-1] + 1, repl))
        else:
            p = point[root]
            out.add((p, p, repl))
    return out


def _align(kind: str, refs: list[str], hyps: list[str]) -> list[list[Any]]:
    if not refs:
        return []
    if kind == "words":
        out = jiwer.process_words(refs, hyps, _WORDS_T, _WORDS_T)
    else:
        out = jiwer.process_characters(refs, hyps, _CHARS_T, _CHARS_T)
    return out.alignments


def _check_edits(edits: Sequence[Edit], noisy: str, clean: str, where: str) -> list[Edit]:
    # The provenance must turn `clean` into `noisy`: spans in range, in order, not overlapping,
    # and the text between edits the same on both sides.
    try:
        es = sorted(edits, key=lambda e: (e.clean_start, e.clean_end, e.noisy_start, e.noisy_end))
    except (AttributeError, TypeError) as exc:
        raise CorrectionInputError(f"{where}: edits must be keyboard_sim Edits ({exc})") from None
    pc = pn = 0
    for e in es:
        try:
            Channel(e.type)
        except ValueError:
            raise CorrectionInputError(f"{where}: unknown edit type {e.type!r}") from None
        if not (pc <= e.clean_start <= e.clean_end <= len(clean)
                and pn <= e.noisy_start <= e.noisy_end <= len(noisy)):
            raise CorrectionInputError(
                f"{where}: edit {tuple(e)} is out of range or overlaps another "
                f"(clean has {len(clean)} characters, noisy {len(noisy)})"
            )
        if clean[pc:e.clean_start] != noisy[pn:e.noisy_start]:
            raise CorrectionInputError(
                f"{where}: the edits do not turn clean into noisy (before edit {tuple(e)}, "
                f"{clean[pc:e.clean_start]!r} != {noisy[pn:e.noisy_start]!r})"
            )
        pc, pn = e.clean_end, e.noisy_end
    if clean[pc:] != noisy[pn:]:
        raise CorrectionInputError(
            f"{where}: the edits do not turn clean into noisy (tails {clean[pc:]!r} != "
            f"{noisy[pn:]!r})"
        )
    return es


def _by_type(
    edits: Sequence[Edit],
    spans: list[tuple[int, int]],
    kept: set[int],
    restored: set[int],
    exact: bool,
) -> tuple[tuple[str, int, int], ...]:
    tally: dict[str, list[int]] = {}
    for e in edits:
        channel = Channel(e.type)
        if channel is Channel.PASSTHROUGH:
            continue
        touched = [k for k, (ws, we) in enumerate(spans)
                   if ws <= e.clean_end and e.clean_start <= we]
        if all(k in kept for k in touched):  # also when nothing is touched
            fixed = exact
        else:
            fixed = all(k in restored for k in touched)
        acc = tally.setdefault(channel.value, [0, 0])
        acc[0] += 1
        acc[1] += int(fixed)
    return tuple((k, t, f) for k, (t, f) in sorted(tally.items()))


def correction_counts(
    noisy: Sequence[str],
    clean: Sequence[str],
    predictions: Sequence[str],
    edits: Sequence[Sequence[Edit] | None] | None = None,
    *,
    ids: Sequence[str] | None = None,
) -> list[CorrectionCounts]:
    """The counts of each message of a batch, in order (one jiwer call per alignment kind).

    Args:
        noisy: What was typed, one message each.
        clean: What was meant.
        predictions: A corrector's outputs for `noisy`.
        edits: Per message, the simulator's provenance of the noisy text, or None.
        ids: Record ids used in error messages (default: the 0-based position).

    Raises:
        CorrectionInputError: Lengths differ, a text is not a str, or a message's edits do not
            turn its clean text into its noisy text (the record is named).
    """
    n = len(noisy)
    others = {"clean": clean, "predictions": predictions, "edits": edits, "ids": ids}
    for name, seq in others.items():
        if seq is not None and len(seq) != n:
            raise CorrectionInputError(f"{name} has {len(seq)} items, noisy has {n}")
    names = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    for label, seq in (("noisy", noisy), ("clean", clean), ("prediction", predictions)):
        for i, text in enumerate(seq):
            if not isinstance(text, str):
                raise CorrectionInputError(
                    f"record {names[i]}: {label} must be a str, got {type(text).__name__}"
                )
    checked = [
        None if edits is None or edits[i] is None
        else _check_edits(edits[i], noisy[i], clean[i], f"record {names[i]}")
        for i in range(n)
    ]
    clean, noisy, predictions = list(clean), list(noisy), list(predictions)
    # Alignments: clean vs noisy and clean vs prediction (CER, WER, kept and restored words);
    # characters of noisy vs clean and noisy vs prediction (gold and system edits, noisy the
    # reference in both, so a prediction equal to the clean text gives exactly the gold edits).
    c_noisy = _align("chars", clean, noisy)
    c_pred = _align("chars", clean, predictions)
    w_noisy = _align("words", clean, noisy)
    w_pred = _align("words", clean, predictions)
    gold_al = _align("chars", noisy, clean)
    sys_al = _align("chars", noisy, predictions)
    out = []
    for i in range(n):
        cw = split_words(clean[i])
        kept, restored = _kept(w_noisy[i]), _kept(w_pred[i])
        gold = _edits(gold_al[i], noisy[i], clean[i])
        system = _edits(sys_al[i], noisy[i], predictions[i])
        has_error = noisy[i] != clean[i]
        exact = predictions[i] == clean[i]
        by_type = () if checked[i] is None else _by_type(
            checked[i], word_spans(clean[i]), kept, restored, exact
        )
        out.append(CorrectionCounts(
            messages=1,
            chars=len(clean[i]),
            char_errors_before=_error_count(c_noisy[i]),
            char_errors_after=_error_count(c_pred[i]),
            words=len(cw),
            word_errors_before=_error_count(w_noisy[i]),
            word_errors_after=_error_count(w_pred[i]),
            gold_edits=len(gold),
            system_edits=len(system),
            correct_edits=len(gold & system),
            messages_with_errors=int(has_error),
            messages_fixed=int(has_error and exact),
            messages_broken=int(not has_error and not exact),
            words_typo=len(cw) - len(kept),
            words_typo_fixed=len(restored - kept),
            words_broken=len(kept - restored),
            by_type=by_type,
        ))
    return out


def evaluate_corrector(
    corrector: Corrector,
    noisy: Sequence[str],
    clean: Sequence[str],
    edits: Sequence[Sequence[Edit] | None] | None = None,
    batch_size: int = 64,
    *,
    ids: Sequence[str] | None = None,
) -> list[CorrectionCounts]:
    """Runs a corrector on the noisy texts and scores each message.

    Args:
        corrector: Anything with `name` and `correct(texts) -> list[str]`.
        noisy: What was typed, one message each.
        clean: What was meant, aligned with `noisy`.
        edits: Per message, the simulator's provenance (`Pair.edits`) for the fix rate per
            error type, or None.
        batch_size: Messages per `correct` call.
        ids: Record ids used in error messages (default: the 0-based position).

    Returns:
        One `CorrectionCounts` per message, in order; `sum(...)` is the corpus total.

    Raises:
        CorrectionInputError: Inputs of different lengths, a corrector that returns the wrong
            number of texts or a non-str (the corrector and the record are named), or bad
            provenance.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(noisy)
    for name, seq in (("clean", clean), ("edits", edits), ("ids", ids)):
        if seq is not None and len(seq) != n:
            raise CorrectionInputError(f"{name} has {len(seq)} items, noisy has {n}")
    who = getattr(corrector, "name", type(corrector).__name__)
    names = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    out: list[CorrectionCounts] = []
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        batch = list(noisy[lo:hi])
        preds = corrector.correct(batch)
        if len(preds) != len(batch):
            raise CorrectionInputError(
                f"corrector {who!r} returned {len(preds)} texts for {len(batch)} "
                f"(records {names[lo]}..{names[hi - 1]})"
            )
        for j, p in enumerate(preds):
            if not isinstance(p, str):
                raise CorrectionInputError(
                    f"corrector {who!r} returned a {type(p).__name__} for record {names[lo + j]}"
                )
        out.extend(correction_counts(
            batch, clean[lo:hi], preds, None if edits is None else edits[lo:hi],
            ids=names[lo:hi],
        ))
    return out
