"""Tests for data.torch_data: hand-computed sequences, padding, seeded loaders, clients."""

import pytest
import torch

import keyboard_sim
from data.chitchat import iter_messages
from data.subword import SubwordConfig, train_subword
from data.tokenize import tokenize
from data.torch_data import (
    NextWordDataset,
    PairBatch,
    PairDataset,
    collate_pairs,
    make_loader,
    next_word_datasets,
    pair_datasets,
    pooled,
)
from data.vocab import BOS, EOS, OOV, PAD, WordVocab


class CharTokenizer:
    """A tiny real tokenizer for goldens: "a" -> 4, "b" -> 5, ..."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def encode(self, text):
        return [4 + ord(c) - ord("a") for c in text]


@pytest.fixture(scope="module")
def chat():
    by_user = {}
    for m in iter_messages(limit=1500):
        text = " ".join(m["text"].split())
        if text:
            by_user.setdefault(m["sender"], []).append(text)
    return by_user


def test_next_word_golden():
    ds = NextWordDataset([[7, 8, 9], [4, 5, 6, 7, 8], [4, 5, 6, 7, 8, 9, 10], []], seq_len=5)
    assert len(ds) == 4 and ds.n_truncated == 1
    expected = [
        ([BOS, 7, 8, 9, EOS], [7, 8, 9, EOS, PAD]),
        ([BOS, 4, 5, 6, 7], [4, 5, 6, 7, 8]),  # exactly seq_len words: no EOS
        ([BOS, 4, 5, 6, 7], [4, 5, 6, 7, 8]),  # cut: words 9 and 10 are dropped
        ([BOS, EOS, PAD, PAD, PAD], [EOS, PAD, PAD, PAD, PAD]),
    ]
    for i, (x, y) in enumerate(expected):
        got_x, got_y = ds[i]
        assert got_x.dtype == got_y.dtype == torch.int64
        assert got_x.tolist() == x and got_y.tolist() == y


def test_next_word_from_texts_and_default_collate():
    vocab = WordVocab.build([["the", "cat", "sat"], ["the", "cat"], ["the"]])  # the 4, cat 5, sat 6
    ds = NextWordDataset.from_texts(["The cat sat down.", "cat"], vocab, seq_len=4)
    assert ds[0][0].tolist() == [BOS, 4, 5, 6]
    assert ds[0][1].tolist() == [4, 5, 6, OOV]
    assert ds[1][1].tolist() == [5, EOS, PAD, PAD]
    x, y = next(iter(make_loader(ds, batch_size=2, seed=0, shuffle=False)))
    assert x.shape == y.shape == (2, 4)
    full = NextWordDataset.from_texts(["a b"], vocab)
    assert full[0][0].shape == (20,)


def test_next_word_bad_ids():
    for bad in ([5, PAD], [BOS], [EOS, 9], [-4]):
        with pytest.raises(ValueError, match="message 1"):
            NextWordDataset([[5], bad])
    with pytest.raises(ValueError, match="id 12 >= vocab_size 10"):
        NextWordDataset([[5, 12]], vocab_size=10)
    with pytest.raises(TypeError, match="message 0"):
        NextWordDataset([[5.5]])
    with pytest.raises(ValueError, match="seq_len"):
        NextWordDataset([[5]], seq_len=0)


def test_pairs_golden_and_truncation():
    ds = PairDataset(["ab", "abcdef", ""], ["ab", "abcdef", "a"], CharTokenizer(), max_len=4)
    src, tgt = ds[0]
    assert src.tolist() == [4, 5] and tgt.tolist() == [BOS, 4, 5, EOS]
    src, tgt = ds[1]
    assert src.tolist() == [4, 5, 6, 7] and tgt.tolist() == [BOS, 4, 5, 6]  # cut: no EOS
    src, tgt = ds[2]
    assert src.tolist() == [] and tgt.tolist() == [BOS, 4, EOS]


def test_collate_pairs_golden():
    ds = PairDataset(["ab", "c", ""], ["a", "abc", "b"], CharTokenizer())
    batch = collate_pairs([ds[0], ds[1], ds[2]])
    assert isinstance(batch, PairBatch)
    assert batch.src.tolist() == [[4, 5], [6, PAD], [PAD, PAD]]
    assert batch.src_lengths.tolist() == [2, 1, 0]
    assert batch.src_mask.tolist() == [[True, True], [True, False], [False, False]]
    assert batch.tgt.tolist() == [[BOS, 4, EOS, PAD, PAD], [BOS, 4, 5, 6, EOS], [BOS, 5, EOS, 0, 0]]
    assert batch.tgt_lengths.tolist() == [3, 5, 3]
    assert batch.tgt_mask.sum().item() == 11
    empty = collate_pairs([ds[2]])
    assert empty.src.shape == (1, 1) and not empty.src_mask.any()  # one masked column
    with pytest.raises(ValueError):
        collate_pairs([])


def test_pair_input_errors():
    with pytest.raises(ValueError, match="2 noisy texts but 1 clean"):
        PairDataset(["a", "b"], ["a"], CharTokenizer())
    with pytest.raises(TypeError, match="clean text 1"):
        PairDataset(["a", "b"], ["a", None], CharTokenizer())
    with pytest.raises(TypeError, match="pair 0"):
        PairDataset.from_pairs([("a", "b", "c")], CharTokenizer())


def test_loader_order_depends_on_its_seed_only():
    ds = NextWordDataset([[4 + i] for i in range(40)], seq_len=3)

    def order(seed, workers=0):
        loader = make_loader(ds, batch_size=8, seed=seed, num_workers=workers)
        return [[x[1].item() for x in xb] for _ in range(2) for xb, _ in loader]

    torch.manual_seed(1)
    a = order(123)
    torch.manual_seed(2)  # the global RNG is not used
    assert order(123) == a
    assert order(124) != a
    assert a[:5] != a[5:]  # the second epoch is another permutation
    assert sorted(sum(a[:5], [])) == list(range(4, 44))
    assert order(123, workers=2) == a


def test_make_loader_checks():
    ds = NextWordDataset([[4]])
    with pytest.raises(ValueError, match="seed"):
        make_loader(ds, 1, seed=-1)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0, seed=1)


def test_per_client_and_pooled(chat):
    vocab = WordVocab.build((tokenize(t) for texts in chat.values() for t in texts), size=500)
    per_client = next_word_datasets(chat, vocab)
    assert list(per_client) == sorted(chat)
    assert all(len(per_client[c]) == len(chat[c]) for c in chat)
    pool = pooled(per_client)
    assert len(pool) == sum(len(texts) for texts in chat.values())
    first = sorted(chat)[0]
    direct = NextWordDataset.from_texts(chat[first], vocab)
    assert torch.equal(pool[0][0], direct[0][0])
    assert torch.equal(per_client[first].sequences, direct.sequences)
    with pytest.raises(ValueError):
        pooled({})


def test_pair_clients_from_keyboard_sim(chat, tmp_path):
    texts = [t for ts in chat.values() for t in ts]
    tok = train_subword(texts, tmp_path / "sp", SubwordConfig(vocab_size=400, model_type="bpe"))
    users = sorted(chat)[:3]
    pairs = {u: keyboard_sim.simulate(chat[u][:20], seed=7) for u in users}
    per_client = pair_datasets(pairs, tok, max_len=512)
    assert sum(len(d) for d in per_client.values()) == len(pooled(per_client))
    p = pairs[users[0]][0]
    src, tgt = per_client[users[0]][0]
    assert src.tolist() == tok.encode(p.noisy)[:512]
    assert tgt.tolist() == [BOS, *tok.encode(p.clean), EOS]
    assert tok.decode(tgt.tolist()) == p.clean
    batch = next(iter(make_loader(pooled(per_client), 8, seed=3, collate_fn=collate_pairs)))
    assert batch.src.shape[0] == 8 and batch.src.dtype == torch.int64
    assert (batch.src[~batch.src_mask] == PAD).all()
    with pytest.raises(TypeError, match="client 'x': pair 0"):
        pair_datasets({"x": [42]}, tok)
