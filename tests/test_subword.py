"""Tests for data.subword: deterministic training, checked loading, exact round trips."""

import hashlib
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.chitchat import iter_messages
from data.subword import SubwordConfig, SubwordFileError, SubwordTokenizer, train_subword

SMALL = SubwordConfig(vocab_size=500)


@pytest.fixture(scope="module")
def chat():
    texts = (" ".join(m["text"].split()) for m in iter_messages(limit=3000))
    return [t for t in texts if t]


@pytest.fixture(scope="module")
def trained(chat, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("sp") / "chat"
    t0 = time.perf_counter()
    tok = train_subword(iter(chat), prefix, SMALL)
    seconds = time.perf_counter() - t0
    return prefix, tok, seconds


def test_training_is_quick_and_writes_both_files(trained, chat):
    prefix, tok, seconds = trained
    assert seconds < 20, seconds  # about 0.7 s for unigram, 500 pieces, 3,000 messages
    meta = json.loads(prefix.with_suffix(".json").read_text())
    assert meta["model_file"] == "chat.model"
    assert meta["model_sha256"] == tok.sha256
    assert meta["config"]["vocab_size"] == 500
    assert meta["trained_on"] == {"texts": len(chat), "chars": sum(map(len, chat))}
    assert prefix.with_suffix(".model").read_bytes() == tok.model


def test_training_twice_gives_identical_bytes(trained, chat, tmp_path):
    _, tok, _ = trained
    again = train_subword(chat, tmp_path / "again", SMALL)
    assert again.model == tok.model
    bpe = SubwordConfig(vocab_size=500, model_type="bpe")
    a = train_subword(chat, tmp_path / "bpe1", bpe)
    b = train_subword(chat, tmp_path / "bpe2", bpe)
    assert a.model == b.model != tok.model


def test_specials_and_size(trained):
    _, tok, _ = trained
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 500
    assert tok.decode([1, *tok.encode("hello there"), 2, 0, 0]) == "hello there"
    assert tok.encode_pieces("hello 2024")[-4:] == ["2", "0", "2", "4"]  # split digits
    with pytest.raises(ValueError, match="id 1: 500 is not an id"):
        tok.decode([5, 500])


def test_load_checks_and_matches(trained):
    prefix, tok, _ = trained
    for where in (prefix, prefix.with_suffix(".model"), str(prefix.with_suffix(".json"))):
        loaded = SubwordTokenizer.load(where)
        assert loaded.sha256 == tok.sha256
        assert loaded.encode("how are you doing?") == tok.encode("how are you doing?")


def test_bad_files(trained, tmp_path):
    prefix, tok, _ = trained
    model = prefix.with_suffix(".model").read_bytes()
    meta = json.loads(prefix.with_suffix(".json").read_text())
    p = tmp_path / "m"

    def write(model_bytes=model, **changes):
        p.with_suffix(".model").write_bytes(model_bytes)
        p.with_suffix(".json").write_text(json.dumps({**meta, "model_file": "m.model", **changes}))

    def expect(match):
        with pytest.raises(SubwordFileError, match=match) as e:
            SubwordTokenizer.load(p)
        assert str(tmp_path) in str(e.value)
        assert isinstance(e.value, ValueError)

    write()
    assert SubwordTokenizer.load(p).model == model
    flipped = bytearray(model)
    flipped[len(flipped) // 2] ^= 0xFF
    write(bytes(flipped))
    expect("sha256 .* differs")
    garbage = b"not a model at all"
    write(garbage, model_sha256=hashlib.sha256(garbage).hexdigest())
    expect("not a sentencepiece model")
    write(config={**meta["config"], "vocab_size": 600})
    expect(r"\(vocab size, pad, bos, eos, unk\) = \(500, 0, 1, 2, 3\)")
    write(config={**meta["config"], "model_type": "word"})
    expect("bad config")
    write(version=9)
    expect("version 9")
    write(model_file="other.model")
    expect("describes 'other.model'")
    p.with_suffix(".json").write_text("{trunc")
    expect("not JSON")
    write()
    p.with_suffix(".model").unlink()
    expect("cannot read the model")
    with pytest.raises(SubwordFileError, match="cannot read the model description"):
        SubwordTokenizer.load(tmp_path / "nothing")


def test_chat_round_trip(trained, chat):
    _, tok, _ = trained
    fresh = [" ".join(m["text"].split()) for m in iter_messages(limit=5000)][3000:]
    for texts in (chat, fresh):
        assert all(tok.decode(tok.encode(t)) == t for t in texts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60).filter(lambda t: "\u2581" not in t))
def test_any_text_round_trips(trained, text):
    # Identity normalization, kept whitespace and byte fallback: exact for any text but "▁".
    _, tok, _ = trained
    assert tok.decode(tok.encode(text)) == text


def test_pickles(trained):
    _, tok, _ = trained
    back = pickle.loads(pickle.dumps(tok))
    assert back.sha256 == tok.sha256 and back.encode("ok then") == tok.encode("ok then")


def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="text 1: empty"):
        train_subword(["fine", "  "], tmp_path / "x", SMALL)
    with pytest.raises(TypeError, match="text 0"):
        train_subword([b"bytes"], tmp_path / "x", SMALL)
    with pytest.raises(ValueError, match="text 0: 6 UTF-8 bytes"):
        train_subword(["héllo"], tmp_path / "x", SubwordConfig(vocab_size=500, max_text_bytes=5))
    with pytest.raises(ValueError, match="Vocabulary size too high"):
        train_subword(["abc def"] * 3, tmp_path / "x", SMALL)
    assert not list(tmp_path.iterdir())  # nothing written on failure
    with pytest.raises(ValueError, match="vocab_size"):
        SubwordConfig(vocab_size=100)
    with pytest.raises(ValueError, match="model_type"):
        SubwordConfig(model_type="char")
    with pytest.raises(SubwordFileError, match="not a sentencepiece model"):
        SubwordTokenizer.from_bytes(b"", SMALL)


def test_text_modules_do_not_import_torch():
    code = "import sys, data.tokenize, data.vocab, data.subword; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
