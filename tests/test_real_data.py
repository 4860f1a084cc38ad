"""eval.real_data: the real error sets (counts and known lines from ../shared/data, skipped when
that folder is absent) and clear errors on malformed files (temporary files, always run)."""

from __future__ import annotations

import pytest

from eval import real_data as rd
from keyboard_sim import simulate
from keyboard_sim.channels import Channel
from keyboard_sim.pair import Edit


@pytest.fixture(scope="module")
def shared_root():
    root = rd.default_root()
    present = rd.available_sets(root)
    if present != list(rd.SET_NAMES):
        pytest.skip(f"real data not found under {root} (only {present}); set "
                    f"{rd.ENV_VAR} or lay out ../shared/data beside the checkout")
    return root


@pytest.fixture(scope="module")
def aalto_set(shared_root):
    return rd.aalto()


# ------------------------------------------------------------------------- the shipped files


def test_sizes_are_those_sources_md_gives(shared_root, aalto_set):
    assert len(aalto_set) == rd.EXPECTED_SIZES["aalto"] == 24_465
    assert len({i.split(":")[1] for i in aalto_set.ids}) == 1_631  # participants
    assert len(rd.bea322()) == rd.EXPECTED_SIZES["bea322"] == 322
    assert len(rd.jfleg_spell()) == rd.EXPECTED_SIZES["jfleg_spell"] == 1_601
    for name in rd.SET_NAMES:
        s = rd.load_set(name, shared_root)
        assert s.name == name and len(s) == rd.EXPECTED_SIZES[name]
        assert s.citation == rd.CITATIONS[name] and s.source


def test_aalto_known_rows(aalto_set):
    # Lines 2 and 3 of the TSV (after the header).
    assert aalto_set.ids[:2] == ("aalto:5:7", "aalto:5:10")
    assert aalto_set.clean[0] == "The others raise their eyebrows."
    assert aalto_set.noisy[0] == "The others raise their eyebrows"
    assert aalto_set.noisy[1] == "Will you and KB be around thus afternoon?"
    # Line 23 is CSV-quoted in the file ("i""ll ... H."): the typist hit shift on the apostrophe.
    k = aalto_set.ids.index("aalto:7:85")
    assert aalto_set.noisy[k] == 'i"ll take up my problem with weak Scott H.'
    assert aalto_set.clean[k] == "I'll take up my problem with weak Scott H."
    # Trailing spaces are what the typist submitted; strip=True drops them.
    k = aalto_set.ids.index("aalto:7:24")
    assert aalto_set.noisy[k] == "is this the conference rate "
    assert rd.aalto(limit=20, strip=True).noisy[k] == "is this the conference rate"


def test_aalto_error_share_matches_sources_md(aalto_set):
    # SOURCES.md: "28% of rows contain at least one error".
    share = sum(n != c for n, c in zip(aalto_set.noisy, aalto_set.clean, strict=True))
    share /= len(aalto_set)
    assert 0.275 < share < 0.285


def test_proofreading_known_lines(shared_root):
    bea = rd.bea322()
    assert bea.ids[0] == "bea322:1"
    assert bea.noisy[0].startswith("i tought you understood")
    assert bea.clean[0].startswith("i thought you understood")
    assert bea.noisy[2] == ("i would definitely choose basketball and swimming wich are my "
                            "dream sports.")
    jf = rd.jfleg_spell()
    assert jf.ids[-1] == "jfleg_spell:1601"
    assert jf.noisy[0] == ("So I think we would not be live if our ancestors did not develop "
                           "siences and tecnologies .")
    assert jf.clean[0] == ("So I think we would not be alive if our ancestors did not develop "
                           "sciences and technologies .")


def test_limit_takes_the_first_rows(shared_root, aalto_set):
    head = rd.load_set("aalto", limit=5)
    assert head.ids == aalto_set.ids[:5] and head.noisy == aalto_set.noisy[:5]
    assert len(rd.load_set("bea322", limit=3)) == 3
    assert len(rd.load_set("jfleg_spell", limit=0)) == 0


def test_aalto_edits_by_alignment(aalto_set):
    # "The others raise their eyebrows." -> no full stop: "The others raise their eyebrows" is
    # 3+1+6+1+5+1+5+1+8 = 31 characters, so the dropped "." is clean[31:32], noisy[31:31].
    assert rd.edits(aalto_set.noisy[0], aalto_set.clean[0]) == (
        Edit(Channel.DROP_PUNCTUATION, 31, 32, 31, 31),
    )
    # "Will you and KB be around this" -> "thus": "Will you and KB be around " is 26 characters,
    # so the i of "this" is index 28, typed as u.
    assert rd.edits(aalto_set.noisy[1], aalto_set.clean[1]) == (
        Edit(Channel.SUBSTITUTION, 28, 29, 28, 29),
    )
    pairs = aalto_set.head(300).to_pairs()
    assert [p.id for p in pairs] == list(aalto_set.ids[:300])
    assert all(p.is_consistent() for p in pairs)
    assert all((p.noisy == p.clean) == (not p.edits) for p in pairs)


# --------------------------------------------------------------------------- no shared data


def test_from_pairs_wraps_simulated_pairs():
    pairs = simulate(["hello there", "see you soon"], "raw", seed=3, ids=["a", "b"])
    s = rd.from_pairs("simulated-raw", pairs)
    assert s.ids == ("a", "b") and s.clean == ("hello there", "see you soon")
    assert s.noisy == tuple(p.noisy for p in pairs) and s.source == "simulated"


def test_env_var_sets_the_root(tmp_path, monkeypatch):
    folder = tmp_path / rd.BEA322_DIR
    folder.mkdir(parents=True)
    (folder / "corrupt.txt").write_text("teh cat\nsee yuo\n", encoding="utf-8")
    (folder / "correct.txt").write_text("the cat\nsee you\n", encoding="utf-8")
    monkeypatch.setenv(rd.ENV_VAR, str(tmp_path))
    assert rd.default_root() == tmp_path
    assert rd.available_sets() == ["bea322"]
    s = rd.load_set("bea322")
    assert s.noisy == ("teh cat", "see yuo") and s.ids == ("bea322:1", "bea322:2")
    assert rd.available_sets(tmp_path / "nowhere") == []


def _pair_files(tmp_path, noisy: str, clean: str):
    n, c = tmp_path / "noisy.txt", tmp_path / "clean.txt"
    n.write_bytes(noisy.encode("utf-8") if isinstance(noisy, str) else noisy)
    c.write_bytes(clean.encode("utf-8") if isinstance(clean, str) else clean)
    return n, c


def test_misaligned_parallel_files_name_both_counts(tmp_path):
    n, c = _pair_files(tmp_path, "a\nb\nc\n", "a\nb\n")
    with pytest.raises(rd.RealDataError, match=r"noisy.txt has 3 lines but .*clean.txt has 2"):
        rd.read_parallel(n, c, "x")


def test_empty_and_undecodable_lines_are_named(tmp_path):
    n, c = _pair_files(tmp_path, "a\n\nc\n", "a\nb\nc\n")
    with pytest.raises(rd.RealDataError, match=r"noisy.txt, line 2: empty line"):
        rd.read_parallel(n, c, "x")
    n, c = _pair_files(tmp_path, "a\nb\n", b"a\nb\xff\n")
    with pytest.raises(rd.RealDataError, match=r"clean.txt, line 2: not UTF-8"):
        rd.read_parallel(n, c, "x")
    with pytest.raises(rd.RealDataError, match=r"cannot read"):
        rd.bea322(tmp_path / "missing")


HEADER = "participant_id\ttest_section_id\ttarget\ttyped\n"


@pytest.mark.parametrize(
    "body, message",
    [
        ("1\t2\tHello.\tHello\n3\t4\tBye\n", r"line 3: 3 fields, expected 4"),
        ("1\tx\tHello.\tHello\n", r"line 2: participant_id '1' and test_section_id 'x'"),
        ("1\t2\tHello.\t\n", r"line 2: empty typed"),
        ("1\t2\tHi\tHi\n1\t2\tHo\tHo\n", r"line 3: participant 1, section 2 repeats line 2"),
        ('1\t2\tHi\t"Hi"x\n', r"line 2: bad quoting"),
    ],
)
def test_malformed_aalto_rows_are_named(tmp_path, body, message):
    path = tmp_path / "typed.tsv"
    path.write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(rd.RealDataError, match=message) as err:
        rd.aalto(path)
    assert str(path) in str(err.value)


def test_aalto_header_and_quoting(tmp_path):
    path = tmp_path / "typed.tsv"
    path.write_text("id\ttarget\ttyped\n", encoding="utf-8")
    with pytest.raises(rd.RealDataError, match=r"line 1: header"):
        rd.aalto(path)
    path.write_text(HEADER + '9\t1\tI\'m in.\t"I""m in."\n', encoding="utf-8")
    s = rd.aalto(path)
    assert s.noisy == ('I"m in.',) and s.clean == ("I'm in.",) and s.ids == ("aalto:9:1",)


def test_bad_arguments():
    with pytest.raises(rd.RealDataError, match="unknown real set 'nope'"):
        rd.load_set("nope")
    with pytest.raises(ValueError, match="limit"):
        rd.load_set("bea322", limit=-1)
    with pytest.raises(rd.RealDataError, match="ids are not unique"):
        rd.RealSet("x", ("a", "b"), ("a", "b"), ("1", "1"), "", "")
    with pytest.raises(rd.RealDataError, match="2 noisy, 1 clean"):
        rd.RealSet("x", ("a", "b"), ("a",), ("1", "2"), "", "")
