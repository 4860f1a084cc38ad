"""The clean side of pairs: text normalisation, and a filter that keeps only messages whose
words are all (or mostly) correctly spelled, so that the simulator's noise is the only noise.

Chat corpora are already noisy: "im", "dont", "teh", a lower-case "i". The simulator adds
exactly these errors (its drop_apostrophe, misspelling and drop_capital channels), so a message
that holds them on its clean side would teach a corrector to leave them, and would count them
as correct in evaluation. `CleanFilter` therefore keeps a message only when its words are known
to a word list of the language, from which the common chat misspellings are taken out.

`normalize` is applied to every message before filtering and is what the clean side holds.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import lru_cache

from keyboard_sim.unicode_tables import APOSTROPHES

# --------------------------------------------------------------------------- normalize

# Format characters (category Cf) that are kept: they change what is shown, and keyboards type
# them as part of emoji and some scripts. U+200C ZERO WIDTH NON-JOINER (Persian, Indic
# scripts), U+200D ZERO WIDTH JOINER (emoji sequences such as a family), U+E0020-U+E007F tag
# characters (subdivision flags such as Scotland's).
_KEPT_FORMAT = {0x200C, 0x200D, *range(0xE0020, 0xE0080)}


@lru_cache(maxsize=1)
def _untypeable() -> re.Pattern:
    """A character class of what `normalize` removes (built once, from Python's unicodedata)."""
    cps = [
        cp for cp in range(sys.maxunicode + 1)
        if (cat := unicodedata.category(chr(cp))) in ("Cc", "Cs")
        or (cat == "Cf" and cp not in _KEPT_FORMAT)
    ]
    # Whitespace control characters (tab, newline, ...) are left to the whitespace step.
    cps = [cp for cp in cps if not chr(cp).isspace()]
    ranges = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)
    return re.compile(f"[{body}]+")


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]+")


def normalize(text: str) -> str:
    """The text as the clean side of a pair holds it.

    In order:
    1. Removes characters a keyboard cannot type: control characters (category Cc: C0, DEL,
       C1) other than whitespace, lone surrogates (Cs, which UTF-8 cannot encode), and format
       characters (Cf: zero-width space U+200B, soft hyphen U+00AD, byte order mark U+FEFF,
       left-to-right and other bidirectional marks U+200E/U+200F/U+202A-U+202E/U+2066-U+2069,
       word joiner U+2060, ...) except ZWNJ U+200C, ZWJ U+200D and the emoji tag characters
       U+E0020-U+E007F. Categories are Python's `unicodedata` ones.
    2. Turns every run of whitespace (`str.split`'s: space, tab, newlines, NBSP U+00A0,
       U+2028/U+2029, the ideographic space, ...) into one space, and strips both ends.
    3. Composes to Unicode NFC (an "e" and a combining acute become one "é"), the form
       keyboards produce.
    Case, punctuation, emoji and every other character are kept.
    """
    if text.isascii():
        if not text.isprintable():
            text = _ASCII_CONTROL.sub("", text)
        return " ".join(text.split())  # ASCII is already NFC
    text = _untypeable().sub("", text)
    return unicodedata.normalize("NFC", " ".join(text.split()))


# --------------------------------------------------------------------------- words

# URLs, e-mail addresses, @handles and #hashtags are not words: they are blanked out first
# (only in texts that hold "@", "#", "://" or "www.", so that most texts skip this). Words are
# then runs of letters and digits with apostrophes inside ("don't", "o'clock"); hyphens,
# slashes and other punctuation separate words ("e-mail" is "e" and "mail", as in wordfreq's
# own tokenizer), and a run with a digit ("3rd", "mp3", "2018") is a number, not a word.
_APOS = "".join(dict.fromkeys(APOSTROPHES))
_SKIP = re.compile(r"https?://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.-]+|[@#]\w+")
_WORD = re.compile(rf"[^\W_]+(?:[{_APOS}][^\W_]+)*")
_DIGIT = re.compile(r"\d")
_TO_ASCII_APOSTROPHE = str.maketrans({a: "'" for a in _APOS if a != "'"})


def words(text: str) -> list[str]:
    """The words of `text` that the filter checks, as written (case kept).

    Words are runs of letters with apostrophes inside; numbers, punctuation, emoticons, emoji,
    URLs, e-mail addresses, @handles and #hashtags are not words.
    """
    if "@" in text or "#" in text or "://" in text or "www." in text:
        text = _SKIP.sub(" ", text)
    toks = _WORD.findall(text)
    if not text.isalpha() and _DIGIT.search(text):
        toks = [t for t in toks if not _DIGIT.search(t)]
    return toks


# Contractions whose apostrophe-less form is dropped from the known words ("dont", "im",
# "youre"): what follows the apostrophe in "n't", "'m", "'re", "'ve", "'ll", "'d", "'all"
# (y'all), "'mon" (c'mon), and "'s" after these words only (after other words it is a
# possessive, and "friends" is a word).
_CONTRACTION_ENDS = {"t", "m", "re", "ve", "ll", "d", "all", "mon"}
_S_CONTRACTED = {"it", "that", "what", "there", "here", "he", "she", "who", "where", "how",
                 "when", "why", "let", "everyone", "everybody", "someone", "somebody",
                 "nobody", "everything", "something", "nothing", "this"}
# Apostrophe-less forms that are also common English words, kept known. Not kept, on purpose:
# "ill", "id", "cant", "wont": in the chat corpus "ill" is "I'll" far more often than "ill"
# (and "Ill"/"ill" 590 times against 1,853 "I'll"/"i'll"), and likewise for the others; a real
# "ill" costs one message, a kept "ill" for "I'll" a wrong clean side.
_HOMOGRAPHS = {"its", "were", "well", "lets", "hell", "shed", "shell", "wed", "whore", "govt"}
# The lower-case pronoun "i" (also "i'm", "i'll", ...): the simulator's drop_capital channel
# makes it from "I", so a clean side should hold "I".
_LOWER_I = re.compile(r"i(?:['’ʼ][a-z]+)?")


@lru_cache(maxsize=8)
def known_words(lang: str = "en", size: int = 50_000, misspellings: bool = True) -> frozenset:
    """The words `CleanFilter` knows: wordfreq's `size` most frequent words of `lang`,
    lower-case, less, for English, apostrophe-less contractions ("dont", "im") and, when
    `misspellings`, codespell's misspellings ("teh", "definately", "thier"), which are frequent
    enough in web text to sit in the list. Built once per argument tuple (about 0.1 s).
    """
    import wordfreq

    listed = wordfreq.top_n_list(lang, size)
    known = set(listed)
    if lang == "en":
        for w in listed:
            base, sep, end = w.partition("'")
            if (sep and base.isalpha() and end.isalpha()
                    and (end in _CONTRACTION_ENDS or (end == "s" and base in _S_CONTRACTED))):
                squeezed = base + end
                if squeezed not in _HOMOGRAPHS:
                    known.discard(squeezed)
        if misspellings:
            from keyboard_sim.lexicon import load_lexicon

            for wrong in load_lexicon("codespell").misspellings.values():
                known.difference_update(wrong)
    return frozenset(known)


# --------------------------------------------------------------------------- the filter

# Why a message is left out (check's reason codes), in the order they are tested.
REASONS = ("empty", "too_short", "too_long", "lowercase_i", "unknown_words")


@dataclass(frozen=True)
class CleanFilter:
    """Which messages may be the clean side of a pair.

    Attributes:
        min_words: Fewest words (see `words`) a message must have; with 1, a message of only
            emoji, numbers or punctuation is left out ("too_short").
        max_words: Most words ("too_long"); long messages are rare in chat and a keyboard
            model's context is short (73 of the default corpus's 258,145 messages exceed
            50 words or 300 characters).
        max_chars: Most characters of the normalised text ("too_long"); None: no limit.
        min_known: Share of the words that must be known ("unknown_words"). 1.0: every word.
        lowercase_i: Leave out messages with a lower-case pronoun "i" ("lowercase_i").
        lang: wordfreq language code of the word list.
        wordlist_size: How many of the language's most frequent words are known. 50,000
            covers everyday chat; ranks 50,000 to 100,000 hold rarer real words
            ("birdhouse") but as many chat forms ("yesss", "alittle", "arnt", "thanx").
        misspellings: Take codespell's misspellings out of the known words (English only).

    With the defaults (wordfreq 3.1.1, codespell's list) the default corpus keeps 82.0% of
    its messages: 12.6% have unknown words, 5.0% a lower-case "i", 0.4% are empty, too short
    or too long. Kept with wordlist_size 30,000: 78.0%; 100,000: 83.0%; min_known 0.9: 87.4%.
    """

    min_words: int = 1
    max_words: int = 50
    max_chars: int | None = 300
    min_known: float = 1.0
    lowercase_i: bool = True
    lang: str = "en"
    wordlist_size: int = 50_000
    misspellings: bool = True

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {self.min_words}")
        if self.max_words < max(self.min_words, 1):
            raise ValueError(f"max_words must be >= max(min_words, 1), got {self.max_words}")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError(f"max_chars must be >= 1 or None, got {self.max_chars}")
        if not 0.0 <= self.min_known <= 1.0:
            raise ValueError(f"min_known must be in [0, 1], got {self.min_known}")
        if self.wordlist_size < 1:
            raise ValueError(f"wordlist_size must be >= 1, got {self.wordlist_size}")
        if not isinstance(self.lang, str) or not self.lang:
            raise ValueError(f"lang must be a wordfreq language code, got {self.lang!r}")
        if self.misspellings and self.lang != "en":
            raise ValueError("misspellings=True uses codespell's English list; set it to "
                             f"False for lang={self.lang!r}")

    def vocabulary(self) -> frozenset:
        """The known words (cached across filters with the same list settings)."""
        return known_words(self.lang, self.wordlist_size, self.misspellings)

    def check(self, text: str) -> str | None:
        """None to keep `normalize(text)`, else the first reason (see REASONS) to leave it out.

        Words are compared in lower case, with curly apostrophes read as "'"; a possessive
        "'s" is known when its word is ("Sarah's" if "sarah" is known).
        """
        text = normalize(text)
        if not text:
            return "empty"
        ws = words(text)
        if len(ws) < self.min_words:
            return "too_short"
        if len(ws) > self.max_words or (self.max_chars is not None
                                        and len(text) > self.max_chars):
            return "too_long"
        if self.lowercase_i and any(w[0] == "i" and _LOWER_I.fullmatch(w) for w in ws):
            return "lowercase_i"
        if ws and self.min_known > 0.0:
            known = self.vocabulary()
            # One lower-casing for all the words (they hold no spaces).
            lowered = " ".join(ws).lower().translate(_TO_ASCII_APOSTROPHE).split(" ")
            unknown = [w for w in lowered if w not in known]
            if unknown:
                n = sum(1 for w in unknown if not (w.endswith("'s") and w[:-2] in known))
                if n > (1.0 - self.min_known) * len(ws) + 1e-9:
                    return "unknown_words"
        return None

    def keep(self, text: str) -> bool:
        """Whether `check(text)` keeps the text."""
        return self.check(text) is None

    def count(self, texts: Iterable[str]) -> FilterCounts:
        """How many of `texts` are kept, and why the others are not."""
        return FilterCounts.of(self.check(t) for t in texts)


@dataclass(frozen=True)
class FilterCounts:
    """Kept messages and left-out messages per reason; `a + b` adds two shards' counts, so
    sharded filtering gives exactly the single-process numbers."""

    kept: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    lowercase_i: int = 0
    unknown_words: int = 0

    @classmethod
    def of(cls, reasons: Iterable[str | None]) -> FilterCounts:
        """Counts of `check` results (None for kept)."""
        tally = dict.fromkeys(("kept", *REASONS), 0)
        for r in reasons:
            key = "kept" if r is None else r
            if key not in tally:
                raise ValueError(f"unknown reason {r!r}; known: {', '.join(REASONS)}")
            tally[key] += 1
        return cls(**tally)

    @property
    def total(self) -> int:
        """All messages counted, kept or not."""
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def rejected(self) -> int:
        return self.total - self.kept

    @property
    def kept_share(self) -> float:
        """kept / total (0.0 when nothing was counted)."""
        return self.kept / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __add__(self, other: FilterCounts) -> FilterCounts:
        if not isinstance(other, FilterCounts):
            return NotImplemented
        return FilterCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                               for f in fields(self)})
