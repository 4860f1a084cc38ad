"""Datasets on disk: Parquet shards written atomically, and a manifest that makes a build resumable.

A built dataset is a folder:

    manifest.json          what was built from what: config, seeds, counts, kbsim version, and
                           for every shard its row count and sha256
    messages/part-NNNNN.parquet   the clean messages with their client, split and period
    pairs/part-NNNNN.parquet      the (noisy, clean) pairs with each edit's provenance

Shard k of every table holds the records that came from the k-th block of input records, in
input order, so a shard can be rebuilt alone, and a build that stopped part-way resumes at the
first shard the manifest does not list with a matching checksum. Each shard and the manifest are
written to a temporary file and renamed into place, so a crash never leaves a half-written file
under a final name. The shards are plain Parquet: `pandas.read_parquet(folder / "pairs")` and
`datasets.load_dataset("parquet", data_files=...)` read them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from keyboard_sim.io import AtomicFile, atomic_write_text

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class StoreError(ValueError):
    """A dataset folder that cannot be used: the message names the file and the reason."""


def _pa():
    try:
        import pyarrow as pa
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "datasets on disk need pyarrow: pip install 'kbsim[data]'") from None
    return pa


def messages_schema() -> Any:
    """Schema of a messages shard: one clean message with its client and its splits.

    `split` is the user split ("train", "val", "test": held-out users); `period` the split
    within the user by time ("early", or "late" for the user's latest messages).
    """
    pa = _pa()
    return pa.schema([
        ("id", pa.string()),
        ("client", pa.string()),
        ("text", pa.string()),
        ("time", pa.float64()),
        ("line", pa.int64()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("period", pa.string()),
    ])


def pairs_schema() -> Any:
    """Schema of a pairs shard: the keys of `messages_schema` and the simulated pair."""
    pa = _pa()
    edit = pa.struct([
        ("type", pa.string()),
        ("clean_start", pa.int32()),
        ("clean_end", pa.int32()),
        ("noisy_start", pa.int32()),
        ("noisy_end", pa.int32()),
    ])
    return pa.schema([
        ("id", pa.string()),
        ("client", pa.string()),
        ("split", pa.string()),
        ("period", pa.string()),
        ("clean", pa.string()),
        ("noisy", pa.string()),
        ("edits", pa.list_(edit)),
    ])


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def shard_name(table: str, index: int) -> str:
    """Relative path of shard `index` of `table` ("messages/part-00003.parquet")."""
    return f"{table}/part-{index:05d}.parquet"


def write_shard(root: str | os.PathLike, table: str, index: int, rows: dict[str, list],
                schema: Any) -> dict:
    """Writes one shard atomically; returns its manifest entry {path, rows, sha256}.

    `rows` maps each column of `schema` to a list of values. The file's bytes depend only on
    the rows (fixed compression, one row group), so a rebuilt shard has the same checksum.
    """
    pa = _pa()
    import pyarrow.parquet as pq

    missing = [f.name for f in schema if f.name not in rows]
    if missing:
        raise ValueError(f"shard {table}/{index}: missing columns {missing}")
    table_ = pa.Table.from_pydict({f.name: rows[f.name] for f in schema}, schema=schema)
    rel = shard_name(table, index)
    path = Path(root) / rel
    with AtomicFile(path, "wb") as af:
        pq.write_table(table_, af.file, compression="zstd", row_group_size=max(1, len(table_)))
    return {"path": rel, "rows": table_.num_rows, "sha256": sha256_file(path)}


class Manifest:
    """The manifest of a dataset folder: config, counts, and the shards written so far.

    Plain JSON (never pickle). Saved atomically after every shard, so it always describes files
    that exist in full.
    """

    def __init__(self, root: str | os.PathLike, data: dict | None = None) -> None:
        self.root = Path(root)
        self.data = data if data is not None else {"format_version": FORMAT_VERSION,
                                                    "tables": {}}

    @classmethod
    def load(cls, root: str | os.PathLike) -> Manifest | None:
        """The manifest in `root`, or None when there is none yet."""
        path = Path(root) / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{path}: not a readable manifest ({e})") from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{path}: unknown manifest format "
                             f"(expected format_version {FORMAT_VERSION})")
        return cls(root, data)

    def save(self) -> None:
        """Writes manifest.json atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / MANIFEST,
                          json.dumps(self.data, indent=1, sort_keys=True, ensure_ascii=False)
                          + "\n")

    def shards(self, table: str) -> dict[int, dict]:
        """Shard index -> entry for `table`."""
        entries = self.data["tables"].get(table, {}).get("shards", {})
        return {int(k): v for k, v in entries.items()}

    def add_shard(self, table: str, index: int, entry: dict) -> None:
        """Records a written shard and saves the manifest."""
        t = self.data["tables"].setdefault(table, {"shards": {}, "complete": False})
        t["shards"][str(index)] = entry
        self.save()

    def complete(self, table: str, n_shards: int) -> None:
        """Marks `table` as complete with exactly `n_shards` shards (0..n-1) and saves."""
        shards = self.shards(table)
        if sorted(shards) != list(range(n_shards)):
            raise StoreError(f"{self.root}: table {table} has shards {sorted(shards)}, "
                             f"expected 0..{n_shards - 1}")
        t = self.data["tables"].setdefault(table, {"shards": {}, "complete": False})
        t["complete"] = True
        t["rows"] = sum(e["rows"] for e in shards.values())
        self.save()

    def is_complete(self, table: str) -> bool:
        return bool(self.data["tables"].get(table, {}).get("complete"))

    def valid_shard(self, table: str, index: int) -> bool:
        """Whether shard `index` is listed and its file is in place with the listed checksum."""
        entry = self.shards(table).get(index)
        if entry is None:
            return False
        path = self.root / entry["path"]
        return path.exists() and sha256_file(path) == entry["sha256"]

    def shard_paths(self, table: str) -> list[Path]:
        """Paths of a complete table's shards, in order."""
        if not self.is_complete(table):
            raise StoreError(f"{self.root}: table {table} is not complete (build it first)")
        shards = self.shards(table)
        return [self.root / shards[i]["path"] for i in sorted(shards)]


def iter_rows(root: str | os.PathLike, table: str, columns: Sequence[str] | None = None,
              batch_size: int = 8192) -> Iterator[dict]:
    """Streams the rows of a complete table as dicts, shard by shard, in input order."""
    import pyarrow.parquet as pq

    manifest = Manifest.load(root)
    if manifest is None:
        raise StoreError(f"{root}: no {MANIFEST} (not a kbsim dataset folder)")
    for path in manifest.shard_paths(table):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()
