"""data.build: a whole experiment's data in one resumable job, checked end to end.

Real builds on small inputs: a slice of the default corpus (several shards, a per-client cap
that bites) and a JSONL corpus made here, with users, times and bad lines under the test's
control. Each build runs once per module and is shared by the tests that read it.
"""

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data.build import BuildError, build, format_summary
from data.built import BuiltDataset
from data.clean import CleanFilter, normalize
from data.config import (
    ClientsConfig,
    CorpusConfig,
    DataConfig,
    PairsConfig,
    SplitsConfig,
    TokenizersConfig,
)
from data.corpus import chitchat_corpus
from data.partition import time_split_count, user_split
from data.store import Manifest, StoreError
from keyboard_sim.simulate import simulate
from keyboard_sim.stats import PairStats

pytest.importorskip("chitchat_dataset")

ROOT = Path(__file__).resolve().parents[1]

# A slice of the default corpus: 4,000 records in 10 shards of 400; a cap of 20 messages per
# client drops about half of them, so the cap is exercised; a quarter of each client's
# messages are "late".
CHAT = DataConfig(
    seed=0, shard_size=400,
    corpus=CorpusConfig(limit=4000),
    clients=ClientsConfig(max_messages=20),
    splits=SplitsConfig(late_fraction=0.25),
    tokenizers=TokenizersConfig(vocab_size=300, subword_vocab_size=400),
    pairs=PairsConfig(jsonl=True, m2=True),
)
N_SHARDS = 10


def _shas(out, table):
    """Shard index -> sha256 as the manifest lists them."""
    return {i: e["sha256"] for i, e in Manifest.load(out).shards(table).items()}


def _rows(out, table):
    return pq.read_table(Path(out) / table).to_pylist()


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat")
    return out, build(CHAT, out)


@pytest.fixture(scope="module")
def chat_twin(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat_twin")
    build(CHAT, out)
    return out


# --------------------------------------------------------------------------- a file corpus

# Sentences made from the most frequent English words (all known to the clean filter), with
# three marker words: "elephant" typed by training users, "zebra" only by held-out users,
# "volcano" only in one training user's latest message (period "late").
N_USERS = 16
PER_USER = 24
BAD_LINES = [  # (raw bytes, reason the reader gives: a prefix)
    (b'{"user": "u00", "time": 5, "text": ', "invalid JSON"),
    (b'{"user": "u01", "time": 6}', "missing field 'text'"),
    (b'{"user": "u02", "time": 7, "text": "caf\xff"}', "invalid UTF-8"),
    (b'{"user": "u05", "text": "\xc3(", "time": 10}', "invalid UTF-8"),
    (b'{"user": "u03", "time": 8, "text": 42}', "field 'text' is a number"),
    (b"", "empty line"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"user": "u04", "time": "yesterday", "text": "fine"}', "time field 'time'"),
    (b'{"time": 9, "text": "hello"}', "missing user field 'user'"),
]
FILTERED = [  # (text, the clean filter's reason)
    ("i think so", "lowercase_i"),
    ("the xqzvb is here", "unknown_words"),
    ("well " * 60, "too_long"),
    ("!!! ???", "too_short"),
]


def _word_pool():
    from wordfreq import top_n_list

    f = CleanFilter()
    markers = {"elephant", "zebra", "volcano"}
    return [w for w in top_n_list("en", 800)
            if w.isalpha() and w.isascii() and len(w) > 1 and w not in markers and f.keep(w)]


def _file_corpus(path):
    """Writes the JSONL corpus; returns (user -> split, line count, bad line -> reason)."""
    rng = np.random.default_rng(7)
    pool = _word_pool()
    users = [f"u{k:02d}" for k in range(N_USERS)]
    splits = {u: user_split(u, 0, (0.8, 0.1, 0.1)) for u in users}
    train = [u for u in users if splits[u] == "train"]
    held = [u for u in users if splits[u] != "train"]
    assert len(train) >= 4 and held, splits  # a property of seed 0 and these names
    records = []
    for u in users:
        times = rng.permutation(PER_USER) * 60.0 + 1_600_000_000.0
        for j, t in enumerate(times):
            words = list(rng.choice(pool, size=rng.integers(3, 9)))
            if j % 3 == 0:
                words.insert(1, "zebra" if splits[u] != "train" else "elephant")
            if u == train[0] and t == times.max():
                words.append("volcano")
            records.append({"user": u, "time": float(t), "text": " ".join(words)})
    for k, (text, _) in enumerate(FILTERED):
        records.append({"user": train[1], "time": 1e9 + k, "text": text})
    rng.shuffle(records)  # input order is not time order
    lines = [json.dumps(r).encode() for r in records]
    bad = {}
    for k, (raw, _) in enumerate(BAD_LINES):
        at = 3 + 37 * k
        lines.insert(at, raw)
    for n, line in enumerate(lines, 1):
        for raw, reason in BAD_LINES:
            if line == raw:
                bad[n] = reason
    path.write_bytes(b"\n".join(lines) + b"\n")
    return splits, len(lines), bad


FILE_CONFIG = {
    "seed": 0, "shard_size": 150,
    "corpus": {"source": "corpus.jsonl", "user_field": "user", "time_field": "time"},
    "clients": {"max_messages": None},
    "splits": {"late_fraction": 0.25},
    "tokenizers": {"vocab_size": 2000, "subword_vocab_size": 400},
}


@pytest.fixture(scope="module")
def filebuild(tmp_path_factory):
    """The JSONL corpus built through the command line (`kbsim data build CONFIG --out DIR`)."""
    from kbsim.cli import main

    d = tmp_path_factory.mktemp("file")
    splits, n_lines, bad = _file_corpus(d / "corpus.jsonl")
    (d / "data.json").write_text(json.dumps({"data": FILE_CONFIG}))
    out = d / "out"
    stdout, stderr = StringIO(), StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        rc = main(["data", "build", str(d / "data.json"), "--out", str(out), "--no-progress"])
    return {"dir": d, "out": out, "splits": splits, "n_lines": n_lines, "bad": bad,
            "rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


# --------------------------------------------------------------------------- 1. accounting


def test_every_chat_record_is_accounted_for(chat):
    out, s = chat
    assert s["records"] == CHAT.corpus.limit
    assert s["records"] == s["kept"] + sum(s["filtered"].values()) + sum(s["rejected"].values())
    assert s["accounted"] and s["rejected"] == {}
    assert len(_rows(out, "messages")) == s["kept"]
    assert len(_rows(out, "pairs")) == s["kept"]
    m = Manifest.load(out)
    assert m.is_complete("messages") and m.is_complete("pairs")
    assert len(m.shards("messages")) == len(m.shards("pairs")) == N_SHARDS
    # Per shard: every record of the block is counted once.
    for i, e in m.shards("messages").items():
        a = e["accounting"]
        assert a["read"] == CHAT.shard_size == a["kept"] + sum(a["filtered"].values()), i
        assert e["rows"] == a["kept"] == m.shards("pairs")[i]["rows"]


def test_every_file_line_is_kept_filtered_or_rejected(filebuild):
    out, bad = filebuild["out"], filebuild["bad"]
    assert filebuild["rc"] == 0, filebuild["stderr"]
    s = BuiltDataset(out).summary
    assert len(bad) == len(BAD_LINES)
    assert s["records"] == filebuild["n_lines"]
    assert s["read"] == filebuild["n_lines"] - len(bad)
    assert s["records"] == s["kept"] + sum(s["filtered"].values()) + sum(s["rejected"].values())
    assert sum(s["rejected"].values()) == len(bad)
    assert s["filtered"] == dict(Counter(reason for _, reason in FILTERED))
    assert s["kept"] == N_USERS * PER_USER
    # rejects.jsonl: one line per bad record, with its line number and reason.
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["line"]: r["reason"] for r in rejects}.keys() == bad.keys()
    assert len(rejects) == len(bad)
    for r in rejects:
        assert r["reason"].startswith(bad[r["line"]]), r
    assert len(_rows(out, "messages")) == len(_rows(out, "pairs")) == s["kept"]


def test_summary_groups_rejects_by_kind(filebuild):
    """The summary counts bad records per kind of fault, not per record: two lines with invalid
    UTF-8 at different bytes are one reason with count 2 (the detail is in rejects.jsonl)."""
    s = BuiltDataset(filebuild["out"]).summary
    kinds = Counter(reason for _, reason in BAD_LINES)
    assert len(s["rejected"]) == len(kinds), s["rejected"]
    utf8 = [k for k in s["rejected"] if k.startswith("invalid UTF-8")]
    assert len(utf8) == 1 and s["rejected"][utf8[0]] == kinds["invalid UTF-8"] == 2


# --------------------------------------------------------------------------- 2. determinism


def test_same_config_gives_identical_bytes(chat, chat_twin):
    out, _ = chat
    for table in ("messages", "pairs"):
        a, b = _shas(out, table), _shas(chat_twin, table)
        assert len(a) == N_SHARDS and a == b, table
    for name in ("vocab.json", "subword.model", "subword.json", "pairs.jsonl", "pairs.m2",
                 "rejects.jsonl"):
        assert (out / name).read_bytes() == (chat_twin / name).read_bytes(), name
    ma, mb = Manifest.load(out).data, Manifest.load(chat_twin).data
    ma["summary"].pop("seconds"), mb["summary"].pop("seconds")
    assert ma == mb


def test_another_seed_gives_other_splits_and_pairs(chat, tmp_path):
    out, _ = chat
    other = tmp_path / "seed1"
    build(dataclasses.replace(CHAT, seed=1), other)
    a = {r["client"]: r["split"] for r in _rows(out, "messages")}
    b = {r["client"]: r["split"] for r in _rows(other, "messages")}
    assert a.keys() == b.keys()  # clients are users: the seed does not change them
    moved = sum(a[c] != b[c] for c in a)
    assert moved >= 0.1 * len(a), (moved, len(a))  # about 2 * 0.8 * 0.2 = 32% expected
    na = {r["id"]: r["noisy"] for r in _rows(out, "pairs")}
    nb = {r["id"]: r["noisy"] for r in _rows(other, "pairs")}
    common = na.keys() & nb.keys()
    assert len(common) > 100
    assert sum(na[i] != nb[i] for i in common) > 0.2 * len(common)


def test_shard_size_does_not_change_the_content(chat, tmp_path):
    out, _ = chat
    other = tmp_path / "big_shards"
    build(dataclasses.replace(CHAT, shard_size=1500), other)
    assert len(Manifest.load(other).shards("pairs")) == 3
    for table in ("messages", "pairs"):
        assert _rows(out, table) == _rows(other, table), table
    for name in ("vocab.json", "subword.model", "pairs.jsonl"):
        assert (out / name).read_bytes() == (other / name).read_bytes(), name


# --------------------------------------------------------------------------- 3. resume


def _as_if_crashed(out: Path, first_lost: int) -> None:
    """Leaves `out` as a crash while writing block `first_lost` would: the manifest lists the
    shards before it (and the messages shard of that block, written just before its pairs
    shard), nothing is complete, no tokenizers, summary or exports."""
    m = Manifest.load(out)
    for table in ("messages", "pairs"):
        t = m.data["tables"][table]
        t["complete"] = False
        t.pop("rows", None)
        keep_from = first_lost + 1 if table == "messages" else first_lost
        for i in range(keep_from, N_SHARDS):
            del t["shards"][str(i)]
            (out / f"{table}/part-{i:05d}.parquet").unlink()
    for key in ("tokenizers", "summary"):
        m.data.pop(key)
    m.save()
    for name in ("vocab.json", "subword.model", "subword.json", "pairs.jsonl", "pairs.m2",
                 "rejects.jsonl"):
        (out / name).unlink()


def test_resume_after_lost_shards_gives_the_same_build(chat, tmp_path):
    out, summary = chat
    crashed = tmp_path / "crashed"
    shutil.copytree(out, crashed)
    _as_if_crashed(crashed, first_lost=6)
    before = {p: p.stat().st_mtime_ns for p in crashed.glob("*/part-*.parquet")}
    assert len(before) == 6 + 7
    time.sleep(0.01)
    resumed = build(CHAT, crashed)
    for table in ("messages", "pairs"):
        assert _shas(crashed, table) == _shas(out, table), table
    # Shards already in place are left alone (the pairs shard 6 and its messages shard are
    # written again together).
    for p, mtime in before.items():
        if not p.name.endswith("00006.parquet"):
            assert p.stat().st_mtime_ns == mtime, p
    for name in ("vocab.json", "subword.model", "pairs.jsonl", "pairs.m2"):
        assert (crashed / name).read_bytes() == (out / name).read_bytes(), name
    assert {**resumed, "seconds": 0} == {**summary, "seconds": 0}


def test_resume_after_a_killed_process(chat, tmp_path):
    out, _ = chat
    config = tmp_path / "chat.json"
    config.write_text(json.dumps(CHAT.to_dict()))
    dest = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kbsim.cli", "data", "build", str(config), "--out", str(dest),
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            m = Manifest.load(dest)
        except StoreError:
            m = None  # cannot happen (written atomically); read again
        if m is not None and m.shards("pairs"):
            proc.send_signal(signal.SIGKILL)
            killed_at = len(m.shards("pairs"))
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_at is not None, "the build finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    m = Manifest.load(dest)
    assert not m.is_complete("messages") and "summary" not in m.data
    assert 1 <= len(m.shards("pairs")) < N_SHARDS
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("records  4,000: kept ")
    for table in ("messages", "pairs"):
        assert _shas(dest, table) == _shas(out, table), table
        # Only the manifest's shards are Parquet files there (temporary files are hidden).
        listed = sorted(e["path"] for e in Manifest.load(dest).shards(table).values())
        assert sorted(f"{table}/{p.name}" for p in (dest / table).glob("*.parquet")) == listed
    for name in ("vocab.json", "subword.model", "pairs.jsonl", "pairs.m2"):
        assert (dest / name).read_bytes() == (out / name).read_bytes(), name


def test_another_config_in_a_built_folder_is_an_error(chat):
    out, _ = chat
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(BuildError, match="another config"):
        build(dataclasses.replace(CHAT, seed=5), out)
    assert (out / "manifest.json").read_bytes() == manifest
    assert issubclass(BuildError, ValueError)


# --------------------------------------------------------------------------- 4. lazy pairs


def _pair_key(p):
    return (p.clean, p.noisy, tuple(p.edits))


def test_lazy_pairs_equal_the_materialised_ones(chat):
    out, _ = chat
    ds = BuiltDataset(out)
    checked = 0
    for split in ("train", "val", "test"):
        materialised = ds.client_pairs(split)
        pool = ds.client_pool(split, None)
        assert set(pool) == set(materialised)
        clients = sorted(materialised, key=lambda c: (-len(materialised[c]), c))[:3]
        for c in clients:
            lazy = pool[c].pairs(CHAT.seed, round=CHAT.pairs.round)
            want = {p.id: _pair_key(p) for p in materialised[c]}
            assert {p.id: _pair_key(p) for p in lazy} == want, c
            again = pool[c].pairs(CHAT.seed, round=1)
            assert [p.id for p in again] == [p.id for p in lazy]
            assert [p.noisy for p in again] != [p.noisy for p in lazy], c
            checked += 1
    assert checked == 9


# --------------------------------------------------------------------------- 5. typists


def test_clients_type_differently(chat):
    out, _ = chat
    ds = BuiltDataset(out)
    pool = ds.client_pool("train", None)
    clients = list(pool)[:8]
    profiles = [pool[c].profile for c in clients]
    core = [(p.posture, p.sigma_x_mm, p.sigma_y_mm, p.offset_x_mm, p.rates) for p in profiles]
    assert len(set(map(repr, core))) == len(core)
    # Same texts, same seed, each client's own typist: the error rates differ by typist alone.
    texts = [m.text for m in ds.messages("train")][:300]
    cers = [PairStats.of(simulate(texts, p, CHAT.typists.layout, 1)).cer for p in profiles]
    assert max(cers) > 1.5 * min(cers), cers
    # And in the built pairs, per-client CERs spread out.
    built = [PairStats.of(ps).cer for ps in ds.client_pairs("train").values() if len(ps) >= 15]
    assert len(built) >= 20
    assert np.std(built) > 0.01 and max(built) > 2 * min(built), built


# --------------------------------------------------------------------------- 6. splits, cap


def test_user_splits_are_disjoint_by_client(chat):
    out, _ = chat
    for table in ("messages", "pairs"):
        seen = defaultdict(set)
        for r in _rows(out, table):
            seen[r["client"]].add(r["split"])
        assert all(len(s) == 1 for s in seen.values()), table
        # ...and each is the pure function of (seed, client).
        splits = {c: min(s) for c, s in seen.items()}
        assert splits == {c: user_split(c, CHAT.seed, (0.8, 0.1, 0.1)) for c in splits}
    counts = Counter(splits.values())
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0


def _late_are_latest(rows, late_fraction):
    by_client = defaultdict(list)
    for r in rows:
        by_client[r["client"]].append(r)
    n_late = 0
    for c, rs in by_client.items():
        ordered = sorted(rs, key=lambda r: (r["time"], r["line"]))
        k = time_split_count(len(ordered), late_fraction)
        assert [r["period"] for r in ordered] == ["early"] * (len(ordered) - k) + ["late"] * k, c
        n_late += k
    return n_late


def test_late_messages_are_each_clients_latest(chat, filebuild):
    out, _ = chat
    assert _late_are_latest(_rows(out, "messages"), 0.25) > 100
    # The file corpus lists messages out of time order.
    rows = _rows(filebuild["out"], "messages")
    assert [r["line"] for r in rows] == sorted(r["line"] for r in rows)
    assert _late_are_latest(rows, 0.25) == N_USERS * time_split_count(PER_USER, 0.25)
    # Pairs carry the same split and period as their message.
    msg = {r["id"]: (r["split"], r["period"]) for r in rows}
    assert {r["id"]: (r["split"], r["period"]) for r in _rows(filebuild["out"], "pairs")} == msg


def test_cap_keeps_each_clients_earliest_messages(chat):
    out, s = chat
    cap = CHAT.clients.max_messages
    c = CHAT.clean
    f = CleanFilter(min_words=c.min_words, max_words=c.max_words, max_chars=c.max_chars,
                    min_known=c.min_known, lowercase_i=c.lowercase_i, lang=c.lang,
                    wordlist_size=c.wordlist_size, misspellings=c.misspellings)
    reasons, passing = Counter(), defaultdict(list)
    for seq, m in enumerate(chitchat_corpus(CHAT.corpus.limit)):
        reason = f.check(normalize(m.text))
        if reason is None:
            passing[m.user].append((m.time, seq, m.id))
        else:
            reasons[reason] += 1
    over = sum(max(0, len(v) - cap) for v in passing.values())
    assert over > 500  # the cap bites in this slice
    assert s["filtered"] == dict(reasons + Counter(over_user_cap=over))
    kept = defaultdict(set)
    for r in _rows(out, "messages"):
        kept[r["client"]].add(r["id"])
    assert max(len(v) for v in kept.values()) == cap
    assert kept == {u: {i for _, _, i in sorted(v)[:cap]} for u, v in passing.items()}


def test_partly_timed_corpus_ranks_as_built_dataset_orders(tmp_path):
    """Where some messages have no time, an untimed message counts as at its predecessor's
    time (`data.partition.time_order`, as `BuiltDataset.client_messages` orders them): the cap
    keeps, and "late" marks, by that order, not by input order."""
    times = [100, 50, None, 10, 90, None, 30, 70, None, 20]
    words = ["hello", "good morning", "see you soon", "thank you", "that is great",
             "what time", "sounds good", "me too", "have fun", "good night"]
    recs = [{"user": "a", "time": t, "text": w} for t, w in zip(times, words, strict=True)]
    recs += [{"user": "b", "time": 5.0 * k, "text": w} for k, w in enumerate(words)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    config = DataConfig.from_dict({
        "corpus": {"source": str(tmp_path / "c.jsonl"), "user_field": "user",
                   "time_field": "time"},
        "clients": {"max_messages": 8}, "splits": {"late_fraction": 0.3},
        "tokenizers": {"vocab_size": 50, "subword_vocab_size": 0}})
    build(config, tmp_path / "out")
    ds = BuiltDataset(tmp_path / "out")
    ordered = [m.line for m in ds.client_messages()["a"]]
    # time_order of a's ten lines: 4 (t=10), 10 (20), 7 (30), 2, 3 (50), 8, 9 (70), 5, 6 (90),
    # 1 (100); the cap keeps the first 8, and the last 3 of those are late.
    assert ordered == [4, 10, 7, 2, 3, 8, 9, 5]
    period = {r["line"]: r["period"] for r in _rows(tmp_path / "out", "messages")
              if r["client"] == "a"}
    assert [period[n] for n in ordered] == ["early"] * 5 + ["late"] * 3


# --------------------------------------------------------------------------- 7. tokenizers


def test_tokenizers_learn_only_from_training_users_early_messages(filebuild):
    out = filebuild["out"]
    ds = BuiltDataset(out)
    rows = _rows(out, "messages")
    # The markers are in the kept messages, where the test put them.
    where = defaultdict(set)
    for r in rows:
        for w in ("elephant", "zebra", "volcano"):
            if w in r["text"].split():
                where[w].add((r["split"], r["period"]))
    assert where["elephant"] == {("train", "early"), ("train", "late")}
    assert where["zebra"] and all(s != "train" for s, _ in where["zebra"])
    assert where["volcano"] == {("train", "late")}
    vocab = ds.vocab()
    words = set(vocab.words)
    assert "elephant" in words and "the" in words
    assert "zebra" not in words and "volcano" not in words
    # Every word of the training users' early messages is in (vocab_size is large enough).
    early = {w.lower() for r in rows if r["split"] == "train" and r["period"] == "early"
             for w in r["text"].split()}
    assert early <= words
    # The subword model was fed exactly the training users' early messages.
    train_early = [r["text"] for r in rows if r["split"] == "train" and r["period"] == "early"]
    meta = json.loads((out / "subword.json").read_text())
    assert meta["trained_on"] == {"texts": len(train_early),
                                  "chars": sum(map(len, train_early))}
    assert ds.subword().vocab_size == FILE_CONFIG["tokenizers"]["subword_vocab_size"]
    assert ds.summary["vocab_coverage"]["test"] < 1.0  # "zebra"


# --------------------------------------------------------------------------- 10. CLI


def test_cli_build_prints_the_summary_table(filebuild):
    assert filebuild["rc"] == 0
    out = filebuild["stdout"]
    s = BuiltDataset(filebuild["out"]).summary
    assert out == format_summary(s) + "\n"
    assert out.startswith(f"records  {filebuild['n_lines']:,}: kept {s['kept']:,}")
    assert "split   clients" in out and "\ntrain " in out
    assert "kbsim data build: wrote" in filebuild["stderr"]


@pytest.mark.parametrize("text, key", [
    ("clients:\n  max_mesages: 5\n", "clients.max_mesages"),
    ("shard_size: big\n", "shard_size"),
    ("splits:\n  train: 0.5\n", "splits.train/val/test"),
    ("tokenizers:\n  subword_model: wordpiece\n", "tokenizers.subword_model"),
])
def test_cli_bad_config_is_one_line_naming_the_key(tmp_path, capsys, text, key):
    from kbsim.cli import main

    (tmp_path / "bad.yaml").write_text(text)
    rc = main(["data", "build", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and key in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_cli_summary(filebuild, tmp_path, capsys):
    from kbsim.cli import main

    assert main(["data", "summary", str(filebuild["out"])]) == 0
    assert capsys.readouterr().out == filebuild["stdout"]
    assert main(["data", "summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished data build" in err


def test_cli_build_into_another_builds_folder(filebuild, tmp_path, capsys):
    from kbsim.cli import main

    cfg = json.loads((filebuild["dir"] / "data.json").read_text())
    cfg["data"]["seed"] = 3
    (filebuild["dir"] / "other.json").write_text(json.dumps(cfg))
    rc = main(["data", "build", str(filebuild["dir"] / "other.json"), "--out",
               str(filebuild["out"]), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "another config" in err and err.count("\n") == 1


def test_exports_only_when_asked(filebuild):
    out = filebuild["out"]
    assert not (out / "pairs.jsonl").exists() and not (out / "pairs.m2").exists()


def test_summary_counts_clients_per_split(filebuild):
    s = BuiltDataset(filebuild["out"]).summary
    want = Counter(filebuild["splits"].values())
    for split in ("train", "val", "test"):
        assert s["clients"][split]["clients"] == want[split]
        n = want[split] * PER_USER
        assert s["clients"][split]["messages"] == n
        assert s["pairs"][split]["pairs"] == n
    assert s["timed"] is True
    assert sum(v["messages"] for v in s["clients"].values()) == s["kept"]


def test_records_a_partition_cannot_place_are_filtered_with_a_reason(tmp_path):
    # Natural clients need a user: a record without one is counted, not a crash or a drop.
    recs = [{"user": "a", "text": "hello there"}, {"user": "", "text": "good morning"},
            {"user": "b", "text": "see you soon"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    config = DataConfig.from_dict({
        "corpus": {"source": str(tmp_path / "c.jsonl"), "user_field": "user"},
        "tokenizers": {"vocab_size": 10, "subword_vocab_size": 0}})
    summary = build(config, tmp_path / "out")
    assert summary["filtered"] == {"no_client": 1} and summary["kept"] == 2
    assert summary["records"] == 3 and summary["accounted"]


def test_manifest_says_how_clients_were_made(chat):
    from data.partition import partitioner_from_dict
    from data.population import PopulationConfig, population_around

    m = Manifest.load(chat[0]).data
    assert m["seed"] == CHAT.seed and m["layout"] == "en-US" and m["kbsim_version"]
    assert partitioner_from_dict(m["partitioner"]).to_dict() == m["partitioner"]
    assert PopulationConfig.from_dict(m["population"]) == population_around("raw")
