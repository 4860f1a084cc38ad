"""data.store: shards written atomically with checksums; a manifest that lists only whole files."""

import json

import pyarrow.parquet as pq
import pytest

from data.store import (
    Manifest,
    StoreError,
    iter_rows,
    messages_schema,
    sha256_file,
    write_shard,
)


def _rows(n, start=0):
    return {"id": [str(i) for i in range(start, start + n)], "client": ["a"] * n,
            "text": [f"message {i}" for i in range(start, start + n)],
            "time": [None] * n, "line": list(range(start + 1, start + n + 1)),
            "label": [""] * n, "split": ["train"] * n, "period": ["early"] * n}


def test_shard_roundtrip_and_checksum(tmp_path):
    entry = write_shard(tmp_path, "messages", 0, _rows(5), messages_schema())
    assert entry["path"] == "messages/part-00000.parquet" and entry["rows"] == 5
    path = tmp_path / entry["path"]
    assert sha256_file(path) == entry["sha256"]
    assert pq.read_table(path).column("text").to_pylist()[4] == "message 4"
    # Same rows, same bytes: a rebuilt shard is recognised by its checksum.
    again = write_shard(tmp_path / "b", "messages", 0, _rows(5), messages_schema())
    assert again["sha256"] == entry["sha256"]
    assert not list(tmp_path.glob("messages/.*.tmp"))


def test_missing_column_is_an_error(tmp_path):
    rows = _rows(2)
    del rows["period"]
    with pytest.raises(ValueError, match="missing columns"):
        write_shard(tmp_path, "messages", 0, rows, messages_schema())


def test_manifest_tracks_shards_and_detects_damage(tmp_path):
    m = Manifest(tmp_path)
    m.add_shard("messages", 0, write_shard(tmp_path, "messages", 0, _rows(3), messages_schema()))
    m.add_shard("messages", 1, write_shard(tmp_path, "messages", 1, _rows(2, 3),
                                           messages_schema()))
    loaded = Manifest.load(tmp_path)
    assert loaded.valid_shard("messages", 0) and loaded.valid_shard("messages", 1)
    assert not loaded.valid_shard("messages", 2)
    with pytest.raises(StoreError, match="not complete"):
        loaded.shard_paths("messages")
    loaded.complete("messages", 2)
    assert [r["id"] for r in iter_rows(tmp_path, "messages")] == ["0", "1", "2", "3", "4"]
    # A shard changed on disk no longer counts as built.
    (tmp_path / "messages/part-00001.parquet").write_bytes(b"garbage")
    assert not Manifest.load(tmp_path).valid_shard("messages", 1)
    with pytest.raises(StoreError, match="expected 0..2"):
        loaded.complete("messages", 3)


def test_bad_manifest_is_a_clear_error(tmp_path):
    assert Manifest.load(tmp_path) is None
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: not a readable manifest"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StoreError, match="unknown manifest format"):
        Manifest.load(tmp_path)
    with pytest.raises(StoreError, match="not a kbsim dataset"):
        list(iter_rows(tmp_path / "nothing", "messages"))
