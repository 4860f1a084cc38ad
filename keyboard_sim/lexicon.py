"""Real misspellings and real-word confusions that the cognitive error channels draw from.

- codespell's dictionary (PyPI `codespell`, file codespell_lib/data/dictionary.txt): about
  65,000 misspellings seen in real source code and text, each with its correction. Read as
  correction -> [misspellings], keeping entries with a single correction.
- The Birkbeck spelling error corpus (Roger Mitton; `$word` lines followed by its attested
  misspellings), when a path to it is given, e.g. ../shared/data/typing/birkbeck_missp.dat.
- A small list of English real-word confusion sets shipped with the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class Lexicon:
    """Lower-case word -> alternatives: attested misspellings and real-word confusions."""

    misspellings: MappingProxyType
    confusions: MappingProxyType
    source: str


def parse_codespell(text: str) -> dict[str, list[str]]:
    """correction -> misspellings from codespell's `wrong->right` lines (single right only)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        wrong, sep, right = line.partition("->")
        if not sep:
            continue
        right = right.strip()
        candidates = [r.strip() for r in right.split(",") if r.strip()]
        if len(candidates) != 1 or right.endswith(","):
            continue  # ambiguous or annotated entries
        wrong, good = wrong.strip().lower(), candidates[0].lower()
        if " " in good or " " in wrong or not wrong or wrong == good:
            continue
        out.setdefault(good, []).append(wrong)
    return out


def parse_birkbeck(text: str) -> dict[str, list[str]]:
    """correction -> misspellings from the Birkbeck `$word` format."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("$"):
            current = line[1:].replace("_", " ").lower()
            continue
        if current and " " not in current and "_" not in line and line.lower() != current:
            out.setdefault(current, []).append(line.lower())
    return out


def parse_confusions(text: str) -> dict[str, list[str]]:
    """word -> the other words of its confusion set."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.lower().split()
        for w in words:
            others = [o for o in words if o != w]
            out.setdefault(w, [])
            out[w] += [o for o in others if o not in out[w]]
    return out


@lru_cache(maxsize=8)
def load_lexicon(source: str = "codespell") -> Lexicon:
    """The lexicon from "codespell" (default), "none", or a path to a Birkbeck-format file."""
    confusions = parse_confusions(
        (resources.files("keyboard_sim") / "resources" / "real_word_confusions.txt").read_text(
            encoding="utf-8")
    )
    if source == "none":
        miss: dict[str, list[str]] = {}
    elif source == "codespell":
        try:
            path = resources.files("codespell_lib") / "data" / "dictionary.txt"
            miss = parse_codespell(path.read_text(encoding="utf-8"))
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise ValueError(
                "the codespell misspelling list needs the `codespell` package "
                f"(pip install codespell): {e}"
            ) from None
    else:
        path = Path(source)
        if not path.exists():
            raise ValueError(f"misspelling list {source!r}: no such file (or use 'codespell')")
        miss = parse_birkbeck(path.read_text(encoding="utf-8", errors="replace"))
    frozen = {k: tuple(sorted(set(v))) for k, v in miss.items()}
    return Lexicon(MappingProxyType(frozen),
                   MappingProxyType({k: tuple(v) for k, v in confusions.items()}), source)


def match_case(template: str, word: str) -> str:
    """`word` in the capitalisation pattern of `template` (lower, Title or UPPER)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word
