"""The public, seeded simulation API: clean texts in, (noisy, clean) pairs with provenance out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from keyboard_sim.layout import Layout, load_layout
from keyboard_sim.pair import Pair
from keyboard_sim.profile import TypistProfile, load_profile

DEFAULT_CHUNK = 1024  # records per vectorised batch: fastest on the 2-core machine (cache)


def simulate(
    texts: Iterable[str],
    profile: TypistProfile | str = "raw",
    layout: Layout | str = "en-US",
    seed: int = 0,
    *,
    ids: Iterable[str] | None = None,
    touches: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[Pair]:
    """Simulates typing each text; returns one `Pair` per text, in order.

    Args:
        texts: Clean texts (one message each).
        profile: A `TypistProfile`, a preset name ("raw", "committed", a posture) or a JSON path.
        layout: A `Layout` or a shipped layout name (see `available_layouts()`).
        seed: Run seed. Each record's randomness is a pure function of (seed, record id), so the
            output does not depend on chunking, worker count or order.
        ids: Record ids (default: the 0-based position of each text, as a string).
        touches: Also return every keystroke's touch point.
        chunk_size: Texts processed per vectorised batch (affects speed only, never output).
    """
    return list(simulate_iter(texts, profile, layout, seed, ids=ids, touches=touches,
                              chunk_size=chunk_size))


def simulate_iter(
    texts: Iterable[str],
    profile: TypistProfile | str = "raw",
    layout: Layout | str = "en-US",
    seed: int = 0,
    *,
    ids: Iterable[str] | None = None,
    touches: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[Pair]:
    """Streaming form of `simulate`: bounded memory for any number of texts."""
    from keyboard_sim.engine import Engine

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    engine = Engine(load_layout(layout), load_profile(profile))
    id_iter = iter(ids) if ids is not None else None
    batch_texts: list[str] = []
    batch_ids: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"record {i}: text must be str, got {type(text).__name__}")
        if id_iter is not None:
            try:
                rid = str(next(id_iter))
            except StopIteration:
                raise ValueError(f"record {i}: fewer ids than texts") from None
        else:
            rid = str(i)
        batch_texts.append(text)
        batch_ids.append(rid)
        if len(batch_texts) >= chunk_size:
            yield from engine.run(batch_texts, batch_ids, seed, touches=touches)
            batch_texts, batch_ids = [], []
    if batch_texts:
        yield from engine.run(batch_texts, batch_ids, seed, touches=touches)


def simulate_batch(
    texts: Sequence[str],
    ids: Sequence[str],
    profile: TypistProfile,
    layout: Layout,
    seed: int,
    *,
    touches: bool = False,
) -> list[Pair]:
    """One vectorised batch with explicit ids (what workers call)."""
    from keyboard_sim.engine import Engine

    return Engine(layout, profile).run(list(texts), list(ids), seed, touches=touches)
