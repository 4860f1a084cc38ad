"""The word vocabulary for next-word prediction, as in the Stack Overflow benchmark.

The federated Stack Overflow next-word task (Reddi et al. 2021, "Adaptive Federated
Optimization", and its TFF and pfl ports) keeps the 10,000 most frequent words and maps every
other word to one out-of-vocabulary id, with padding, beginning and end of sentence as special
ids. `WordVocab` does the same for any corpus: ids 0-3 are PAD, BOS, EOS and OOV (the same ids
as the subword models of `data.subword`), then words by descending count, ties broken by the
word itself, so a vocabulary is a pure function of the token counts.

Vocabularies are saved as JSON (plain data; nothing is unpickled or executed on load) with a
format name, version and the build settings, and loading checks all of it.
"""

from __future__ import annotations

import json
import operator
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from data.tokenize import tokenize

PAD, BOS, EOS, OOV = 0, 1, 2, 3
# Their strings in `decode`; they are reserved: a token equal to one of them is never a word.
SPECIALS = ("<pad>", "<bos>", "<eos>", "<oov>")

# The Stack Overflow benchmark's word vocabulary size (TFF `stackoverflow` baselines and
# Reddi et al. 2021, section 5 / appendix C: "the 10,000 most frequently used words").
DEFAULT_SIZE = 10_000

FORMAT = "kbsim-word-vocab"
VERSION = 1


class VocabFileError(ValueError):
    """A vocabulary file that cannot be read, or does not hold what it should."""


class Coverage(NamedTuple):
    """How many tokens a vocabulary knows: a mergeable count (`a + b` adds the counts)."""

    in_vocab: int
    total: int

    def __add__(self, other: Coverage) -> Coverage:  # type: ignore[override]
        return Coverage(self.in_vocab + other.in_vocab, self.total + other.total)

    @property
    def rate(self) -> float:
        """The share of tokens in the vocabulary (0.0 when there are none)."""
        return self.in_vocab / self.total if self.total else 0.0


def _check_tokens(tokens: object, where: str) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"{where}: expected a list of token strings, got {type(tokens).__name__}")
    for j, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"{where}, token {j}: tokens must be non-empty str, got {tok!r}")
    return list(tokens)


@dataclass(frozen=True)
class WordVocab:
    """A frozen word vocabulary: specials PAD=0, BOS=1, EOS=2, OOV=3, then `words`.

    Build it with `WordVocab.build` or `WordVocab.load`; the constructor checks that its fields
    are what `build` would give for some counts (so a file cannot hold a vocabulary that no
    corpus gives).

    Attributes:
        words: The words, id 4 upward: descending count, ties in string order.
        counts: Each word's count in the corpus it was built from.
        size: The most words kept (the benchmark's 10,000); `len` adds the 4 specials.
        lowercase: Whether tokens are lowercased before counting and lookup.
        min_count: Words seen fewer times were left out.
    """

    words: tuple[str, ...]
    counts: tuple[int, ...]
    size: int = DEFAULT_SIZE
    lowercase: bool = True
    min_count: int = 1
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    pad_id = PAD
    bos_id = BOS
    eos_id = EOS
    oov_id = OOV

    def __post_init__(self) -> None:
        words, counts = tuple(self.words), tuple(self.counts)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "counts", counts)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be an int >= 0, got {self.size!r}")
        if not isinstance(self.lowercase, bool):
            raise ValueError(f"lowercase must be a bool, got {self.lowercase!r}")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int):
            raise ValueError(f"min_count must be an int >= 1, got {self.min_count!r}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {self.min_count!r}")
        if len(words) != len(counts):
            raise ValueError(f"{len(words)} words but {len(counts)} counts")
        if len(words) > self.size:
            raise ValueError(f"{len(words)} words, more than size={self.size}")
        index: dict[str, int] = {}
        prev: tuple[int, str] | None = None
        for i, (w, c) in enumerate(zip(words, counts, strict=True)):
            if not isinstance(w, str) or not w or w in SPECIALS:
                raise ValueError(f"word {i}: {w!r} is not a usable word")
            if self.lowercase and w.lower() != w:
                raise ValueError(f"word {i}: {w!r} is not lowercase in a lowercase vocabulary")
            if isinstance(c, bool) or not isinstance(c, int) or c < self.min_count:
                raise ValueError(f"word {i} ({w!r}): count {c!r} is not an int >= min_count")
            key = (-c, w)
            if prev is not None and key <= prev:
                raise ValueError(
                    f"word {i} ({w!r}, count {c}): words must go by descending count, then by "
                    f"the word, without repeats"
                )
            prev = key
            index[w] = i + len(SPECIALS)
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        size: int = DEFAULT_SIZE,
        lowercase: bool = True,
        min_count: int = 1,
    ) -> WordVocab:
        """The `size` most frequent words of a corpus given as token lists (e.g. messages).

        Tokens equal to a special's string ("<pad>", ...) are reserved and never become words.

        Raises:
            ValueError: A token is not a non-empty str (names the list and token), or a setting
                is out of range.
        """
        cls(words=(), counts=(), size=size, lowercase=lowercase, min_count=min_count)  # checks
        counter: Counter[str] = Counter()
        for i, tokens in enumerate(token_lists):
            toks = _check_tokens(tokens, f"token list {i}")
            counter.update([t.lower() for t in toks] if lowercase else toks)
        for s in SPECIALS:
            counter.pop(s, None)
        ranked = sorted(
            ((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0])
        )
        kept = ranked[:size]
        return cls(
            words=tuple(w for w, _ in kept),
            counts=tuple(c for _, c in kept),
            size=size,
            lowercase=lowercase,
            min_count=min_count,
        )

    def __len__(self) -> int:
        """The number of ids: the 4 specials and the words."""
        return len(SPECIALS) + len(self.words)

    def _key(self, token: str) -> str:
        return token.lower() if self.lowercase else token

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Word ids of tokens; OOV for a token not in the vocabulary (no BOS/EOS added)."""
        toks = _check_tokens(tokens, "encode")
        get = self._index.get
        return [get(self._key(t), OOV) for t in toks]

    def encode_message(
        self, text: str, tokenizer: Callable[[str], list[str]] = tokenize
    ) -> list[int]:
        """Word ids of a message, tokenized with `tokenizer` (default `data.tokenize.tokenize`)."""
        return self.encode(tokenizer(text))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The word (or special's string, e.g. "<oov>") of each id.

        Raises:
            ValueError: An id is not an int in [0, len(self)).
        """
        n = len(self)
        out: list[str] = []
        for j, x in enumerate(ids):
            try:
                i = -1 if isinstance(x, bool) else operator.index(x)
            except TypeError:
                i = -1
            if not 0 <= i < n:
                raise ValueError(f"id {j}: {x!r} is not an id of this vocabulary (0..{n - 1})")
            out.append(SPECIALS[i] if i < len(SPECIALS) else self.words[i - len(SPECIALS)])
        return out

    def coverage(self, token_lists: Iterable[Sequence[str]]) -> Coverage:
        """How many of the tokens are words of the vocabulary, as a mergeable (in_vocab, total)."""
        known = total = 0
        index = self._index
        for i, tokens in enumerate(token_lists):
            toks = _check_tokens(tokens, f"token list {i}")
            total += len(toks)
            known += sum(self._key(t) in index for t in toks)
        return Coverage(known, total)

    def to_json(self) -> dict:
        """The vocabulary as plain JSON data (what `save` writes)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": {"size": self.size, "lowercase": self.lowercase, "min_count": self.min_count},
            "specials": list(SPECIALS),
            "words": list(self.words),
            "counts": list(self.counts),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the vocabulary as JSON, atomically (a temporary file, then a rename)."""
        path = Path(path)
        text = json.dumps(self.to_json(), ensure_ascii=True, indent=None, separators=(",", ":"))
        _write_atomic(path, (text + "\n").encode("ascii"))
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, size: int | None = None, lowercase: bool | None = None
    ) -> WordVocab:
        """Reads a vocabulary written by `save`, checking it whole.

        Args:
            path: The JSON file.
            size: If given, the file must have been built with this size.
            lowercase: If given, the file must have been built with this setting.

        Raises:
            VocabFileError: (a ValueError) the file is missing, not JSON, of another format or
                version, inconsistent, or built with other settings than asked; the message
                names the file and the reason.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise VocabFileError(f"{path}: cannot read the vocabulary file ({e})") from e
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VocabFileError(f"{path}: not a JSON vocabulary file ({e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise VocabFileError(f"{path}: not a {FORMAT} file (format {got!r})")
        if data.get("version") != VERSION:
            raise VocabFileError(
                f"{path}: format version {data.get('version')!r}, this code reads {VERSION}"
            )
        if data.get("specials") != list(SPECIALS):
            raise VocabFileError(
                f"{path}: specials {data.get('specials')!r}, expected {list(SPECIALS)!r}"
            )
        config = data.get("config")
        words, counts = data.get("words"), data.get("counts")
        if not isinstance(config, dict) or set(config) != {"size", "lowercase", "min_count"}:
            raise VocabFileError(f"{path}: config must hold size, lowercase, min_count: {config!r}")
        if not isinstance(words, list) or not isinstance(counts, list):
            raise VocabFileError(f"{path}: words and counts must be lists")
        try:
            vocab = cls(words=tuple(words), counts=tuple(counts), **config)
        except ValueError as e:
            raise VocabFileError(f"{path}: inconsistent vocabulary: {e}") from e
        if size is not None and vocab.size != size:
            raise VocabFileError(f"{path}: built with size={vocab.size}, expected size={size}")
        if lowercase is not None and vocab.lowercase != lowercase:
            raise VocabFileError(
                f"{path}: built with lowercase={vocab.lowercase}, expected lowercase={lowercase}"
            )
        return vocab


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename, so a
    reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a vocabulary is an ordinary data file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
