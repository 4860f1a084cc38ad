"""The unit the data stage passes around: one message of one user, and seeds derived from names.

Every later step (cleaning, partitioning, splitting, simulating) is a function of a `Message`
and of seeds derived here from the run seed and stable names (a user id, a round number), so
that its result does not depend on the order records arrive in, how many processes handle them,
or where an interrupted build resumed.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple


class Message(NamedTuple):
    """One message of a corpus.

    Attributes:
        id: Stable, unique record id (from the corpus, or "<line - 1>" when it has none).
        user: The user (natural client) who wrote it; "" when the corpus has no user field.
        text: The message text as read (cleaning happens later and is recorded apart).
        time: Seconds since the Unix epoch when known, else None (orders a user's messages).
        line: 1-based line or row number in the source (0 for sources without lines).
        label: A label or topic for label-skewed partitions (e.g. the chat prompt), or "".
    """

    id: str
    user: str
    text: str
    time: float | None = None
    line: int = 0
    label: str = ""


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 63-bit seed from a run seed and names (blake2b): e.g. (seed, "client", user, round).

    Non-negative and below 2**63, so it can seed numpy, torch and keyboard_sim alike.
    """
    text = "\x1f".join([str(int(seed)), *map(str, parts)])
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


def unit_float(seed: int, *parts: str | int) -> float:
    """A uniform number in [0, 1) that is a pure function of (seed, parts)."""
    return derive_seed(seed, *parts) / float(1 << 63)
