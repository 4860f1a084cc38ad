"""Readers, writers and the M2 export of keyboard_sim.io, on small files made here."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyboard_sim.channels import Channel as C
from keyboard_sim.io import (
    WRITE_BEHIND,
    AtomicFile,
    InputError,
    JsonlWriter,
    ParquetWriter,
    Record,
    Rejects,
    atomic_write_text,
    count_records,
    input_format,
    json_line,
    output_format,
    pair_to_m2,
    read_pairs,
    read_records,
    write_jsonl,
    write_m2,
    write_parquet,
)
from keyboard_sim.pair import Edit, Pair, Touch


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _rejects(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- plain text


def test_txt_lines_empty_crlf_and_no_final_newline(tmp_path):
    f = _write(tmp_path / "in.txt", b"hello world\n\nsecond\r\n  spaced  \nlast")
    assert list(read_records(f)) == [
        Record(1, "0", "hello world"),
        Record(2, "1", ""),
        Record(3, "2", "second"),
        Record(4, "3", "  spaced  "),
        Record(5, "4", "last"),
    ]
    assert count_records(f) == 5


def test_txt_splits_on_newline_only_and_drops_leading_bom(tmp_path):
    # U+2028, U+0085, a lone \r and form feed are text inside a message, not line breaks.
    text = "\ufeffa\u2028b\x85c\rd\x0ce\n\U0001f600 caf\u00e9\n"
    f = _write(tmp_path / "in.txt", text.encode("utf-8"))
    assert [r.text for r in read_records(f)] == ["a\u2028b\x85c\rd\x0ce", "\U0001f600 caf\u00e9"]
    assert count_records(f) == 2


def test_txt_empty_file_and_single_newline(tmp_path):
    assert list(read_records(_write(tmp_path / "a.txt", b""))) == []
    assert count_records(tmp_path / "a.txt") == 0
    assert list(read_records(_write(tmp_path / "b.txt", b"\n"))) == [Record(1, "0", "")]
    assert count_records(tmp_path / "b.txt") == 1


def test_txt_invalid_utf8_names_the_line(tmp_path):
    f = _write(tmp_path / "in.txt", b"ok\nalso ok\nbad \xff byte\nfine\n")
    with pytest.raises(InputError) as info:
        list(read_records(f))
    assert info.value.line == 3
    assert "in.txt line 3" in str(info.value)
    assert "invalid UTF-8" in str(info.value)


def test_txt_invalid_utf8_goes_to_rejects_and_ids_stay_line_numbers(tmp_path):
    f = _write(tmp_path / "in.txt", b"ok\nbad \xc3\x28\nfine\n\xed\xa0\x80\n")
    rej = tmp_path / "rejects.jsonl"
    records = list(read_records(f, rejects=rej))
    assert records == [Record(1, "0", "ok"), Record(3, "2", "fine")]
    bad = _rejects(rej)
    assert [b["line"] for b in bad] == [2, 4]  # an encoded surrogate is invalid UTF-8 too
    assert all("invalid UTF-8" in b["reason"] for b in bad)
    assert bad[0]["raw"] == "bad \\xc3("
    # Every line is accounted for: read or rejected.
    assert len(records) + len(bad) == count_records(f)


def test_rejects_path_is_written_only_when_reading_completes(tmp_path):
    f = _write(tmp_path / "in.txt", b"a\n\xff\nb\n")
    done = tmp_path / "done.jsonl"
    assert len(list(read_records(f, rejects=done))) == 2
    assert [b["line"] for b in _rejects(done)] == [2]
    stopped = tmp_path / "stopped.jsonl"
    gen = read_records(f, rejects=stopped)
    next(gen)
    gen.close()  # abandoned half way: no rejects file, no temporary file left
    assert not stopped.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_input_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open"):
        list(read_records(tmp_path / "nope.txt"))


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_fields_and_ids(tmp_path):
    lines = [{"text": "hi", "id": "a"}, {"text": "", "id": 7}, {"text": "\ud83d", "id": "c"}]
    f = _write(tmp_path / "in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    assert list(read_records(f)) == [Record(1, "0", "hi"), Record(2, "1", ""),
                                     Record(3, "2", "\ud83d")]
    assert [r.id for r in read_records(f, id_field="id")] == ["a", "7", "c"]


def test_jsonl_custom_text_field(tmp_path):
    f = _write(tmp_path / "in.json", b'{"message": "yo", "text": 3}\n')
    assert list(read_records(f, text_field="message")) == [Record(1, "0", "yo")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"text": "unterminated}', "invalid JSON"),
        (b'{"txt": "typo in the field name"}', "missing field 'text'"),
        (b'{"text": 42}', "field 'text' is a number, not a string"),
        (b'{"text": null}', "field 'text' is null, not a string"),
        (b'["text"]', "expected a JSON object, got list"),
        (b"", "empty line"),
    ],
)
def test_jsonl_bad_line_raises_with_line_and_reason(tmp_path, line, reason):
    f = _write(tmp_path / "in.jsonl", b'{"text": "first"}\n' + line + b'\n{"text": "after"}\n')
    with pytest.raises(InputError) as info:
        list(read_records(f))
    assert info.value.line == 2
    assert reason in str(info.value)
    assert str(f) in str(info.value)


def test_jsonl_bad_lines_go_to_rejects(tmp_path):
    f = _write(
        tmp_path / "in.jsonl",
        b'{"text": "a", "id": "x"}\n'
        b"not json\n"
        b'{"text": "b"}\n'
        b'{"text": "c", "id": [1]}\n'
        b'{"text": "d\xff", "id": "y"}\n'
        b'{"text": "e", "id": "z"}\n',
    )
    rej = tmp_path / "rej.jsonl"
    with Rejects(rej) as sink:
        records = list(read_records(f, id_field="id", rejects=sink))
    assert records == [Record(1, "x", "a"), Record(6, "z", "e")]
    bad = _rejects(rej)
    assert [b["line"] for b in bad] == [2, 3, 4, 5]
    assert bad[0]["raw"] == "not json"
    assert "missing id field 'id'" in bad[1]["reason"]
    assert "an array" in bad[2]["reason"]
    assert "invalid UTF-8" in bad[3]["reason"]
    assert sink.count == 4
    assert len(records) + len(bad) == count_records(f) == 6


# ----------------------------------------------------------------------------- Parquet


def _pairs() -> list[Pair]:
    return [
        Pair("0", "hello world", "helo world", (Edit(C.OMISSION, 2, 3, 2, 2),),
             (Touch(10.5, 3.25, "h"), Touch(2.0, 1.0, "e"))),
        Pair("1", "", "", (), ()),
        Pair("2", "caf\u00e9 \U0001f600", "cafe \U0001f600",
             (Edit(C.SIMPLIFY_ACCENT, 3, 4, 3, 4), Edit(C.PASSTHROUGH, 5, 6, 5, 6)),
             (Touch(0.0, 0.0, "c"),)),
    ]


def test_parquet_round_trip(tmp_path):
    pairs = _pairs()
    out = tmp_path / "pairs.parquet"
    assert write_parquet(pairs, out, touches=True, batch_size=2) == 3
    back = list(read_pairs(out))
    assert [(p.id, p.clean, p.noisy, p.edits) for p in back] == \
        [(p.id, p.clean, p.noisy, p.edits) for p in pairs]
    assert back[0].touches == pairs[0].touches  # these coordinates are exact in float32
    no_touch = tmp_path / "plain.parquet"
    write_parquet(pairs, no_touch)
    import pyarrow.parquet as pq

    assert pq.read_schema(no_touch).names == ["id", "clean", "noisy", "edits"]
    assert pq.read_schema(out).names == ["id", "clean", "noisy", "edits", "touches"]
    assert [p.touches for p in read_pairs(no_touch)] == [None, None, None]


def test_parquet_bytes_do_not_depend_on_batching(tmp_path):
    pairs = _pairs() * 7
    outs = []
    for batch in (1, 4, 100):
        out = tmp_path / f"b{batch}.parquet"
        with ParquetWriter(out, row_group_size=5) as w:
            for i in range(0, len(pairs), batch):
                w.write_pairs(pairs[i:i + batch])
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_parquet_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["one", None, "", "four"], "uid": [10, 11, 12, 13],
                             "n": [1, 2, 3, 4]}), f)
    with pytest.raises(InputError, match="row 2: column 'text' is null"):
        list(read_records(f))
    rej = tmp_path / "rej.jsonl"
    assert list(read_records(f, id_field="uid", rejects=rej)) == [
        Record(1, "10", "one"), Record(3, "12", ""), Record(4, "13", "four")]
    assert [b["line"] for b in _rejects(rej)] == [2]
    assert count_records(f) == 4
    with pytest.raises(InputError, match="no column 'body'"):
        list(read_records(f, text_field="body"))
    with pytest.raises(InputError, match="column 'n' is int64, not a string"):
        list(read_records(f, text_field="n"))


def test_parquet_drops_lone_surrogates_that_arrow_cannot_hold(tmp_path):
    out = tmp_path / "s.parquet"
    write_parquet([Pair("0", "a\udc80", "a\udc80", ())], out)
    assert next(read_pairs(out)).clean == "a?"


# ----------------------------------------------------------------------------- JSONL out


def test_jsonl_writer_round_trip_and_lone_surrogates(tmp_path):
    pairs = _pairs() + [Pair("3", "x\ud800y", "x\ud800y", ())]
    out = tmp_path / "pairs.jsonl"
    assert write_jsonl(pairs, out) == 4
    raw = out.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    lines = raw.split(b"\n")
    assert "caf\u00e9".encode() in lines[2]  # non-ASCII kept as is...
    assert b"\\ud800" in lines[3]  # ...except on the line that cannot be UTF-8
    back = list(read_pairs(out))
    assert [p.clean for p in back] == [p.clean for p in pairs]
    assert json.loads(lines[0]) == pairs[0].to_dict()


def test_json_line_is_one_line():
    line = json_line({"text": "a\nb\u2028c"})
    assert line.endswith("\n") and line.count("\n") == 1


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with JsonlWriter(target) as w:
            w.write(_pairs()[0])
            raise RuntimeError("crash half way")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "profile.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with AtomicFile(target) as af:
            af.file.write("new, but not finished")
            raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]


def test_atomic_write_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "deep" / "er" / "x.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_behind_keeps_the_bytes_and_the_atomicity(tmp_path, monkeypatch):
    calls = []
    if hasattr(os, "posix_fadvise"):
        real = os.posix_fadvise
        monkeypatch.setattr(os, "posix_fadvise", lambda *a: (calls.append(a[1:3]), real(*a)))
    target = tmp_path / "out.bin"
    with AtomicFile(target, "wb") as af:
        af.file.write(b"a" * 100)
        af.write_behind(at_least=1000)  # not enough new bytes yet
        af.file.write(b"b" * 2000)
        af.write_behind(at_least=1000)
        af.file.write(b"c" * 10)
        af.write_behind()
        af.write_behind()  # nothing new
        assert not target.exists()
    assert target.read_bytes() == b"a" * 100 + b"b" * 2000 + b"c" * 10
    if hasattr(os, "posix_fadvise"):
        assert calls == [(0, 2100), (2100, 10)]  # each byte range handed over once


def test_a_large_jsonl_output_is_written_behind_and_whole(tmp_path):
    pairs = _pairs()
    line_bytes = b"".join(json_line(p.to_dict()).encode() for p in pairs)
    target = tmp_path / "out.jsonl"
    repeats = (3 << 20) // len(line_bytes) + 1  # > 3 MiB: write-behind runs
    with JsonlWriter(target) as w:
        for _ in range(repeats):
            w.write_bytes(line_bytes, len(pairs))
        behind = w._af._behind
    total = len(line_bytes) * repeats
    if hasattr(os, "posix_fadvise"):  # all but the last MiB or less handed to the disk
        assert total - WRITE_BEHIND <= behind <= total
    assert target.read_bytes() == line_bytes * repeats


def test_parquet_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ParquetWriter(tmp_path / "p.parquet") as w:
            w.write_pairs(_pairs())
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- formats


def test_formats_from_extension():
    assert input_format("a.TXT") == "txt"
    assert input_format("a.json") == "jsonl"
    assert input_format("a.parquet") == "parquet"
    assert input_format("a.csv", "txt") == "txt"
    assert output_format("b.jsonl") == "jsonl"
    assert output_format("b.pq") == "parquet"
    with pytest.raises(ValueError, match="extension"):
        input_format("a.csv")
    with pytest.raises(ValueError, match="extension"):
        output_format("b.txt")
    with pytest.raises(ValueError, match="unknown output format"):
        output_format("b.jsonl", "csv")


# ----------------------------------------------------------------------------- M2


def _m2(pair: Pair) -> list[str]:
    assert pair.is_consistent()
    block = pair_to_m2(pair)
    assert block.endswith("\n\n")
    return block[:-2].split("\n")


A = "|||REQUIRED|||-NONE-|||0"


def test_m2_edits_within_words():
    p = Pair("0", "Dont go, ok", "dont go ok",
             (Edit(C.DROP_CAPITAL, 0, 1, 0, 1), Edit(C.DROP_PUNCTUATION, 7, 8, 7, 7)))
    assert _m2(p) == ["S dont go ok", f"A 0 1|||drop_capital|||Dont{A}",
                      f"A 1 2|||drop_punctuation|||go,{A}"]


def test_m2_space_errors_merge_and_split_tokens():
    merged = Pair("0", "see you soon", "see yousoon", (Edit(C.SPACE_OMISSION, 7, 8, 7, 7),))
    assert _m2(merged) == ["S see yousoon", f"A 1 2|||space_omission|||you soon{A}"]
    # The clean "l" was typed as a space: the edit covers both halves of the split word.
    split = Pair("1", "hello there", "he lo there", (Edit(C.SPACE_INSERTION, 2, 3, 2, 3),))
    assert _m2(split) == ["S he lo there", f"A 0 2|||space_insertion|||hello{A}"]
    sub = Pair("2", "a cat", "avcat", (Edit(C.SPACE_SUBSTITUTION, 1, 2, 1, 2),))
    assert _m2(sub) == ["S avcat", f"A 0 1|||space_substitution|||a cat{A}"]


def test_m2_edits_on_one_word_become_one_edit():
    p = Pair("0", "weather is", "waether si",
             (Edit(C.TRANSPOSITION, 1, 3, 1, 3), Edit(C.TRANSPOSITION, 8, 10, 8, 10)))
    assert _m2(p) == ["S waether si", f"A 0 1|||transposition|||weather{A}",
                      f"A 1 2|||transposition|||is{A}"]
    p = Pair("1", "hello", "hrlo",
             (Edit(C.SUBSTITUTION, 1, 2, 1, 2), Edit(C.OMISSION, 3, 4, 3, 3)))
    assert _m2(p) == ["S hrlo", f"A 0 1|||substitution+omission|||hello{A}"]


def test_m2_deletion_and_insertion_of_whole_words():
    # A doubled word in the noisy text: correcting it deletes a token (empty correction).
    p = Pair("0", "a b", "a a b", (Edit(C.DOUBLE_TAP, 1, 1, 1, 3),))
    assert _m2(p) == ["S a a b", f"A 1 2|||double_tap|||{A}"]
    gone = Pair("1", "x", "", (Edit(C.OMISSION, 0, 1, 0, 0),))
    assert _m2(gone) == ["S ", f"A 0 0|||omission|||x{A}"]


def test_m2_no_errors_and_passthrough_are_noop():
    noop = f"A -1 -1|||noop|||-NONE-{A}"
    assert _m2(Pair("0", "all good", "all good", ())) == ["S all good", noop]
    emoji = Pair("1", "ok \U0001f600", "ok \U0001f600", (Edit(C.PASSTHROUGH, 3, 4, 3, 4),))
    assert _m2(emoji) == ["S ok \U0001f600", noop]
    assert _m2(Pair("2", "", "", ())) == ["S ", noop]


def test_m2_offsets_after_earlier_edits_and_passthrough():
    # The shift from an earlier length-changing edit and an emoji must not misplace later ones.
    p = Pair("0", "I'm \U0001f600 here now", "Im \U0001f600 hre now",
             (Edit(C.DROP_APOSTROPHE, 1, 2, 1, 1), Edit(C.PASSTHROUGH, 4, 5, 3, 4),
              Edit(C.OMISSION, 7, 8, 6, 6)))
    assert _m2(p) == ["S Im \U0001f600 hre now", f"A 0 1|||drop_apostrophe|||I'm{A}",
                      f"A 2 3|||omission|||here{A}"]


def test_m2_letters_typed_as_spaces_inside_a_word():
    # Found in simulated chat: two letters of "ain't" typed as spaces leave a double space;
    # the M2 edit must span both halves, or applying it would not give the clean words.
    p = Pair("0", "You ain't wrong", "you ai  t wrong",
             (Edit(C.DROP_CAPITAL, 0, 1, 0, 1), Edit(C.SPACE_INSERTION, 6, 7, 6, 7),
              Edit(C.SPACE_INSERTION, 7, 8, 7, 8)))
    assert _m2(p) == ["S you ai t wrong", f"A 0 1|||drop_capital|||You{A}",
                      f"A 1 3|||space_insertion|||ain't{A}"]
    # A tap that typed nothing, then a letter typed as a space, then an omission.
    p = Pair("1", "so actually", "so  ually",
             (Edit(C.SUBSTITUTION, 3, 4, 3, 3), Edit(C.SPACE_INSERTION, 4, 5, 3, 4),
              Edit(C.OMISSION, 5, 6, 4, 4)))
    assert _m2(p) == ["S so ually", f"A 1 2|||substitution+space_insertion+omission|||actually{A}"]


def _apply_m2(block: str) -> list[str]:
    """The source tokens with the block's edits applied (what a GEC scorer reconstructs)."""
    lines = block.rstrip("\n").split("\n")
    source = lines[0][2:].split()
    out, pos = [], 0
    for line in lines[1:]:
        span, _type, correction = line[2:].split("|||")[:3]
        start, end = map(int, span.split())
        if start == -1:
            continue
        assert pos <= start <= end <= len(source)
        out += source[pos:start] + correction.split()
        pos = end
    return out + source[pos:]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab c'.\u00e9\U0001f600\t", max_size=25), min_size=1,
                max_size=6), st.integers(0, 2**31))
def test_m2_edits_rebuild_the_clean_tokens(texts, seed):
    """On real simulator output (a heavy-handed typist, every channel on), applying the M2
    edits to the noisy tokens gives the clean tokens exactly."""
    from keyboard_sim.profile import load_profile
    from keyboard_sim.simulate import simulate

    clumsy = load_profile("raw").with_rates(space_insertion=0.3, space_omission=0.3,
                                            omission=0.2, double_tap=0.2)
    for pair in simulate(texts, clumsy, "en-US", seed):
        assert _apply_m2(pair_to_m2(pair)) == pair.clean.split()


def test_write_m2_file(tmp_path):
    out = tmp_path / "pairs.m2"
    assert write_m2(_pairs(), out) == 3
    text = out.read_text(encoding="utf-8")
    assert text.count("\n\nS ") == 2 and text.startswith("S helo world\n")
    assert "A 0 1|||omission|||hello" + A in text


def test_fast_jsonl_lines_equal_the_dict_encoding():
    from keyboard_sim import simulate
    from keyboard_sim.io import json_line, pairs_to_jsonl_bytes

    texts = ['a"b\\c\t\x01 é 😀', "Hello there, ok?", "", "\ud800 lone surrogate"]
    for touches in (False, True):
        pairs = simulate(texts * 5, "raw", seed=1, touches=touches)
        want = "".join(json_line(p.to_dict()) for p in pairs).encode("utf-8")
        assert pairs_to_jsonl_bytes(pairs) == want
        clean = [p for p in pairs if "\ud800" not in p.clean]
        want = "".join(json_line(p.to_dict()) for p in clean).encode("utf-8")
        assert pairs_to_jsonl_bytes(clean) == want


def test_line_blocks_cover_the_file_in_whole_lines():
    import io as _io
    import random

    from keyboard_sim.io import _line_blocks

    rng = random.Random(1)
    for _ in range(500):
        data = bytes(rng.choice(b"ab\n\r") for _ in range(rng.randint(0, 40)))
        blocks = list(_line_blocks(_io.BytesIO(data), rng.randint(1, 8)))
        assert b"".join(blocks) == data
        assert all(b.endswith(b"\n") for b in blocks[:-1]) and all(blocks)


def test_read_chunks_equals_grouped_records(tmp_path):
    from keyboard_sim.io import Rejects, read_chunks, read_records

    f = tmp_path / "in.txt"
    f.write_bytes(b"a\r\nb\n\xff bad\n\nc\r\n" * 7 + b"last")
    for size in (1, 2, 5, 100):
        rej1, rej2 = tmp_path / f"r1-{size}.jsonl", tmp_path / f"r2-{size}.jsonl"
        with Rejects(rej1) as s1:
            recs = list(read_records(f, rejects=s1))
        with Rejects(rej2) as s2:
            chunks = list(read_chunks(f, size, rejects=s2))
        assert [t for c in chunks for t in c[0]] == [r.text for r in recs]
        assert [i for c in chunks for i in c[1]] == [r.id for r in recs]
        assert all(len(c[0]) <= size for c in chunks)
        assert [c[2] for c in chunks][-1] == recs[-1].line
        assert rej1.read_bytes() == rej2.read_bytes()
