"""Corpora as streams of `Message`s: the default chat corpus, or a text, JSONL, CSV, TSV or
Parquet file with named fields for the text, user, id, time and label.

Readers stream with bounded memory whatever the file's size (lines, rows or Parquet record
batches one at a time), and account for every input record: each line (text, JSONL) or row
(CSV, TSV, Parquet) is either yielded as a `Message` or, when it cannot be read (invalid UTF-8,
invalid JSON, a missing field, a text that is not a string, a time that does not parse, a CSV
row with the wrong number of columns, ...), raises an `InputError` that names the file, the
line or row and the reason; or, when a `rejects` sink is given (anything with
`add(line, reason, raw)`, such as `keyboard_sim.io.Rejects` or `RejectList`), goes there and
reading goes on. Nothing is dropped silently, so `yielded + rejected == records in the file`.

What `Message.line` counts, and so the default id (`str(line - 1)`):
- txt, jsonl: the 1-based physical line of the file (an empty line is a line too);
- csv, tsv: the 1-based data row, the header not counted. A row spans several physical lines
  when a quoted field holds line breaks; errors name the physical lines as well;
- parquet: the 1-based row of the file;
- the default corpus: the 1-based position of the message in corpus order.
Ids therefore do not depend on how a file is later chunked or shared between workers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from data.record import Message
from keyboard_sim.io import InputError

PathLike = str | os.PathLike

FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
EXTENSIONS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "jsonl",
              ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
              ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_CORPUS = "chitchat"
# Rows per Parquet record batch: bounds the memory of a read (about a few MB of short texts).
PARQUET_BATCH = 8192
_BOM = "\ufeff"
_MISSING = object()


class RejectSink(Protocol):
    """Where bad records go: `keyboard_sim.io.Rejects`, `RejectList`, or anything alike."""

    def add(self, line: int, reason: str, raw: str) -> None: ...


# --------------------------------------------------------------------------- time


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_time(value: Any) -> float | None:
    """Seconds since the Unix epoch from a number, a numeric string or an ISO 8601 string.

    Numbers (and strings that are plain decimal numbers) are taken as seconds since the epoch;
    other strings are parsed as ISO 8601 (`datetime.fromisoformat`, e.g.
    "2018-05-02T19:38:15Z", "2018-05-02 19:38:15.5+02:00", "2018-05-02"), a time without an
    offset being taken as UTC so that the result does not depend on the machine's time zone.
    `datetime` objects (Parquet timestamps) are accepted the same way. None and "" mean
    "unknown" and give None.

    Raises:
        ValueError: The value is of another type, not finite, or does not parse.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"time is a boolean ({value!r}), not a number or ISO 8601 string")
    if isinstance(value, int | float):
        t = float(value)
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        if _NUMBER.fullmatch(s):
            t = float(s)
        else:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                raise ValueError(f"time {value!r} is neither a number nor ISO 8601") from None
            return _epoch(dt)
    elif isinstance(value, datetime):
        return _epoch(value)
    else:
        raise ValueError(f"time is {type(value).__name__}, not a number or ISO 8601 string")
    if not math.isfinite(t):
        raise ValueError(f"time {value!r} is not finite")
    return t


def _epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class _Fields:
    text: str
    user: str | None
    id: str | None
    time: str | None
    label: str | None

    def names(self) -> list[str]:
        """Distinct field names to read, text first."""
        out: list[str] = []
        for name in (self.text, self.user, self.id, self.time, self.label):
            if name is not None and name not in out:
                out.append(name)
        return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array",
            dict: "an object", str: "a string"}.get(type(value), type(value).__name__)


def _message(get: Callable[[str], Any], n: int, f: _Fields) -> Message | str:
    """The record's `Message`, or the reason it is bad. `get(name)` is `_MISSING` if absent.

    Rules: the text must be a string; id and user a string or an integer (not null); the
    label a string or an integer, null meaning ""; the time whatever `parse_time` takes. A
    named field missing from the record makes it bad.
    """
    text = get(f.text)
    if text is _MISSING:
        return f"missing field {f.text!r}"
    if not isinstance(text, str):
        return f"field {f.text!r} is {_type_name(text)}, not a string"
    values = {}
    for kind, name in (("id", f.id), ("user", f.user), ("label", f.label)):
        if name is None:
            continue
        v = get(name)
        if v is _MISSING:
            return f"missing {kind} field {name!r}"
        if v is None and kind == "label":
            v = ""
        elif isinstance(v, bool) or not isinstance(v, str | int):
            return f"{kind} field {name!r} is {_type_name(v)}, not a string or integer"
        values[kind] = str(v)
    time = None
    if f.time is not None:
        v = get(f.time)
        if v is _MISSING:
            return f"missing time field {f.time!r}"
        try:
            time = parse_time(v)
        except ValueError as e:
            return f"time field {f.time!r}: {e}"
    return Message(values.get("id", str(n - 1)), values.get("user", ""), text, time, n,
                   values.get("label", ""))


# --------------------------------------------------------------------------- readers


def corpus_format(path: PathLike, fmt: str | None = None) -> str:
    """The format of a corpus file: `fmt` if given, else from the extension (see EXTENSIONS)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown corpus format {fmt!r}; known: {', '.join(FORMATS)}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"cannot tell the format of {path} from its extension (known: "
                         f"{', '.join(sorted(EXTENSIONS))}); give fmt explicitly")
    return EXTENSIONS[ext]


def read_corpus(
    path: PathLike,
    fmt: str | None = None,
    *,
    text_field: str = "text",
    user_field: str | None = None,
    id_field: str | None = None,
    time_field: str | None = None,
    label_field: str | None = None,
    delimiter: str | None = None,
    rejects: RejectSink | None = None,
) -> Iterator[Message]:
    """Streams the messages of a corpus file (see the module docstring for `line` and ids).

    Args:
        path: The file.
        fmt: "txt" (one message per line, no fields), "jsonl" (one JSON object per line),
            "csv" or "tsv" (a header row naming the columns, then one record per row; fields
            that hold the delimiter, quotes or line breaks are quoted as RFC 4180 says), or
            "parquet" (columns by name). By default from the extension.
        text_field, user_field, id_field, time_field, label_field: The field (JSON key, CSV
            column, Parquet column) holding each part of a `Message`; None: not in the file
            (user "", id `str(line - 1)`, time None, label "").
        delimiter: CSV/TSV field delimiter (default "," for csv, a tab for tsv).
        rejects: Sink for bad records (`add(line, reason, raw)`); without it the first bad
            record raises `InputError`.

    Raises:
        ValueError: Bad arguments (at call time): unknown format, fields given for plain text,
            a delimiter for a format without one.
        InputError: While iterating: a bad record (without `rejects`), or a problem with the
            whole file (cannot be opened, no header, a named column missing from the header or
            schema, a text column that is not text).
    """
    fmt = corpus_format(path, fmt)
    f = _Fields(text_field, user_field, id_field, time_field, label_field)
    if fmt == "txt":
        named = [n for n, v in (("user_field", user_field), ("id_field", id_field),
                                ("time_field", time_field), ("label_field", label_field))
                 if v is not None]
        if named:
            raise ValueError(f"plain text has no fields; drop {', '.join(named)}")
    if delimiter is not None:
        if fmt not in ("csv", "tsv"):
            raise ValueError(f"a delimiter applies to csv and tsv only, not {fmt}")
        if len(delimiter) != 1 or delimiter in "\"\r\n":
            raise ValueError(f"delimiter must be one character other than a quote or line "
                             f"break, got {delimiter!r}")
    if rejects is not None and not callable(getattr(rejects, "add", None)):
        raise TypeError("rejects must have an add(line, reason, raw) method")
    if fmt == "txt":
        return _read_txt(path, rejects)
    if fmt == "jsonl":
        return _read_jsonl(path, f, rejects)
    if fmt == "parquet":
        return _read_parquet(path, f, rejects)
    return _read_csv(path, f, delimiter or ("," if fmt == "csv" else "\t"), rejects)


def _bad(path: PathLike, n: int, reason: str, raw: str, sink: RejectSink | None,
         unit: str = "line") -> None:
    if sink is None:
        raise InputError(path, n, reason, unit)
    sink.add(n, reason, raw)


def _open_binary(path: PathLike):
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(path, None, f"cannot open: {e.strerror or e}") from None


def _lines(path: PathLike, sink: RejectSink | None) -> Iterator[tuple[int, str]]:
    """(1-based line, text) for every line that decodes; bad lines go to `sink` or raise.

    Lines end at b"\\n" only (other Unicode line breaks are text); a "\\r" before it is part of
    the break. A UTF-8 byte order mark at the start of the file is dropped. One line at a time,
    so memory is bounded by the longest line.
    """
    with _open_binary(path) as fh:
        for n, raw in enumerate(fh, 1):
            if raw.endswith(b"\n"):
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _bad(path, n, f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start} of "
                     "the line)", raw.decode("utf-8", errors="backslashreplace"), sink)
                continue
            if n == 1 and line.startswith(_BOM):
                line = line[1:]
            yield n, line


def _read_txt(path: PathLike, sink: RejectSink | None) -> Iterator[Message]:
    for n, line in _lines(path, sink):
        yield Message(str(n - 1), "", line, None, n, "")


def _read_jsonl(path: PathLike, f: _Fields, sink: RejectSink | None) -> Iterator[Message]:
    for n, line in _lines(path, sink):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            _bad(path, n, "empty line (not JSON)" if not line.strip() else f"invalid JSON: {e}",
                 line, sink)
            continue
        if not isinstance(obj, dict):
            _bad(path, n, f"expected a JSON object, got {_type_name(obj)}", line, sink)
            continue
        m = _message(lambda k, o=obj: o.get(k, _MISSING), n, f)
        if isinstance(m, str):
            _bad(path, n, m, line, sink)
            continue
        yield m


class _PhysicalLines:
    """The lines of a text file, keeping those read since the last `take()` (a record's raw
    text, for rejects) and counting them (for error messages)."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.count = 0
        self.pending: list[str] = []

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        line = next(self.fh)
        self.count += 1
        self.pending.append(line)
        return line

    def take(self) -> str:
        raw = "".join(self.pending)
        self.pending = []
        return raw


def _read_csv(path: PathLike, f: _Fields, delimiter: str,
              sink: RejectSink | None) -> Iterator[Message]:
    # Decoding with surrogateescape keeps reading past invalid UTF-8; a record that holds any
    # (now a lone surrogate) is then bad, and the others are read as they are.
    try:
        fh = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as e:
        raise InputError(path, None, f"cannot open: {e.strerror or e}") from None
    with fh:
        lines = _PhysicalLines(fh)
        # strict: a quote in the wrong place is an error rather than a silently changed field.
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(path, None, "empty file: no header row") from None
        except csv.Error as e:
            raise InputError(path, 1, f"unreadable header: {e}") from None
        if _has_surrogates(header):
            raise InputError(path, 1, "invalid UTF-8 in the header")
        if len(set(header)) != len(header):
            dups = sorted({h for h in header if header.count(h) > 1})
            raise InputError(path, 1, f"repeated column names in the header: {dups}")
        index = {name: i for i, name in enumerate(header)}
        for name in f.names():
            if name not in index:
                raise InputError(path, None, f"no column {name!r} (columns: {header})")
        ncol = len(header)
        lines.take()
        row = 0
        while True:
            first = lines.count + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                row += 1
                _bad(path, row, f"unreadable CSV ({e}){_where(first, lines.count)}",
                     _utf8_repr(lines.take()), sink, "row")
                continue
            row += 1
            raw = lines.take()
            where = _where(first, lines.count)
            if not values:
                _bad(path, row, f"blank line{where}", raw, sink, "row")
            elif _has_surrogates(values):
                _bad(path, row, f"invalid UTF-8{where}", _utf8_repr(raw), sink, "row")
            elif len(values) != ncol:
                _bad(path, row, f"expected {ncol} columns, got {len(values)}{where}", raw,
                     sink, "row")
            else:
                m = _message(lambda k, v=values: v[index[k]], row, f)
                if isinstance(m, str):
                    _bad(path, row, m + where, raw, sink, "row")
                else:
                    yield m


def _where(first: int, last: int) -> str:
    return f" (line {first})" if first >= last else f" (lines {first}-{last})"


def _has_surrogates(values: list[str]) -> bool:
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _utf8_repr(raw: str) -> str:
    """Text read with surrogateescape, its undecodable bytes shown as \\xNN escapes."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_parquet(path: PathLike, f: _Fields, sink: RejectSink | None) -> Iterator[Message]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet needs pyarrow: pip install 'kbsim[data]'") from None
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(path, None, f"cannot read as Parquet: {e}") from None
    schema = pf.schema_arrow
    names = f.names()
    for name in names:
        if name not in schema.names:
            raise InputError(path, None, f"no column {name!r} (columns: {schema.names})")
    t = schema.field(f.text).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise InputError(path, None, f"column {f.text!r} is {t}, not a string")
    n = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=names):
        cols = {name: batch.column(i).to_pylist() for i, name in enumerate(names)}
        for k in range(batch.num_rows):
            n += 1
            m = _message(lambda name, k=k, c=cols: c[name][k], n, f)
            if isinstance(m, str):
                row = {name: cols[name][k] for name in names}
                _bad(path, n, m, json.dumps(row, default=str, ensure_ascii=False), sink, "row")
                continue
            yield m


# --------------------------------------------------------------------------- the default corpus


def chitchat_corpus(limit: int | None = None) -> Iterator[Message]:
    """The default corpus (BYU Chit-Chat, see `data.chitchat`) as `Message`s.

    user = the sender, time = the timestamp in seconds since the epoch, label = the
    conversation's prompt ("" where it has none), id = "<conversation id>/<n>" as in
    `data.chitchat.iter_messages`, line = the 1-based position in corpus order.

    Args:
        limit: Stop after this many messages (None: all 258,145).
    """
    from data.chitchat import iter_messages

    parse = _iso_cache()
    for n, m in enumerate(iter_messages(limit, prompt=True), 1):
        yield Message(m["id"], m["sender"], m["text"], parse(m["timestamp"]), n, m["prompt"])


def _iso_cache() -> Callable[[str], float | None]:
    """`parse_time` remembering its answers (chat timestamps repeat within a conversation)."""
    seen: dict[str, float | None] = {}

    def parse(s: str) -> float | None:
        t = seen.get(s, _MISSING)
        if t is _MISSING:
            t = seen[s] = parse_time(s)
        return t  # type: ignore[return-value]

    return parse


def open_corpus(spec: str | os.PathLike, **fields: Any) -> Iterator[Message]:
    """The default corpus for the string "chitchat" (keyword: `limit`), else `read_corpus`.

    A `Path` is always a file, so a file that happens to be called "chitchat" is read as
    `Path("chitchat")` (or "./chitchat").
    """
    if isinstance(spec, str) and spec == DEFAULT_CORPUS:
        extra = set(fields) - {"limit"}
        if extra:
            raise ValueError(f"the {DEFAULT_CORPUS} corpus takes only `limit`, not "
                             f"{', '.join(sorted(extra))}")
        return chitchat_corpus(fields.get("limit"))
    if "limit" in fields:
        raise ValueError("limit applies to the default corpus only; slice the stream instead")
    return read_corpus(spec, **fields)


# --------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class CorpusStats:
    """Messages, characters and distinct users of a corpus or a part of one; `a + b` counts
    both parts, so shards add up to the whole exactly."""

    messages: int = 0
    chars: int = 0
    users: frozenset = frozenset()

    @classmethod
    def of(cls, messages: Iterable[Message]) -> CorpusStats:
        n = chars = 0
        users = set()
        for m in messages:
            n += 1
            chars += len(m.text)
            users.add(m.user)
        return cls(n, chars, frozenset(users))

    @property
    def n_users(self) -> int:
        return len(self.users)

    def __add__(self, other: CorpusStats) -> CorpusStats:
        if not isinstance(other, CorpusStats):
            return NotImplemented
        return CorpusStats(self.messages + other.messages, self.chars + other.chars,
                           self.users | other.users)
