"""eval.canary: config checks, seeded canaries and their messages, log-perplexity and exposure
worked by hand, the never-seen canary's rank is uniform, and a trained CIFG exposes a canary it
saw many times."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from data.chitchat import iter_messages
from data.tokenize import tokenize
from data.torch_data import NextWordDataset, make_loader
from data.vocab import WordVocab
from eval.canary import (
    Canary,
    CanaryConfig,
    CanaryError,
    canary_messages,
    canary_pool,
    exposure,
    exposures,
    log_perplexities,
    make_canaries,
    mean_exposure_by_repetition,
    sampled_exposure,
)
from models.cifg import CIFGConfig, CIFGLanguageModel
from models.nwp import nwp_loss

pytestmark = pytest.mark.usefixtures("one_thread")


class FixedLogits(nn.Module):
    """A model whose logits are the same row at every position, whatever the context."""

    def __init__(self, row: list[float]):
        super().__init__()
        self.register_buffer("row", torch.tensor(row))
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row.expand(*x.shape, -1).clone()


# Ids 4-6: yes, no, k9. "k9" is not alphabetic, so the pool is (yes, no).
SMALL = WordVocab(words=("yes", "no", "k9"), counts=(3, 2, 1))
# Probabilities PAD 1/16, BOS 1/16, EOS 1/8, OOV 1/4, yes 1/4, no 1/8, k9 1/8 (they sum to 1),
# so -log2 P is 2 bits for "yes" and 3 bits for "no" at every position.
PROBS = [1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 4, 1 / 8, 1 / 8]
FIXED = FixedLogits([math.log(p) for p in PROBS])


def test_config_is_checked():
    assert CanaryConfig().n_canaries == 16
    assert CanaryConfig(prefix=["my", "pin"]).prefix == ("my", "pin")
    bad = [
        ({"prefix": "my secret"}, "sequence of words"),
        ({"prefix": ("my secret",)}, "one word token"),
        ({"prefix": ("it's.",)}, "one word token"),
        ({"k": 0}, "k must be"),
        ({"k": True}, "k must be"),
        ({"repetitions": ()}, "empty"),
        ({"repetitions": (1, 1)}, "repeats"),
        ({"repetitions": (-1,)}, "repetitions"),
        ({"per_repetition": 0}, "per_repetition"),
        ({"candidates": 0}, "candidates"),
        ({"pool_size": 1}, "pool_size"),
        ({"seed": -1}, "seed"),
    ]
    for kwargs, match in bad:
        with pytest.raises(CanaryError, match=match):
            CanaryConfig(**kwargs)


def test_pool_is_the_alphabetic_words_in_vocabulary_order():
    assert canary_pool(SMALL, CanaryConfig()) == ("yes", "no")
    assert canary_pool(SMALL, CanaryConfig(pool_size=2)) == ("yes", "no")
    with pytest.raises(CanaryError, match="needs 3"):
        canary_pool(SMALL, CanaryConfig(pool_size=3))


@pytest.fixture(scope="module")
def chat():
    """300 chit-chat messages and a 400-word vocabulary of them."""
    texts = [m["text"] for m in iter_messages(limit=300)]
    return texts, WordVocab.build([tokenize(t) for t in texts], size=400)


def test_make_canaries_seeded_and_on_distinct_clients(chat):
    _, vocab = chat
    config = CanaryConfig(k=3, repetitions=(0, 2, 5), per_repetition=2, pool_size=50, seed=7)
    clients = [f"user{i}" for i in range(10)]
    canaries = make_canaries(vocab, clients, config)
    pool = canary_pool(vocab, config)
    assert [c.repetitions for c in canaries] == [0, 0, 2, 2, 5, 5]
    assert len({c.id for c in canaries}) == 6 and len({c.client for c in canaries}) == 6
    assert all(c.client in clients and set(c.words) <= set(pool) for c in canaries)
    assert all(len(c.words) == 3 and c.prefix == config.prefix for c in canaries)
    # The words round-trip through the tokenizer, so training sees the prefix and words.
    assert all(tokenize(c.text) == [*c.prefix, *c.words] for c in canaries)
    # The same seed and client set give the same canaries, whatever the ids' order.
    assert make_canaries(vocab, clients[::-1], config) == canaries
    other = make_canaries(vocab, clients, CanaryConfig(**{**config.to_dict(), "seed": 8}))
    assert [c.words for c in other] != [c.words for c in canaries]
    with pytest.raises(CanaryError, match="6 canaries need"):
        make_canaries(vocab, clients[:5], config)
    with pytest.raises(CanaryError, match="given twice"):
        make_canaries(vocab, [*clients, "user3"], config)
    with pytest.raises(CanaryError, match="must be str"):
        make_canaries(vocab, [*clients, 3], config)


def test_canary_messages_repeat_each_canary_on_its_client():
    canaries = [
        Canary("canary-r2-0", "bob", 2, ("my", "pin", "is"), ("yes", "no")),
        Canary("canary-r0-0", "amy", 0, ("my", "pin", "is"), ("no", "no")),
        Canary("canary-r1-0", "ann", 1, ("my", "pin", "is"), ("yes", "yes")),
    ]
    assert canary_messages(canaries) == {
        "ann": ["my pin is yes yes"],
        "bob": ["my pin is yes no", "my pin is yes no"],
    }


def test_log_perplexity_golden():
    # -log2 P: yes 2 bits, no 3 bits, whatever comes before (the prefix "my" is OOV here).
    lps = log_perplexities(FIXED, SMALL, ("my",), [("yes", "no"), ("no", "no"), ("yes", "yes")])
    np.testing.assert_allclose(lps, [5.0, 6.0, 4.0], rtol=1e-7)  # float32 logits
    with pytest.raises(CanaryError, match="one length"):
        log_perplexities(FIXED, SMALL, (), [("yes",), ("yes", "no")])


def test_sampled_exposure_golden():
    # N = 7 candidates, so exposure = log2(8 / rank), at most 3 bits.
    assert sampled_exposure(1.0, np.array([2.0, 3, 4, 5, 6, 7, 8])) == (1, 3.0)
    # Three candidates score lower than the canary (ties do not count): rank 4, 1 bit.
    assert sampled_exposure(5.0, np.array([1.0, 2, 3, 5, 6, 7, 8])) == (4, 1.0)
    assert sampled_exposure(9.0, np.arange(7.0)) == (8, 0.0)
    with pytest.raises(CanaryError, match="nan"):
        sampled_exposure(math.nan, np.arange(3.0))


def test_exposure_with_fixed_probabilities():
    # k=1 over the pool (yes, no): "yes" (2 bits) is never beaten, so rank 1 and the cap
    # log2(N + 1); "no" (3 bits) is beaten by each "yes" candidate, about N / 2 of them
    # (binomial(1000, 1/2) lies in 440..560 with probability 1 - 1e-4).
    config = CanaryConfig(prefix=("my",), k=1, repetitions=(0,), per_repetition=1,
                          candidates=1000)
    best = Canary("canary-r0-0", "amy", 0, ("my",), ("yes",))
    r = exposure(FIXED, SMALL, best, config)
    assert (r.rank, r.exposure, r.max_exposure) == (1, math.log2(1001), math.log2(1001))
    assert r.log_perplexity == pytest.approx(2.0) and r.log2_space == 1.0
    worst = exposure(FIXED, SMALL, Canary("canary-r0-1", "amy", 0, ("my",), ("no",)), config)
    assert 441 <= worst.rank <= 561
    assert worst.exposure == pytest.approx(math.log2(1001 / worst.rank))
    assert r.to_dict()["max_exposure"] == math.log2(1001)


def test_exposure_is_deterministic_and_checks_its_canary(chat):
    _, vocab = chat
    config = CanaryConfig(k=2, repetitions=(0, 3), per_repetition=2, candidates=64,
                          pool_size=60, seed=3)
    canaries = make_canaries(vocab, [f"c{i}" for i in range(4)], config)
    model = CIFGLanguageModel(CIFGConfig(vocab_size=len(vocab), embed_dim=8, hidden_dim=16),
                              generator=torch.Generator().manual_seed(0))
    first = exposures(model, vocab, canaries, config)
    assert exposures(model, vocab, canaries, config, batch_size=5) == first
    # An explicit generator draws other candidates: the rank changes for some canary.
    again = [exposure(model, vocab, c, config, np.random.default_rng(99)) for c in canaries]
    assert [r.log_perplexity for r in again] == [r.log_perplexity for r in first]
    assert [r.rank for r in again] != [r.rank for r in first]
    with pytest.raises(CanaryError, match="do not match"):
        exposure(model, vocab, canaries[0], CanaryConfig(**{**config.to_dict(), "k": 3}))
    stray = Canary("x", "c0", 0, config.prefix, ("zzzq", "yes"))
    with pytest.raises(CanaryError, match="not in the canary pool"):
        exposure(model, vocab, stray, config)


def test_unseen_canaries_have_uniform_rank(chat):
    # A canary the model never saw is drawn as its candidates are, so its rank among N = 50 of
    # them is uniform on 1..51: mean 26 (sd 14.7, so 200 canaries give a standard error of
    # 1.04), and the mean exposure is log2(51) - log2(51!) / 51 = 1.36 bits (per-canary sd about
    # 1.4, standard error 0.1). Tolerances are 4 standard errors.
    _, vocab = chat
    config = CanaryConfig(k=2, repetitions=(0,), per_repetition=200, candidates=50,
                          pool_size=100, seed=11)
    canaries = make_canaries(vocab, [f"c{i}" for i in range(200)], config)
    model = CIFGLanguageModel(CIFGConfig(vocab_size=len(vocab), embed_dim=8, hidden_dim=16),
                              generator=torch.Generator().manual_seed(1))
    results = exposures(model, vocab, canaries, config)
    n = config.candidates
    mean_rank = np.mean([r.rank for r in results])
    assert abs(mean_rank - (n + 2) / 2) < 4 * 1.04
    expected = math.log2(n + 1) - math.lgamma(n + 2) / math.log(2) / (n + 1)
    assert expected == pytest.approx(1.36, abs=0.01)
    assert abs(mean_exposure_by_repetition(results)[0] - expected) < 0.4


def test_trained_model_exposes_the_inserted_canary(chat):
    # A tiny CIFG trained centrally (100 Adam steps, about 10 epochs) on 300 chat messages plus
    # one canary repeated 20 times memorises it: rank 1 among N = 200 candidates (measured:
    # rank 1 from step 75 on). The canary never inserted keeps a typical rank (measured 58).
    texts, vocab = chat
    config = CanaryConfig(k=3, repetitions=(0, 20), per_repetition=1, candidates=200,
                          pool_size=100, seed=1)
    canaries = make_canaries(vocab, ["a", "b", "c"], config)
    extra = canary_messages(canaries)
    assert sum(len(ms) for ms in extra.values()) == 20
    data = NextWordDataset.from_texts(texts + [t for ms in extra.values() for t in ms], vocab)
    model = CIFGLanguageModel(CIFGConfig(vocab_size=len(vocab), embed_dim=16, hidden_dim=32),
                              generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = 0
    for epoch in range(20):
        for x, y in make_loader(data, batch_size=32, seed=epoch, drop_last=True):
            opt.zero_grad()
            nwp_loss(model(x), y).backward()
            opt.step()
            steps += 1
            if steps == 100:
                break
        if steps == 100:
            break
    unseen, inserted = exposures(model, vocab, canaries, config)
    assert (unseen.repetitions, inserted.repetitions) == (0, 20)
    assert inserted.rank == 1 and inserted.exposure == inserted.max_exposure
    assert unseen.exposure < inserted.exposure - 3
    assert list(mean_exposure_by_repetition([unseen, inserted])) == [0, 20]
