"""Server optimizers: how the server turns the round's mean client delta into new parameters.

The server treats the aggregated client delta Delta_t (mean of client params - server params) as
a pseudo-gradient with the sign flipped, and takes one optimizer step along it:

* "sgd": FedAvg with a server learning rate and optional server momentum (FedAvgM, Hsu et al.
  2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification"): m_t = momentum * m_{t-1} + Delta_t, x_{t+1} = x_t + lr * m_t. With lr 1 and
  momentum 0 this is plain FedAvg (McMahan et al. 2017): x_{t+1} = x_t + Delta_t.
* "adagrad", "adam", "yogi": FedAdagrad, FedAdam and FedYogi of Reddi et al. 2021, "Adaptive
  Federated Optimization" (ICLR), Algorithm 2, as written there (no bias correction):

      m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t                 (all three)
      v_t = v_{t-1} + Delta_t^2                                     (adagrad)
      v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2               (adam)
      v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)   (yogi)
      x_{t+1} = x_t + lr * m_t / (sqrt(v_t) + tau)

  Algorithm 2 keeps the momentum term for FedAdagrad too; set beta1 = 0 for Adagrad without it.

Everything is a pure function on flat 1-D float tensors (the model's parameters concatenated):
`init` makes the state, `apply` returns new parameters and a new state and never writes into
its inputs. The state is a dict of tensors only, so it saves as safetensors next to the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch

SERVER_OPTIMIZERS = ("sgd", "adam", "yogi", "adagrad")

# The state tensors of each kind: the same keys every round, so a checkpoint's layout is fixed.
# "m": momentum / first moment; "v": second-moment accumulator; "step": rounds applied so far.
_STATE_KEYS = {
    "sgd": ("m", "step"),
    "adam": ("m", "v", "step"),
    "yogi": ("m", "v", "step"),
    "adagrad": ("m", "v", "step"),
}


class ServerOptimizerError(ValueError):
    """A server optimizer config, state or input that cannot be used (the message says why)."""


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """Which server optimizer, and its hyperparameters.

    Defaults follow Reddi et al. 2021: beta1 0.9 and beta2 0.99 are the values they fix in their
    experiments, and tau 1e-3 is a value from their tuning grid for tau that worked well across
    their tasks (it is also Flower's FedYogi default). The default kind is plain FedAvg.

    Attributes:
        kind: One of `SERVER_OPTIMIZERS`. "sgd" with lr 1 and momentum 0 is plain FedAvg.
        lr: Server learning rate eta (> 0).
        momentum: Server momentum in [0, 1) (FedAvgM); "sgd" only.
        beta1: First-moment decay in [0, 1) (adaptive kinds).
        beta2: Second-moment decay in [0, 1) (adam, yogi).
        eps: tau, the adaptivity degree of Reddi et al. (> 0): added to sqrt(v_t) in the
            denominator; larger values make the step less adaptive.
        initial_accumulator: v_{-1}, the starting value of every element of v (>= 0). Reddi et
            al.'s Algorithm 2 takes it as an input; 0 is what Flower's FedAdam / FedYogi /
            FedAdagrad strategies start from. TFF's `build_adagrad` defaults to 0.1 and its
            `build_yogi` to 1e-6. With tau > 0 the denominator is positive even from 0.
    """

    kind: str = "sgd"
    lr: float = 1.0
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-3
    initial_accumulator: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SERVER_OPTIMIZERS:
            raise ServerOptimizerError(f"unknown server optimizer kind {self.kind!r}; known: "
                                       f"{', '.join(SERVER_OPTIMIZERS)}")
        for name in ("lr", "momentum", "beta1", "beta2", "eps", "initial_accumulator"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ServerOptimizerError(f"{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.lr <= 0:
            raise ServerOptimizerError(f"lr must be > 0, got {self.lr!r}")
        for name in ("momentum", "beta1", "beta2"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ServerOptimizerError(f"{name} must be in [0, 1), got {v!r}")
        if self.momentum != 0.0 and self.kind != "sgd":
            raise ServerOptimizerError(f"momentum applies to kind 'sgd' only (FedAvgM); kind "
                                       f"{self.kind!r} has beta1 for its first moment")
        if self.eps <= 0:
            raise ServerOptimizerError(f"eps (tau) must be > 0, got {self.eps!r}")
        if self.initial_accumulator < 0:
            raise ServerOptimizerError(
                f"initial_accumulator must be >= 0, got {self.initial_accumulator!r}")

    def to_dict(self) -> dict:
        """The config as JSON-able values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ServerOptimizerConfig:
        """The inverse of `to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ServerOptimizerError(
                f"unknown server optimizer config field(s): {', '.join(unknown)}")
        return cls(**d)


def _check_vector(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ServerOptimizerError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or not t.is_floating_point():
        raise ServerOptimizerError(f"{name} must be a 1-D floating-point tensor, got shape "
                                   f"{tuple(t.shape)} and dtype {t.dtype}")


def init(config: ServerOptimizerConfig, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """The optimizer state before the first round.

    Args:
        config: The server optimizer.
        params: The flat server parameters (1-D float tensor); sets the size and dtype of the
            state tensors.

    Returns:
        {"m": zeros, "step": tensor(0)} for "sgd", and also "v" (filled with
        `initial_accumulator`) for the adaptive kinds: tensors only, for safetensors.
    """
    _check_vector("params", params)
    state = {"m": torch.zeros_like(params), "step": torch.zeros((), dtype=torch.int64)}
    if config.kind != "sgd":
        state["v"] = torch.full_like(params, config.initial_accumulator)
    return state


def _check_state(config: ServerOptimizerConfig, state: Mapping[str, torch.Tensor],
                 params: torch.Tensor) -> None:
    want = set(_STATE_KEYS[config.kind])
    if set(state) != want:
        raise ServerOptimizerError(f"state for kind {config.kind!r} must have keys "
                                   f"{sorted(want)}, got {sorted(state)}")
    for k in want - {"step"}:
        _check_vector(f"state[{k!r}]", state[k])
        if state[k].shape != params.shape:
            raise ServerOptimizerError(f"state[{k!r}] has {tuple(state[k].shape)} elements, "
                                       f"params {tuple(params.shape)}")
    step = state["step"]
    if not isinstance(step, torch.Tensor) or step.numel() != 1 or step.is_floating_point():
        raise ServerOptimizerError("state['step'] must be a one-element integer tensor")


def apply(config: ServerOptimizerConfig, state: Mapping[str, torch.Tensor], params: torch.Tensor,
          update: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One server step: new parameters from the round's aggregated update.

    Args:
        config: The server optimizer.
        state: Its state from `init` or the previous `apply` (not modified).
        params: The flat server parameters x_t (not modified).
        update: Delta_t, the aggregated mean client delta (client params - server params), same
            shape as `params` (not modified).

    Returns:
        (x_{t+1}, new state), all new tensors. With kind "sgd", lr 1 and momentum 0 the new
        parameters are exactly `params + update`.

    Raises:
        ServerOptimizerError: state keys or shapes that do not match the config and params.
    """
    _check_vector("params", params)
    _check_vector("update", update)
    if update.shape != params.shape:
        raise ServerOptimizerError(f"update has {tuple(update.shape)} elements, params "
                                   f"{tuple(params.shape)}")
    _check_state(config, state, params)
    delta = update.to(params.dtype)
    step = state["step"] + 1
    if config.kind == "sgd":
        # FedAvgM (Hsu et al. 2019): m_t = momentum * m_{t-1} + Delta_t. With momentum 0 the
        # buffer is Delta_t itself (a copy), so plain FedAvg adds the update without rounding.
        if config.momentum == 0.0:
            m = delta.clone()
        else:
            m = state["m"] * config.momentum + delta
        return params + config.lr * m, {"m": m, "step": step}
    # Reddi et al. 2021, Algorithm 2.
    m = state["m"] * config.beta1 + delta * (1.0 - config.beta1)
    sq = delta * delta
    v_prev = state["v"]
    if config.kind == "adagrad":
        v = v_prev + sq
    elif config.kind == "adam":
        v = v_prev * config.beta2 + sq * (1.0 - config.beta2)
    else:  # yogi: v moves towards Delta_t^2 by (1 - beta2) * Delta_t^2, additively
        v = v_prev - sq * (1.0 - config.beta2) * torch.sign(v_prev - sq)
    new_params = params + config.lr * m / (torch.sqrt(v) + config.eps)
    return new_params, {"m": m, "v": v, "step": step}
