"""A federated training run's settings, read from YAML or JSON and validated before any work.

    config = FederatedConfig.load("configs/federated.yaml")

The file holds the fields below, at top level or under `federated:`; nested sections
(`sampling`, `client`, `server`, `dp`, `secagg`) take the fields of their config classes.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.config import ConfigError, read_config_file
from federated.client import ClientConfig
from federated.fedavg import ENGINES, WEIGHTINGS
from federated.sampling import SamplingConfig
from federated.server_optim import ServerOptimizerConfig

ACCOUNTANTS = ("rdp", "pld")
# "gaussian": DP-FedAvg's per-round Gaussian noise (federated.dp.GaussianDP); "tree": DP-FTRL's
# tree-aggregated noise (federated.dp_ftrl.TreeDP).
MECHANISMS = ("gaussian", "tree")
# Settings that may change between a run and its resumption: how long it goes and what it
# writes, never the model at a given round.
RESUMABLE_CHANGES = ("rounds", "eval_every", "checkpoint_every", "keep_checkpoints",
                     "eval_batch_size")


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy: DP-FedAvg with the Gaussian mechanism (`federated.dp.GaussianDP`)
    or DP-FTRL with tree aggregation (`federated.dp_ftrl.TreeDP`, `mechanism: tree`).

    Attributes:
        noise_multiplier: z, the noise std over the clipping norm; the accountant gets z.
        target_epsilon: Instead of z: the run's privacy budget; z is then the smallest that
            keeps all `rounds` rounds within it at `delta`
            (`federated.accounting.noise_multiplier_for_epsilon`). Give one of the two.
        clip_norm: The L2 clipping norm C (the initial one when adaptive).
        target_quantile: Adaptive quantile clipping (Andrew et al. 2021) toward this quantile
            of the update norms; None keeps C fixed.
        clip_learning_rate: The adaptive clipping norm's geometric learning rate.
        count_noise_std: Noise std on the count of unclipped updates (adaptive only); None
            takes `federated.dp`'s default (expected clients / 20, Andrew et al. 2021).
        delta: The delta epsilon is reported at (default 1/clients^1.1 is common; give it).
        accountant: "rdp" or "pld" (Google's dp-accounting; the tree needs "rdp").
        mechanism: "gaussian" (DP-FedAvg, the default) or "tree" (DP-FTRL, Kairouz et al. 2021:
            no amplification by sampling is claimed; needs shuffle sampling, so that a client
            takes part at most once per epoch, and a fixed clip norm). `noise_multiplier` is
            then each tree node's.
        restart_rounds: "tree" only: rounds per tree; None starts a new tree at every epoch of
            shuffle sampling. Must divide the rounds of an epoch, so no tree spans two epochs.
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    clip_norm: float = 1.0
    target_quantile: float | None = None
    clip_learning_rate: float = 0.2
    count_noise_std: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    mechanism: str = "gaussian"
    restart_rounds: int | None = None

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("dp needs one of noise_multiplier and target_epsilon, "
                              f"got {self.noise_multiplier!r} and {self.target_epsilon!r}")
        for name in ("noise_multiplier", "target_epsilon", "clip_norm", "clip_learning_rate",
                     "delta"):
            if getattr(self, name) is not None:
                _check_float(name, getattr(self, name),
                             positive=name in ("clip_norm", "delta", "target_epsilon"))
        if not self.delta < 1:
            raise ConfigError(f"dp.delta must be < 1, got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"dp.accountant must be one of {ACCOUNTANTS}, "
                              f"got {self.accountant!r}")
        if self.mechanism not in MECHANISMS:
            raise ConfigError(f"dp.mechanism must be one of {MECHANISMS}, "
                              f"got {self.mechanism!r}")
        r = self.restart_rounds
        if r is not None:
            if self.mechanism != "tree":
                raise ConfigError("dp.restart_rounds applies to dp.mechanism: tree only")
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ConfigError(f"dp.restart_rounds must be an int >= 1 or null, got {r!r}")
        if self.mechanism == "tree":
            if self.target_quantile is not None:
                raise ConfigError("dp.target_quantile (adaptive clipping) is not supported with "
                                  "dp.mechanism: tree; give a fixed clip_norm")
            if self.accountant != "rdp":
                raise ConfigError(f"dp.mechanism: tree needs dp.accountant: rdp (dp-accounting "
                                  f"accounts tree aggregation with RDP only), got "
                                  f"{self.accountant!r}")


@dataclass(frozen=True)
class SecAggConfig:
    """Secure-aggregation semantics (`federated.secagg.SecAgg`): fixed-point updates summed
    modulo 2^modulus_bits. `bound` clamps each coordinate of a (weighted) update."""

    bound: float
    bits: int = 16
    modulus_bits: int = 32


@dataclass(frozen=True)
class FederatedConfig:
    """A simulated federated training run of a next-word model on a built dataset's users.

    Attributes:
        data: A `kbsim data build` folder (relative paths are taken from the config file).
        model: Model kind (`models.lm.LM_KINDS`).
        model_config: The model's fields (vocab_size filled in from the dataset).
        seq_len: Words per example (20, the Stack Overflow benchmark's).
        rounds: Federated rounds in all.
        seed: Drives the initial weights, cohorts, dropouts, batch orders and DP noise.
        sampling: Who takes part in a round (`federated.sampling.SamplingConfig`).
        client: Local training (`federated.client.ClientConfig`).
        server: The server optimizer (`federated.server_optim.ServerOptimizerConfig`).
        weighting: "examples" or "uniform" (DP needs uniform).
        engine: "sequential" or "vmap".
        vmap_chunk: Clients trained together by the vmap engine.
        device: Where clients train: "cpu", "cuda" (under torchrun, each process takes the GPU
            of its LOCAL_RANK) or "cuda:N". The server steps and the evaluation run on the CPU.
        dp: Differential privacy, or None.
        secagg: Secure-aggregation quantization, or None.
        eval_every: Evaluate on the held-out users every this many rounds (0: at the end only;
            the last round always is).
        eval_split: The user split evaluated on ("val").
        eval_batch_size: Evaluation batch size (speed only).
        checkpoint_every: Checkpoint every this many rounds (the last always is).
        keep_checkpoints: Keep this many newest checkpoints.
    """

    data: str
    model: str = "cifg"
    model_config: dict = field(default_factory=dict)
    seq_len: int = 20
    rounds: int = 10
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(cohort_size=50))
    client: ClientConfig = field(default_factory=ClientConfig)
    server: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)
    weighting: str = "examples"
    engine: str = "sequential"
    vmap_chunk: int = 16
    device: str = "cpu"
    dp: DPConfig | None = None
    secagg: SecAggConfig | None = None
    eval_every: int = 10
    eval_split: str = "val"
    eval_batch_size: int = 256
    checkpoint_every: int = 10
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        from models.lm import LM_KINDS

        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data):
            raise ConfigError(f"data must be a dataset folder path, got {self.data!r}")
        object.__setattr__(self, "data", str(self.data))
        if self.model not in LM_KINDS:
            raise ConfigError(f"model must be one of {LM_KINDS}, got {self.model!r}")
        if not isinstance(self.model_config, Mapping):
            raise ConfigError(f"model_config must be a mapping, got {self.model_config!r}")
        object.__setattr__(self, "model_config", dict(self.model_config))
        for name, low in (("seq_len", 1), ("rounds", 1), ("seed", 0), ("vmap_chunk", 1),
                          ("eval_every", 0), ("eval_batch_size", 1), ("checkpoint_every", 1),
                          ("keep_checkpoints", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {v!r}")
        for name, kind in (("sampling", SamplingConfig), ("client", ClientConfig),
                           ("server", ServerOptimizerConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.dp is not None and self.weighting != "uniform":
            raise ConfigError("dp needs weighting: uniform (DP-FedAvg bounds each client's "
                              "contribution; weighting by examples would scale it)")
        if self.dp is not None and self.dp.mechanism == "tree" \
                and self.sampling.kind != "shuffle":
            raise ConfigError(f"dp.mechanism: tree needs sampling kind: shuffle (tree "
                              f"aggregation's guarantee assumes each client at most once per "
                              f"tree), got kind: {self.sampling.kind}")
        if self.dp is not None and self.dp.mechanism == "gaussian" \
                and self.sampling.kind == "shuffle":
            raise ConfigError("sampling kind: shuffle with dp needs dp.mechanism: tree (the "
                              "Gaussian mechanism's accounting assumes Poisson sampling, which "
                              "shuffled epochs are not)")
        if self.eval_split not in ("train", "val", "test"):
            raise ConfigError(f"eval_split must be train, val or test, got {self.eval_split!r}")

    def to_dict(self) -> dict:
        """The config as plain JSON data (`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: Path | None = None) -> FederatedConfig:
        """A config from plain data; unknown keys are errors.

        Args:
            d: The fields; `data` is required.
            base_dir: A relative `data` path is taken from here (the config file's folder).
        """
        if not isinstance(d, Mapping):
            raise ConfigError("a federated config must be a mapping")
        _check_keys("", d, cls)
        if "data" not in d:
            raise ConfigError("data (the `kbsim data build` folder) is required")
        kwargs = dict(d)
        for name, kind in (("sampling", SamplingConfig), ("client", ClientConfig),
                           ("server", ServerOptimizerConfig), ("dp", DPConfig),
                           ("secagg", SecAggConfig)):
            if kwargs.get(name) is not None:
                kwargs[name] = _section(name, kwargs[name], kind)
        if base_dir is not None and isinstance(kwargs["data"], str) \
                and not Path(kwargs["data"]).is_absolute():
            kwargs["data"] = str((base_dir / kwargs["data"]).resolve())
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FederatedConfig:
        """Reads a YAML (.yaml/.yml) or JSON config; the fields may also sit under
        `federated:`."""
        path = Path(path)
        d = read_config_file(path, "federated")
        try:
            return cls.from_dict(d, base_dir=path.parent)
        except (ConfigError, ValueError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from None


def _check_keys(where: str, d: Mapping, kind: type) -> None:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}{' in ' + where if where else ''} "
                          f"(known: {', '.join(sorted(known))})")


def _section(name: str, value: object, kind: type) -> object:
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping of {kind.__name__} fields, got {value!r}")
    _check_keys(name, value, kind)
    kwargs = {}
    floats = {f.name for f in dataclasses.fields(kind) if "float" in str(f.type)}
    for k, v in value.items():
        if k in floats and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)  # YAML reads "1" as an int
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    try:
        return kind(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}") from None


def _check_float(name: str, v: object, positive: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < 0 or (positive and v == 0):
        raise ConfigError(f"dp.{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                          f"got {v!r}")
