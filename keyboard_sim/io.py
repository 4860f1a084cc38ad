"""Reading clean texts and writing simulated pairs: streaming, atomic, and nothing lost.

Readers yield one `Record` per input line (or Parquet row) and account for every one of them:
a line that cannot be read (invalid UTF-8, bad JSON, a missing or non-string field) raises an
`InputError` naming the file, the line and the reason, or, when a rejects file is given, is
written there with its reason and reading goes on. A record's default id is its 0-based line
number, so ids do not depend on how the input is later chunked or shared between workers.

Writers are atomic (a temporary file in the same folder, fsynced, then `os.replace`), so a run
that fails half way leaves no partial output behind, and streaming (bounded memory).

Formats: plain text (one message per line), JSONL, Parquet (pyarrow, imported only when used)
and an M2 edit file (the format of the CoNLL-2014 and BEA-2019 grammatical error correction
shared tasks) for GEC tools.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from keyboard_sim.channels import Channel
from keyboard_sim.pair import Pair

PathLike = str | os.PathLike

INPUT_FORMATS = ("txt", "jsonl", "parquet")
OUTPUT_FORMATS = ("jsonl", "parquet")
_INPUT_EXTENSIONS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "jsonl",
                     ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_OUTPUT_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
                      ".parquet": "parquet", ".pq": "parquet"}
_BOM = "\ufeff"
# Rows per Parquet row group. Fixed, so that the file's bytes do not depend on the chunk size
# or the number of workers that produced the rows.
PARQUET_ROW_GROUP = 32768
_PARQUET_READ_BATCH = 8192


class InputError(ValueError):
    """A bad input file or record. The message names the file, the line and the reason."""

    def __init__(self, path: PathLike, line: int | None, reason: str, unit: str = "line") -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.unit = unit
        where = f"{self.path} {unit} {line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # so that it crosses process boundaries intact
        return (InputError, (self.path, self.line, self.reason, self.unit))


class Record(NamedTuple):
    """One input message. `line` is 1-based (line or row number); `id` defaults to line - 1."""

    line: int
    id: str
    text: str


# --------------------------------------------------------------------------- atomic writing


class AtomicFile:
    """A temporary file beside `path` that replaces `path` in one step on `commit()`.

    The file is flushed and fsynced before `os.replace`, so readers see either the old file or
    the complete new one. `abort()` (or an exception inside a `with` block) removes the
    temporary file and leaves `path` as it was. The parent folder is created if missing.

    Args:
        path: Final path.
        mode: "w" (text) or "wb" (binary).
        encoding: Text encoding (text mode only).
        newline: Passed to `open` in text mode; "" writes "\\n" as is on every platform.
    """

    def __init__(self, path: PathLike, mode: str = "w", encoding: str = "utf-8",
                 newline: str | None = "") -> None:
        if mode not in ("w", "wb"):
            raise ValueError(f"AtomicFile mode must be 'w' or 'wb', got {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                        dir=self.path.parent)
        try:
            if mode == "wb":
                self.file: IO[Any] = os.fdopen(fd, "wb")
            else:
                self.file = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        self.done = False
        self._behind = 0  # bytes already handed to the disk by `write_behind`

    def write_behind(self, at_least: int = 0) -> None:
        """Starts writing what the file holds so far to disk, without waiting for it, so
        that the fsync in `commit` has less left to do (the 7 MB output of the simulator
        benchmark, written behind every MiB: 8.7 ms of fsync at the end became 3.8 ms). Does
        nothing until more than `at_least` new bytes are there, nor where the platform has no
        `posix_fadvise` (its DONTNEED starts the writeback of the range on Linux; the pages
        stay cached while they are dirty)."""
        if self.done or not hasattr(os, "posix_fadvise"):
            return
        self.file.flush()
        fd = self.file.fileno()
        end = os.lseek(fd, 0, os.SEEK_CUR)
        if end - self._behind <= max(at_least, 0):
            return
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, self._behind, end - self._behind, os.POSIX_FADV_DONTNEED)
        self._behind = end

    def commit(self) -> None:
        """Flushes, fsyncs and moves the file into place."""
        if self.done:
            return
        self.done = True
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            # mkstemp makes 0600 files; give the output what a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        except BaseException:
            self._remove()
            raise

    def abort(self) -> None:
        """Drops the temporary file; `path` is untouched."""
        if not self.done:
            self.done = True
            self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """`with atomic_writer(path) as f:` writes `f` to `path` atomically (see `AtomicFile`)."""
    with AtomicFile(path, mode, encoding) as af:
        yield af.file


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Writes `text` to `path` atomically (all of it or, on error, nothing)."""
    with atomic_writer(path, "w", encoding=encoding) as f:
        f.write(text)


# --------------------------------------------------------------------------- rejects


class _AtomicWriter:
    """A file written through an `AtomicFile`: `close()` (or leaving a `with` block normally)
    puts it in place, `abort()` (or an exception) drops it. Subclasses write to `self._f`."""

    def __init__(self, path: PathLike, mode: str) -> None:
        self.path = Path(path)
        self.count = 0
        self._af = AtomicFile(self.path, mode)
        self._f = self._af.file

    def close(self) -> None:
        """Finishes the file and moves it into place."""
        self._af.commit()

    def abort(self) -> None:
        """Drops the temporary file; nothing is written at `path`."""
        self._af.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Rejects(_AtomicWriter):
    """A JSONL file of records that could not be read: {"line": n, "reason": ..., "raw": ...}.

    Written atomically: `close()` (or leaving the `with` block normally) puts the file in place;
    `abort()` (or an exception) drops it. `count` is the number of records set aside.
    """

    def __init__(self, path: PathLike) -> None:
        super().__init__(path, "w")

    def add(self, line: int, reason: str, raw: str) -> None:
        """Sets one bad record aside."""
        if self._f is None:
            raise ValueError(f"rejects file {self.path} is already closed")
        self._f.write(json_line({"line": line, "reason": reason, "raw": raw}))
        self.count += 1

    def close(self) -> None:
        self._f = None
        super().close()

    def abort(self) -> None:
        self._f = None
        super().abort()


# --------------------------------------------------------------------------- readers


def _format(path: PathLike, fmt: str | None, side: str, known: tuple, extensions: dict) -> str:
    if fmt is not None:
        if fmt not in known:
            raise ValueError(f"unknown {side} format {fmt!r}; known: {', '.join(known)}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in extensions:
        raise ValueError(
            f"cannot tell the {side} format of {path} from its extension "
            f"(known: {', '.join(sorted(extensions))}); give it explicitly"
        )
    return extensions[ext]


def input_format(path: PathLike, fmt: str | None = None) -> str:
    """The input format: `fmt` if given, else from the file's extension."""
    return _format(path, fmt, "input", INPUT_FORMATS, _INPUT_EXTENSIONS)


def output_format(path: PathLike, fmt: str | None = None) -> str:
    """The output format: `fmt` if given, else from the file's extension."""
    return _format(path, fmt, "output", OUTPUT_FORMATS, _OUTPUT_EXTENSIONS)


def read_records(
    path: PathLike,
    fmt: str | None = None,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    rejects: Rejects | PathLike | None = None,
) -> Iterator[Record]:
    """Streams the messages of a text, JSONL or Parquet file, one `Record` each.

    Args:
        path: Input file.
        fmt: "txt", "jsonl" or "parquet"; by default from the extension (.json is read as JSONL).
        text_field: Field (JSONL) or column (Parquet) holding the text.
        id_field: Field or column holding the record id (default: the 0-based line number).
        rejects: Where bad records go: a `Rejects` (the caller closes it) or a path (written
            when the iteration ends normally, discarded if it fails). Without it the first bad
            record raises `InputError`.

    Raises:
        InputError: A bad record (without `rejects`), or a problem with the whole file (it
            cannot be opened, a Parquet column is missing or not text).
    """
    fmt = input_format(path, fmt)
    own = rejects is not None and not isinstance(rejects, Rejects)
    sink = Rejects(rejects) if own else rejects
    try:
        if fmt == "txt":
            if id_field is not None:
                raise InputError(path, None, "plain text input has no fields; drop the id field")
            yield from _read_txt(path, sink)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, text_field, id_field, sink)
        else:
            yield from _read_parquet(path, text_field, id_field, sink)
    except BaseException:
        if own:
            sink.abort()
        raise
    if own:
        sink.close()


def read_chunks(
    path: PathLike,
    size: int,
    fmt: str | None = None,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    rejects: Rejects | None = None,
) -> Iterator[tuple[list[str], list[str], int]]:
    """`read_records` grouped: (texts, ids, last line number) for up to `size` records each.

    Plain text is cut from whole blocks of lines without a record object per line (what a
    parallel job's parent does for every record, so it stays cheap).
    """
    fmt = input_format(path, fmt)
    texts: list[str] = []
    ids: list[str] = []
    last = 0
    if fmt == "txt":
        if id_field is not None:
            raise InputError(path, None, "plain text input has no fields; drop the id field")
        for numbers, lines in _line_batches(path, rejects):
            start = 0
            while start < len(lines):
                take = min(size - len(texts), len(lines) - start)
                nums = numbers[start : start + take]
                texts += lines[start : start + take]
                ids += [str(k - 1) for k in nums] if not isinstance(nums, range) else list(
                    map(str, range(nums.start - 1, nums.stop - 1)))
                last = nums[-1]
                start += take
                if len(texts) >= size:
                    yield texts, ids, last
                    texts, ids = [], []
    else:
        for r in read_records(path, fmt, text_field=text_field, id_field=id_field,
                              rejects=rejects):
            texts.append(r.text)
            ids.append(r.id)
            last = r.line
            if len(texts) >= size:
                yield texts, ids, last
                texts, ids = [], []
    if texts:
        yield texts, ids, last


class RejectList:
    """Bad records kept in memory (a worker's `Rejects`), replayed into a real one later."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []

    def add(self, line: int, reason: str, raw: str) -> None:
        self.items.append((line, reason, raw))


def line_ranges(path: PathLike, lines_per_range: int,
                block_size: int = 1 << 22) -> Iterator[tuple[int, int, int, int]]:
    """Splits a text or JSONL file into (start byte, end byte, first line, last line) ranges
    of `lines_per_range` whole lines (the last range may be shorter), for workers that read
    their own part of the input."""
    import numpy as np

    if lines_per_range < 1:
        raise ValueError("lines_per_range must be >= 1")
    start = 0  # byte where the current range starts
    first = 1  # its first line
    pending = 0  # lines counted in the current range so far
    offset = 0  # file offset of the block
    with _open_binary(path) as f:
        while block := f.read(block_size):
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset + 1
            i = lines_per_range - pending - 1
            while i < len(ends):
                end = int(ends[i])
                yield start, end, first, first + lines_per_range - 1
                start, first = end, first + lines_per_range
                i += lines_per_range
            pending = (pending + len(ends)) % lines_per_range
            offset += len(block)
    if offset > start:  # lines after the last full range (the last one maybe unterminated)
        size = offset - start
        with _open_binary(path) as f:
            f.seek(start)
            tail = f.read(size)
        n = tail.count(b"\n") + (not tail.endswith(b"\n"))
        yield start, offset, first, first + n - 1


def read_range(path: PathLike, fmt: str, start: int, end: int, first_line: int, *,
               text_field: str = "text", id_field: str | None = None,
               rejects=None) -> tuple[list[str], list[str]]:
    """(texts, ids) of the whole lines in bytes [start, end) of a text or JSONL file whose
    first line is `first_line`; bad records go to `rejects` (anything with `add`) or raise."""
    with _open_binary(path) as f:
        f.seek(start)
        block = f.read(end - start)
    batches = _decode_block(block, first_line, path, rejects)
    if fmt == "txt":
        texts: list[str] = []
        ids: list[str] = []
        for numbers, lines in batches:
            texts += lines
            ids += [str(k - 1) for k in numbers]
        return texts, ids
    numbered = ((n, line) for numbers, lines in batches
                for n, line in zip(numbers, lines, strict=True))
    texts, ids = [], []
    for r in _jsonl_records(numbered, path, text_field, id_field, rejects):
        texts.append(r.text)
        ids.append(r.id)
    return texts, ids


def read_texts(path: PathLike, fmt: str | None = None, **kwargs: Any) -> Iterator[str]:
    """The texts alone of `read_records` (same arguments)."""
    for record in read_records(path, fmt, **kwargs):
        yield record.text


def count_records(path: PathLike, fmt: str | None = None) -> int:
    """Number of lines (text, JSONL) or rows (Parquet): what a reader will account for.

    Cheap: counts newlines in large blocks, or reads the Parquet footer.
    """
    fmt = input_format(path, fmt)
    if fmt == "parquet":
        pq = _pyarrow_parquet()
        return pq.ParquetFile(path).metadata.num_rows
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _open_binary(path: PathLike) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(path, None, f"cannot open: {e.strerror or e}") from None


def _line_batches(path: PathLike, sink: Rejects | None):
    """(line numbers, lines) batches covering the file; rejected lines are left out.

    A block that decodes whole is one batch with a range of line numbers (the common case);
    otherwise its lines come one by one. See `_iter_lines` for the rules.
    """
    n = 0
    with _open_binary(path) as f:
        for block in _line_blocks(f):
            first = n + 1
            n += block.count(b"\n") + (not block.endswith(b"\n"))
            yield from _decode_block(block, first, path, sink)


def _decode_block(block: bytes, first: int, path: PathLike, sink):
    """The lines of `block` (whole lines of a file, the first being line `first`) as batches.

    `sink` is anything with `add(line, reason, raw)` (a `Rejects`, or a `RejectList` in a
    worker process), or None to raise `InputError` on the first bad line.
    """
    raws = block.split(b"\n")
    ends_nl = raws[-1] == b""
    if ends_nl:
        raws.pop()  # the block ends with a newline: no line after it
    # Only a "\r" right before a "\n" is part of the line break.
    crlf = [r.endswith(b"\r") for r in raws] if b"\r" in block else None
    if crlf is not None and not ends_nl:
        crlf[-1] = False
    try:
        # Fast path: the whole block is valid UTF-8 (a split on "\n" then matches the split of
        # the bytes, as UTF-8 never uses the byte 0x0a inside a character).
        lines = block.decode("utf-8").split("\n")
        if ends_nl:
            lines.pop()
        if crlf is not None:
            lines = [x[:-1] if c else x for x, c in zip(lines, crlf, strict=True)]
        if first == 1 and lines and lines[0].startswith(_BOM):
            lines[0] = lines[0][1:]
        yield range(first, first + len(lines)), lines
        return
    except UnicodeDecodeError:
        pass
    # Slow path, line by line (one-line batches keep rejects in line order with the consumer's
    # own).
    for i, raw in enumerate(raws):
        line_no = first + i
        if crlf is not None and crlf[i]:
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start} of the line)"
            if sink is None:
                raise InputError(path, line_no, reason) from None
            sink.add(line_no, reason, raw.decode("utf-8", errors="backslashreplace"))
            continue
        if line_no == 1 and line.startswith(_BOM):
            line = line[1:]
        yield [line_no], [line]


def _iter_lines(path: PathLike, sink: Rejects | None) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) with only the trailing "\\n" or "\\r\\n" removed.

    The file is split on b"\\n" alone (not on other Unicode line breaks, which are text) and
    each line is decoded on its own, so invalid UTF-8 is caught on the line where it occurs.
    A UTF-8 byte order mark at the very start is dropped.
    """
    for numbers, lines in _line_batches(path, sink):
        yield from zip(numbers, lines, strict=True)


def _line_blocks(f, size: int = 1 << 20) -> Iterator[bytes]:
    """The file in blocks of whole lines (each ends with b"\n", except perhaps the last)."""
    rest = b""
    while True:
        data = f.read(size)
        if not data:
            if rest:
                yield rest
            return
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        yield data[:cut]
        rest = data[cut:]


def _read_txt(path: PathLike, sink: Rejects | None) -> Iterator[Record]:
    for n, line in _iter_lines(path, sink):
        yield Record(n, str(n - 1), line)


def _read_jsonl(path: PathLike, text_field: str, id_field: str | None,
                sink: Rejects | None) -> Iterator[Record]:
    yield from _jsonl_records(_iter_lines(path, sink), path, text_field, id_field, sink)


def _jsonl_records(numbered_lines, path: PathLike, text_field: str, id_field: str | None,
                   sink) -> Iterator[Record]:
    for n, line in numbered_lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            reason = "empty line (not JSON)" if not line.strip() else f"invalid JSON: {e}"
            _bad(path, n, reason, line, sink)
            continue
        if not isinstance(obj, dict):
            _bad(path, n, f"expected a JSON object, got {type(obj).__name__}", line, sink)
            continue
        text = obj.get(text_field, _MISSING)
        if text is _MISSING:
            _bad(path, n, f"missing field {text_field!r}", line, sink)
            continue
        if not isinstance(text, str):
            _bad(path, n, f"field {text_field!r} is {_json_type(text)}, not a string", line, sink)
            continue
        rid = str(n - 1)
        if id_field is not None:
            value = obj.get(id_field, _MISSING)
            if value is _MISSING:
                _bad(path, n, f"missing id field {id_field!r}", line, sink)
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                _bad(path, n, f"id field {id_field!r} is {_json_type(value)}, not a string or "
                     "integer", line, sink)
                continue
            rid = str(value)
        yield Record(n, rid, text)


def _read_parquet(path: PathLike, text_field: str, id_field: str | None,
                  sink: Rejects | None) -> Iterator[Record]:
    pa = _pyarrow()
    pq = _pyarrow_parquet()
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(path, None, f"cannot read as Parquet: {e}") from None
    schema = pf.schema_arrow
    columns = [text_field] + ([id_field] if id_field not in (None, text_field) else [])
    for name in columns:
        if name not in schema.names:
            raise InputError(path, None, f"no column {name!r} (columns: {', '.join(schema.names)})")
    text_type = schema.field(text_field).type
    if not _is_string_type(pa, text_type):
        raise InputError(path, None, f"column {text_field!r} is {text_type}, not a string")
    if id_field is not None:
        id_type = schema.field(id_field).type
        if not (_is_string_type(pa, id_type) or pa.types.is_integer(id_type)):
            raise InputError(path, None, f"id column {id_field!r} is {id_type}, not a string or "
                             "integer")
    n = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_READ_BATCH, columns=columns):
        texts = batch.column(0).to_pylist()
        ids = None if id_field is None else batch.column(len(columns) - 1).to_pylist()
        for k, text in enumerate(texts):
            n += 1
            if text is None:
                _bad(path, n, f"column {text_field!r} is null", "", sink, unit="row")
                continue
            if ids is None:
                rid = str(n - 1)
            elif ids[k] is None:
                _bad(path, n, f"id column {id_field!r} is null", text, sink, unit="row")
                continue
            else:
                rid = str(ids[k])
            yield Record(n, rid, text)


_MISSING = object()


def _bad(path: PathLike, n: int, reason: str, raw: str, sink: Rejects | None,
         unit: str = "line") -> None:
    if sink is None:
        raise InputError(path, n, reason, unit)
    sink.add(n, reason, raw)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array",
            dict: "an object", str: "a string"}.get(type(value), type(value).__name__)


def _is_string_type(pa: Any, t: Any) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError(
            "Parquet needs pyarrow: pip install 'kbsim[parquet]'"
        ) from None
    return pyarrow


def _pyarrow_parquet() -> Any:
    _pyarrow()
    import pyarrow.parquet

    return pyarrow.parquet


# --------------------------------------------------------------------------- writers


def json_line(obj: Any) -> str:
    """`obj` as one compact JSON line, with its newline.

    Non-ASCII text is kept as is, unless it holds lone surrogates (which UTF-8 cannot encode):
    then that line alone is written with \\u escapes, which JSON readers turn back into the
    same string.
    """
    line = _JSON_UTF8.encode(obj) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = _JSON_ASCII.encode(obj) + "\n"
    return line


_JSON_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# json's own string escaper for ensure_ascii=False (its C implementation where available).
_escape = json.encoder.encode_basestring
_JSON_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def pair_to_jsonl(pair: Pair) -> str:
    """One pair as one JSONL line (with its newline): `Pair.to_dict()`, compact."""
    return json_line(pair.to_dict())


_EDIT = '{"type":"%s","clean":[%d,%d],"noisy":[%d,%d]}'  # %-format: fastest here


def _fast_line(pair: Pair) -> str:
    """`json_line(pair.to_dict())` built directly: the same bytes, without the dicts."""
    esc = _escape
    edits = ",".join([_EDIT % e for e in pair.edits])
    line = '{"id":%s,"clean":%s,"noisy":%s,"edits":[%s]' % (  # noqa: UP031 (speed)
        esc(pair.id), esc(pair.clean), esc(pair.noisy), edits)
    if pair.touches is not None:
        line += ',"touches":[%s]' % ",".join(  # noqa: UP031 (speed)
            ["[%r,%r,%s]" % (round(t.x, 2), round(t.y, 2), esc(t.key))  # noqa: UP031
             for t in pair.touches])
    return line + "}\n"


def pairs_to_jsonl_bytes(pairs: Iterable[Pair]) -> bytes:
    """Many pairs as UTF-8 JSONL bytes (what workers send back to the writer)."""
    pairs = list(pairs)
    lines = [_fast_line(p) for p in pairs]
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere: escape the lines that hold one
        return "".join([json_line(p.to_dict()) for p in pairs]).encode("utf-8")


WRITE_BEHIND = 1 << 20
"""Bytes a streaming writer lets pile up before it starts writing them to disk."""


class JsonlWriter(_AtomicWriter):
    """Streams pairs to a JSONL file, atomically. Use as a context manager.

    `write` takes a `Pair` (or a JSON-ready dict); `write_bytes` takes lines already encoded
    by `pairs_to_jsonl_bytes`, so worker processes can do the serialising.
    """

    def __init__(self, path: PathLike) -> None:
        super().__init__(path, "wb")

    def write(self, item: Pair | dict) -> None:
        d = item.to_dict() if isinstance(item, Pair) else item
        self._f.write(json_line(d).encode("utf-8"))
        self.count += 1

    def write_bytes(self, data: bytes, n_records: int) -> None:
        self._f.write(data)
        self.count += n_records
        self._af.write_behind(WRITE_BEHIND)

    def append_file(self, path: PathLike, n_records: int) -> None:
        """Appends the bytes of a file of lines (a worker's part) without reading them here."""
        _append_file(self._f, path)
        self.count += n_records
        self._af.write_behind(WRITE_BEHIND)


def _append_file(out: IO[bytes], path: PathLike) -> None:
    """Copies a file's bytes to the end of `out` in the kernel where it can (sendfile)."""
    out.flush()
    with open(path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        sent = 0
        try:
            while sent < size:
                n = os.sendfile(out.fileno(), src.fileno(), sent, size - sent)
                if n == 0:
                    break
                sent += n
        except (AttributeError, OSError):
            pass
        if sent < size:  # no sendfile here: copy the rest through user space
            src.seek(sent)
            import shutil

            shutil.copyfileobj(src, out)
            out.flush()


def write_jsonl(pairs: Iterable[Pair], path: PathLike) -> int:
    """Writes pairs as JSONL, atomically; returns how many."""
    with JsonlWriter(path) as w:
        for p in pairs:
            w.write(p)
    return w.count


def parquet_schema(touches: bool = False) -> Any:
    """The Parquet schema of pairs: id, clean, noisy, edits (and touches when asked)."""
    pa = _pyarrow()
    edit = pa.struct([
        ("type", pa.string()),
        ("clean_start", pa.int32()),
        ("clean_end", pa.int32()),
        ("noisy_start", pa.int32()),
        ("noisy_end", pa.int32()),
    ])
    fields = [
        ("id", pa.string()),
        ("clean", pa.string()),
        ("noisy", pa.string()),
        ("edits", pa.list_(edit)),
    ]
    if touches:
        touch = pa.struct([("x", pa.float32()), ("y", pa.float32()), ("key", pa.string())])
        fields.append(("touches", pa.list_(touch)))
    return pa.schema(fields)


def pairs_to_record_batch(pairs: list[Pair], touches: bool = False) -> Any:
    """Pairs as one Arrow record batch with `parquet_schema(touches)` (picklable, so workers
    can build it)."""
    pa = _pyarrow()
    schema = parquet_schema(touches)
    edits = [
        [{"type": e.type.value, "clean_start": e.clean_start, "clean_end": e.clean_end,
          "noisy_start": e.noisy_start, "noisy_end": e.noisy_end} for e in p.edits]
        for p in pairs
    ]
    columns = [
        pa.array([p.id for p in pairs], pa.string()),
        pa.array([_utf8_safe(p.clean) for p in pairs], pa.string()),
        pa.array([_utf8_safe(p.noisy) for p in pairs], pa.string()),
        pa.array(edits, schema.field("edits").type),
    ]
    if touches:
        columns.append(pa.array(
            [None if p.touches is None else
             [{"x": t.x, "y": t.y, "key": t.key} for t in p.touches] for p in pairs],
            schema.field("touches").type,
        ))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _utf8_safe(s: str) -> str:
    """Arrow strings must be valid UTF-8: lone surrogates become U+FFFD (JSONL keeps them)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", errors="replace").decode("utf-8")
    return s


class ParquetWriter(_AtomicWriter):
    """Streams pairs to a Parquet file, atomically, in row groups of a fixed size.

    Row groups hold exactly `row_group_size` rows (the last one fewer) however the rows arrive,
    so the file's bytes depend only on its content. Use as a context manager.
    """

    def __init__(self, path: PathLike, touches: bool = False,
                 row_group_size: int = PARQUET_ROW_GROUP) -> None:
        pq = _pyarrow_parquet()
        super().__init__(path, "wb")
        self.touches = touches
        self.schema = parquet_schema(touches)
        self.row_group_size = row_group_size
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(self._f, self.schema, compression="zstd")

    def write(self, pair: Pair) -> None:
        self.write_batch(pairs_to_record_batch([pair], self.touches))

    def write_pairs(self, pairs: list[Pair]) -> None:
        if pairs:
            self.write_batch(pairs_to_record_batch(pairs, self.touches))

    def write_batch(self, batch: Any) -> None:
        """Appends an Arrow record batch made by `pairs_to_record_batch`."""
        if not batch.schema.equals(self.schema):
            raise ValueError("record batch schema does not match the writer's")
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.count += batch.num_rows
        while self._pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, n: int) -> None:
        pa = _pyarrow()
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        head, rest = table.slice(0, n), table.slice(n)
        # One contiguous chunk per column, so the encoder sees the same input however the
        # rows were batched.
        self._writer.write_table(head.combine_chunks(), row_group_size=n)
        self._pending = rest.combine_chunks().to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        """Writes the last row group and the footer, and moves the file into place."""
        if self._af.done:
            return
        try:
            if self._pending_rows:
                self._flush(self._pending_rows)
            self._writer.close()
        except BaseException:
            self._af.abort()
            raise
        self._af.commit()

    def abort(self) -> None:
        """Drops the temporary file; nothing is written at `path`."""
        if not self._af.done:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._af.abort()


def write_parquet(pairs: Iterable[Pair], path: PathLike, touches: bool = False,
                  batch_size: int = 4096) -> int:
    """Writes pairs as Parquet, atomically and in batches; returns how many."""
    with ParquetWriter(path, touches=touches) as w:
        batch: list[Pair] = []
        for p in pairs:
            batch.append(p)
            if len(batch) >= batch_size:
                w.write_pairs(batch)
                batch = []
        w.write_pairs(batch)
    return w.count


def read_pairs(path: PathLike, fmt: str | None = None) -> Iterator[Pair]:
    """Streams pairs back from a JSONL or Parquet file written by this module."""
    fmt = output_format(path, fmt)
    if fmt == "jsonl":
        for n, line in _iter_lines(path, None):
            try:
                yield Pair.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
                raise InputError(path, n, f"not a pair record: {e}") from None
        return
    from keyboard_sim.pair import Edit, Touch

    pf = _pyarrow_parquet().ParquetFile(path)
    for batch in pf.iter_batches(batch_size=_PARQUET_READ_BATCH):
        for row in batch.to_pylist():
            edits = tuple(Edit(Channel(e["type"]), e["clean_start"], e["clean_end"],
                               e["noisy_start"], e["noisy_end"]) for e in row["edits"])
            touches = row.get("touches")
            if touches is not None:
                touches = tuple(Touch(t["x"], t["y"], t["key"]) for t in touches)
            yield Pair(row["id"], row["clean"], row["noisy"], edits, touches)


# --------------------------------------------------------------------------- M2


def pair_to_m2(pair: Pair) -> str:
    """One pair as an M2 block (ending with the blank line that separates sentences).

    The source sentence is the noisy text (what needs correcting), split on whitespace; each
    error becomes `A start end|||type|||correction|||REQUIRED|||-NONE-|||0`, the correction
    taken from the clean text. An edit is widened until both of its ends fall between tokens
    in both strings, so an edit that merges or splits words (space errors) covers every token
    it touches; edits that meet in that widening become one M2 edit whose type joins theirs
    with "+". Applying the M2 edits to the source tokens gives exactly the clean text's tokens.
    Passthrough edits are not errors and are left out; a sentence without errors gets the
    `noop` edit. Lone surrogates, which UTF-8 cannot hold, are written as "?" by `M2Writer`.
    """
    noisy, clean = pair.noisy, pair.clean
    tokens = noisy.split()
    ends: list[int] = []
    pos = 0
    for tok in tokens:
        pos = noisy.index(tok, pos) + len(tok)
        ends.append(pos)

    edits = pair.edits
    # Each group: [noisy_start, noisy_end, clean_start, clean_end, types].
    groups: list[list[Any]] = []
    i = 0
    while i < len(edits):
        e = edits[i]
        if e.type == Channel.PASSTHROUGH:
            i += 1
            continue
        na, nb, ca, cb = e.noisy_start, e.noisy_end, e.clean_start, e.clean_end
        types = [e.type.value]
        # Widen to the left. Outside edits the strings are aligned (same text, constant
        # shift), so both ends move together; an edit met on the way is taken in whole, and
        # a group met on the way is merged.
        j = i - 1
        while not (_between_tokens(noisy, na) and _between_tokens(clean, ca)):
            if j >= 0 and edits[j].noisy_end == na and edits[j].clean_end == ca:
                na, ca = edits[j].noisy_start, edits[j].clean_start
                j -= 1
            elif na > 0 and ca > 0:
                na, ca = na - 1, ca - 1
            else:  # cannot happen for a consistent pair; stop rather than loop
                break
            if groups and na < groups[-1][1]:
                g = groups.pop()
                na, ca = g[0], g[2]
                types = g[4] + [t for t in types if t not in g[4]]
        # Widen to the right the same way.
        k = i + 1
        while not (_between_tokens(noisy, nb) and _between_tokens(clean, cb)):
            if k < len(edits) and edits[k].noisy_start == nb and edits[k].clean_start == cb:
                q = edits[k]
                nb, cb = q.noisy_end, q.clean_end
                if q.type != Channel.PASSTHROUGH and q.type.value not in types:
                    types.append(q.type.value)
                k += 1
            elif nb < len(noisy) and cb < len(clean):
                nb, cb = nb + 1, cb + 1
            else:
                break
        groups.append([na, nb, ca, cb, types])
        i = k

    lines = [f"S {' '.join(tokens)}"]
    for na, nb, ca, cb, types in groups:
        t0 = bisect_right(ends, na)  # tokens that end at or before the group's start
        t1 = max(t0, bisect_right(ends, nb))
        correction = " ".join(clean[ca:cb].split())
        if correction == " ".join(tokens[t0:t1]):
            continue  # a change of whitespace only: nothing to correct between tokens
        lines.append(f"A {t0} {t1}|||{'+'.join(types)}|||{correction}|||REQUIRED|||-NONE-|||0")
    if len(lines) == 1:
        lines.append("A -1 -1|||noop|||-NONE-|||REQUIRED|||-NONE-|||0")
    return "\n".join(lines) + "\n\n"


def _between_tokens(text: str, pos: int) -> bool:
    """Whether `pos` is not inside a whitespace-delimited token of `text`."""
    return pos <= 0 or pos >= len(text) or text[pos - 1].isspace() or text[pos].isspace()


class M2Writer(_AtomicWriter):
    """Streams M2 blocks to a file, atomically. Use as a context manager."""

    def __init__(self, path: PathLike) -> None:
        super().__init__(path, "wb")

    def write(self, pair: Pair) -> None:
        self._f.write(pair_to_m2(pair).encode("utf-8", errors="replace"))
        self.count += 1

    def write_text(self, text: str, n_records: int) -> None:
        """Appends blocks already made by `pair_to_m2`."""
        self._f.write(text.encode("utf-8", errors="replace"))
        self.count += n_records


def write_m2(pairs: Iterable[Pair], path: PathLike) -> int:
    """Writes pairs as an M2 edit file (noisy source, clean target), atomically; returns how
    many sentences."""
    with M2Writer(path) as w:
        for p in pairs:
            w.write(p)
    return w.count
