"""models.cifg: the CIFG cell against a hand-computed step, coupling, shapes, parameter count,
state hand-over, and functional_call + vmap over stacked parameters equal to a loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from models.cifg import CIFGCell, CIFGConfig, CIFGLanguageModel
from models.nwp import nwp_loss

TINY = CIFGConfig(vocab_size=11, embed_dim=4, hidden_dim=6)


pytestmark = pytest.mark.usefixtures("one_thread")


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _matvec(m: list[list[float]], v: list[float]) -> list[float]:
    return [sum(a * b for a, b in zip(row, v, strict=True)) for row in m]


def test_cell_matches_hand_computed_steps():
    # Input 2, hidden 2, projection 1: weight (3H, I + P) = (6, 3), rows f1 f2 g1 g2 o1 o2.
    w = [
        [0.5, -0.3, 0.2],
        [0.1, 0.4, -0.6],
        [-0.7, 0.8, 0.3],
        [0.9, 0.05, -0.2],
        [0.25, -0.5, 0.7],
        [-0.15, 0.35, 0.45],
    ]
    b = [1.0, 0.8, -0.1, 0.2, 0.0, -0.3]
    p = [[0.6, -1.1]]
    cell = CIFGCell(input_dim=2, hidden_dim=2, proj_dim=1).double()
    with torch.no_grad():
        cell.weight.copy_(torch.tensor(w, dtype=torch.float64))
        cell.bias.copy_(torch.tensor(b, dtype=torch.float64))
        cell.proj.copy_(torch.tensor(p, dtype=torch.float64))
    xs = [[1.0, -2.0], [0.5, 0.25]]

    h, c = [0.0], [0.0, 0.0]
    state = (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64))
    for x in xs:
        z = [zi + bi for zi, bi in zip(_matvec(w, x + h), b, strict=True)]
        f = [_sigmoid(z[0]), _sigmoid(z[1])]
        g = [math.tanh(z[2]), math.tanh(z[3])]
        o = [_sigmoid(z[4]), _sigmoid(z[5])]
        c = [f[j] * c[j] + (1 - f[j]) * g[j] for j in range(2)]
        h = _matvec(p, [o[j] * math.tanh(c[j]) for j in range(2)])

        out, state = cell(torch.tensor([x], dtype=torch.float64), state)
        assert out[0].tolist() == pytest.approx(h, abs=1e-12)
        assert state[0][0].tolist() == pytest.approx(h, abs=1e-12)
        assert state[1][0].tolist() == pytest.approx(c, abs=1e-12)
    # The numbers are not trivial (the second step used the first step's h and c).
    assert abs(h[0]) > 0.01


@pytest.mark.parametrize("forget_bias", [60.0, -60.0])
def test_input_gate_is_one_minus_forget_gate(forget_bias):
    # Forget gate saturated open (f = 1): the cell keeps c and takes nothing in (i = 0).
    # Saturated shut (f = 0): the cell forgets c and takes the candidate whole (i = 1).
    gen = torch.Generator().manual_seed(3)
    cell = CIFGCell(input_dim=3, hidden_dim=5, proj_dim=2).double()
    cell.reset_parameters(forget_bias=0.0, generator=gen)
    with torch.no_grad():
        cell.weight[:5].zero_()  # forget pre-activation = its bias alone
        cell.bias[:5].fill_(forget_bias)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    h0 = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    c0 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    _, (_, c1) = cell(x, (h0, c0))
    z = cell.input_gates(x) + h0 @ cell.weight[:, 3:].T
    g = torch.tanh(z[:, 5:10])
    expected = c0 if forget_bias > 0 else g
    torch.testing.assert_close(c1, expected, atol=1e-12, rtol=0)


def test_input_gate_is_one_minus_forget_gate_in_general():
    # With f strictly inside (0, 1): c1 - f * c0 == (1 - f) * g, the coupled update.
    gen = torch.Generator().manual_seed(4)
    cell = CIFGCell(input_dim=3, hidden_dim=5, proj_dim=2).double()
    cell.reset_parameters(generator=gen)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    h0 = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    c0 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    _, (_, c1) = cell(x, (h0, c0))
    z = cell.input_gates(x) + h0 @ cell.weight[:, 3:].T
    f, g = torch.sigmoid(z[:, :5]), torch.tanh(z[:, 5:10])
    assert ((f > 0.01) & (f < 0.99)).all()
    torch.testing.assert_close(c1 - f * c0, (1 - f) * g, atol=1e-12, rtol=0)


def test_shapes_and_tied_embedding():
    model = CIFGLanguageModel(TINY, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(1))
    logits, (h, c) = model.forward_with_state(x)
    assert logits.shape == (3, 7, 11) and logits.dtype == torch.float32
    assert h.shape == (3, 4) and c.shape == (3, 6)
    assert torch.equal(model(x), logits)
    names = {n for n, _ in model.named_parameters()}
    assert names == {"embedding", "cell.weight", "cell.bias", "cell.proj", "out_bias"}
    # The output layer is the embedding: the logits are h @ E^T + b.
    torch.testing.assert_close(logits[:, -1], h @ model.embedding.T + model.out_bias)
    with pytest.raises(ValueError, match="batch, time"):
        model(x[0])


def test_parameter_count_formula():
    # Hard et al. 2018's model: V*E + 3H(E+P) + 3H + PH + V with P = E = 96, H = 670.
    assert CIFGConfig().num_parameters() == 960_384 + 385_920 + 2_010 + 64_320 + 10_004
    assert CIFGLanguageModel(CIFGConfig()).num_parameters() == 1_422_638
    for cfg in (TINY, CIFGConfig(vocab_size=7, embed_dim=3, hidden_dim=2, output_bias=False)):
        assert CIFGLanguageModel(cfg).num_parameters() == cfg.num_parameters()
    assert CIFGConfig(output_bias=False).num_parameters() == 1_422_638 - 10_004


def test_state_carries_over_between_calls():
    model = CIFGLanguageModel(TINY, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(2))
    whole, state_whole = model.forward_with_state(x)
    first, state = model.forward_with_state(x[:, :4])
    rest, state = model.forward_with_state(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(state[1], state_whole[1], atol=1e-6, rtol=0)


def test_init_is_a_function_of_the_generator_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a = CIFGLanguageModel(TINY, generator=torch.Generator().manual_seed(5))
    b = CIFGLanguageModel(TINY, generator=torch.Generator().manual_seed(5))
    c = CIFGLanguageModel(TINY, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["embedding"], sc["embedding"])
    # Forget-gate bias starts at forget_bias, the other gate biases at 0.
    assert torch.equal(a.cell.bias[:6], torch.ones(6))
    assert torch.equal(a.cell.bias[6:], torch.zeros(12))


def _stacked(n: int):
    models = [CIFGLanguageModel(TINY, generator=torch.Generator().manual_seed(i)) for i in range(n)]
    params, buffers = stack_module_state(models)
    return models, params, buffers


def test_vmap_over_stacked_parameters_equals_a_loop():
    models, params, buffers = _stacked(3)
    x = torch.randint(0, 11, (3, 2, 5), generator=torch.Generator().manual_seed(7))

    def run(p, b, xi):
        return functional_call(models[0], (p, b), (xi,))

    batched = vmap(run)(params, buffers, x)  # (3, 2, 5, V)
    looped = torch.stack([m(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(batched, looped, atol=1e-6, rtol=0)


def test_vmapped_gradients_equal_a_loop():
    # What a federated round does: each client's loss gradient with its own parameters.
    models, params, buffers = _stacked(3)
    gen = torch.Generator().manual_seed(8)
    x = torch.randint(0, 11, (3, 2, 5), generator=gen)
    y = torch.randint(0, 11, (3, 2, 5), generator=gen)

    def loss(p, b, xi, yi):
        return nwp_loss(functional_call(models[0], (p, b), (xi,)), yi)

    grads = vmap(grad(loss))(params, buffers, x, y)
    for i, m in enumerate(models):
        m.zero_grad()
        nwp_loss(m(x[i]), y[i]).backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocab_size": 3}, "vocab_size"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden_dim": 2.5}, "hidden_dim"),
        ({"pad_id": 20, "vocab_size": 10}, "pad_id"),
        ({"forget_bias": math.nan}, "forget_bias"),
        ({"output_bias": 1}, "output_bias"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CIFGConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    assert CIFGConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown keys \\['hidden'\\]"):
        CIFGConfig.from_dict({"hidden": 3})
    with pytest.raises(TypeError, match="CIFGConfig"):
        CIFGLanguageModel({"vocab_size": 11})
