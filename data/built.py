"""A built dataset read back: what training and evaluation take from `kbsim data build`.

    ds = BuiltDataset("runs/data")
    texts = ds.client_texts("train", "early")     # client -> clean messages, in time order
    pairs = ds.client_pairs("test")               # client -> materialised (noisy, clean) Pairs
    pool = ds.client_pool("train")                # clients that type their own pairs lazily
    vocab, sp = ds.vocab(), ds.subword()

Everything is checked against the manifest first (every shard in place with its checksum), so
a half-built or altered folder is an error, not a silently smaller dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from data.config import DataConfig
from data.record import Message
from data.store import Manifest, StoreError, iter_rows

SPLITS = ("train", "val", "test")
PERIODS = ("early", "late")


class BuiltDataset:
    """A finished `kbsim data build` folder.

    Args:
        root: The build's output folder.
        verify: Check every shard's checksum on opening (reads every file once).
    """

    def __init__(self, root: str | Path, verify: bool = True) -> None:
        self.root = Path(root)
        manifest = Manifest.load(self.root)
        if manifest is None or "summary" not in manifest.data:
            raise StoreError(f"{self.root}: no finished data build here (run kbsim data build)")
        self.manifest = manifest
        self.config = DataConfig.from_dict(manifest.data["config"])
        tables = ["messages"] + (["pairs"] if self.config.pairs.materialize else [])
        if verify:
            for table in tables:
                for index in manifest.shards(table):
                    if not manifest.valid_shard(table, index):
                        raise StoreError(f"{self.root}: shard {index} of {table} is missing or "
                                         f"altered (rebuild to repair)")

    @property
    def summary(self) -> dict:
        return self.manifest.data["summary"]

    def messages(self, split: str | None = None,
                 period: str | None = None) -> Iterator[Message]:
        """The kept messages (clean side), optionally of one user split and period."""
        _check(split, period)
        for r in iter_rows(self.root, "messages"):
            if (split is None or r["split"] == split) and (period is None
                                                           or r["period"] == period):
                yield Message(r["id"], r["client"], r["text"], r["time"], r["line"], r["label"])

    def client_messages(self, split: str | None = None,
                        period: str | None = None) -> dict[str, list[Message]]:
        """Client id -> its messages in time order (clients in id order)."""
        from data.partition import time_order

        by_client: dict[str, list[Message]] = {}
        for m in self.messages(split, period):
            by_client.setdefault(m.user, []).append(m)
        out = {}
        for client in sorted(by_client):
            ms = by_client[client]
            out[client] = [ms[i] for i in time_order([m.time for m in ms])]
        return out

    def client_texts(self, split: str | None = None,
                     period: str | None = None) -> dict[str, list[str]]:
        """Client id -> its clean texts in time order."""
        return {c: [m.text for m in ms]
                for c, ms in self.client_messages(split, period).items()}

    def pairs(self, split: str | None = None, period: str | None = None):
        """The materialised pairs (round `config.pairs.round`) as keyboard_sim `Pair`s."""
        from keyboard_sim.channels import Channel
        from keyboard_sim.pair import Edit, Pair

        _check(split, period)
        if not self.config.pairs.materialize:
            raise StoreError(f"{self.root}: pairs were not materialised (pairs.materialize: "
                             "false); use client_pool() to build them")
        for r in iter_rows(self.root, "pairs"):
            if (split is None or r["split"] == split) and (period is None
                                                           or r["period"] == period):
                edits = tuple(Edit(Channel(e["type"]), e["clean_start"], e["clean_end"],
                                   e["noisy_start"], e["noisy_end"]) for e in r["edits"])
                yield r["client"], Pair(r["id"], r["clean"], r["noisy"], edits)

    def client_pairs(self, split: str | None = None, period: str | None = None) -> dict:
        """Client id -> its materialised pairs, in input order."""
        out: dict[str, list] = {}
        for client, pair in self.pairs(split, period):
            out.setdefault(client, []).append(pair)
        return {c: out[c] for c in sorted(out)}

    def population(self):
        """The typist population the build drew each client's profile from."""
        from data.population import PopulationConfig, population_around

        preset = self.config.typists.preset
        return PopulationConfig() if preset == "postures" else population_around(preset)

    def client_pool(self, split: str | None = "train", period: str | None = "early"):
        """The clients of a split as a `ClientPool`: each types its own pairs when asked, with
        the same profile and seeds as the materialised pairs (round 0 equals pairs/)."""
        from data.clients import ClientPool

        return ClientPool(self.client_messages(split, period), self.config.seed,
                          self.population(), self.config.typists.layout)

    def next_word_datasets(self, split: str | None = "train", period: str | None = "early",
                           seq_len: int = 20) -> dict:
        """Client id -> torch `NextWordDataset` of its messages (needs the torch extra)."""
        from data.torch_data import next_word_datasets

        return next_word_datasets(self.client_texts(split, period), self.vocab(), seq_len)

    def pair_datasets(self, split: str | None = "train", period: str | None = "early",
                      max_len: int = 128) -> dict:
        """Client id -> torch `PairDataset` of its materialised (noisy, clean) pairs."""
        from data.torch_data import pair_datasets

        return pair_datasets(self.client_pairs(split, period), self.subword(), max_len)

    def vocab(self):
        """The word vocabulary (trained on training users' early messages)."""
        from data.vocab import WordVocab

        return WordVocab.load(self.root / "vocab.json")

    def subword(self):
        """The sentencepiece subword tokenizer."""
        from data.subword import SubwordTokenizer

        if not self.config.tokenizers.subword_vocab_size:
            raise StoreError(f"{self.root}: no subword model (tokenizers.subword_vocab_size: 0)")
        return SubwordTokenizer.load(self.root / "subword")


def _check(split: str | None, period: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if period is not None and period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS} or None, got {period!r}")
