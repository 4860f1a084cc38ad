"""Tests for models.proofreader_recipe: fresh noise per epoch, copy pairs, length batches, the
guard replay against the real corrector, and a few real training steps on a small build."""

import math

import numpy as np
import pytest
import torch

from data.build import build
from data.chitchat import iter_messages
from data.clients import ClientPool
from data.config import DataConfig
from data.record import Message
from data.subword import SubwordConfig, train_subword
from models.proofreader import Proofreader, ProofreaderConfig, ProofreaderCorrector
from models.proofreader_recipe import (
    RecipeConfig,
    RecipeError,
    _loss,
    apply_guard,
    collate,
    encode_pairs,
    epoch_batches,
    epoch_pairs,
    guard_decisions,
    length_batches,
    lr_at,
    report,
    steps_for_budget,
    train_recipe,
    tune_guard,
    with_identity,
)
from models.train_proofreader import load_corrector

pytest.importorskip("chitchat_dataset")

TINY_MODEL = {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
              "d_ff": 64, "max_len": 48, "dropout": 0.0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def texts():
    return [m["text"] for m in iter_messages(limit=600) if m["text"].strip()]


@pytest.fixture(scope="module")
def pool(texts):
    # Three clients of 20 real messages each.
    by_client = {
        f"u{c}": [Message(f"u{c}-{i}", f"u{c}", t, float(i), i, None)
                  for i, t in enumerate(texts[20 * c: 20 * c + 20])]
        for c in range(3)
    }
    return ClientPool(by_client, seed=11)


@pytest.fixture(scope="module")
def tokenizer(texts, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("sp") / "subword"
    return train_subword(texts, prefix, SubwordConfig(vocab_size=400, model_type="bpe"))


# --------------------------------------------------------------------------- fresh noise


def test_each_round_is_a_fresh_noise_draw_of_the_same_texts(pool):
    r1, r1_again, r2 = (epoch_pairs(pool, 11, r) for r in (1, 1, 2))
    assert r1 == r1_again  # a round is reproducible
    assert [c for _, c in r1] == [c for _, c in r2]  # same clean texts, clients in id order
    assert [c for _, c in r1] == [m.text for cid in sorted(pool) for m in pool[cid].messages]
    differ = sum(a != b for (a, _), (b, _) in zip(r1, r2, strict=True))
    assert differ >= len(r1) // 3  # raw typists garble most messages, differently each round
    # Round 0 is the build's round: ClientData.pairs with round 0.
    assert epoch_pairs(pool, 11, 0) == [(p.noisy, p.clean) for cid in sorted(pool)
                                        for p in pool[cid].pairs(11, round=0)]


def test_identity_share_replaces_exactly_that_many_pairs_by_copies():
    pairs = [(f"n{i}", f"c{i}") for i in range(50)]
    out = with_identity(pairs, 0.2, np.random.default_rng(5))
    copies = [i for i, (n, c) in enumerate(out) if n == c]
    assert len(out) == 50 and len(copies) == 10
    assert all(out[i] == (f"c{i}", f"c{i}") for i in copies)
    assert all(out[i] == pairs[i] for i in range(50) if i not in copies)
    assert out == with_identity(pairs, 0.2, np.random.default_rng(5))
    assert out != with_identity(pairs, 0.2, np.random.default_rng(6))
    assert with_identity(pairs, 0.0, np.random.default_rng(5)) == pairs
    assert all(n == c for n, c in with_identity(pairs, 1.0, np.random.default_rng(5)))
    with pytest.raises(RecipeError, match="identity share"):
        with_identity(pairs, 1.5, np.random.default_rng(0))


# --------------------------------------------------------------------------- length batches


def test_length_batches_cover_every_item_once_within_the_token_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=500).tolist() + [200]  # one longer than the budget
    batches = length_batches(lengths, 256, np.random.default_rng(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(501))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) * longest <= 256 or len(b) == 1
    assert [500] in batches  # the long one alone
    # Padding: sorted batches waste far less than the same batch sizes drawn at random.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    perm = rng.permutation(501).tolist()
    pos, shuffled = 0, 0
    for b in batches:
        chunk = perm[pos:pos + len(b)]
        pos += len(b)
        shuffled += len(chunk) * max(lengths[i] for i in chunk)
    assert padded <= 1.1 * sum(lengths)
    assert shuffled > 1.4 * padded


def test_length_batches_are_seeded_and_the_batch_order_is_shuffled():
    lengths = [5] * 40 + [20] * 40
    a = length_batches(lengths, 100, np.random.default_rng(3))
    assert a == length_batches(lengths, 100, np.random.default_rng(3))
    assert a != length_batches(lengths, 100, np.random.default_rng(4))
    # Hand count: 20 items of length 5 fit 100 positions, 5 items of length 20 do.
    assert sorted(len(b) for b in a) == [5] * 8 + [20] * 2
    assert [len(b) for b in a] != sorted(len(b) for b in a) or len(a) < 3
    with pytest.raises(RecipeError, match="length 0"):
        length_batches([3, 0], 10, np.random.default_rng(0))
    with pytest.raises(RecipeError, match="batch_tokens"):
        length_batches([3], 0, np.random.default_rng(0))


def test_encode_pairs_leaves_out_pairs_too_long_for_the_model(tokenizer):
    pairs = [("helo there", "hello there"), ("x " * 60, "x " * 60), ("ok", "ok")]
    encoded, kept, dropped = encode_pairs(pairs, tokenizer, 48)
    assert kept == [0, 2] and dropped == 1
    src, tgt = encoded[0]
    assert src == tokenizer.encode("helo there")
    assert tgt == [tokenizer.bos_id, *tokenizer.encode("hello there"), tokenizer.eos_id]
    src_t, mask, tgt_t = collate(encoded, 0)
    assert src_t.shape == (2, len(src)) and tgt_t.shape == (2, len(tgt))
    assert mask.sum(1).tolist() == [len(src), len(encoded[1][0])]
    assert tgt_t[1, len(encoded[1][1]):].eq(0).all()


def test_epoch_batches_differ_by_epoch_and_hold_the_copy_share(pool, tokenizer):
    config = RecipeConfig(model=TINY_MODEL, identity_share=0.25, batch_tokens=200, seed=2)
    e0, b0, c0 = epoch_batches(pool, 11, tokenizer, config, 0)
    e0b, b0b, _ = epoch_batches(pool, 11, tokenizer, config, 0)
    e1, _, _ = epoch_batches(pool, 11, tokenizer, config, 1)
    assert (e0, b0) == (e0b, b0b)
    assert e0 != e1
    assert c0["pairs"] == 60 and c0["identity"] == 15 and c0["kept"] + c0["dropped"] == 60
    assert sorted(i for b in b0 for i in b) == list(range(c0["kept"]))
    copies = sum(src == tgt[1:-1] for src, tgt in e0)
    assert copies >= 15  # the 15 copies plus any message the typist got right


# --------------------------------------------------------------------------- schedule, config


def test_schedule_and_budget():
    config = RecipeConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(5, config) == pytest.approx(5e-4)
    assert lr_at(10, config) == pytest.approx(1e-3)
    assert lr_at(55, config) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(100, config) == pytest.approx(1e-4)
    assert steps_for_budget(0.5, 60) == 120
    assert steps_for_budget(10.0, 5, floor=3) == 3
    with pytest.raises(RecipeError, match="lr"):
        RecipeConfig(lr=0)
    with pytest.raises(RecipeError, match="unknown recipe keys"):
        RecipeConfig.from_dict({"batch_size": 3})
    with pytest.raises(RecipeError, match="model"):
        RecipeConfig(model={"d_model": 30, "n_heads": 4})
    assert RecipeConfig.from_dict(RecipeConfig().to_dict()) == RecipeConfig()


# --------------------------------------------------------------------------- guard


def test_guard_replay_equals_the_corrector(tokenizer, texts):
    # A tiny model taught to copy for 40 steps writes finished (if poor) messages, so the
    # guard's rules, not the length limit, decide what is kept.
    model = Proofreader(ProofreaderConfig(vocab_size=tokenizer.vocab_size, **TINY_MODEL))
    model.reset_parameters(torch.Generator().manual_seed(0))
    encoded, _, _ = encode_pairs([(t, t) for t in texts[:300]], tokenizer, 48)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(40):
        start = (step * 16) % (len(encoded) - 16)
        src, mask, tgt = collate(encoded[start:start + 16], 0)
        loss, _, _ = _loss(model, src, mask, tgt, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    noisy = texts[100:112] + [""]
    decisions = guard_decisions(ProofreaderCorrector(model, tokenizer, beam=2), noisy)
    finished = [d for d in decisions if d["reason"] not in ("length", "unfinished", "same")]
    assert len(finished) >= 6

    def split(values):  # the middle of the widest gap: far from any value's rounding noise
        v = sorted(values)
        gap, i = max((v[i + 1] - v[i], i) for i in range(len(v) - 1))
        assert gap > 1e-5
        return (v[i] + v[i + 1]) / 2

    settings = [(-math.inf, 0.0), (split(d["confidence"] for d in finished), 0.0),
                (-math.inf, split(d["gain"] for d in finished))]
    outputs = []
    for mc, mg in settings:
        corrector = ProofreaderCorrector(model, tokenizer, beam=2, min_confidence=mc,
                                         min_gain=mg)
        outputs.append(corrector.correct(noisy))
        assert apply_guard(decisions, mc, mg) == outputs[-1]
    changed = [sum(a != b for a, b in zip(out, noisy, strict=True)) for out in outputs]
    assert changed[0] >= 6 and changed[1] < changed[0] and changed[2] < changed[0]
    assert apply_guard(decisions, 0.0, None) == noisy  # nothing is certain


def test_tune_guard_picks_the_lowest_cer_and_the_stricter_on_ties():
    noisy = ["teh cat", "a dog", "hte"]
    clean = ["the cat", "a dog", "the"]

    def dec(text, hyp, conf, gain):
        return {"text": hyp, "typed": text, "hypothesis": hyp, "changed": True,
                "reason": "corrected", "confidence": conf, "gain": gain}

    decisions = [dec("teh cat", "the cat", -0.1, 0.5), dec("a dog", "a dig", -0.3, 0.5),
                 dec("hte", "the", -0.05, 0.01)]
    best = tune_guard(decisions, noisy, clean, confidences=(-1.0, -0.2, -0.01),
                      gains=(0.0, 0.02))
    # -0.2 keeps both right corrections and drops "a dig"; gain 0.0 keeps "hte" -> "the".
    assert (best["min_confidence"], best["min_gain"]) == (-0.2, 0.0)
    assert best["metrics"]["cer_after"] == 0.0
    m = report(noisy, apply_guard(decisions, -1.0, 0.0), clean)
    assert m["clean_changed"] == 1.0 and m["noisy_fixed"] == 1.0 and m["clean_messages"] == 1
    # All equal: the stricter setting wins.
    same = [dec("a dog", "a dog", -0.1, 0.5)]
    tie = tune_guard(same, ["a dog"], ["a dog"], confidences=(-1.0, -0.5), gains=(0.0, 0.1))
    assert (tie["min_confidence"], tie["min_gain"]) == (-0.5, 0.1)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build(DataConfig.from_dict({
        "corpus": {"limit": 1500},
        "tokenizers": {"vocab_size": 300, "subword_vocab_size": 400, "subword_model": "bpe"},
    }), out)
    return out


def test_train_recipe_runs_and_loads_as_a_corrector(built, tmp_path):
    config = RecipeConfig(model=TINY_MODEL, steps=12, warmup_steps=2, batch_tokens=600,
                          lr=3e-3, eval_every=6, eval_pairs=20, seed=1)
    summary = train_recipe(config, built, tmp_path)
    assert summary["steps"] == 12 and summary["pairs_seen"] > 12
    assert summary["final"]["step"] == 12 and summary["final"]["val_loss"] > 0
    corrector = load_corrector(tmp_path, beam=1)
    assert corrector.model.config.d_model == 32
    assert len(corrector.correct(["helo", "ok"])) == 2
