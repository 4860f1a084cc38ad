"""Headline statistics of simulated pairs, as a mergeable accumulator."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from keyboard_sim.channels import Channel
from keyboard_sim.pair import Pair


@dataclass
class PairStats:
    """Headline counts over pairs; mergeable (`+`), so chunks and workers add up exactly.

    `distance` is the sum, over each pair's error edits, of the Levenshtein distance between
    the edit's clean and noisy spans: the pair's character edit distance as the simulator made
    it (an upper bound of the shortest one, and equal to it unless two edits could cancel).
    Passthrough edits are not errors and are counted apart.
    """

    records: int = 0
    changed: int = 0
    clean_chars: int = 0
    distance: int = 0
    edits: Counter = field(default_factory=Counter)
    passthrough: int = 0

    @classmethod
    def of(cls, pairs: list[Pair]) -> PairStats:
        s = cls()
        for p in pairs:
            s.records += 1
            s.clean_chars += len(p.clean)
            s.changed += p.clean != p.noisy
            for e in p.edits:
                if e.type == Channel.PASSTHROUGH:
                    s.passthrough += 1
                    continue
                s.edits[e.type.value] += 1
                s.distance += _levenshtein(p.clean[e.clean_start:e.clean_end],
                                           p.noisy[e.noisy_start:e.noisy_end])
        return s

    def __add__(self, other: PairStats) -> PairStats:
        return PairStats(self.records + other.records, self.changed + other.changed,
                         self.clean_chars + other.clean_chars, self.distance + other.distance,
                         self.edits + other.edits, self.passthrough + other.passthrough)

    @property
    def cer(self) -> float:
        """Character error rate: edit distance per clean character."""
        return self.distance / self.clean_chars if self.clean_chars else 0.0


def _levenshtein(a: str, b: str) -> int:
    if not a or not b:
        return len(a) + len(b)
    if len(a) == 1 and len(b) == 1:
        return int(a != b)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
