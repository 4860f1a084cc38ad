"""Per-code-point tables (letter, lower case, accent base) for vectorised character classes.

Built once per process for the Basic Multilingual Plane; code points above it (emoji, rare
scripts) are treated as non-letters with no case or accent mapping.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import numpy as np

BMP = 0x10000
APOSTROPHES = "'\u2019\u02bc"
PUNCTUATION = ".,!?;:"


@lru_cache(maxsize=1)
def tables() -> dict[str, np.ndarray]:
    """is_letter, lower (code point map), accent_base (code point map), is_upper."""
    is_letter = np.zeros(BMP, dtype=bool)
    lower = np.arange(BMP, dtype=np.uint32)
    base = np.arange(BMP, dtype=np.uint32)
    for cp in range(BMP):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        if not ch.isalpha():
            continue
        is_letter[cp] = True
        lo = ch.lower()
        if len(lo) == 1 and lo != ch:
            lower[cp] = ord(lo)
        if cp >= 0xC0:
            d = unicodedata.normalize("NFD", ch)
            if len(d) > 1 and d[0].isalpha() and all(unicodedata.combining(c) for c in d[1:]):
                base[cp] = ord(d[0])
    return {"is_letter": is_letter, "lower": lower, "accent_base": base,
            "is_upper": lower != np.arange(BMP, dtype=np.uint32)}


def lookup(table: np.ndarray, cps: np.ndarray, default) -> np.ndarray:
    """table[cps] with `default` (scalar, or the code point itself if None) above the BMP."""
    inside = cps < BMP
    safe = np.where(inside, cps, 0)
    out = table[safe]
    if default is None:
        return np.where(inside, out, cps).astype(out.dtype)
    return np.where(inside, out, default)
