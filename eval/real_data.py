"""Real typing and spelling errors to evaluate on, next to held-out simulated pairs.

A simulator is only as good as what it predicts about real errors, so correctors and metrics are
also run on pairs that nobody simulated, each set reported on its own (their error rates,
domains and tokenisation differ too much to pool):

==============  ===============================================================================
set             what (files under the shared data folder; see its SOURCES.md)
==============  ===============================================================================
``aalto``       ``typing/aalto_typed_pairs_dev.tsv``: sentences shown to typists (``target``)
                and what they submitted (``typed``), errors left in; 24,465 rows, 1,631
                participants, mostly physical keyboards. Dhakal et al., CHI 2018.
``bea322``      ``proofreading/bea322/{corrupt,correct}.txt``: English learners' sentences with
                real spelling errors and their corrections, lower-cased; 322 pairs (the BEA-322
                subset of NeuSpell, Jayanthi et al. 2020, from the BEA-2019 shared task).
``jfleg_spell`` ``proofreading/jfleg_spell/{noisy,clean}.txt``: JFLEG learner sentences reduced
                to their spelling errors, tokenised (``do n't``, ``word .``); 1,601 pairs
                (NeuSpell's release of JFLEG, Napoles et al. 2017).
==============  ===============================================================================

Each reader returns a `RealSet`: the noisy and clean texts in file order, a stable id per pair,
the file(s) read and the citation to give when results use them. Texts are kept verbatim (the
Aalto typists' trailing spaces and shifted quotes are their errors; pass ``strip=True`` to
`aalto` to drop the spaces at either end of both texts). `from_pairs` wraps held-out simulated
`keyboard_sim.Pair`s in the same record so a report can treat every set alike.

Real pairs carry no provenance, so `edits` and `RealSet.to_pairs` recover it by alignment
(`keyboard_sim.align.align`, the code that labels simulated pairs for the fidelity checks):
per-error-type fix rates can then be computed on real errors exactly as on simulated ones.

The data lives outside the repository (it is never copied in): by default in ``shared/data``
beside the checkout (``../shared/data`` from the repository root), or wherever the environment
variable ``KBSIM_SHARED_DATA`` points. Every malformed line is a `RealDataError` naming the file
and the line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keyboard_sim.align import Alignment, Lexicon, align
from keyboard_sim.pair import Edit, Pair

ENV_VAR = "KBSIM_SHARED_DATA"

# Relative paths under the data folder, as laid out in its SOURCES.md.
AALTO_FILE = Path("typing/aalto_typed_pairs_dev.tsv")
BEA322_DIR = Path("proofreading/bea322")
JFLEG_DIR = Path("proofreading/jfleg_spell")
AALTO_COLUMNS = ("participant_id", "test_section_id", "target", "typed")

CITATIONS = {
    "aalto": (
        "Dhakal, Feit, Kristensson and Oulasvirta, 'Observations on Typing from 136 Million "
        "Keystrokes', CHI 2018 (sample via wxyzz22/TypeLikeU; non-commercial research use "
        "with attribution)"
    ),
    "bea322": (
        "Jayanthi, Pruthi and Neubig, 'NeuSpell: A Neural Spelling Correction Toolkit', "
        "EMNLP 2020 (demos), BEA-322 subset of the BEA-2019 shared task data (Bryant et al., "
        "2019); research use under the BEA-2019 terms"
    ),
    "jfleg_spell": (
        "Napoles, Sakaguchi and Tetreault, 'JFLEG: A Fluency Corpus and Benchmark for "
        "Grammatical Error Correction', EACL 2017, spelling-only version released with "
        "NeuSpell (Jayanthi et al., 2020); CC BY-NC-SA 4.0"
    ),
}
# The sizes SOURCES.md gives; tests check the files against them.
EXPECTED_SIZES = {"aalto": 24_465, "bea322": 322, "jfleg_spell": 1_601}


class RealDataError(ValueError):
    """A real-data file that is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class RealSet:
    """Aligned (noisy, clean) texts of one evaluation set.

    Attributes:
        name: The set's name ("aalto", "bea322", "jfleg_spell", or a simulated set's).
        noisy: What was typed or written, errors included, in file order.
        clean: What was meant, one per noisy text.
        ids: A stable, unique id per pair (e.g. "aalto:5:7", "bea322:12" with 1-based lines).
        source: The file(s) read, or where simulated pairs came from.
        citation: Whom to cite when results use the set.
    """

    name: str
    noisy: tuple[str, ...]
    clean: tuple[str, ...]
    ids: tuple[str, ...]
    source: str
    citation: str

    def __post_init__(self) -> None:
        for attr in ("noisy", "clean", "ids"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        n = len(self.noisy)
        if len(self.clean) != n or len(self.ids) != n:
            raise RealDataError(
                f"{self.name}: {n} noisy, {len(self.clean)} clean and {len(self.ids)} ids"
            )
        if len(set(self.ids)) != n:
            raise RealDataError(f"{self.name}: ids are not unique")

    def __len__(self) -> int:
        return len(self.noisy)

    def head(self, limit: int | None) -> RealSet:
        """The first `limit` pairs (all when None)."""
        if limit is None:
            return self
        _check_limit(limit)
        return RealSet(self.name, self.noisy[:limit], self.clean[:limit], self.ids[:limit],
                       self.source, self.citation)

    def alignments(self, lexicon: Lexicon | None = None) -> list[Alignment]:
        """Each pair aligned and its differences labelled as simulator channels."""
        return [align(c, n, lexicon) for c, n in zip(self.clean, self.noisy, strict=True)]

    def to_pairs(self, lexicon: Lexicon | None = None) -> list[Pair]:
        """The set as `keyboard_sim.Pair`s whose edits come from alignment (see `edits`)."""
        return [a.to_pair(i) for a, i in zip(self.alignments(lexicon), self.ids, strict=True)]


def edits(noisy: str, clean: str, lexicon: Lexicon | None = None) -> tuple[Edit, ...]:
    """The labelled edits that turn `clean` into `noisy`, recovered by alignment.

    Args:
        noisy: The typed text.
        clean: The intended text.
        lexicon: The simulator's whole-word error lists (e.g.
            `keyboard_sim.lexicon.load_lexicon("codespell")`), to label attested misspellings
            and real-word errors as such.

    Returns:
        Ordered, disjoint `Edit`s, each typed with the `Channel` the simulator would have used
        (`keyboard_sim.align` documents the rules).
    """
    return align(clean, noisy, lexicon).edits


def from_pairs(name: str, pairs: Sequence[Pair], source: str = "simulated",
               citation: str = "") -> RealSet:
    """Held-out simulated pairs in the same record as the real sets, for side-by-side reports."""
    return RealSet(name, tuple(p.noisy for p in pairs), tuple(p.clean for p in pairs),
                   tuple(p.id for p in pairs), source, citation)


# --------------------------------------------------------------------------------- locations


def default_root() -> Path:
    """The shared data folder: `$KBSIM_SHARED_DATA`, else ``../shared/data`` from the repo root."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else default_root()


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an int >= 0 or None, got {limit!r}")


# ------------------------------------------------------------------------------------ reading


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file without their newlines; a bad byte or an empty line is an
    error naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RealDataError(f"{path}: cannot read ({e.strerror or e})") from e
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the newline that ends the last line
    lines = []
    for i, chunk in enumerate(chunks, start=1):
        try:
            line = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RealDataError(
                f"{path}, line {i}: not UTF-8 ({e.reason} at byte {e.start})"
            ) from e
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            raise RealDataError(f"{path}, line {i}: empty line")
        lines.append(line)
    return lines


def read_parallel(noisy_path: str | os.PathLike, clean_path: str | os.PathLike, name: str,
                  citation: str = "") -> RealSet:
    """Two line-aligned files (one sentence a line) as a `RealSet`; ids are ``name:line``.

    Raises:
        RealDataError: A file is unreadable, has an empty or non-UTF-8 line (named), or the two
            files have different numbers of lines (both counts named).
    """
    noisy_path, clean_path = Path(noisy_path), Path(clean_path)
    noisy, clean = _read_lines(noisy_path), _read_lines(clean_path)
    if len(noisy) != len(clean):
        raise RealDataError(
            f"{noisy_path} has {len(noisy)} lines but {clean_path} has {len(clean)}: the files "
            "must be aligned line by line"
        )
    ids = tuple(f"{name}:{i}" for i in range(1, len(noisy) + 1))
    return RealSet(name, tuple(noisy), tuple(clean), ids, f"{noisy_path} | {clean_path}",
                   citation)


def aalto(path: str | os.PathLike | None = None, limit: int | None = None, *,
          strip: bool = False) -> RealSet:
    """The Aalto typed pairs: noisy = ``typed``, clean = ``target``.

    The file is tab-separated with a header and minimal CSV quoting (a field holding a double
    quote is quoted, the quote doubled), as pandas writes it; ids are
    ``aalto:<participant_id>:<test_section_id>``.

    Args:
        path: The TSV file (default: ``typing/aalto_typed_pairs_dev.tsv`` under the data root).
        limit: Read only the first `limit` rows.
        strip: Drop whitespace at both ends of both texts (the typing test's trailing spaces).

    Raises:
        RealDataError: Missing file, wrong header, or a row (named by line) without exactly four
            fields, with non-integer ids, an empty text, bad quoting or a repeated id.
    """
    if limit is not None:
        _check_limit(limit)
    path = Path(path) if path is not None else default_root() / AALTO_FILE
    noisy, clean, ids, seen = [], [], [], {}
    try:
        f = path.open(encoding="utf-8", newline="")
    except OSError as e:
        raise RealDataError(f"{path}: cannot read ({e.strerror or e})") from e
    with f:
        reader = csv.reader(f, delimiter="\t", quotechar='"', strict=True)
        try:
            header = next(reader, None)
            if header is None or tuple(header) != AALTO_COLUMNS:
                raise RealDataError(f"{path}, line 1: header {header!r}, expected the "
                                    f"columns {list(AALTO_COLUMNS)!r}")
            for row in reader:
                if limit is not None and len(ids) >= limit:
                    break
                line = reader.line_num
                if len(row) != 4:
                    raise RealDataError(f"{path}, line {line}: {len(row)} fields, expected 4 "
                                        f"({', '.join(AALTO_COLUMNS)})")
                pid, sid, target, typed = row
                if not (pid.isdigit() and sid.isdigit()):
                    raise RealDataError(f"{path}, line {line}: participant_id {pid!r} and "
                                        f"test_section_id {sid!r} must be integers")
                if strip:
                    target, typed = target.strip(), typed.strip()
                if not target.strip() or not typed.strip():
                    which = "target" if not target.strip() else "typed"
                    raise RealDataError(f"{path}, line {line}: empty {which}")
                rid = f"aalto:{pid}:{sid}"
                if rid in seen:
                    raise RealDataError(f"{path}, line {line}: participant {pid}, section {sid} "
                                        f"repeats line {seen[rid]}")
                seen[rid] = line
                noisy.append(typed)
                clean.append(target)
                ids.append(rid)
        except csv.Error as e:
            raise RealDataError(f"{path}, line {reader.line_num}: bad quoting ({e})") from e
        except UnicodeDecodeError as e:
            raise RealDataError(f"{path}, after line {reader.line_num}: not UTF-8 "
                                f"({e.reason})") from e
    return RealSet("aalto", tuple(noisy), tuple(clean), tuple(ids), str(path),
                   CITATIONS["aalto"])


def bea322(path: str | os.PathLike | None = None) -> RealSet:
    """The BEA-322 pairs: noisy = ``corrupt.txt``, clean = ``correct.txt`` (lower-cased text).

    Args:
        path: The folder holding both files (default: ``proofreading/bea322`` under the root).
    """
    folder = Path(path) if path is not None else default_root() / BEA322_DIR
    return read_parallel(folder / "corrupt.txt", folder / "correct.txt", "bea322",
                         CITATIONS["bea322"])


def jfleg_spell(path: str | os.PathLike | None = None) -> RealSet:
    """The JFLEG spelling pairs: noisy = ``noisy.txt``, clean = ``clean.txt`` (tokenised text).

    Args:
        path: The folder holding both files (default: ``proofreading/jfleg_spell`` under the
            root).
    """
    folder = Path(path) if path is not None else default_root() / JFLEG_DIR
    return read_parallel(folder / "noisy.txt", folder / "clean.txt", "jfleg_spell",
                         CITATIONS["jfleg_spell"])


# Each set: the files that must exist under the root, and how to read it from the root.
_SETS = {
    "aalto": ((AALTO_FILE,), lambda root, limit: aalto(root / AALTO_FILE, limit)),
    "bea322": (
        (BEA322_DIR / "corrupt.txt", BEA322_DIR / "correct.txt"),
        lambda root, limit: bea322(root / BEA322_DIR).head(limit),
    ),
    "jfleg_spell": (
        (JFLEG_DIR / "noisy.txt", JFLEG_DIR / "clean.txt"),
        lambda root, limit: jfleg_spell(root / JFLEG_DIR).head(limit),
    ),
}
SET_NAMES = tuple(_SETS)


def available_sets(root: str | os.PathLike | None = None) -> list[str]:
    """The names of the real sets whose files are present under `root` (default: the data
    root), in `SET_NAMES` order; empty when the folder is absent."""
    base = _root(root)
    return [name for name, (files, _) in _SETS.items() if all((base / f).is_file()
                                                              for f in files)]


def load_set(name: str, root: str | os.PathLike | None = None,
             limit: int | None = None) -> RealSet:
    """A real set by name (see `SET_NAMES`), its first `limit` pairs when given.

    Raises:
        RealDataError: Unknown name, or the set's files are missing or malformed.
    """
    if name not in _SETS:
        raise RealDataError(f"unknown real set {name!r}; known: {', '.join(SET_NAMES)}")
    if limit is not None:
        _check_limit(limit)
    return _SETS[name][1](_root(root), limit)
