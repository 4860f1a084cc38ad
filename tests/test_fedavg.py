"""federated.fedavg: hand-computed FedAvg / FedAvgM / FedProx rounds, the round as three steps,
exact merging of split cohorts, the engines agreeing, and what the server gets to see."""

import dataclasses
import inspect

import pytest
import torch
from torch import nn

from federated.chain import Aggregate
from federated.client import ClientConfig, ClientDataset, ClientUpdate
from federated.dp import GaussianDP
from federated.fedavg import FedAvg, FedAvgConfig, FedAvgError
from federated.server_optim import ServerOptimizerConfig
from models.cifg import CIFGConfig, CIFGLanguageModel
from models.transformer_lm import TransformerLM, TransformerLMConfig


class Point(nn.Module):
    """A 'model' that is a point w in R^3: its logits are w at every position. With
    `half_square` below, a client's loss is 0.5 ||w - t||^2 for its target t (the first row of
    y), so one SGD step is w <- w - lr (w - t): easy to work out by hand."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.config = CIFGConfig(vocab_size=10, embed_dim=1, hidden_dim=1)  # pad_id 0

    def forward(self, x):
        return self.w.expand(x.shape[0], x.shape[1], 3)


def half_square(logits, y):
    return 0.5 * ((logits[:, 0, :] - y.to(logits.dtype)) ** 2).sum(-1).mean()


def client(cid, target, n):
    y = torch.tensor([target] * n, dtype=torch.int64)
    return ClientDataset(cid, torch.zeros(n, 3, dtype=torch.int64), y)


def algo(model=None, stages=(), **kw):
    cfg = FedAvgConfig(**{"client": ClientConfig(lr=0.5, batch_size=16), **kw})
    return FedAvg(model or Point(), cfg, stages, loss_fn=half_square)


def test_fedavg_round_golden_weighted_by_examples():
    # From w = 0 with lr 0.5, one step each (batch 16 holds all their examples):
    #   client a (1 example, t = [2, 0, 4]):  w = 0 - 0.5 (0 - t) = [1, 0, 2]
    #   client b (3 examples, t = [0, 2, 0]): w = [0, 1, 0]
    # weighted mean delta = (1 [1, 0, 2] + 3 [0, 1, 0]) / 4 = [0.25, 0.75, 0.5];
    # server SGD lr 1: w = [0.25, 0.75, 0.5].
    a = algo()
    state = a.init(torch.zeros(3))
    state, m = a.apply(state, [client("a", [2, 0, 4], 1), client("b", [0, 2, 0], 3)], seed=1)
    assert torch.allclose(state.params, torch.tensor([0.25, 0.75, 0.5]))
    assert state.round == 1 and m["clients"] == 2 and m["client_steps"] == 2
    assert m["train_examples"] == 4


def test_fedavg_round_golden_uniform():
    # Same clients, each counted once: ([1, 0, 2] + [0, 1, 0]) / 2 = [0.5, 0.5, 1].
    a = algo(weighting="uniform")
    state, _ = a.apply(a.init(torch.zeros(3)),
                       [client("a", [2, 0, 4], 1), client("b", [0, 2, 0], 3)], seed=1)
    assert torch.allclose(state.params, torch.tensor([0.5, 0.5, 1.0]))


def test_fedavgm_two_rounds_golden():
    # Server SGD, lr 1, momentum 0.5, one client with t = [4, 0, 0], client lr 0.5:
    # round 1: delta = 0.5 (t - 0) = [2, 0, 0]; m = [2, 0, 0]; w = [2, 0, 0]
    # round 2: delta = 0.5 (t - w) = [1, 0, 0]; m = 0.5 [2, 0, 0] + [1, 0, 0] = [2, 0, 0];
    #          w = [4, 0, 0]
    a = algo(server=ServerOptimizerConfig(kind="sgd", lr=1.0, momentum=0.5))
    state = a.init(torch.zeros(3))
    c = [client("a", [4, 0, 0], 1)]
    state, _ = a.apply(state, c, seed=1)
    assert torch.allclose(state.params, torch.tensor([2.0, 0, 0]))
    state, _ = a.apply(state, c, seed=2)
    assert torch.allclose(state.params, torch.tensor([4.0, 0, 0]))


@pytest.mark.parametrize("kind, expected", [
    # The two clients of the first golden give Delta = [0.25, 0.75, 0.5]. Server lr 0.1,
    # beta1 0.9, beta2 0.99, tau 1e-3, v_-1 = 0 (Reddi et al. 2021, Algorithm 2):
    # m = 0.1 Delta = [0.025, 0.075, 0.05]
    # adam:    v = 0.01 Delta^2, sqrt(v) = [0.025, 0.075, 0.05];
    #          x = 0.1 m / (sqrt(v) + tau) = 0.1 [0.025/0.026, 0.075/0.076, 0.05/0.051]
    # yogi:    v = 0 - 0.01 Delta^2 sign(0 - Delta^2) = 0.01 Delta^2: the same as adam
    # adagrad: v = Delta^2, sqrt(v) = Delta; x = 0.1 [0.025/0.251, 0.075/0.751, 0.05/0.501]
    ("adam", [0.0961538, 0.0986842, 0.0980392]),
    ("yogi", [0.0961538, 0.0986842, 0.0980392]),
    ("adagrad", [0.00996016, 0.00998668, 0.00998004]),
])
def test_adaptive_server_optimizers_golden(kind, expected):
    a = algo(server=ServerOptimizerConfig(kind=kind, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-3))
    state, _ = a.apply(a.init(torch.zeros(3)),
                       [client("a", [2, 0, 4], 1), client("b", [0, 2, 0], 3)], seed=1)
    assert torch.allclose(state.params, torch.tensor(expected), rtol=1e-5, atol=0)


def test_fedprox_golden():
    # One client, 2 examples, batch 1 (2 steps), lr 0.5, t = [2, 0, 0], mu = 1, from w0 = 0:
    # step 1: g = (w - t) + mu (w - w0) = -2 + 0 -> w = 1
    # step 2: g = (1 - 2) + 1 (1 - 0) = 0 -> w = 1            (without prox: w = 1.5)
    prox = algo(client=ClientConfig(lr=0.5, batch_size=1, prox_mu=1.0))
    plain = algo(client=ClientConfig(lr=0.5, batch_size=1))
    c = [client("a", [2, 0, 0], 2)]
    s1, _ = prox.apply(prox.init(torch.zeros(3)), c, seed=0)
    s2, _ = plain.apply(plain.init(torch.zeros(3)), c, seed=0)
    assert torch.allclose(s1.params, torch.tensor([1.0, 0, 0]))
    assert torch.allclose(s2.params, torch.tensor([1.5, 0, 0]))


def test_apply_is_train_aggregate_server_update_and_state_is_not_mutated():
    a = algo()
    state = a.init(torch.zeros(3))
    before = state.params.clone()
    clients = [client("a", [2, 0, 4], 1), client("b", [0, 2, 0], 3)]
    s1, m1 = a.apply(state, clients, seed=5)
    agg = a.aggregate(state, a.train(state, clients, 5), ["a", "b"], 5)
    s2, m2 = a.server_update(state, agg, 5)
    assert torch.equal(s1.params, s2.params) and m1 == m2
    assert torch.equal(state.params, before) and state.round == 0


def _tiny_cifg():
    return CIFGLanguageModel(CIFGConfig(vocab_size=50, embed_dim=8, hidden_dim=12),
                             generator=torch.Generator().manual_seed(0))


def _random_clients(n, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(1, 40, (1,), generator=g))
        x = torch.randint(4, vocab, (k, 6), generator=g)
        y = torch.randint(4, vocab, (k, 6), generator=g)
        y[:, 4:] = 0  # PAD targets at the end, as short messages have
        out.append(ClientDataset(f"c{i:02d}", x, y))
    return out


def test_split_cohort_merges_to_the_whole():
    # What torch.distributed does: two ranks each aggregate a share, the sums add up.
    model = _tiny_cifg()
    a = FedAvg(model, FedAvgConfig(server=ServerOptimizerConfig(kind="adam", lr=0.01)))
    state = a.init(a.layout.vector(model))
    clients = _random_clients(6)
    ids = [c.client_id for c in clients]
    whole = a.aggregate(state, a.train(state, clients, 3), ids, 3)
    parts = [a.aggregate(state, a.train(state, clients[r::2], 3), ids[r::2], 3) for r in (0, 1)]
    merged = Aggregate.unpack(parts[0].pack(a.stat_names) + parts[1].pack(a.stat_names),
                              a.stat_names)
    assert merged.count == whole.count == 6 and merged.weight == whole.weight
    assert torch.allclose(merged.total, whole.total, rtol=0, atol=1e-12)
    s1, _ = a.server_update(state, whole, 3)
    s2, _ = a.server_update(state, merged, 3)
    assert torch.allclose(s1.params, s2.params, rtol=0, atol=1e-7)


@pytest.mark.parametrize("make", [_tiny_cifg, lambda: TransformerLM(
    TransformerLMConfig(vocab_size=50, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=8),
    generator=torch.Generator().manual_seed(0))])
def test_sequential_and_vmap_engines_agree(make):
    model = make()
    clients = _random_clients(7, seed=1)
    results = []
    for engine, chunk in (("sequential", 16), ("vmap", 3), ("vmap", 16)):
        a = FedAvg(model, FedAvgConfig(client=ClientConfig(lr=0.3, batch_size=8, prox_mu=0.1),
                                       engine=engine, vmap_chunk=chunk))
        state = a.init(a.layout.vector(model))
        for r in range(2):
            state, m = a.apply(state, clients, seed=r)
        results.append((state.params, m["train_loss"]))
    for params, loss in results[1:]:
        assert torch.allclose(params, results[0][0], rtol=0, atol=1e-5)
        assert loss == pytest.approx(results[0][1], rel=1e-5)


def test_the_server_sees_updates_never_examples():
    # What a client sends holds no example: a delta and counts.
    assert [f.name for f in dataclasses.fields(ClientUpdate)] == \
        ["delta", "num_examples", "steps", "loss_sum", "tokens"]
    # The server's step takes the aggregate alone, and aggregation takes updates alone.
    assert list(inspect.signature(FedAvg.server_update).parameters) == \
        ["self", "state", "agg", "seed"]
    assert list(inspect.signature(FedAvg.aggregate).parameters) == \
        ["self", "state", "updates", "client_ids", "seed"]
    a = algo()
    state = a.init(torch.zeros(3))
    with pytest.raises(AttributeError):
        a.aggregate(state, [client("a", [1, 1, 1], 1)], ["a"], 0)  # a dataset is no update


def test_dp_stage_bounds_each_clients_contribution():
    # With zero noise, the aggregate of clipped contributions has each client's part <= C.
    model = _tiny_cifg()
    dp = GaussianDP(noise_multiplier=0.0, expected_clients=5, clip_norm=0.05)
    a = FedAvg(model, FedAvgConfig(weighting="uniform"), [dp])
    state = a.init(a.layout.vector(model))
    clients = _random_clients(5, seed=2)
    for c in clients:
        agg = a.aggregate(state, a.train(state, [c], 0), [c.client_id], 0)
        assert float(agg.total.norm()) <= 0.05 * (1 + 1e-6)  # float32 rounding of the clip
    agg = a.aggregate(state, a.train(state, clients, 0), [c.client_id for c in clients], 0)
    s, m = a.server_update(state, agg, 0)
    assert float((s.params - state.params).norm()) <= 0.05 + 1e-6  # mean of 5 clipped / 5


def test_dp_with_weighting_by_examples_is_refused():
    model = _tiny_cifg()
    a = FedAvg(model, FedAvgConfig(weighting="examples"),
               [GaussianDP(noise_multiplier=1.0, expected_clients=5)])
    state = a.init(a.layout.vector(model))
    with pytest.raises(ValueError, match="weight"):
        a.aggregate(state, a.train(state, _random_clients(1), 0), ["c00"], 0)


def test_a_round_where_everyone_dropped_leaves_the_model():
    a = algo()
    state = a.init(torch.ones(3))
    s, m = a.apply(state, [], seed=0)
    assert torch.equal(s.params, state.params) and m["clients"] == 0 and s.round == 1


def test_config_errors():
    with pytest.raises(FedAvgError, match="engine"):
        FedAvgConfig(engine="gpu-magic")
    with pytest.raises(FedAvgError, match="weighting"):
        FedAvgConfig(weighting="tokens")
    with pytest.raises(FedAvgError, match="vmap_chunk"):
        FedAvgConfig(vmap_chunk=0)
    with pytest.raises(FedAvgError, match="flat vector"):
        algo().init(torch.zeros(4))
    with pytest.raises(FedAvgError, match="unique"):
        FedAvg(Point(), FedAvgConfig(), [GaussianDP(noise_multiplier=1.0, expected_clients=5)] * 2)
