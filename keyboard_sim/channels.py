"""Error channels: the kinds of edit the simulator makes, with default rates and their sources.

Every edit in a simulated pair carries one of these types. The touch model produces
`SUBSTITUTION` from geometry (its rate follows from the typist's precision and the key size, not
from a number in this table); every other channel has a rate, sampled on the units its comment
names; a profile's place weights further scale the motor slips by where the letter sits in its
word (see `TypistProfile.place_weights`). A unit (a character, a word) takes at most one edit:
when several channels fire on the same unit, the one listed first in `PRIORITY` wins, so edits
never overlap (as M2 files require).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from types import MappingProxyType


class Channel(StrEnum):
    """Types of edit, each a channel of the noise model."""

    # Touch model: the tap landed on another key (rate emerges from sigma and key size). A tap
    # on a key that types nothing (shift, backspace, enter) leaves an empty noisy span: the
    # cause is still a touch error, which is what the type records.
    SUBSTITUTION = "substitution"
    # Motor slips, sampled per keystroke of the intended text.
    OMISSION = "omission"  # a letter not typed
    DOUBLE_TAP = "double_tap"  # a letter typed twice
    NEIGHBOR_INSERTION = "neighbor_insertion"  # a neighbouring key touched as well
    TRANSPOSITION = "transposition"  # two adjacent letters swapped
    SPACE_SUBSTITUTION = "space_substitution"  # space typed as the letter above it: merges words
    SPACE_INSERTION = "space_insertion"  # a letter above the space bar typed as space: splits
    SPACE_OMISSION = "space_omission"  # space skipped: merges words
    # Habits and cognition, sampled on the clean text before typing.
    DROP_APOSTROPHE = "drop_apostrophe"  # dont, im
    DROP_CAPITAL = "drop_capital"  # i, monday
    SIMPLIFY_ACCENT = "simplify_accent"  # cafe for café
    DROP_PUNCTUATION = "drop_punctuation"  # a missing full stop or comma
    MISSPELLING = "misspelling"  # an attested misspelling of the word (cognitive error)
    REAL_WORD = "real_word"  # a real word confused for another (their/there)
    # Not an error: characters the layout cannot type are passed through unchanged and noted.
    PASSTHROUGH = "passthrough"


# Channels with a configurable rate (everything except the touch model and the bookkeeping).
RATED: tuple[Channel, ...] = tuple(
    c for c in Channel if c not in (Channel.SUBSTITUTION, Channel.PASSTHROUGH)
)

# Motor slips whose rates a profile's place weights scale by where the letter sits in its word.
PLACE_WEIGHTED: frozenset = frozenset(
    {Channel.OMISSION, Channel.DOUBLE_TAP, Channel.NEIGHBOR_INSERTION, Channel.TRANSPOSITION}
)

# Which channel wins when several fire on the same unit (first wins). Whole-word channels first,
# so a replaced word takes no further edits; then pairs, then single characters.
PRIORITY: tuple[Channel, ...] = (
    Channel.MISSPELLING,
    Channel.REAL_WORD,
    Channel.TRANSPOSITION,
    Channel.DROP_APOSTROPHE,
    Channel.DROP_PUNCTUATION,
    Channel.DROP_CAPITAL,
    Channel.SIMPLIFY_ACCENT,
    Channel.SPACE_OMISSION,
    Channel.SPACE_SUBSTITUTION,
    Channel.SPACE_INSERTION,
    Channel.OMISSION,
    Channel.DOUBLE_TAP,
    Channel.NEIGHBOR_INSERTION,
    Channel.SUBSTITUTION,
)

# What each rate is a probability of (the unit it is sampled on).
UNIT: MappingProxyType = MappingProxyType(
    {
        Channel.OMISSION: "typeable non-space character",
        Channel.DOUBLE_TAP: "typeable non-space character",
        Channel.NEIGHBOR_INSERTION: "typeable non-space character",
        Channel.TRANSPOSITION: "pair of adjacent distinct letters in a word (x cross_hand_factor "
        "when the two are typed by different thumbs)",
        Channel.SPACE_SUBSTITUTION: "space",
        Channel.SPACE_INSERTION: "letter whose key lies directly above the space bar",
        Channel.SPACE_OMISSION: "space",
        Channel.DROP_APOSTROPHE: "apostrophe between two letters",
        Channel.DROP_CAPITAL: "uppercase letter",
        Channel.SIMPLIFY_ACCENT: "accented letter",
        Channel.DROP_PUNCTUATION: "punctuation mark (. , ! ? ; :)",
        Channel.MISSPELLING: "word that has an attested misspelling",
        Channel.REAL_WORD: "word that belongs to a real-word confusion set",
    }
)

# Default rates: a phone typist before any keyboard correction (the `raw` intent preset scales
# the motor slips from here; see presets.py for the calibration of both intent presets).
DEFAULT_RATES: MappingProxyType = MappingProxyType(
    {
        # kebbie's DEFAULT_TYPO_PROBS (FleksySDK/kebbie noise_model.py) uses 0.005 for both
        # deleted and added characters, sampled per character.
        Channel.OMISSION: 0.005,
        # Double taps and neighbour touches split kebbie's 0.005 for added characters.
        Channel.DOUBLE_TAP: 0.0025,
        Channel.NEIGHBOR_INSERTION: 0.0025,
        # kebbie: 0.01 per character for transposed characters. Here it is the same-hand rate;
        # across thumbs it is multiplied by TypistProfile.cross_hand_factor, since
        # most transpositions in transcription typing are across hands (Grudin 1983, Error
        # patterns in novice and skilled transcription typing).
        Channel.TRANSPOSITION: 0.005,
        # kebbie: 0.01 per space for a deleted space.
        Channel.SPACE_OMISSION: 0.01,
        # A space typed on the letter row above the space bar, and the reverse. Not in kebbie;
        # set to half of the deleted-space rate (the space bar is tall, so these are rarer
        # than a skipped space).
        Channel.SPACE_SUBSTITUTION: 0.005,
        Channel.SPACE_INSERTION: 0.002,
        # kebbie: 0.1 per spelling symbol (apostrophe, hyphen) for DELETE_SPELLING_SYMBOL.
        Channel.DROP_APOSTROPHE: 0.1,
        # kebbie: 0.08 per uppercase letter (SIMPLIFY_CASE) and per accented letter
        # (SIMPLIFY_ACCENT).
        Channel.DROP_CAPITAL: 0.08,
        Channel.SIMPLIFY_ACCENT: 0.08,
        # kebbie's default for dropped punctuation is 0; chat users drop full stops and commas
        # often, so a modest 0.05 per mark is used here.
        Channel.DROP_PUNCTUATION: 0.05,
        # kebbie: 0.05 per word with a known common typo (COMMON_TYPO).
        Channel.MISSPELLING: 0.05,
        # Real-word errors are rarer than non-word ones; 0.01 per word in a confusion set.
        Channel.REAL_WORD: 0.01,
    }
)


class RateTable(Mapping):
    """An immutable, hashable, picklable mapping Channel -> rate (for frozen profiles)."""

    __slots__ = ("_items",)

    def __init__(self, rates: Mapping) -> None:
        self._items = tuple(sorted(((Channel(c), float(r)) for c, r in rates.items()),
                                   key=lambda kv: kv[0].value))

    def __getitem__(self, key) -> float:
        key = Channel(key)
        for c, r in self._items:
            if c == key:
                return r
        raise KeyError(key)

    def __iter__(self) -> Iterator[Channel]:
        return (c for c, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __reduce__(self):
        return (RateTable, (dict(self._items),))

    def __repr__(self) -> str:
        return "RateTable({" + ", ".join(f"{c.value!r}: {r}" for c, r in self._items) + "})"


def validate_rates(rates: Mapping) -> dict[Channel, float]:
    """Returns a complete rate table (defaults filled in) after checking every entry.

    Raises:
        ValueError: naming the channel and the reason, for an unknown channel or a rate outside
            [0, 1].
    """
    out = dict(DEFAULT_RATES)
    for key, value in rates.items():
        try:
            channel = Channel(key)
        except ValueError:
            known = ", ".join(c.value for c in RATED)
            raise ValueError(f"unknown error channel {key!r}; known: {known}") from None
        if channel not in RATED:
            raise ValueError(f"channel {channel.value!r} has no rate (it is not sampled)")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"rate for {channel.value!r} is not a number: {value!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"rate for {channel.value!r} must be in [0, 1], got {value}")
        out[channel] = value
    return out
