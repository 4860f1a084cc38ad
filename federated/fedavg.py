"""Federated averaging with a server optimizer, as pure functions over explicit state.

    algo = FedAvg(model, FedAvgConfig(client=ClientConfig(), server=ServerOptimizerConfig()),
                  stages=[GaussianDP(...)])
    state = algo.init(layout.vector(model))
    state, metrics = algo.apply(state, clients, seed=round_seed)

One round (`apply`) is three steps, each usable on its own (`federated.distributed` runs the
first two on every rank and all-reduces between them):

1. `train` (on the devices): each client trains locally from the server's weights and returns a
   `ClientUpdate` (its delta and counts, never its data).
2. `aggregate`: each update becomes a `Contribution` (delta times its weight: the client's
   example count, or 1 for uniform weighting), passes the chain's client steps (clipping,
   quantization) and is added to the round's `Aggregate`, with the training counts as stats.
3. `server_update` (on the server, from the aggregate alone): the chain's server steps
   (decoding, noise), the weighted mean update Delta, and the server optimizer's step
   x <- opt(x, Delta) (Reddi et al. 2021, Algorithm 2: FedAvg is SGD with lr 1; FedAvgM,
   FedAdam, FedYogi, FedAdagrad the others). FedProx is FedAvg with the client's proximal term
   (`ClientConfig.prox_mu`).

Seeds: everything random in a round comes from its seed (the caller derives it from (run seed,
round)): client c's batch order from (seed, "client", c), its stage randomness from (seed,
"stage", stage name, c), the server's from (seed, "stage", stage name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from data.record import derive_seed
from federated import server_optim
from federated.chain import Aggregate, Contribution, Stage, run_client, run_server, stat_names
from federated.client import (
    ClientConfig,
    ClientDataset,
    ClientUpdate,
    LossFn,
    train_clients_sequential,
)
from federated.params import ParamLayout
from federated.server_optim import ServerOptimizerConfig

ENGINES = ("sequential", "vmap")
WEIGHTINGS = ("examples", "uniform")
# Training counts every aggregate carries, summed over clients like the stages' stats.
TRAIN_STATS = ("train/loss_sum", "train/tokens", "train/steps", "train/examples",
               "train/update_norm_sum")


class FedAvgError(ValueError):
    """Settings of a federated algorithm that do not fit together."""


@dataclass(frozen=True)
class FedAvgConfig:
    """A federated averaging algorithm.

    Attributes:
        client: Local training of each client.
        server: The server optimizer (`kind="sgd"`, lr 1: plain FedAvg).
        weighting: "examples" (weight each client's delta by its example count, McMahan et al.
            2017) or "uniform" (each client counts once; what DP-FedAvg needs).
        engine: "sequential" (clients one after another on one working model) or "vmap"
            (`torch.func.vmap` over a chunk of clients); same result up to float rounding.
        vmap_chunk: Clients trained together by the vmap engine.
        device: Where clients train ("cpu", "cuda", "cuda:1"); the server (the chain, its
            noise, the optimizer) stays on the CPU and gets each update there, so results
            differ across devices by float rounding only.
    """

    client: ClientConfig = field(default_factory=ClientConfig)
    server: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)
    weighting: str = "examples"
    engine: str = "sequential"
    vmap_chunk: int = 16
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.client, ClientConfig):
            raise FedAvgError(f"client must be a ClientConfig, got {type(self.client).__name__}")
        if not isinstance(self.server, ServerOptimizerConfig):
            raise FedAvgError("server must be a ServerOptimizerConfig, got "
                              f"{type(self.server).__name__}")
        if self.weighting not in WEIGHTINGS:
            raise FedAvgError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.engine not in ENGINES:
            raise FedAvgError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if isinstance(self.vmap_chunk, bool) or not isinstance(self.vmap_chunk, int) \
                or self.vmap_chunk < 1:
            raise FedAvgError(f"vmap_chunk must be an int >= 1, got {self.vmap_chunk!r}")
        check_device(self.device, FedAvgError)


def check_device(device: object, error: type[Exception]) -> torch.device:
    """`device` as a torch.device; raises `error` for a bad name or a GPU this machine lacks."""
    if not isinstance(device, str):
        raise error(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise error(f"device {device!r}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise error(f"device {device!r}: torch sees no CUDA GPU here "
                    "(torch.cuda.is_available() is False)")
    if d.type not in ("cpu", "cuda"):
        raise error(f"device {device!r}: clients train on 'cpu' or 'cuda' devices")
    return d


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries from one round to the next.

    Attributes:
        round: Rounds applied so far.
        params: The global model's weights (flat float32).
        opt_state: The server optimizer's state tensors (`federated.server_optim`).
        stage_states: Each chain stage's JSON-able state, in chain order.
    """

    round: int
    params: torch.Tensor
    opt_state: Mapping[str, torch.Tensor]
    stage_states: tuple[dict, ...]


class FedAvg:
    """Federated averaging over `model`'s architecture (its weights are never used).

    Args:
        model: The model trained (a module mapping ids (B, T) to logits (B, T, V)); dropout-free.
        config: The algorithm's settings.
        stages: The server-side chain (e.g. `federated.dp.GaussianDP`, `federated.secagg.SecAgg`).
        loss_fn: (logits, y) -> mean loss over non-PAD targets (default `models.nwp.nwp_loss`).
        pad_id: The PAD id (default: the model's `config.pad_id`).
    """

    def __init__(self, model: nn.Module, config: FedAvgConfig, stages: Sequence[Stage] = (),
                 loss_fn: LossFn | None = None, pad_id: int | None = None) -> None:
        if loss_fn is None:
            from models.nwp import nwp_loss

            loss_fn = nwp_loss
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise FedAvgError(f"chain stage names must be unique, got {names}")
        self.model = model
        self.config = config
        self.stages = tuple(stages)
        self.loss_fn = loss_fn
        self.pad_id = pad_id if pad_id is not None else model.config.pad_id
        self.layout = ParamLayout.of(model)
        self.stat_names = [*TRAIN_STATS, *stat_names(self.stages)]
        self.device = torch.device(config.device)
        self._bound = None  # the sequential engine's working model, made on first use
        self._vmap_model = None  # the vmap engine's architecture on the device

    # ---------------------------------------------------------------- state

    def init(self, params: torch.Tensor) -> ServerState:
        """The server state before round 0, from initial weights (flat)."""
        if params.shape != (self.layout.numel,):
            raise FedAvgError(f"params must be a flat vector of {self.layout.numel} weights, "
                              f"got shape {tuple(params.shape)}")
        params = params.detach().to(torch.float32).clone()
        return ServerState(0, params, server_optim.init(self.config.server, params),
                           tuple(s.init_state() for s in self.stages))

    # ---------------------------------------------------------------- 1. on the devices

    def train(self, state: ServerState, clients: Sequence[ClientDataset],
              seed: int) -> Iterator[ClientUpdate]:
        """Each client's local training from the server's weights; updates in client order."""
        import copy

        seeds = [derive_seed(seed, "client", c.client_id) for c in clients]
        cfg, dev = self.config, self.device
        params = state.params.to(dev)
        clients = [c.to(dev) for c in clients]
        if cfg.engine == "vmap":
            from federated.vmap import train_clients_vmap

            if self._vmap_model is None:
                self._vmap_model = copy.deepcopy(self.model).to(dev)
            updates = train_clients_vmap(self._vmap_model, self.layout, params, clients,
                                         cfg.client, seeds, self.loss_fn, self.pad_id,
                                         cfg.vmap_chunk)
        else:
            if self._bound is None:
                self._bound = self.layout.bind(copy.deepcopy(self.model).to(dev))
            updates = train_clients_sequential(self._bound, params, clients, cfg.client, seeds,
                                               self.loss_fn, self.pad_id)
        if dev.type == "cpu":
            return updates
        # The server side is on the CPU: each update goes there as it is made.
        return (replace(u, delta=u.delta.cpu()) for u in updates)

    # ---------------------------------------------------------------- 2. on the way

    def contribution(self, update: ClientUpdate) -> Contribution:
        """A client's update as it enters the chain: weighted delta, weight, training stats."""
        w = float(update.num_examples) if self.config.weighting == "examples" else 1.0
        stats = {"train/loss_sum": update.loss_sum, "train/tokens": float(update.tokens),
                 "train/steps": float(update.steps),
                 "train/examples": float(update.num_examples),
                 "train/update_norm_sum": float(update.delta.norm())}
        return Contribution(update.delta * w if w != 1.0 else update.delta, w, stats)

    def aggregate(self, state: ServerState, updates: Iterable[ClientUpdate],
                  client_ids: Sequence[str], seed: int) -> Aggregate:
        """The sum of the clients' contributions after the chain's client steps.

        Args:
            state: The server state the clients trained from (the stages read theirs).
            updates: The clients' updates, in the order of `client_ids`.
            client_ids: Who sent each update (seeds each client's stage randomness).
            seed: The round's seed.
        """
        agg = Aggregate.zeros(self.layout.numel, self.stat_names)
        n = 0
        for update, cid in zip(updates, client_ids, strict=True):
            gens = [torch.Generator().manual_seed(derive_seed(seed, "stage", s.name, cid))
                    for s in self.stages]
            c = run_client(self.stages, self.contribution(update), state.stage_states, gens)
            agg = agg.add_(c)
            n += 1
        if n != len(client_ids):
            raise FedAvgError(f"{len(client_ids)} clients but {n} updates")
        return agg

    # ---------------------------------------------------------------- 3. on the server

    def server_update(self, state: ServerState, agg: Aggregate,
                      seed: int) -> tuple[ServerState, dict[str, float]]:
        """The server's step from the round's (full) aggregate alone."""
        gens = [torch.Generator().manual_seed(derive_seed(seed, "stage", s.name))
                for s in self.stages]
        counts = dict(agg.stats)
        mean, stage_states, stage_metrics = run_server(self.stages, agg, state.stage_states,
                                                       gens)
        params, opt_state = server_optim.apply(self.config.server, state.opt_state,
                                               state.params, mean)
        tokens = counts.get("train/tokens", 0.0)
        metrics = {
            "clients": float(agg.count),
            "train_loss": counts["train/loss_sum"] / tokens if tokens else float("nan"),
            "train_tokens": tokens,
            "train_examples": counts.get("train/examples", 0.0),
            "client_steps": counts.get("train/steps", 0.0),
            "update_norm": (counts["train/update_norm_sum"] / agg.count if agg.count
                            else float("nan")),
            "server_update_norm": float(mean.norm()),
            **stage_metrics,
        }
        return replace(state, round=state.round + 1, params=params, opt_state=opt_state,
                       stage_states=tuple(stage_states)), metrics

    # ---------------------------------------------------------------- a whole round

    def apply(self, state: ServerState, clients: Sequence[ClientDataset], seed: int,
              reduce: Callable[[Aggregate], Aggregate] | None = None
              ) -> tuple[ServerState, dict[str, float]]:
        """One round over the clients that report.

        Args:
            state: The server state.
            clients: The reporting clients (on this rank, when distributed).
            seed: The round's seed.
            reduce: Sums this rank's aggregate with the other ranks' (all-reduce); None in one
                process.

        Returns:
            (the next server state, the round's metrics).
        """
        updates = self.train(state, clients, seed)
        agg = self.aggregate(state, updates, [c.client_id for c in clients], seed)
        if reduce is not None:
            agg = reduce(agg)
        return self.server_update(state, agg, seed)
