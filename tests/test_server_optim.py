"""Tests for federated.server_optim: hand-computed two-round goldens per kind, FedAvg exactness,
purity, state layout and validation."""

import json

import pytest
import torch

from federated.server_optim import (
    SERVER_OPTIMIZERS,
    ServerOptimizerConfig,
    ServerOptimizerError,
    apply,
    init,
)


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def _two_rounds(config, x0, d1, d2):
    state = init(config, x0)
    x1, state = apply(config, state, x0, d1)
    x2, state = apply(config, state, x1, d2)
    return x1, x2, state


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_sgd_lr1_no_momentum_is_fedavg_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    d = torch.randn(1000, generator=g) * 1e-3
    config = ServerOptimizerConfig()
    state = init(config, x)
    for _ in range(3):
        new, state = apply(config, state, x, d)
        assert torch.equal(new, x + d)
        x = new
    assert int(state["step"]) == 3


def test_sgd_momentum_golden():
    # FedAvgM, lr 0.5, momentum 0.5, x0 = [1, 2]:
    # round 1, Delta = [2, -4]: m1 = [2, -4];               x1 = [1, 2] + 0.5*[2, -4] = [2, 0]
    # round 2, Delta = [4, 0]:  m2 = 0.5*[2, -4] + [4, 0] = [5, -2]
    #                           x2 = [2, 0] + 0.5*[5, -2] = [4.5, -1]
    config = ServerOptimizerConfig(kind="sgd", lr=0.5, momentum=0.5)
    x1, x2, state = _two_rounds(config, _t(1, 2), _t(2, -4), _t(4, 0))
    _close(x1, _t(2, 0))
    _close(x2, _t(4.5, -1))
    _close(state["m"], _t(5, -2))


def test_adam_golden():
    # lr 1, beta1 0.5, beta2 0.75, tau 1, v_{-1} = 0, x0 = [0, 0]:
    # round 1, Delta = [2, -4]: m1 = 0.5*[2, -4] = [1, -2]; v1 = 0.25*[4, 16] = [1, 4]
    #   x1 = [1/(1+1), -2/(2+1)] = [0.5, -0.6666667]
    # round 2, Delta = [0, 4]: m2 = 0.5*[1, -2] + 0.5*[0, 4] = [0.5, 1]
    #   v2 = 0.75*[1, 4] + 0.25*[0, 16] = [0.75, 7]
    #   x2 = x1 + [0.5/(sqrt(0.75)+1), 1/(sqrt(7)+1)]
    #      = [0.5 + 0.5/1.8660254, -0.6666667 + 1/3.6457513]
    #      = [0.5 + 0.2679492, -0.6666667 + 0.2742919] = [0.7679492, -0.3923748]
    config = ServerOptimizerConfig(kind="adam", lr=1.0, beta1=0.5, beta2=0.75, eps=1.0)
    x1, x2, state = _two_rounds(config, _t(0, 0), _t(2, -4), _t(0, 4))
    _close(x1, _t(0.5, -0.6666667))
    _close(x2, _t(0.7679492, -0.3923748))
    _close(state["m"], _t(0.5, 1))
    _close(state["v"], _t(0.75, 7))
    assert int(state["step"]) == 2


def test_adagrad_golden_with_initial_accumulator_and_momentum():
    # lr 0.5, beta1 0.5 (Algorithm 2 keeps m_t for FedAdagrad), tau 1, v_{-1} = 1, x0 = [1, -1]
    # round 1, Delta = [3, 0]: m1 = [1.5, 0]; v1 = [1 + 9, 1 + 0] = [10, 1]
    #   x1 = [1 + 0.5*1.5/(sqrt(10)+1), -1 + 0] = [1 + 0.75/4.1622777, -1] = [1.1801898, -1]
    # round 2, Delta = [0, 2]: m2 = [0.75, 1]; v2 = [10, 1 + 4] = [10, 5]
    #   x2 = [1.1801898 + 0.5*0.75/4.1622777, -1 + 0.5*1/(sqrt(5)+1)]
    #      = [1.1801898 + 0.0900949, -1 + 0.5/3.2360680] = [1.2702847, -0.8454915]
    config = ServerOptimizerConfig(kind="adagrad", lr=0.5, beta1=0.5, eps=1.0,
                                   initial_accumulator=1.0)
    x1, x2, state = _two_rounds(config, _t(1, -1), _t(3, 0), _t(0, 2))
    _close(x1, _t(1.1801898, -1))
    _close(x2, _t(1.2702847, -0.8454915))
    _close(state["v"], _t(10, 5))


def test_yogi_golden_both_signs():
    # lr 1, beta1 0.5, beta2 0.75, tau 1, v_{-1} = 1, x0 = [0, 0]
    # round 1, Delta = [2, 0.5], Delta^2 = [4, 0.25]:
    #   v1[0] = 1 - 0.25*4*sign(1 - 4) = 1 + 1 = 2
    #   v1[1] = 1 - 0.25*0.25*sign(1 - 0.25) = 1 - 0.0625 = 0.9375
    #   m1 = [1, 0.25]; x1 = [1/(sqrt(2)+1), 0.25/(sqrt(0.9375)+1)]
    #      = [1/2.4142136, 0.25/1.9682458] = [0.4142136, 0.1270167]
    # round 2, Delta = [2, 0], Delta^2 = [4, 0]:
    #   v2[0] = 2 + 0.25*4 = 3 (sign(2 - 4) = -1); v2[1] = 0.9375 - 0 = 0.9375
    #   m2 = [0.5*1 + 0.5*2, 0.5*0.25] = [1.5, 0.125]
    #   x2 = [0.4142136 + 1.5/(sqrt(3)+1), 0.1270167 + 0.125/1.9682458]
    #      = [0.4142136 + 1.5/2.7320508, 0.1270167 + 0.0635083] = [0.9632517, 0.1905250]
    config = ServerOptimizerConfig(kind="yogi", lr=1.0, beta1=0.5, beta2=0.75, eps=1.0,
                                   initial_accumulator=1.0)
    x1, x2, state = _two_rounds(config, _t(0, 0), _t(2, 0.5), _t(2, 0))
    _close(x1, _t(0.4142136, 0.1270167))
    _close(x2, _t(0.9632517, 0.1905250))
    _close(state["v"], _t(3, 0.9375))


def test_yogi_differs_from_adam_on_the_same_inputs():
    # Same inputs as the yogi golden under adam: v1[0] = 0.75*1 + 0.25*4 = 1.75, not 2.
    kw = dict(lr=1.0, beta1=0.5, beta2=0.75, eps=1.0, initial_accumulator=1.0)
    _, s_adam = apply(ServerOptimizerConfig(kind="adam", **kw),
                      init(ServerOptimizerConfig(kind="adam", **kw), _t(0, 0)), _t(0, 0),
                      _t(2, 0.5))
    _close(s_adam["v"], _t(1.75, 0.8125))


@pytest.mark.parametrize("kind", SERVER_OPTIMIZERS)
def test_apply_is_pure_and_state_layout_fixed(kind):
    config = ServerOptimizerConfig(kind=kind, momentum=0.9 if kind == "sgd" else 0.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, generator=g)
    d = torch.randn(50, generator=g)
    state = init(config, x)
    keys = set(state)
    _, state = apply(config, state, x, d)  # a non-trivial state to check
    assert set(state) == keys
    copies = (x.clone(), d.clone(), {k: v.clone() for k, v in state.items()})
    new_x, new_state = apply(config, state, x, d)
    assert torch.equal(x, copies[0]) and torch.equal(d, copies[1])
    for k, v in state.items():
        assert torch.equal(v, copies[2][k])
    assert set(new_state) == keys
    assert new_x.data_ptr() != x.data_ptr()
    for k in keys:
        assert new_state[k].data_ptr() != state[k].data_ptr()
    assert all(isinstance(v, torch.Tensor) for v in new_state.values())
    assert new_x.dtype == torch.float32 and new_state["m"].dtype == torch.float32


def test_state_keys():
    x = torch.zeros(3)
    assert set(init(ServerOptimizerConfig(), x)) == {"m", "step"}
    for kind in ("adam", "yogi", "adagrad"):
        s = init(ServerOptimizerConfig(kind=kind, initial_accumulator=0.5), x)
        assert set(s) == {"m", "v", "step"}
        assert torch.equal(s["v"], torch.full((3,), 0.5))


def test_config_round_trip_json():
    c = ServerOptimizerConfig(kind="yogi", lr=0.01, beta1=0.8, beta2=0.9, eps=1e-4,
                              initial_accumulator=1e-6)
    assert ServerOptimizerConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize("kw, match", [
    (dict(kind="sgdm"), "unknown server optimizer"),
    (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(momentum=1.0), "momentum"),
    (dict(kind="adam", momentum=0.9), "sgd' only"),
    (dict(beta1=-0.1), "beta1"),
    (dict(beta2=1.0), "beta2"),
    (dict(eps=0.0), "eps"),
    (dict(initial_accumulator=-1.0), "initial_accumulator"),
    (dict(lr="1"), "lr"),
])
def test_config_errors(kw, match):
    with pytest.raises(ServerOptimizerError, match=match):
        ServerOptimizerConfig(**kw)


def test_from_dict_unknown_key():
    with pytest.raises(ServerOptimizerError, match="tau"):
        ServerOptimizerConfig.from_dict({"kind": "adam", "tau": 1e-3})


def test_apply_errors():
    adam = ServerOptimizerConfig(kind="adam")
    x = torch.zeros(3)
    state = init(adam, x)
    with pytest.raises(ServerOptimizerError, match="update"):
        apply(adam, state, x, torch.zeros(4))
    with pytest.raises(ServerOptimizerError, match="1-D"):
        apply(adam, state, x.reshape(3, 1), torch.zeros(3, 1))
    with pytest.raises(ServerOptimizerError, match="keys"):
        apply(adam, init(ServerOptimizerConfig(), x), x, torch.zeros(3))
    with pytest.raises(ServerOptimizerError, match="elements"):
        apply(adam, init(adam, torch.zeros(2)), x, torch.zeros(3))
    with pytest.raises(ServerOptimizerError, match="1-D floating"):
        apply(adam, state, torch.zeros(3, dtype=torch.int64), torch.zeros(3))


@pytest.mark.parametrize("kind", SERVER_OPTIMIZERS)
def test_state_survives_safetensors_round_trip(kind):
    from safetensors.torch import load, save

    config = ServerOptimizerConfig(kind=kind, lr=0.1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, generator=g)
    d1, d2 = torch.randn(20, generator=g), torch.randn(20, generator=g)
    x1, state = apply(config, init(config, x), x, d1)
    straight, _ = apply(config, state, x1, d2)
    resumed, state2 = apply(config, load(save(state)), x1, d2)
    assert torch.equal(resumed, straight)
    assert int(state2["step"]) == 2
