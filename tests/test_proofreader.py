"""Tests for models.proofreader: shapes, masks, decoding against teacher forcing, the guard, and
a tiny model that learns real keyboard_sim pairs."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

import keyboard_sim
from data.chitchat import iter_messages
from data.subword import SubwordConfig, train_subword
from models.proofreader import (
    Proofreader,
    ProofreaderConfig,
    ProofreaderCorrector,
    strip_ids,
)

pytest.importorskip("chitchat_dataset")

TINY = ProofreaderConfig(vocab_size=60, d_model=32, n_heads=4, n_encoder_layers=2,
                         n_decoder_layers=2, d_ff=64, max_len=24, dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These tiny models run many small ops; on a shared 2-core machine two torch threads per
    # process contend with other work and run several times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed=0, config=TINY):
    model = Proofreader(config)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.eval()


def ids(shape, seed, lo=3, hi=60):
    return torch.randint(lo, hi, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def chat_texts():
    out = []
    for m in iter_messages(limit=800):
        text = " ".join(m["text"].split())
        if text:
            out.append(text)
    return out


@pytest.fixture(scope="module")
def tokenizer(chat_texts, tmp_path_factory):
    # BPE trains in a tenth of a second here; the unigram default takes seconds.
    prefix = tmp_path_factory.mktemp("sp") / "sp"
    return train_subword(chat_texts, prefix, SubwordConfig(vocab_size=400, model_type="bpe"))


# --------------------------------------------------------------------------- config and shapes


def test_config_round_trip_and_validation():
    c = ProofreaderConfig(d_model=64, n_heads=2)
    assert ProofreaderConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown proofreader config keys \\['heads'\\]"):
        ProofreaderConfig.from_dict({"heads": 3})
    with pytest.raises(ValueError, match="must divide"):
        ProofreaderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="eos_id and pad_id are both 0|eos_id"):
        ProofreaderConfig(eos_id=0)
    with pytest.raises(ValueError, match="bos_id 500 must be below vocab_size 400"):
        ProofreaderConfig(vocab_size=400, bos_id=500)
    with pytest.raises(ValueError, match="dropout"):
        ProofreaderConfig(dropout=1.0)
    with pytest.raises(ValueError, match="max_len"):
        ProofreaderConfig(max_len=True)
    with pytest.raises(TypeError, match="ProofreaderConfig"):
        Proofreader({"d_model": 8})


def expected_parameters(c):
    d, f = c.d_model, c.d_ff
    attn = 4 * d * d + 4 * d  # q, k+v, out with biases
    ff = d * f + f + f * d + d
    enc = 2 * 2 * d + attn + ff  # two LayerNorms
    dec = 3 * 2 * d + 2 * attn + ff  # three LayerNorms, self and cross attention
    # shared embedding (also the output projection), two position tables, two final norms
    return (c.vocab_size * d + 2 * c.max_len * d + c.n_encoder_layers * enc
            + c.n_decoder_layers * dec + 2 * 2 * d)


def test_parameter_count_default_and_tiny():
    default = ProofreaderConfig()
    model = Proofreader(default)
    assert model.num_parameters() == expected_parameters(default) == 6_108_160
    # tied: no separate output matrix
    assert sum(p.numel() for n, p in model.named_parameters() if p.shape[0] == 2000) == 512_000
    assert tiny().num_parameters() == expected_parameters(TINY)


def test_forward_shapes_and_length_limits():
    model = tiny()
    logits = model(ids((3, 7), 1), ids((3, 5), 2))
    assert logits.shape == (3, 5, TINY.vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="src has 25 positions, max_len is 24"):
        model(ids((1, 25), 1), ids((1, 3), 2))
    with pytest.raises(ValueError, match="tgt_in has 25 positions"):
        model(ids((1, 5), 1), ids((1, 25), 2))
    with pytest.raises(ValueError, match="src_mask shape"):
        model(ids((1, 5), 1), ids((1, 2), 2), torch.ones(1, 4, dtype=torch.bool))


def test_an_empty_source_gives_finite_outputs():
    model = tiny()
    src = torch.zeros((2, 3), dtype=torch.int64)  # all padding
    assert torch.isfinite(model(src, ids((2, 4), 3))).all()


# --------------------------------------------------------------------------- masks


def test_decoder_is_causal():
    model = tiny()
    src, tgt = ids((2, 6), 1), ids((2, 9), 2)
    base = model(src, tgt)
    changed = tgt.clone()
    changed[:, 5:] = ids((2, 4), 3)
    assert not torch.equal(changed, tgt)
    after = model(src, changed)
    torch.testing.assert_close(after[:, :5], base[:, :5], rtol=0, atol=1e-6)
    assert (after[:, 5:] - base[:, 5:]).abs().max() > 1e-3  # and later positions do see it


def test_source_padding_is_invisible():
    model = tiny()
    src = ids((2, 7), 4)
    src[1, 4:] = TINY.pad_id
    tgt = ids((2, 5), 5)
    base = model(src, tgt)
    # Other values at the padded positions, with the mask saying where they are.
    mask = src != TINY.pad_id
    noisy_pad = src.clone()
    noisy_pad[1, 4:] = ids((3,), 6)
    torch.testing.assert_close(model(noisy_pad, tgt, mask), base, rtol=0, atol=1e-6)
    # More padding columns change nothing either.
    wider = torch.cat([src, torch.zeros((2, 5), dtype=torch.int64)], dim=1)
    torch.testing.assert_close(model(wider, tgt), base, rtol=0, atol=1e-5)
    # Row 1 alone, without padding, gives the same as in the batch.
    torch.testing.assert_close(model(src[1:, :4], tgt[1:]), base[1:], rtol=0, atol=1e-5)
    # A real id where the padding was does change row 1 (the mask is what hides it).
    assert (model(noisy_pad, tgt)[1] - base[1]).abs().max() > 1e-4


# --------------------------------------------------------------------------- decoding


def teacher_forced_log_prob(model, src, seq):
    """log p(seq | src) from one full forward pass (no cache), seq = ids after BOS."""
    tgt_in = torch.tensor([[model.config.bos_id, *seq[:-1]]])
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([src]), tgt_in)[0], dim=-1)
    return float(sum(logp[t, i] for t, i in enumerate(seq)))


def sources():
    return [[5, 9, 11, 40, 7], [12, 13], [30, 31, 32, 33, 34, 35, 36, 37], [8]]


def test_greedy_equals_beam_of_one_and_teacher_forcing():
    model = tiny(seed=3)
    g = model.greedy(sources(), max_len=12)
    b = model.beam_search(sources(), beam=1, max_len=12)
    assert g.sequences.shape[0] == 4 and b.sequences.shape[:2] == (4, 1)
    for i, src in enumerate(sources()):
        n = int(g.lengths[i])
        seq = g.sequences[i, :n].tolist()
        assert seq == b.sequences[i, 0, : int(b.lengths[i, 0])].tolist()
        assert g.sequences[i, n:].eq(TINY.pad_id).all()
        assert TINY.pad_id not in seq and TINY.bos_id not in seq
        # The cached step-by-step decoder agrees with a full forward pass.
        assert float(g.log_probs[i]) == pytest.approx(teacher_forced_log_prob(model, src, seq),
                                                      abs=1e-4)
        assert float(b.log_probs[i, 0]) == pytest.approx(float(g.log_probs[i]), abs=1e-5)
        # Each step's id is the argmax of the full-forward logits (PAD and BOS excluded).
        tgt_in = torch.tensor([[TINY.bos_id, *seq[:-1]]])
        with torch.no_grad():
            logits = model(torch.tensor([src]), tgt_in)[0]
        logits[:, [TINY.pad_id, TINY.bos_id]] = -math.inf
        assert logits.argmax(-1).tolist() == seq


def test_beam_hypotheses_are_sorted_distinct_and_scored_right():
    model = tiny(seed=4)
    res = model.beam_search(sources(), beam=4, max_len=10, length_penalty=1.0)
    assert res.sequences.shape[:2] == (4, 4)
    for i, src in enumerate(sources()):
        scores = res.scores[i].tolist()
        assert scores == sorted(scores, reverse=True)
        seqs = []
        for j in range(4):
            n = int(res.lengths[i, j])
            seq = res.sequences[i, j, :n].tolist()
            seqs.append(tuple(seq))
            assert bool(res.finished[i, j]) == (seq[-1] == TINY.eos_id)
            lp = teacher_forced_log_prob(model, src, seq)
            assert float(res.log_probs[i, j]) == pytest.approx(lp, abs=1e-4)
            assert scores[j] == pytest.approx(lp / n, abs=1e-4)
        assert len(set(seqs)) == 4


def test_beam_search_of_a_batch_equals_one_message_at_a_time():
    model = tiny(seed=5)
    batch = model.beam_search(sources(), beam=3, max_len=10)
    for i, src in enumerate(sources()):
        one = model.beam_search([src], beam=3, max_len=10)
        width = one.sequences.shape[2]
        assert torch.equal(batch.sequences[i, :, :width], one.sequences[0])
        assert batch.sequences[i, :, width:].eq(TINY.pad_id).all()
        torch.testing.assert_close(batch.log_probs[i], one.log_probs[0], rtol=0, atol=1e-5)


def test_sequence_log_probs_and_strip_ids():
    model = tiny(seed=6)
    src = sources()
    tgt = [[7, 8], [9], [], [10, 11, 12]]
    got = model.sequence_log_probs(src, tgt)
    for i in range(4):
        want = teacher_forced_log_prob(model, src[i], [*tgt[i], TINY.eos_id])
        assert float(got[i]) == pytest.approx(want, abs=1e-4)
    assert strip_ids(torch.tensor([5, 6, 2, 0, 0])) == [5, 6]
    assert strip_ids([5, 0, 6]) == [5, 6]
    with pytest.raises(ValueError, match="beam"):
        model.beam_search(src, beam=0)
    with pytest.raises(ValueError, match="length_penalty"):
        model.beam_search(src, length_penalty=-1)


# --------------------------------------------------------------------------- the guard


def test_an_untrained_model_changes_nothing(tokenizer, chat_texts):
    # The default width with this tokenizer's vocabulary: near-uniform predictions.
    config = ProofreaderConfig(vocab_size=tokenizer.vocab_size, max_len=48, dropout=0.0)
    model = Proofreader(config)
    model.reset_parameters(torch.Generator().manual_seed(0))
    texts = [t for t in chat_texts if len(tokenizer.encode(t)) < 20][:6]
    pairs = keyboard_sim.simulate(texts, "raw", seed=1, ids=[str(i) for i in range(6)])
    noisy = [p.noisy for p in pairs]
    corrector = ProofreaderCorrector(model, tokenizer, beam=2, batch_size=4)
    assert corrector.name == "proofreader"
    assert corrector.correct(noisy) == noisy
    for d in corrector.decide(noisy):
        assert d["reason"] in ("unfinished", "low_confidence")
        assert d["confidence"] < math.log(0.7) - 1  # far from confident
        assert d["hypothesis"] != d["text"]  # it would have changed the text
    # Too long or empty messages are passed through without decoding.
    long = " ".join(texts) * 3
    assert corrector.decide([long, ""])[0]["reason"] == "length"
    assert corrector.correct([long, ""]) == [long, ""]


def test_corrector_checks_its_arguments(tokenizer):
    with pytest.raises(ValueError, match="tokenizer has 400 pieces, the model 60"):
        ProofreaderCorrector(tiny(), tokenizer)
    model = Proofreader(ProofreaderConfig(vocab_size=400, d_model=16, n_heads=2, d_ff=16,
                                          n_encoder_layers=1, n_decoder_layers=1))
    with pytest.raises(ValueError, match="min_gain"):
        ProofreaderCorrector(model, tokenizer, min_gain=-1)
    with pytest.raises(TypeError, match="text 1"):
        ProofreaderCorrector(model, tokenizer).correct(["ok", 3])


# --------------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def overfit(tokenizer, chat_texts):
    """A tiny model trained on 20 real (noisy, clean) pairs until it has learned them."""
    texts = [t for t in chat_texts if 3 <= len(t.split()) <= 8][:20]
    pairs = keyboard_sim.simulate(texts, "raw", seed=7, ids=[f"m{i}" for i in range(20)])
    src = [tokenizer.encode(p.noisy) for p in pairs]
    tgt = [[1, *tokenizer.encode(p.clean), 2] for p in pairs]
    config = ProofreaderConfig(vocab_size=tokenizer.vocab_size, d_model=64, n_heads=4,
                               n_encoder_layers=2, n_decoder_layers=2, d_ff=128, max_len=64,
                               dropout=0.0)
    model = Proofreader(config)
    model.reset_parameters(torch.Generator().manual_seed(0))
    pad = lambda rows: torch.nn.utils.rnn.pad_sequence(  # noqa: E731
        [torch.tensor(r) for r in rows], batch_first=True, padding_value=0)
    s, t = pad(src), pad(tgt)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    losses = []
    model.train()
    for _ in range(150):
        logits = model(s, t[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1),
                               ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, pairs, losses, time.perf_counter() - started


def test_a_tiny_model_learns_real_pairs(overfit, tokenizer):
    model, pairs, losses, seconds = overfit
    assert losses[-1] < losses[0] / 20
    out = model.greedy([tokenizer.encode(p.noisy) for p in pairs], max_len=64)
    decoded = [tokenizer.decode(strip_ids(s)) for s in out.sequences]
    share = sum(d == p.clean for d, p in zip(decoded, pairs, strict=True)) / len(pairs)
    # Measured: 1/20 after 50 full-batch steps, 20/20 from step 100 on (150 steps: about 8 s
    # on one thread of a busy 2-core machine); 15 of the 20 pairs differ from their clean text.
    assert share >= 0.8, (share, seconds)
    assert sum(p.noisy != p.clean for p in pairs) >= 10  # most pairs do need a correction


def test_the_guard_lets_confident_corrections_through(overfit, tokenizer):
    model, pairs, _, _ = overfit
    noisy = [p.noisy for p in pairs]
    clean = [p.clean for p in pairs]
    corrector = ProofreaderCorrector(model, tokenizer, beam=2)
    got = corrector.correct(noisy)
    assert sum(g == c for g, c in zip(got, clean, strict=True)) >= 0.8 * len(pairs)
    decisions = corrector.decide(noisy)
    for d, p in zip(decisions, pairs, strict=True):
        if d["changed"]:
            assert d["gain"] >= corrector.min_gain and d["confidence"] >= corrector.min_confidence
        if p.noisy == p.clean:
            assert d["text"] == p.noisy
    # An unreachable margin keeps every message as typed.
    strict = ProofreaderCorrector(model, tokenizer, beam=2, min_gain=1e6)
    assert strict.correct(noisy) == noisy
    assert {d["reason"] for d in strict.decide(noisy)} <= {"same", "low_gain"}
