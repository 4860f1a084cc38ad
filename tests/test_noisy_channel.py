"""The noisy-channel corrector: priors, candidates, decoding of small examples."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from data.tokenize import tokenize
from data.vocab import BOS, PAD, WordVocab
from models.keyboard_likelihood import KeyboardLikelihood
from models.noisy_channel import (
    BigramPrior,
    CorrectorError,
    NextWordLMPrior,
    NoisyChannelCorrector,
    osa_distance,
)

TEXTS = [
    "hello world",
    "hello world , how are you ?",
    "the cat sat on the mat",
    "the world is big",
    "say hello to the world",
    "i think the cat is here",
    "there is the cat",
    "they said hello",
]


@pytest.fixture(scope="module")
def corrector():
    prior = BigramPrior.from_texts(TEXTS)
    counts = Counter(t.lower() for text in TEXTS for t in tokenize(text))
    return NoisyChannelCorrector(prior, counts, KeyboardLikelihood("en-US", "raw"))


def test_bigram_prior_hand_computed():
    # Counts: a 2, b 1, no OOV; bigrams (a, b) 1 and (a, a) 1; d = 0.5.
    prior = BigramPrior({"a": 2, "b": 1}, {("a", "b"): 1, ("a", "a"): 1}, discount=0.5)
    uni = np.array([3, 2, 1]) / 6  # add-one over a, b and the OOV slot
    assert np.allclose(np.exp(prior.next_log_probs([])), uni)
    after_a = np.exp(prior.next_log_probs(["x", "A"]))
    # (c - d) / c(a) + d * N1+(a) / c(a) * P1
    assert np.allclose(after_a, [0.25 + 0.5 * uni[0], 0.25 + 0.5 * uni[1], 0.5 * uni[2]])
    assert prior.word_id("zzz") == prior.oov_id == 2
    batch = prior.next_log_probs_batch([[], ["a"]])
    assert np.allclose(batch[1], np.log(after_a))


def test_osa_distance():
    assert osa_distance("teh", "the", 2) == 1
    assert osa_distance("kitten", "sitting", 3) == 3
    assert osa_distance("kitten", "sitting", 2) == 3  # beyond the limit: limit + 1
    assert osa_distance("ca", "abc", 5) == 3  # OSA edits each substring once


def test_fixes_keyboard_typos(corrector):
    out = corrector.correct(["teh cat sat on teh mat", "helo wrold", "Helo wrold!"])
    assert out == ["the cat sat on the mat", "hello world", "Hello world!"]


def test_leaves_correct_text_unchanged(corrector):
    texts = ["the cat sat on the mat", "hello world , how are you ?", "Bob said hello  :)", ""]
    assert corrector.correct(texts) == texts


def test_candidates_keep_the_typed_word_first(corrector):
    cands = corrector.candidates("wrold")
    assert cands[0][0] == "wrold"
    assert "world" in [c[0] for c in cands]
    assert all(ll <= 0 for _, _, ll, _ in cands)


def test_bad_settings_and_input(corrector):
    kl = KeyboardLikelihood("en-US", "raw")
    with pytest.raises(CorrectorError, match="beam"):
        NoisyChannelCorrector(corrector.prior, {"a": 1}, kl, beam=0)
    with pytest.raises(CorrectorError, match="LMPrior"):
        NoisyChannelCorrector(object(), {"a": 1}, kl)
    with pytest.raises(CorrectorError, match="count"):
        NoisyChannelCorrector(corrector.prior, {"a": "many"}, kl)
    with pytest.raises(TypeError, match="text 1"):
        corrector.correct(["ok", None])


def test_next_word_lm_adapter_over_the_cifg_model():
    from models.cifg import CIFGConfig, CIFGLanguageModel

    vocab = WordVocab.build([tokenize(t) for t in TEXTS])
    model = CIFGLanguageModel(CIFGConfig(vocab_size=len(vocab), embed_dim=8, hidden_dim=12))
    prior = NextWordLMPrior(model, vocab)
    contexts = [[], ["the"], ["hello", "world", ","]]
    batch = prior.next_log_probs_batch(contexts)
    assert batch.shape == (3, len(vocab))
    assert np.allclose(np.logaddexp.reduce(batch, axis=1), 0.0, atol=1e-9)
    assert np.all(batch[:, [PAD, BOS]] == -math.inf)
    for c, row in zip(contexts, batch, strict=True):
        assert np.allclose(prior.next_log_probs(c), row, atol=1e-6)  # padding changes nothing
    # Logits at the last context word equal the model's own forward on the unpadded ids.
    ids = torch.tensor([[BOS, *vocab.encode(["hello", "world", ","])]])
    with torch.no_grad():
        ref = torch.log_softmax(model(ids)[0, -1].double().index_fill(0, torch.tensor(
            [PAD, BOS]), -math.inf), dim=-1).numpy()
    assert np.allclose(batch[2], ref, atol=1e-6)
    # Decoding runs end to end; without the LM weight the keyboard alone keeps typed words.
    counts = dict(zip(vocab.words, vocab.counts, strict=True))
    nc = NoisyChannelCorrector(prior, counts, KeyboardLikelihood("en-US", "raw"), lm_weight=0.0)
    assert nc.correct(["hello world", "the cat"]) == ["hello world", "the cat"]
