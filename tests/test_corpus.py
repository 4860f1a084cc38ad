"""data.corpus: every format streams Messages with their fields, and accounts for every record."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import pytest

from data.corpus import (
    CorpusStats,
    chitchat_corpus,
    corpus_format,
    open_corpus,
    parse_time,
    read_corpus,
)
from data.record import Message
from keyboard_sim.io import InputError, RejectList, Rejects

T0 = 1525289895.0  # 2018-05-02T19:38:15Z (calendar.timegm((2018, 5, 2, 19, 38, 15)))


def write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- time


def test_parse_time_goldens():
    assert parse_time("2018-05-02T19:38:15Z") == T0
    assert parse_time("2018-05-02T21:38:15+02:00") == T0
    assert parse_time("2018-05-02 19:38:15") == T0  # no offset: UTC, not the machine's zone
    assert parse_time("2018-05-02T19:38:15.5Z") == T0 + 0.5
    assert parse_time("2018-05-02") == T0 - (19 * 3600 + 38 * 60 + 15)
    assert parse_time(1525289895) == T0
    assert parse_time(12.5) == 12.5
    assert parse_time(" 1525289895 ") == T0
    assert parse_time("-3.5e2") == -350.0
    assert parse_time(None) is None and parse_time("") is None and parse_time("  ") is None


@pytest.mark.parametrize("bad", ["yesterday", "2018-13-02", "12:00 pm", "nan", "inf",
                                 float("nan"), float("inf"), True, [1], {"t": 1}])
def test_parse_time_rejects(bad):
    with pytest.raises(ValueError):
        parse_time(bad)


# --------------------------------------------------------------------------- format


def test_format_from_extension_or_given(tmp_path):
    assert corpus_format("a.TXT") == "txt"
    assert corpus_format("a.json") == corpus_format("a.jsonl") == "jsonl"
    assert corpus_format("a.csv") == "csv" and corpus_format("a.tsv") == "tsv"
    assert corpus_format("a.pq") == corpus_format("a.parquet") == "parquet"
    assert corpus_format("a.data", "csv") == "csv"
    with pytest.raises(ValueError, match="extension"):
        corpus_format("a.data")
    with pytest.raises(ValueError, match="unknown corpus format"):
        corpus_format("a.txt", "xml")


def test_bad_arguments_fail_at_call_time(tmp_path):
    p = write(tmp_path / "a.txt", "x\n")
    with pytest.raises(ValueError, match="user_field"):
        read_corpus(p, user_field="u")
    with pytest.raises(ValueError, match="delimiter"):
        read_corpus(p, delimiter=",")
    with pytest.raises(ValueError, match="delimiter"):
        read_corpus(tmp_path / "a.csv", delimiter='"')
    with pytest.raises(TypeError):
        read_corpus(p, rejects=[])


def test_missing_file_names_it(tmp_path):
    for name in ("none.txt", "none.csv", "none.parquet"):
        with pytest.raises(InputError, match=name):
            list(read_corpus(tmp_path / name))


# --------------------------------------------------------------------------- txt


def test_txt_one_message_per_line(tmp_path):
    p = write(tmp_path / "a.txt", b"\xef\xbb\xbfhello\r\n\nworld \xe2\x80\xa8 x\nlast")
    got = list(read_corpus(p))
    assert got == [
        Message("0", "", "hello", None, 1, ""),
        Message("1", "", "", None, 2, ""),  # an empty line is a message (cleaning drops it)
        Message("2", "", "world \u2028 x", None, 3, ""),  # only "\n" ends a line
        Message("3", "", "last", None, 4, ""),
    ]


def test_txt_invalid_utf8_raises_or_is_rejected(tmp_path):
    p = write(tmp_path / "a.txt", b"ok\nbad \xff here\nfine\n")
    with pytest.raises(InputError) as e:
        list(read_corpus(p))
    assert e.value.line == 2 and "a.txt line 2" in str(e.value) and "UTF-8" in str(e.value)
    rej = RejectList()
    got = list(read_corpus(p, rejects=rej))
    assert [m.text for m in got] == ["ok", "fine"] and [m.id for m in got] == ["0", "2"]
    assert rej.items == [(2, rej.items[0][1], "bad \\xff here")]


def test_txt_streams_with_bounded_memory(tmp_path):
    # 100,000 lines (about 4.5 MB); reading them all must not hold the file in memory.
    p = tmp_path / "big.txt"
    with open(p, "w") as f:
        for i in range(100_000):
            f.write(f"message number {i} of a long file\n")
    tracemalloc.start()
    try:
        n = sum(1 for _ in read_corpus(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 100_000
    assert peak < 1_000_000, peak


# --------------------------------------------------------------------------- jsonl


def test_jsonl_fields(tmp_path):
    lines = [
        {"body": "hi", "who": "ann", "mid": "m1", "at": "2018-05-02T19:38:15Z", "topic": "t"},
        {"body": "yo", "who": 7, "mid": 42, "at": 1525289896, "topic": None},
        {"body": "no time", "who": "bob", "mid": "m3", "at": None, "topic": 3},
    ]
    p = write(tmp_path / "a.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    got = list(read_corpus(p, text_field="body", user_field="who", id_field="mid",
                           time_field="at", label_field="topic"))
    assert got == [
        Message("m1", "ann", "hi", T0, 1, "t"),
        Message("42", "7", "yo", T0 + 1, 2, ""),
        Message("m3", "bob", "no time", None, 3, "3"),
    ]
    # Without the optional fields: id from the line, no user, time or label.
    assert list(read_corpus(p, text_field="body"))[1] == Message("1", "", "yo", None, 2, "")


BAD_JSONL = [
    ('{"text": "ok", "user": "u", "time": 1}', None),
    ("not json", "invalid JSON"),
    ("", "empty line"),
    ("[1, 2]", "expected a JSON object, got an array"),
    ('{"user": "u", "time": 1}', "missing field 'text'"),
    ('{"text": 5, "user": "u", "time": 1}', "field 'text' is a number, not a string"),
    ('{"text": null, "user": "u", "time": 1}', "field 'text' is null, not a string"),
    ('{"text": "x", "time": 1}', "missing user field 'user'"),
    ('{"text": "x", "user": null, "time": 1}', "user field 'user' is null"),
    ('{"text": "x", "user": true, "time": 1}', "user field 'user' is a boolean"),
    ('{"text": "x", "user": "u"}', "missing time field 'time'"),
    ('{"text": "x", "user": "u", "time": "soon"}', "neither a number nor ISO 8601"),
    ('{"text": "x", "user": "u", "time": [1]}', "time is list"),
]


def test_jsonl_bad_records_each_with_its_reason(tmp_path):
    p = write(tmp_path / "b.jsonl", "\n".join(line for line, _ in BAD_JSONL) + "\n")
    kw = {"user_field": "user", "time_field": "time"}
    rej = RejectList()
    got = list(read_corpus(p, rejects=rej, **kw))
    assert [m.line for m in got] == [1]
    assert [n for n, _, _ in rej.items] == list(range(2, len(BAD_JSONL) + 1))
    for (n, reason, raw), (line, expected) in zip(rej.items, BAD_JSONL[1:], strict=True):
        assert expected in reason, (n, reason)
        assert raw == line
    # Accounting: every line is yielded or rejected.
    assert len(got) + len(rej.items) == len(BAD_JSONL)
    # Without a sink, each bad line alone raises, naming the file, the line and the reason.
    for k, (line, expected) in enumerate(BAD_JSONL[1:], 2):
        q = write(tmp_path / f"one{k}.jsonl", BAD_JSONL[0][0] + "\n" + line + "\n")
        with pytest.raises(InputError) as e:
            list(read_corpus(q, **kw))
        assert e.value.line == 2 and expected in e.value.reason
        assert f"one{k}.jsonl line 2: " in str(e.value)


def test_rejects_file_sink(tmp_path):
    p = write(tmp_path / "b.jsonl", '{"text": "a"}\n{"txt": "b"}\n{"text": "c"}\n')
    with Rejects(tmp_path / "rej.jsonl") as rej:
        got = list(read_corpus(p, rejects=rej))
    assert [m.text for m in got] == ["a", "c"] and rej.count == 1
    row = json.loads((tmp_path / "rej.jsonl").read_text())
    assert row == {"line": 2, "reason": "missing field 'text'", "raw": '{"txt": "b"}'}


# --------------------------------------------------------------------------- csv, tsv


def test_csv_quoted_delimiters_quotes_and_newlines(tmp_path):
    p = write(tmp_path / "a.csv", (
        "\ufeffuser,text,when\r\n"
        'ann,"hello, world",2018-05-02T19:38:15Z\r\n'
        'bob,"two\nlines",\r\n'
        'cy,"say ""hi""",1525289897\r\n'
    ))
    got = list(read_corpus(p, user_field="user", time_field="when"))
    assert got == [
        Message("0", "ann", "hello, world", T0, 1, ""),
        Message("1", "bob", "two\nlines", None, 2, ""),  # an empty time is unknown
        Message("2", "cy", 'say "hi"', T0 + 2, 3, ""),  # rows, not physical lines
    ]


def test_csv_bad_rows_each_with_its_reason(tmp_path):
    data = (
        b"text,user,time\n"          # header
        b"ok,u1,1\n"                 # row 1 (line 2)
        b"too,many,1,cols\n"         # row 2
        b"\n"                        # row 3: blank
        b'"bad"quote,u3,1\n'         # row 4: a quote in the wrong place
        b"fine,u4,1\n"               # row 5: reading goes on
        b"bad \xff,u5,1\n"           # row 6: invalid UTF-8
        b"few,u6\n"                  # row 7
        b"t,u7,later\n"              # row 8: bad time
        b'"multi\nline",u8,1\n'      # row 9 (lines 10-11)
        b'"unterminated,u9,1\nx,y,1\n'  # row 10: runs to the end of the file
    )
    p = write(tmp_path / "a.csv", data)
    rej = RejectList()
    got = list(read_corpus(p, user_field="user", time_field="time", rejects=rej))
    assert [(m.line, m.text) for m in got] == [(1, "ok"), (5, "fine"), (9, "multi\nline")]
    assert [m.id for m in got] == ["0", "4", "8"]
    reasons = {n: r for n, r, _ in rej.items}
    assert sorted(reasons) == [2, 3, 4, 6, 7, 8, 10]
    assert reasons[2] == "expected 3 columns, got 4 (line 3)"
    assert reasons[3] == "blank line (line 4)"
    assert reasons[4].startswith("unreadable CSV") and reasons[4].endswith("(line 5)")
    assert reasons[6] == "invalid UTF-8 (line 7)"
    assert reasons[7] == "expected 3 columns, got 2 (line 8)"
    assert "neither a number nor ISO 8601" in reasons[8]
    assert "unreadable CSV" in reasons[10] and "(lines 12-13)" in reasons[10]
    raws = {n: raw for n, _, raw in rej.items}
    assert raws[6] == "bad \\xff,u5,1\n" and raws[2] == "too,many,1,cols\n"
    # Accounting: 10 data rows, each yielded or rejected.
    assert len(got) + len(rej.items) == 10
    with pytest.raises(InputError) as e:
        list(read_corpus(p, user_field="user", time_field="time"))
    assert e.value.line == 2 and e.value.unit == "row" and "a.csv row 2: " in str(e.value)


def test_csv_header_problems_are_file_errors(tmp_path):
    with pytest.raises(InputError, match="no header"):
        list(read_corpus(write(tmp_path / "e.csv", ""), rejects=RejectList()))
    with pytest.raises(InputError, match="no column 'user'"):
        list(read_corpus(write(tmp_path / "m.csv", "text\nx\n"), user_field="user"))
    with pytest.raises(InputError, match="repeated column"):
        list(read_corpus(write(tmp_path / "d.csv", "text,text\nx,y\n")))
    # A header alone is an empty corpus.
    assert list(read_corpus(write(tmp_path / "h.csv", "text\n"))) == []


def test_tsv_and_other_delimiters(tmp_path):
    p = write(tmp_path / "a.tsv", "id\ttext\tlabel\nk1\ta, b\tx\nk2\t\"q\tq\"\ty\n")
    got = list(read_corpus(p, id_field="id", label_field="label"))
    assert got == [Message("k1", "", "a, b", None, 1, "x"), Message("k2", "", "q\tq", None, 2, "y")]
    q = write(tmp_path / "a.txt", "text;user\nhi, there;me\n")
    assert list(read_corpus(q, "csv", user_field="user", delimiter=";")) == [
        Message("0", "me", "hi, there", None, 1, "")]


# --------------------------------------------------------------------------- parquet


def test_parquet_in_batches_with_fields(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from datetime import UTC, datetime

    import data.corpus as corpus

    n = 2 * corpus.PARQUET_BATCH + 5  # three record batches
    texts = [f"t{i}" for i in range(n)]
    texts[corpus.PARQUET_BATCH] = None  # the first row of the second batch
    table = pa.table({
        "msg": pa.array(texts, pa.string()),
        "uid": pa.array([i % 3 for i in range(n)], pa.int64()),
        "ts": pa.array([datetime(2018, 5, 2, 19, 38, 15, tzinfo=UTC)] * n,
                       pa.timestamp("s", tz="UTC")),
    })
    p = tmp_path / "a.parquet"
    pq.write_table(table, p, row_group_size=5000)
    rej = RejectList()
    got = list(read_corpus(p, text_field="msg", user_field="uid", time_field="ts",
                           rejects=rej))
    assert len(got) + len(rej.items) == n and len(rej.items) == 1
    line, reason, raw = rej.items[0]
    assert line == corpus.PARQUET_BATCH + 1 and reason == "field 'msg' is null, not a string"
    assert json.loads(raw)["msg"] is None
    assert got[0] == Message("0", "0", "t0", T0, 1, "")
    last = got[-1]
    assert last == Message(str(n - 1), str((n - 1) % 3), f"t{n - 1}", T0, n, "")
    with pytest.raises(InputError, match=f"a.parquet row {corpus.PARQUET_BATCH + 1}"):
        list(read_corpus(p, text_field="msg"))
    with pytest.raises(InputError, match="no column 'text'"):
        list(read_corpus(p))
    with pytest.raises(InputError, match="not a string"):
        list(read_corpus(p, text_field="uid"))


# --------------------------------------------------------------------------- default corpus


def test_chitchat_slice():
    pytest.importorskip("chitchat_dataset")
    from data.chitchat import iter_messages

    got = list(chitchat_corpus(limit=300))
    raw = list(iter_messages(limit=300, prompt=True))
    assert len(got) == 300
    assert [m.id for m in got] == [r["id"] for r in raw]
    assert [m.user for m in got] == [r["sender"] for r in raw]
    assert [m.text for m in got] == [r["text"] for r in raw]
    assert [m.line for m in got] == list(range(1, 301))
    # The first conversation starts "Hello" at 2018-05-02T19:38:15Z; its prompt is the label.
    assert got[0] == Message(raw[0]["id"], raw[0]["sender"], "Hello", T0, 1,
                             "What's one thing your best friend doesn't know about you?")
    assert all(m.time is not None and m.time > 1.5e9 for m in got)
    assert len({m.label for m in got}) > 1 and len({m.user for m in got}) > 10
    # Within a conversation, time never goes backwards.
    for _, conv in itertools.groupby(got, key=lambda m: m.id.split("/")[0]):
        times = [m.time for m in conv]
        assert times == sorted(times)


def test_open_corpus(tmp_path):
    pytest.importorskip("chitchat_dataset")
    assert list(open_corpus("chitchat", limit=5)) == list(chitchat_corpus(limit=5))
    with pytest.raises(ValueError, match="only `limit`"):
        open_corpus("chitchat", text_field="x")
    p = write(tmp_path / "a.jsonl", '{"body": "x"}\n')
    assert list(open_corpus(str(p), text_field="body")) == [Message("0", "", "x", None, 1, "")]
    with pytest.raises(ValueError, match="default corpus only"):
        open_corpus(p, limit=3)


def test_corpus_stats_add_up():
    ms = [Message(str(i), f"u{i % 4}", "x" * i) for i in range(10)]
    whole = CorpusStats.of(ms)
    assert (whole.messages, whole.chars, whole.n_users) == (10, 45, 4)
    assert CorpusStats.of(ms[:3]) + CorpusStats.of(ms[3:]) == whole
    assert CorpusStats() + whole == whole
