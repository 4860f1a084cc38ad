"""The `kbsim` command end to end on small files made here: the real simulator, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kbsim.cli import main
from keyboard_sim.io import read_pairs

ROOT = Path(__file__).resolve().parents[1]

MESSAGES = [
    "hey how are you doing today?",
    "",
    "I don't know, maybe we could grab lunch at the café",
    "lol thats so funny \U0001f602\U0001f602",
    "See you at 5:30 on Monday!",
    "Привет, как дела?",
    "日本語のテキスト and some English",
    "   leading and trailing spaces   ",
    "their going to the park tomorrow",
    "ok",
] * 4


def _txt(tmp_path: Path, lines=MESSAGES, name="in.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(m + "\n" for m in lines), encoding="utf-8")
    return path


def _run(*args: str) -> int:
    return main([str(a) for a in args])


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_line_yields_one_record_in_order(tmp_path, capsys):
    inp, out = _txt(tmp_path), tmp_path / "out.jsonl"
    assert _run("simulate", "--input", inp, "--output", out) == 0
    records = _jsonl(out)
    assert [r["id"] for r in records] == [str(i) for i in range(len(MESSAGES))]
    assert [r["clean"] for r in records] == MESSAGES
    assert records[1] == {"id": "1", "clean": "", "noisy": "", "edits": []}
    assert all("touches" not in r for r in records)
    assert any(r["noisy"] != r["clean"] for r in records)  # the raw preset makes errors
    err = capsys.readouterr().err
    assert f"{len(MESSAGES)} records in, {len(MESSAGES)} written, 0 rejected" in err


def test_edits_rebuild_the_noisy_text(tmp_path):
    from keyboard_sim.pair import Pair

    inp, out = _txt(tmp_path), tmp_path / "out.jsonl"
    assert _run("simulate", "-i", inp, "-o", out, "--seed", "3", "--touches") == 0
    for r in _jsonl(out):
        assert Pair.from_dict(r).is_consistent()
        assert isinstance(r["touches"], list)


def test_jsonl_in_parquet_out_from_extensions(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"msg": m, "uid": f"u{i}"}) + "\n"
                           for i, m in enumerate(MESSAGES)), encoding="utf-8")
    out = tmp_path / "pairs.parquet"
    assert _run("simulate", "-i", inp, "-o", out, "--text-field", "msg", "--id-field", "uid",
                "--touches") == 0
    pairs = list(read_pairs(out))
    assert [p.id for p in pairs] == [f"u{i}" for i in range(len(MESSAGES))]
    assert [p.clean for p in pairs] == MESSAGES
    assert all(p.touches is not None for p in pairs)


def test_parquet_in_jsonl_out(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inp = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": MESSAGES}), inp)
    out = tmp_path / "out.json"
    assert _run("simulate", "-i", inp, "-o", out) == 0
    assert [r["clean"] for r in _jsonl(out)] == MESSAGES


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_output_bytes_do_not_depend_on_workers_or_chunk_size(tmp_path, fmt):
    inp = _txt(tmp_path)
    outputs = {}
    for workers, chunk in [(1, 2048), (2, 3), (2, 7), (1, 1)]:
        out = tmp_path / f"w{workers}c{chunk}.{fmt}"
        m2 = tmp_path / f"w{workers}c{chunk}.m2"
        assert _run("simulate", "-i", inp, "-o", out, "--workers", workers,
                    "--chunk-size", chunk, "--touches", "--m2", m2) == 0
        outputs[(workers, chunk)] = (out.read_bytes(), m2.read_bytes())
    assert len(set(outputs.values())) == 1


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    inp = _txt(tmp_path)
    paths = {}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        paths[name] = tmp_path / f"{name}.jsonl"
        assert _run("simulate", "-i", inp, "-o", paths[name], "--seed", seed) == 0
    assert paths["a"].read_bytes() == paths["b"].read_bytes()
    assert paths["a"].read_bytes() != paths["c"].read_bytes()


def test_m2_file_has_one_block_per_record(tmp_path):
    inp, out, m2 = _txt(tmp_path), tmp_path / "o.jsonl", tmp_path / "o.m2"
    assert _run("simulate", "-i", inp, "-o", out, "--m2", m2, "--profile", "committed") == 0
    blocks = m2.read_text(encoding="utf-8").split("\n\n")
    assert blocks[-1] == ""
    blocks = blocks[:-1]
    assert len(blocks) == len(MESSAGES)
    for block, rec in zip(blocks, _jsonl(out), strict=True):
        assert block.split("\n")[0] == "S " + " ".join(rec["noisy"].split())


def test_bad_layout_exits_2_with_one_clear_line(tmp_path, capsys):
    inp, out = _txt(tmp_path), tmp_path / "out.jsonl"
    assert _run("simulate", "-i", inp, "-o", out, "--layout", "xx-QWERTY") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown layout 'xx-QWERTY'" in err and "en-US" in err
    assert not out.exists()


def test_bad_profile_file_exits_2(tmp_path, capsys):
    prof = tmp_path / "p.json"
    prof.write_text('{"sigma_x_mm": -1}', encoding="utf-8")
    assert _run("simulate", "-i", _txt(tmp_path), "-o", tmp_path / "o.jsonl",
                "--profile", prof) == 2
    err = capsys.readouterr().err
    assert "p.json" in err and "sigma_x_mm" in err


def test_invalid_utf8_names_the_line_or_goes_to_rejects(tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"fine\nalso fine\nbroken \xe2\x82\nfine again\n")
    out = tmp_path / "out.jsonl"
    assert _run("simulate", "-i", inp, "-o", out, "--workers", "2", "--chunk-size", "1") == 2
    err = capsys.readouterr().err
    assert "in.txt line 3: invalid UTF-8" in err and "--rejects" in err
    assert "Traceback" not in err
    assert not out.exists()  # atomic: nothing half-written
    assert not list(tmp_path.glob(".kbsim-*"))  # nor the workers' parts
    rej = tmp_path / "rejects.jsonl"
    assert _run("simulate", "-i", inp, "-o", out, "--rejects", rej) == 0
    assert [r["id"] for r in _jsonl(out)] == ["0", "1", "3"]
    assert [r["line"] for r in _jsonl(rej)] == [3]
    assert "4 records in, 3 written, 1 rejected" in capsys.readouterr().err


def test_missing_field_in_jsonl_exits_2(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    assert _run("simulate", "-i", inp, "-o", tmp_path / "o.jsonl") == 2
    assert "in.jsonl line 2: missing field 'text'" in capsys.readouterr().err


def test_unknown_extension_and_missing_input_exit_2(tmp_path, capsys):
    inp = _txt(tmp_path)
    assert _run("simulate", "-i", inp, "-o", tmp_path / "out.csv") == 2
    assert "extension" in capsys.readouterr().err
    assert _run("simulate", "-i", tmp_path / "nope.txt", "-o", tmp_path / "o.jsonl") == 2
    assert "does not exist" in capsys.readouterr().err


def test_layouts_lists_shipped_layouts(capsys):
    assert _run("layouts") == 0
    names = capsys.readouterr().out.split()
    assert "en-US" in names and "ru-RU" in names


def test_console_script_exit_status_without_traceback(tmp_path):
    """The real command in a fresh process: exit status 2 and no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "kbsim.cli", "simulate", "-i", str(_txt(tmp_path)),
         "-o", str(tmp_path / "o.jsonl"), "--layout", "nowhere"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("kbsim: error: unknown layout 'nowhere'")
    assert "Traceback" not in proc.stderr


def test_calibrate_then_fidelity(tmp_path, capsys):
    """The two thin wrappers: fit a profile to real-looking pairs, then compare with it."""
    pairs = tmp_path / "pairs.tsv"
    rows = [("the quick brown fox", "teh quick brown fox"), ("see you soon", "see yousoon"),
            ("hello there", "hello there"), ("I dont know", "I dont kno"),
            ("what time is it", "whta time is it"), ("good morning", "good morning")] * 5
    pairs.write_text("participant_id\ttarget\ttyped\n"
                     + "".join(f"{i % 3}\t{t}\t{n}\n" for i, (t, n) in enumerate(rows)),
                     encoding="utf-8")
    prof = tmp_path / "me.json"
    assert _run("calibrate", "--pairs", pairs, "--out", prof) == 0
    from keyboard_sim.profile import load_profile

    assert load_profile(prof).rates  # a valid profile file
    capsys.readouterr()
    assert _run("fidelity", "--pairs", pairs, "--profile", prof, "--seed", "1") == 0
    assert "character error rate" in capsys.readouterr().out
    assert _run("calibrate", "--pairs", tmp_path / "none.tsv", "--out", prof) == 2


def test_spawned_workers_give_the_same_bytes(tmp_path):
    """Workers started by spawn (the default on macOS and Windows) rebuild their state from
    plain arguments and give exactly what one process gives."""
    inp = _txt(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), KBSIM_START_METHOD="spawn")
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.jsonl"
        proc = subprocess.run(
            [sys.executable, "-m", "kbsim.cli", "simulate", "-i", str(inp), "-o", str(out),
             "--workers", workers, "--chunk-size", "5", "--profile", "one_thumb"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_demo_end_to_end_on_a_slice_of_the_corpus(tmp_path, capsys):
    pytest.importorskip("chitchat_dataset")
    out = tmp_path / "demo"
    assert _run("demo", "--out", out, "--limit", "3000", "--workers", "1") == 0
    report = capsys.readouterr().out
    assert str(out) in report and "character error rate" in report
    messages = _jsonl(out / "messages.jsonl")
    assert len(messages) == 3000 and set(messages[0]) == {"id", "sender", "text"}
    for preset in ("raw", "committed"):
        pairs = _jsonl(out / f"{preset}.pairs.jsonl")
        assert [p["id"] for p in pairs] == [m["id"] for m in messages]
        assert [p["clean"] for p in pairs] == [m["text"] for m in messages]
        assert (out / f"{preset}.m2").read_text(encoding="utf-8").count("\nA ") >= 3000
    # The data stage: its summary accounts for all 3,000 messages, and its files are in place.
    from data.built import BuiltDataset

    ds = BuiltDataset(out / "data")
    assert ds.summary["records"] == 3000 and ds.summary["accounted"]
    assert "vocab cov" in report and len(ds.vocab()) > 1000


@pytest.mark.parametrize("ext", ["txt", "jsonl"])
def test_workers_reading_their_own_ranges_match_one_process(tmp_path, ext):
    # Two workers read their own line ranges: same output, same rejects, in the same order.
    inp = tmp_path / f"in.{ext}"
    if ext == "txt":
        inp.write_bytes(b"fine\r\nbad \xff\n\nok then\n" * 9 + b"no newline at the end")
    else:
        inp.write_bytes(b'{"text": "fine"}\n{"body": 1}\nnot json\n{"text": "caf\xc3\xa9"}\n'
                        b'{"text": "bad \xff"}\n' * 9)
    results = []
    for workers, chunk in [(1, 2048), (2, 1), (2, 4)]:
        out, rej = tmp_path / f"o{workers}{chunk}.jsonl", tmp_path / f"r{workers}{chunk}.jsonl"
        assert _run("simulate", "-i", inp, "-o", out, "--rejects", rej, "--workers", workers,
                    "--chunk-size", chunk) == 0
        results.append((out.read_bytes(), rej.read_bytes()))
    assert len(set(results)) == 1
    assert results[0][1].count(b"\n") == (9 if ext == "txt" else 27)


def test_ctrl_c_stops_the_workers_cleanly(tmp_path):
    # A terminal's Ctrl-C goes to the whole process group: the workers leave it to the parent,
    # which stops them and exits 130, with no traceback and no output or parts left behind.
    import signal
    import time

    inp = tmp_path / "in.txt"
    inp.write_text("the quick brown fox jumps over the lazy dog, doesn't it?\n" * 400_000)
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "kbsim.cli", "simulate", "-i", str(inp),
                             "-o", str(out), "--workers", "2", "--no-progress"], env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".kbsim-parts-*/*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not out.exists() and not list(tmp_path.glob(".kbsim-*"))
