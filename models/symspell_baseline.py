"""A dictionary baseline: SymSpell per-word correction with symspellpy's English dictionary.

Each word token (letters, apostrophes inside) is looked up on its own (`SymSpell.lookup`,
`Verbosity.TOP`, edit distance up to `max_edit`): a word in the dictionary stays, otherwise the
most frequent dictionary word at the smallest distance replaces it, and a word with no
suggestion is kept. The dictionary is `frequency_dictionary_en_82_765.txt`, shipped inside the
symspellpy package (word counts from Google Books Ngrams, per symspellpy's README); it is read
from the installed package, never downloaded.

Per-word lookup rather than `lookup_compound`: the compound lookup rebuilds the whole message
from dictionary words, dropping punctuation, case and anything unknown (emoji, numbers), and
splitting or merging words, which a comparison against the clean messages would count as
errors the corrector made. Per word, everything else passes through, the first letter's case is
kept (lower, Title, or UPPER for an all-caps word), and spacing is rebuilt exactly with
`data.tokenize`. It therefore cannot fix merged or split words.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from importlib import resources

from data.tokenize import detokenize, tokenize_spaced
from keyboard_sim.lexicon import match_case
from keyboard_sim.unicode_tables import APOSTROPHES

DICTIONARY = "frequency_dictionary_en_82_765.txt"


def _is_word(token: str) -> bool:
    if not token[:1].isalpha() or not token[-1:].isalpha():
        return False
    return all(c.isalpha() or c in APOSTROPHES for c in token)


class SymSpellCorrector:
    """SymSpell per-word corrector (see module docstring); the dictionary loads on first use.

    Args:
        max_edit: Largest edit distance of a suggestion (1 or 2; SymSpell's default is 2).
        prefix_length: SymSpell's prefix length (7, its default).
        name: Reported name.
    """

    def __init__(self, max_edit: int = 2, prefix_length: int = 7, name: str = "symspell") -> None:
        if isinstance(max_edit, bool) or not isinstance(max_edit, int) or max_edit < 0:
            raise ValueError(f"max_edit must be an int >= 0, got {max_edit!r}")
        if not isinstance(prefix_length, int) or prefix_length <= max_edit:
            raise ValueError(f"prefix_length must be an int > max_edit, got {prefix_length!r}")
        self.max_edit = max_edit
        self.prefix_length = prefix_length
        self.name = name
        self._cache: dict[str, str] = {}

    @cached_property
    def symspell(self):
        """The loaded `symspellpy.SymSpell` (about 8 s on first use)."""
        from symspellpy import SymSpell

        sym = SymSpell(max_dictionary_edit_distance=self.max_edit,
                       prefix_length=self.prefix_length)
        source = resources.files("symspellpy") / DICTIONARY
        with resources.as_file(source) as path:
            if not sym.load_dictionary(path, term_index=0, count_index=1, encoding="utf-8"):
                raise ValueError(f"{path}: cannot load the symspellpy dictionary")
        return sym

    def correct_word(self, word: str) -> str:
        """The correction of one word token (unchanged when known or when nothing is close)."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        from symspellpy import Verbosity

        low = word.lower().replace("\u2019", "'").replace("\u02bc", "'")
        found = self.symspell.lookup(low, Verbosity.TOP, max_edit_distance=self.max_edit)
        out = word if not found or found[0].distance == 0 else match_case(word, found[0].term)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[word] = out
        return out

    def correct_message(self, text: str) -> str:
        """One message with each word token corrected; other tokens and spacing kept."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        spaced = tokenize_spaced(text)
        tokens = [self.correct_word(t) if _is_word(t) else t for t, _ in spaced]
        if tokens == [t for t, _ in spaced]:
            return text
        return detokenize(tokens, [sp for _, sp in spaced])

    def correct(self, texts: Sequence[str]) -> list[str]:
        """Corrects a batch of messages (the common corrector interface).

        Raises:
            TypeError: A text is not a str (its index is named).
        """
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i}: expected a str, got {type(text).__name__}")
            out.append(self.correct_message(text))
        return out
