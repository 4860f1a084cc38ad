"""models.transformer_lm: shapes, causality, attention against a hand-written reference,
parameter count, dropout modes, and functional_call + vmap over stacked parameters."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from models.nwp import nwp_loss
from models.transformer_lm import TransformerLM, TransformerLMConfig

TINY = TransformerLMConfig(vocab_size=13, d_model=8, n_layers=2, n_heads=2, d_ff=16, max_len=10)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, config: TransformerLMConfig = TINY) -> TransformerLM:
    return TransformerLM(config, generator=torch.Generator().manual_seed(seed))


def _ids(shape: tuple[int, ...], seed: int, high: int = 13) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_tied_embedding():
    model = _model()
    x = _ids((3, 7), 1)
    logits = model(x)
    assert logits.shape == (3, 7, 13) and logits.dtype == torch.float32
    top = {n for n, _ in model.named_parameters() if not n.startswith("blocks.")}
    assert top == {"embedding", "positions", "ln_f.weight", "ln_f.bias", "out_bias"}
    # The output layer is the word embedding: logits = ln_f(h) @ E^T + b.
    h = model.embedding[x] + model.positions[:7]
    for block in model.blocks:
        h = block(h)
    expected = model.ln_f(h) @ model.embedding.T + model.out_bias
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)


def test_causal_future_ids_do_not_change_earlier_logits():
    model = _model()
    x = _ids((2, 8), 2)
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 13
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4


def test_attention_matches_a_per_position_reference():
    # Position t's output is a softmax-weighted sum of v over positions 0..t, head by head.
    model = _model(
        config=TransformerLMConfig(
            vocab_size=13, d_model=4, n_heads=2, d_ff=4, n_layers=1, max_len=5
        )
    ).double()
    attn = model.blocks[0].attn
    x = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    attn.requires_grad_(False)
    q, k, v = (x[0] @ attn.qkv_weight.T + attn.qkv_bias).split(4, dim=-1)  # (3, 4) each
    rows = []
    for t in range(3):
        heads = []
        for hd in range(2):
            cols = slice(2 * hd, 2 * hd + 2)
            scores = [float(q[t, cols] @ k[s, cols]) / math.sqrt(2) for s in range(t + 1)]
            m = max(scores)
            w = [math.exp(sc - m) for sc in scores]
            heads.append(sum(wi / sum(w) * v[s, cols] for s, wi in enumerate(w)))
        rows.append(torch.cat(heads))
    expected = torch.stack(rows) @ attn.out_weight.T + attn.out_bias
    torch.testing.assert_close(attn(x)[0], expected, atol=1e-12, rtol=0)


def test_parameter_count_formula():
    assert TransformerLMConfig().num_parameters() == 1_386_356
    assert TransformerLM(TransformerLMConfig()).num_parameters() == 1_386_356
    for cfg in (
        TINY,
        TransformerLMConfig(
            vocab_size=9, d_model=6, n_heads=3, d_ff=5, n_layers=1, max_len=4, output_bias=False
        ),
    ):
        assert TransformerLM(cfg).num_parameters() == cfg.num_parameters()


def test_max_len_and_input_checks():
    model = _model()
    model(_ids((1, 10), 3))  # max_len itself is fine
    with pytest.raises(ValueError, match="longer than max_len 10"):
        model(_ids((1, 11), 3))
    with pytest.raises(ValueError, match="batch, time"):
        model(_ids((11,), 3))


def test_dropout_only_in_training():
    cfg = TransformerLMConfig(**{**TINY.to_dict(), "dropout": 0.5})
    model = TransformerLM(cfg, generator=torch.Generator().manual_seed(0))
    x = _ids((2, 6), 5)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()  # two draws of masks that drop half the units are equal with p ~ 2**-100
    assert not torch.equal(model(x), model(x))


def test_init_is_a_function_of_the_generator_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b, c = _model(5), _model(5), _model(6)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["embedding"], sc["embedding"])
    assert sa["blocks.0.attn.out_weight"].std() < sa["blocks.0.attn.qkv_weight"].std()


def _stacked(n: int):
    models = [_model(i) for i in range(n)]
    params, buffers = stack_module_state(models)
    return models, params, buffers


def test_vmap_over_stacked_parameters_equals_a_loop():
    models, params, buffers = _stacked(3)
    x = _ids((3, 2, 6), 7)

    def run(p, b, xi):
        return functional_call(models[0], (p, b), (xi,))

    batched = vmap(run)(params, buffers, x)  # (3, 2, 6, V)
    looped = torch.stack([m(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(batched, looped, atol=1e-6, rtol=0)


def test_vmapped_gradients_equal_a_loop():
    models, params, buffers = _stacked(3)
    x, y = _ids((3, 2, 6), 8), _ids((3, 2, 6), 9)

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
        ({"vocab_size": 2}, "vocab_size"),
        ({"d_model": 10, "n_heads": 3}, "divide"),
        ({"n_layers": 0}, "n_layers"),
        ({"max_len": True}, "max_len"),
        ({"dropout": 1.0}, "dropout"),
        ({"layer_norm_eps": 0}, "layer_norm_eps"),
        ({"pad_id": -1}, "pad_id"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerLMConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    assert TransformerLMConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown keys \\['width'\\]"):
        TransformerLMConfig.from_dict({"width": 3})
