"""Torch views of the data: next-word sequences, noisy/clean subword pairs, per client and pooled.

The only module of `data` that imports torch. Datasets are map-style and hold ids or texts in
memory; loaders shuffle with their own seeded `torch.Generator`, never torch's global one, so a
loader's order is a function of its seed (derive it with `data.record.derive_seed`, e.g. from
(run seed, "loader", client id, round)).

Next-word sequences follow the Stack Overflow benchmark's preprocessing (TFF
`tff.simulation.baselines.stackoverflow` `build_to_ids_fn` and `batch_and_split`; Reddi et al.
2021 use length 20): a message's first `seq_len` word ids, EOS after them only when the message
had fewer than `seq_len` words (a cut message has no end), BOS before, padded with PAD to
`seq_len + 1`; then `x` is all but the last id and `y` all but the first. Words past `seq_len`
are dropped, as there; `NextWordDataset.n_truncated` counts the messages that lost some.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from data.tokenize import tokenize
from data.vocab import BOS, EOS, PAD, WordVocab

# The Stack Overflow benchmark's sequence length (TFF baselines DEFAULT_SEQUENCE_LENGTH;
# Reddi et al. 2021, appendix C).
DEFAULT_SEQ_LEN = 20
# Longest proofreader sequence in subword pieces. Measured on the first 5,000 chit-chat messages
# typed through keyboard_sim's "raw" profile, with a 2,000-piece model trained on the first
# 20,000: noisy texts have median 14 pieces, 99.9th percentile 85; 128 cuts none of them.
DEFAULT_MAX_LEN = 128


def _ids(seq: object, where: str) -> list[int]:
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
        if not isinstance(seq, torch.Tensor):
            raise TypeError(f"{where}: expected a sequence of ids, got {type(seq).__name__}")
    try:
        return [operator.index(i) for i in seq]
    except TypeError:
        raise TypeError(f"{where}: ids must be integers") from None


class NextWordDataset(Dataset):
    """Next-word examples, one per message: (x, y), each int64 of shape (seq_len,).

    See the module docstring for the layout. Example with seq_len=5 and word ids [7, 8, 9]:
    x = [BOS, 7, 8, 9, EOS], y = [7, 8, 9, EOS, PAD]; loss on y should skip PAD.

    Args:
        messages_ids: Each message's word ids (no BOS/EOS), e.g. from `WordVocab.encode`.
        seq_len: Words kept per message and the length of x and y.
        vocab_size: If given, every id must be below it.

    Raises:
        ValueError: A message holds a negative id, PAD, BOS or EOS, or an id >= vocab_size (the
            message's index is named).
    """

    def __init__(
        self,
        messages_ids: Sequence[Sequence[int]],
        seq_len: int = DEFAULT_SEQ_LEN,
        vocab_size: int | None = None,
    ):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an int >= 1, got {seq_len!r}")
        reserved = {PAD, BOS, EOS}
        flat: list[int] = []
        truncated = 0
        n = 0
        for n, msg in enumerate(messages_ids, start=1):
            ids = _ids(msg, f"message {n - 1}")
            if ids:
                if min(ids) < 0 or reserved.intersection(ids):
                    raise ValueError(
                        f"message {n - 1}: ids must be >= 0 and not PAD/BOS/EOS ({PAD}, {BOS}, "
                        f"{EOS}), got {ids}"
                    )
                if vocab_size is not None and max(ids) >= vocab_size:
                    raise ValueError(f"message {n - 1}: id {max(ids)} >= vocab_size {vocab_size}")
            words = ids[:seq_len]
            row = [BOS, *words]
            if len(ids) < seq_len:
                row.append(EOS)
            else:
                truncated += len(ids) > seq_len
            row.extend([PAD] * (seq_len + 1 - len(row)))
            flat.extend(row)
        self.seq_len = seq_len
        self.n_truncated = truncated
        # (messages, seq_len + 1): x and y are views of one row each.
        self.sequences = torch.tensor(flat, dtype=torch.int64).view(n, seq_len + 1)

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        vocab: WordVocab,
        seq_len: int = DEFAULT_SEQ_LEN,
        tokenizer: Callable[[str], list[str]] = tokenize,
    ) -> NextWordDataset:
        """Examples from message texts: tokenized, then encoded with `vocab` (OOV for others)."""
        ids = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i}: expected a str, got {type(text).__name__}")
            ids.append(vocab.encode(tokenizer(text)))
        return cls(ids, seq_len=seq_len, vocab_size=len(vocab))

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.sequences[i]
        return row[:-1], row[1:]


class TextTokenizer(Protocol):
    """What `PairDataset` needs of a tokenizer (e.g. `data.subword.SubwordTokenizer`)."""

    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...


def _pair(item: object, where: str) -> tuple[str, str]:
    # A keyboard_sim Pair (a NamedTuple with .noisy and .clean) or a (noisy, clean) tuple.
    if hasattr(item, "noisy") and hasattr(item, "clean"):
        noisy, clean = item.noisy, item.clean
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        noisy, clean = item
    else:
        raise TypeError(f"{where}: expected a (noisy, clean) pair, got {type(item).__name__}")
    if not isinstance(noisy, str) or not isinstance(clean, str):
        raise TypeError(f"{where}: noisy and clean must be str")
    return noisy, clean


class PairDataset(Dataset):
    """Proofreader examples: (src, tgt) int64 id tensors for a noisy text and its clean text.

    src is the noisy text's ids, cut to `max_len`. tgt is BOS + the clean text's ids + EOS, cut
    to `max_len`: a cut target has no EOS, so the model is not taught to stop mid-text (as the
    next-word sequences). Texts are encoded when an item is read.

    Args:
        noisy_texts: What was typed.
        clean_texts: What was meant, one per noisy text.
        tokenizer: Has `encode(text) -> list[int]` and `bos_id`, `eos_id`.
        max_len: Longest src and tgt, in ids (tgt counts BOS and EOS); at least 2.

    Raises:
        ValueError: The lists differ in length or `max_len` < 2.
        TypeError: A text is not a str (names its index).
    """

    def __init__(
        self,
        noisy_texts: Sequence[str],
        clean_texts: Sequence[str],
        tokenizer: TextTokenizer,
        max_len: int = DEFAULT_MAX_LEN,
    ):
        if len(noisy_texts) != len(clean_texts):
            raise ValueError(f"{len(noisy_texts)} noisy texts but {len(clean_texts)} clean texts")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
        for name, texts in (("noisy", noisy_texts), ("clean", clean_texts)):
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise TypeError(f"{name} text {i}: expected a str, got {type(t).__name__}")
        self.noisy_texts = noisy_texts
        self.clean_texts = clean_texts
        self.tokenizer = tokenizer
        self.max_len = max_len

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[object], tokenizer: TextTokenizer, max_len: int = DEFAULT_MAX_LEN
    ) -> PairDataset:
        """From keyboard_sim `Pair`s or (noisy, clean) tuples."""
        both = [_pair(p, f"pair {i}") for i, p in enumerate(pairs)]
        return cls([n for n, _ in both], [c for _, c in both], tokenizer, max_len)

    def __len__(self) -> int:
        return len(self.noisy_texts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        src = tok.encode(self.noisy_texts[i])[: self.max_len]
        tgt = [tok.bos_id, *tok.encode(self.clean_texts[i]), tok.eos_id][: self.max_len]
        return torch.tensor(src, dtype=torch.int64), torch.tensor(tgt, dtype=torch.int64)


class PairBatch(NamedTuple):
    """A padded batch of (src, tgt) examples; masks are True on real ids, False on padding."""

    src: torch.Tensor  # (batch, S) int64, S = longest src in the batch (at least 1)
    src_lengths: torch.Tensor  # (batch,) int64
    src_mask: torch.Tensor  # (batch, S) bool
    tgt: torch.Tensor  # (batch, T) int64, T = longest tgt in the batch (at least 1)
    tgt_lengths: torch.Tensor  # (batch,) int64
    tgt_mask: torch.Tensor  # (batch, T) bool


def _pad(seqs: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    width = max(int(lengths.max()) if len(seqs) else 0, 1)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def collate_pairs(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int = PAD
) -> PairBatch:
    """Pads a list of `PairDataset` items to the batch's longest src and tgt with `pad_id`.

    An all-empty side still gets one (masked) column, so no tensor has a zero-width dimension.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    src, src_len = _pad([s for s, _ in batch], pad_id)
    tgt, tgt_len = _pad([t for _, t in batch], pad_id)
    width_s = torch.arange(src.shape[1])
    width_t = torch.arange(tgt.shape[1])
    return PairBatch(
        src=src,
        src_lengths=src_len,
        src_mask=width_s[None, :] < src_len[:, None],
        tgt=tgt,
        tgt_lengths=tgt_len,
        tgt_mask=width_t[None, :] < tgt_len[:, None],
    )


def next_word_datasets(
    texts_by_client: Mapping[str, Sequence[str]],
    vocab: WordVocab,
    seq_len: int = DEFAULT_SEQ_LEN,
    tokenizer: Callable[[str], list[str]] = tokenize,
) -> dict[str, NextWordDataset]:
    """A `NextWordDataset` per client, in client id order."""
    out = {}
    for client in sorted(texts_by_client):
        try:
            out[client] = NextWordDataset.from_texts(
                texts_by_client[client], vocab, seq_len, tokenizer
            )
        except (TypeError, ValueError) as e:
            raise type(e)(f"client {client!r}: {e}") from e
    return out


def pair_datasets(
    pairs_by_client: Mapping[str, Sequence[object]],
    tokenizer: TextTokenizer,
    max_len: int = DEFAULT_MAX_LEN,
) -> dict[str, PairDataset]:
    """A `PairDataset` per client from its keyboard_sim `Pair`s or (noisy, clean) tuples."""
    out = {}
    for client in sorted(pairs_by_client):
        try:
            out[client] = PairDataset.from_pairs(pairs_by_client[client], tokenizer, max_len)
        except (TypeError, ValueError) as e:
            raise type(e)(f"client {client!r}: {e}") from e
    return out


def pooled(datasets: Mapping[str, Dataset]) -> ConcatDataset:
    """All clients' examples as one dataset, clients in id order (for centralised training)."""
    if not datasets:
        raise ValueError("no client datasets to pool")
    return ConcatDataset([datasets[c] for c in sorted(datasets)])


def make_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    collate_fn: Callable | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader whose shuffling (and worker seeds) come from a generator seeded with `seed`.

    The order of each epoch is a function of `seed` alone (not of torch's global RNG or of
    `num_workers`); successive epochs of one loader differ, and are the same for the same seed.
    Use `collate_fn=collate_pairs` for a `PairDataset`.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_fn,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=gen,
    )
