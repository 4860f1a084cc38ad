"""data.built: a finished build read back, by kbsim and by the usual dataframe tools.

One small build of the default corpus (several shards, the JSONL and M2 exports on) and one
plain-text corpus without users or times (IID clients, pairs left to the clients), each built
once per module.
"""

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data.build import build
from data.built import BuiltDataset
from data.config import (
    ClientsConfig,
    CorpusConfig,
    DataConfig,
    PairsConfig,
    TokenizersConfig,
)
from data.store import Manifest, StoreError, iter_rows
from data.vocab import WordVocab
from keyboard_sim.pair import Pair

pytest.importorskip("chitchat_dataset")

CHAT = DataConfig(
    seed=3, shard_size=500,
    corpus=CorpusConfig(limit=2000),
    clients=ClientsConfig(max_messages=30),
    tokenizers=TokenizersConfig(vocab_size=300, subword_vocab_size=400),
    pairs=PairsConfig(jsonl=True, m2=True),
)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat")
    build(CHAT, out)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A .txt corpus (no users, no times): 12 IID clients, pairs not materialised."""
    from wordfreq import top_n_list

    d = tmp_path_factory.mktemp("plain")
    words = [w for w in top_n_list("en", 200) if w.isalpha() and w != "i"]
    lines = [" ".join(words[(7 * k + j * 13) % len(words)] for j in range(3 + k % 5))
             for k in range(240)]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n")
    config = DataConfig(
        seed=1, shard_size=100,
        corpus=CorpusConfig(source=str(d / "corpus.txt")),
        clients=ClientsConfig(partition="iid", n_clients=12, max_messages=None),
        tokenizers=TokenizersConfig(vocab_size=100, subword_vocab_size=0),
        pairs=PairsConfig(materialize=False),
    )
    build(config, d / "out")
    return d / "out", lines


def _table(out, table):
    return pq.read_table(Path(out) / table).to_pylist()


# --------------------------------------------------------------------------- opening


def test_a_folder_without_a_build_is_an_error(tmp_path, chat):
    with pytest.raises(StoreError, match="no finished data build"):
        BuiltDataset(tmp_path)
    # A build that stopped before its summary (as a crash leaves it) is not a dataset either.
    half = tmp_path / "half"
    shutil.copytree(chat, half)
    m = Manifest.load(half)
    del m.data["summary"]
    m.save()
    with pytest.raises(StoreError, match="no finished data build"):
        BuiltDataset(half)


def test_an_altered_or_missing_shard_is_an_error(tmp_path, chat):
    bad = tmp_path / "bad"
    shutil.copytree(chat, bad)
    BuiltDataset(bad)  # a faithful copy opens
    shard = bad / "pairs" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard 1 of pairs is missing or altered"):
        BuiltDataset(bad)
    BuiltDataset(bad, verify=False)  # opening without the check is the caller's choice
    shutil.copy(chat / "pairs" / "part-00001.parquet", shard)
    (bad / "messages" / "part-00002.parquet").unlink()
    with pytest.raises(StoreError, match="shard 2 of messages is missing or altered"):
        BuiltDataset(bad)


def test_bad_split_or_period_names_are_errors(chat):
    ds = BuiltDataset(chat)
    with pytest.raises(ValueError, match="split must be one of"):
        next(ds.messages("dev"))
    with pytest.raises(ValueError, match="period must be one of"):
        ds.client_pairs("train", "middle")


# --------------------------------------------------------------------------- contents


def test_messages_by_split_and_period_add_up(chat):
    ds = BuiltDataset(chat)
    s = ds.summary
    assert s == Manifest.load(chat).data["summary"]
    every = list(ds.messages())
    assert len(every) == s["kept"] == len(_table(chat, "messages"))
    parts = {(sp, pe): list(ds.messages(sp, pe))
             for sp in ("train", "val", "test") for pe in ("early", "late")}
    assert sum(map(len, parts.values())) == len(every)
    assert sorted(m.id for ms in parts.values() for m in ms) == sorted(m.id for m in every)
    for split in ("train", "val", "test"):
        n = len(parts[split, "early"]) + len(parts[split, "late"])
        assert n == s["clients"][split]["messages"] == s["pairs"][split]["pairs"]
        assert len(ds.client_messages(split)) == s["clients"][split]["clients"]


def test_client_texts_are_in_time_order(chat):
    ds = BuiltDataset(chat)
    by_client = ds.client_messages("train")
    texts = ds.client_texts("train")
    assert list(texts) == sorted(texts) == list(by_client)
    long = 0
    for c, ms in by_client.items():
        times = [m.time for m in ms]
        assert times == sorted(times), c
        assert all(m.user == c for m in ms)
        assert texts[c] == [m.text for m in ms]
        # Ties in time keep input order (the corpus line).
        for a, b in zip(ms, ms[1:], strict=False):
            assert (a.time, a.line) < (b.time, b.line), c
        long += len(ms) > 5
    assert long >= 10
    # Each client's early messages come before its late ones.
    early, late = ds.client_messages("train", "early"), ds.client_messages("train", "late")
    for c, ms in late.items():
        assert max(m.time for m in early[c]) <= min(m.time for m in ms), c


def test_vocab_and_subword_load(chat):
    ds = BuiltDataset(chat)
    vocab = ds.vocab()
    assert isinstance(vocab, WordVocab)
    assert len(vocab) == ds.summary["vocab_words"] and len(vocab.words) == 300
    sp = ds.subword()
    assert sp.vocab_size == 400
    for m in list(ds.messages("test"))[:50]:
        assert sp.decode(sp.encode(m.text)) == m.text


def test_torch_views(chat):
    torch = pytest.importorskip("torch")
    from data.torch_data import next_word_datasets, pair_datasets, pooled

    ds = BuiltDataset(chat)
    texts = ds.client_texts("train", "early")
    nw = next_word_datasets(texts, ds.vocab())
    assert list(nw) == list(texts)
    assert all(len(nw[c]) == len(texts[c]) for c in texts)
    total = sum(len(d) for d in nw.values())
    assert total == len(list(ds.messages("train", "early"))) == len(pooled(nw))
    x, y = pooled(nw)[0]
    assert x.dtype == torch.int64 and x.shape == y.shape and torch.equal(x[1:], y[:-1])
    pairs = ds.client_pairs("test")
    pd_ = pair_datasets(pairs, ds.subword())
    assert sum(len(d) for d in pd_.values()) == ds.summary["pairs"]["test"]["pairs"]


# --------------------------------------------------------------------------- other tools


def _plain_rows(df):
    """DataFrame rows as plain dicts (pyarrow lists come back as numpy arrays)."""
    rows = df.to_dict("records")
    for r in rows:
        if "edits" in r:
            r["edits"] = [dict(e) for e in r["edits"]]
    return rows


def test_pandas_and_datasets_read_the_shards(chat, tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")

    for table in ("messages", "pairs"):
        want = list(iter_rows(chat, table))
        assert len(want) == BuiltDataset(chat).summary["kept"]
        got = _plain_rows(pd.read_parquet(chat / table))
        assert got == want, table
        files = sorted(str(p) for p in (chat / table).glob("*.parquet"))
        assert len(files) == 4
        hf = datasets.load_dataset("parquet", data_files=files, split="train",
                                   cache_dir=str(tmp_path / "hf"))
        assert hf.num_rows == len(want)
        assert hf.column_names == list(want[0])
        assert list(hf) == want, table


def test_pairs_jsonl_and_m2_exports(chat):
    ds = BuiltDataset(chat)
    pairs = [p for _, p in ds.pairs()]
    assert len(pairs) == ds.summary["kept"]
    lines = (chat / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [p.to_dict() for p in pairs]
    assert all(Pair.from_dict(json.loads(x)).is_consistent() for x in lines[:200])
    m2 = (chat / "pairs.m2").read_text(encoding="utf-8")
    sources = [x[2:] for x in m2.splitlines() if x.startswith("S ")]
    assert sources == [" ".join(p.noisy.split()) for p in pairs]
    assert m2.count("\n\n") == len(pairs)


# --------------------------------------------------------------------------- lazy pairs only


def test_a_build_without_materialised_pairs(plain):
    out, lines = plain
    ds = BuiltDataset(out)
    s = ds.summary
    assert not (out / "pairs").exists() and not (out / "subword.model").exists()
    assert s["records"] == len(lines) and s["timed"] is False
    with pytest.raises(StoreError, match="not materialised"):
        next(ds.pairs())
    with pytest.raises(StoreError, match="no subword model"):
        ds.subword()
    # IID clients; without times each client's messages stay in input order.
    by_client = ds.client_messages()
    assert set(by_client) <= {f"iid-{k}" for k in range(12)} and len(by_client) >= 10
    for c, ms in by_client.items():
        assert [m.line for m in ms] == sorted(m.line for m in ms), c
    table = _table(out, "messages")
    per = Counter((r["client"], r["period"]) for r in table)
    for c, ms in by_client.items():
        late = [r["line"] for r in table if r["client"] == c and r["period"] == "late"]
        assert late == [m.line for m in ms][len(ms) - per[c, "late"]:], c
    # The clients still type their own pairs, from the build's seed.
    pool = ds.client_pool("train", None)
    c = next(iter(pool))
    pairs = pool[c].pairs(ds.config.seed)
    assert [p.id for p in pairs] == [m.id for m in by_client[c]]
    assert [p.clean for p in pairs] == [m.text for m in by_client[c]]
    assert pairs == pool[c].pairs(ds.config.seed)


def test_torch_views_straight_from_the_build(chat):
    pytest.importorskip("torch")
    ds = BuiltDataset(chat)
    nw = ds.next_word_datasets("train", "early")
    assert sum(len(d) for d in nw.values()) == len(list(ds.messages("train", "early")))
    assert nw[next(iter(nw))][0][0].shape == (20,)
    pairs = ds.pair_datasets("val", None)
    assert sum(len(d) for d in pairs.values()) == ds.summary["pairs"]["val"]["pairs"]
