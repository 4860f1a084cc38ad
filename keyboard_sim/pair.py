"""A simulated (noisy, clean) pair with its provenance: every edit and, if asked, every tap."""

from __future__ import annotations

from typing import NamedTuple

from keyboard_sim.channels import Channel


class Edit(NamedTuple):
    """One edit: `clean[clean_start:clean_end]` became `noisy[noisy_start:noisy_end]`.

    Spans are in Python string indices (code points). `PASSTHROUGH` edits mark characters the
    layout cannot type; their text is unchanged.
    """

    type: Channel
    clean_start: int
    clean_end: int
    noisy_start: int
    noisy_end: int


class Touch(NamedTuple):
    """One keystroke: where it landed (mm, from the keyboard's top-left) and the key it hit."""

    x: float
    y: float
    key: str


class Pair(NamedTuple):
    """A clean text, what the typist produced, and how one became the other (immutable)."""

    id: str
    clean: str
    noisy: str
    edits: tuple[Edit, ...]
    touches: tuple[Touch, ...] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict: edits as {type, clean: [s, e], noisy: [s, e]}."""
        d = {
            "id": self.id,
            "clean": self.clean,
            "noisy": self.noisy,
            "edits": [
                {"type": e.type.value, "clean": [e.clean_start, e.clean_end],
                 "noisy": [e.noisy_start, e.noisy_end]}
                for e in self.edits
            ],
        }
        if self.touches is not None:
            d["touches"] = [[round(t.x, 2), round(t.y, 2), t.key] for t in self.touches]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Pair:
        """Inverse of `to_dict` (touch coordinates come back rounded to 0.01 mm)."""
        edits = tuple(
            Edit(Channel(e["type"]), e["clean"][0], e["clean"][1], e["noisy"][0], e["noisy"][1])
            for e in d["edits"]
        )
        touches = d.get("touches")
        if touches is not None:
            touches = tuple(Touch(float(x), float(y), str(k)) for x, y, k in touches)
        return cls(str(d["id"]), d["clean"], d["noisy"], edits, touches)

    def is_consistent(self) -> bool:
        """Whether applying the edits to `clean` gives `noisy` exactly (spans ordered, disjoint)."""
        out, c_pos, n_pos = [], 0, 0
        for e in self.edits:
            if e.clean_start < c_pos or e.noisy_start - n_pos != e.clean_start - c_pos:
                return False
            out.append(self.clean[c_pos : e.clean_start])
            out.append(self.noisy[e.noisy_start : e.noisy_end])
            c_pos, n_pos = e.clean_end, e.noisy_end
        out.append(self.clean[c_pos:])
        return "".join(out) == self.noisy and len(self.clean) - c_pos == len(self.noisy) - n_pos
