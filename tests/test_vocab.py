"""Tests for data.vocab: hand-computed ids, ties, OOV, lowercase, files and their errors."""

import json
import random

import pytest

from data.chitchat import iter_messages
from data.tokenize import tokenize
from data.vocab import BOS, EOS, OOV, PAD, Coverage, VocabFileError, WordVocab

CORPUS = [["the", "cat", "sat"], ["The", "dog", "sat"], ["a", "cat"]]


def test_ids_ties_and_specials():
    v = WordVocab.build(CORPUS)
    # Counts (lowercased): cat 2, sat 2, the 2, a 1, dog 1; ties go by the word.
    assert v.words == ("cat", "sat", "the", "a", "dog")
    assert v.counts == (2, 2, 2, 1, 1)
    assert (PAD, BOS, EOS, OOV) == (0, 1, 2, 3)
    assert len(v) == 9
    assert v.encode(["The", "DOG", "cat", "mouse"]) == [6, 8, 4, OOV]
    assert v.decode([0, 1, 2, 3, 4, 8]) == ["<pad>", "<bos>", "<eos>", "<oov>", "cat", "dog"]


def test_size_min_count_and_case():
    assert WordVocab.build(CORPUS, size=4).words == ("cat", "sat", "the", "a")
    assert WordVocab.build(CORPUS, size=4).encode(["dog"]) == [OOV]
    assert WordVocab.build(CORPUS, min_count=2).words == ("cat", "sat", "the")
    cased = WordVocab.build(CORPUS, lowercase=False)
    # "The" sorts before "a" (uppercase first in code point order).
    assert cased.words == ("cat", "sat", "The", "a", "dog", "the")
    assert cased.encode(["the", "The", "THE"]) == [9, 6, OOV]
    assert WordVocab.build(CORPUS, size=0).words == ()


def test_specials_are_reserved():
    v = WordVocab.build([["<pad>", "<oov>", "hi", "hi"]])
    assert v.words == ("hi",)
    assert v.encode(["<pad>", "hi"]) == [OOV, 4]


def test_order_of_messages_does_not_matter():
    msgs = [tokenize(m["text"]) for m in iter_messages(limit=500)]
    shuffled = msgs[:]
    random.Random(0).shuffle(shuffled)
    assert WordVocab.build(msgs, size=300) == WordVocab.build(shuffled, size=300)


def test_coverage_is_mergeable():
    v = WordVocab.build(CORPUS, size=4)
    a, b = [["the", "dog"]], [["cat", "mouse", "A"]]
    assert v.coverage(a) == Coverage(1, 2)
    assert v.coverage(b) == Coverage(2, 3)
    assert v.coverage(a) + v.coverage(b) == v.coverage(a + b) == Coverage(3, 5)
    assert v.coverage(a + b).rate == pytest.approx(0.6)
    assert Coverage(0, 0).rate == 0.0


def test_encode_message():
    v = WordVocab.build(CORPUS)
    assert v.encode_message("The cat, sat!") == [6, 4, OOV, 5, OOV]


def test_save_load_round_trip(tmp_path):
    v = WordVocab.build([tokenize(m["text"]) for m in iter_messages(limit=300)], size=200)
    path = v.save(tmp_path / "sub" / "vocab.json")
    assert WordVocab.load(path) == v
    assert WordVocab.load(path, size=200, lowercase=True) == v
    data = json.loads(path.read_text())
    assert data["format"] == "kbsim-word-vocab" and data["version"] == 1
    assert data["config"] == {"size": 200, "lowercase": True, "min_count": 1}
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp file left


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_bad_files(tmp_path):
    path = WordVocab.build(CORPUS).save(tmp_path / "v.json")
    good = path.read_text()

    def expect(match, **kw):
        with pytest.raises(VocabFileError, match=match) as e:
            WordVocab.load(path, **kw)
        assert str(path) in str(e.value)
        assert isinstance(e.value, ValueError)
        path.write_text(good)

    expect("built with size=10000, expected size=5", size=5)
    expect("built with lowercase=True", lowercase=False)
    path.write_text(good[: len(good) // 2])
    expect("not a JSON")
    _edit(path, lambda d: d.update(format="other"))
    expect("not a kbsim-word-vocab file")
    _edit(path, lambda d: d.update(version=2))
    expect("version 2")
    _edit(path, lambda d: d.update(specials=["<pad>"]))
    expect("specials")
    _edit(path, lambda d: d["words"].reverse())
    expect("inconsistent.*descending count")
    _edit(path, lambda d: d["counts"].pop())
    expect("inconsistent.*5 words but 4 counts")
    _edit(path, lambda d: d["words"].__setitem__(0, "Cat"))
    expect("inconsistent.*not lowercase")
    _edit(path, lambda d: d["config"].update(size=2))
    expect("inconsistent.*more than size=2")
    path.unlink()
    with pytest.raises(VocabFileError, match="cannot read"):
        WordVocab.load(path)


def test_bad_input():
    with pytest.raises(ValueError, match="token list 1, token 0"):
        WordVocab.build([["ok"], [""]])
    with pytest.raises(ValueError, match="token list 0, token 1"):
        WordVocab.build([["ok", 5]])
    with pytest.raises(TypeError, match="token list 0"):
        WordVocab.build(["not a list"])
    with pytest.raises(ValueError, match="min_count"):
        WordVocab.build(CORPUS, min_count=0)
    with pytest.raises(ValueError, match="size"):
        WordVocab.build(CORPUS, size=-1)
    v = WordVocab.build(CORPUS)
    with pytest.raises(ValueError, match="id 1: 9 is not an id"):
        v.decode([4, 9])
    with pytest.raises(ValueError, match="id 0"):
        v.decode([-1])
