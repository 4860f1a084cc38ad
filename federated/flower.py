"""kbsim's clients and models on Flower: the same local training as a Flower ClientApp.

For users whose federated stack is Flower (flwr, Beutel et al. 2020, "Flower: A Friendly
Federated Learning Research Framework"): each Flower node trains one kbsim client with exactly
kbsim's local training (`federated.client.train_client`, the same `ClientConfig` and the same
per-round client seed derive_seed(round_seed(seed, r), "client", client_id)), and a ServerApp
runs Flower's own FedAvg strategy in Flower's simulation engine:

    out = run_flower(clients, "cifg", {"vocab_size": 10004}, ClientConfig(), rounds=5,
                     cohort_size=50, seed=0, initial_params=layout.vector(model))
    out["params"]           # the final global model, flat float32 (`federated.params`)
    out["round_seconds"]    # wall time of each round (round 0 includes Ray's start-up)

Flower's FedAvg averages the clients' trained weights weighted by their example counts, which
is kbsim's FedAvg with weighting="examples" and server SGD at lr 1 (McMahan et al. 2017): both
give the same model up to float rounding (tests/test_flower.py checks it).

Which clients train each round: by default Flower samples `cohort_size` nodes itself (its own
uniform sampling, from Python's global `random`, so not reproducible from `seed`); node
`partition-id` i is kbsim client `sorted(clients)[i]`. With `cohorts` (round -> client ids, e.g.
`federated.sampling.sample_round(...).reporting`), the server instead sends each round's
messages to as many nodes as the cohort has clients, each message naming the kbsim client whose
examples that node trains: simulated nodes are interchangeable workers, so this runs kbsim's own
cohorts on Flower.

Examples reach the Ray actors through the file system: `run_flower` writes them once as .npy
files (`SharedClients`) that each actor memory-maps on first use, so the ClientApp that Flower
pickles with every message stays small. Flower is an optional extra: `pip install
'kbsim[flwr]'` (flwr with its Ray simulation engine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from data.record import derive_seed
from federated.client import ClientConfig, ClientDataset, train_client
from federated.params import BoundModel, ParamLayout

_EXTRA = "pip install 'kbsim[flwr]'"
try:
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MessageType,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"federated.flower needs Flower (flwr >= 1.21): {_EXTRA}") from e

# Keys of the records Flower's FedAvg sends and expects back (its defaults: arrayrecord_key,
# configrecord_key, weighted_by_key) and the config key Flower adds to every training message.
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
WEIGHT_KEY = "num-examples"
ROUND_KEY = "server-round"
# The config key naming the kbsim client a node trains when the server chooses the cohort.
CLIENT_KEY = "kbsim-client-id"
# The node config key with which Flower's simulation numbers its nodes 0..N-1.
PARTITION_KEY = "partition-id"


class FlowerError(ValueError):
    """A Flower run that cannot start or that lost a client's update: the message says why."""


# ---------------------------------------------------------------- clients' examples


class SharedClients(Mapping[str, ClientDataset]):
    """Clients' examples in a folder of .npy files, memory-mapped once per process.

    Pickles as its folder and a token, so a Flower ClientApp that holds it travels to the Ray
    actors with every message at no cost, and each actor reads the examples from the page cache
    instead of receiving them. Write one with `SharedClients.write`.

    Args:
        folder: A folder written by `SharedClients.write`.
        token: The token `write` named the files by.
    """

    def __init__(self, folder: str | Path, token: str) -> None:
        self.folder = str(folder)
        self.token = token

    @classmethod
    def write(cls, clients: Mapping[str, ClientDataset], folder: str | Path) -> SharedClients:
        """Writes every client's x and y (all of one sequence length) to `folder`.

        The files are named by a fresh token and never rewritten, so a handle always reads
        the examples it was made for, even if the folder is written again.
        """
        ids = sorted(clients)
        if not ids:
            raise FlowerError("no clients to share")
        lengths = {clients[c].x.shape[1] for c in ids}
        if len(lengths) != 1:
            raise FlowerError(f"clients have different sequence lengths {sorted(lengths)}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        sizes = [len(clients[c]) for c in ids]
        np.save(folder / f"x-{token}.npy", torch.cat([clients[c].x for c in ids]).numpy())
        np.save(folder / f"y-{token}.npy", torch.cat([clients[c].y for c in ids]).numpy())
        np.save(folder / f"offsets-{token}.npy", np.cumsum([0, *sizes], dtype=np.int64))
        (folder / f"ids-{token}.json").write_text(json.dumps(ids))
        return cls(folder, token)

    def _open(self) -> dict[str, ClientDataset]:
        return _open_shared(self.folder, self.token)

    def __getitem__(self, client_id: str) -> ClientDataset:
        return self._open()[client_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._open())

    def __len__(self) -> int:
        return len(self._open())

    def __reduce__(self):
        return (SharedClients, (self.folder, self.token))


@lru_cache(maxsize=4)
def _open_shared(folder: str, token: str) -> dict[str, ClientDataset]:
    """The clients of a `SharedClients` folder, memory-mapped (cached: once per process)."""
    root = Path(folder)
    ids = json.loads((root / f"ids-{token}.json").read_text())
    # mmap_mode "c" (copy-on-write) gives writable arrays, which torch.from_numpy wants, while
    # every process still shares the file's pages.
    x = torch.from_numpy(np.load(root / f"x-{token}.npy", mmap_mode="c"))
    y = torch.from_numpy(np.load(root / f"y-{token}.npy", mmap_mode="c"))
    offsets = np.load(root / f"offsets-{token}.npy").tolist()
    return {cid: ClientDataset(cid, x[a:b], y[a:b])
            for cid, a, b in zip(ids, offsets[:-1], offsets[1:], strict=True)}


# ---------------------------------------------------------------- the client side


@lru_cache(maxsize=4)
def _working_model(model_kind: str, config_json: str,
                   device: str = "cpu") -> tuple[BoundModel, ParamLayout]:
    """A model of this kind on `device` bound to flat buffers, built once per process and
    reused (its weights are overwritten by every training call)."""
    from models.lm import build_lm

    model = build_lm(model_kind, json.loads(config_json), generator=torch.Generator()).to(device)
    layout = ParamLayout.of(model)
    return layout.bind(model), layout


def _config_json(model_config: Mapping) -> str:
    return json.dumps(dict(model_config), sort_keys=True)


def _arrays(layout: ParamLayout, params: torch.Tensor) -> ArrayRecord:
    """A flat parameter vector as Flower's ArrayRecord of named arrays (a state_dict)."""
    return ArrayRecord(torch_state_dict=layout.unflatten(params))


def _flat(layout: ParamLayout, arrays: ArrayRecord) -> torch.Tensor:
    """The inverse of `_arrays`."""
    return layout.flatten(arrays.to_torch_state_dict())


def client_app(clients: Mapping[str, ClientDataset], model_kind: str, model_config: Mapping,
               client_config: ClientConfig, seed: int, device: str = "cpu") -> ClientApp:
    """A Flower ClientApp whose train step is kbsim's local training.

    A training message carries the server's weights (ArrayRecord under "arrays") and its config
    (ConfigRecord under "config", with Flower's "server-round", counted from 1). The node trains
    client `config["kbsim-client-id"]` when the server names one, else client
    `sorted(clients)[partition-id]`, for round r = server-round - 1 with seed
    derive_seed(round_seed(seed, r), "client", client_id), exactly as `federated.fedavg` does.
    It replies with its trained weights and a MetricRecord holding "num-examples" (Flower's
    FedAvg weight), "train-loss" (mean over its target tokens) and "steps".

    Args:
        clients: Client id -> examples. Flower pickles the app with every message, so for more
            than a few clients pass a `SharedClients`.
        model_kind: A `models.lm` kind ("cifg", "transformer").
        model_config: Its config fields (must match the server's weights).
        client_config: Local training settings.
        seed: The run seed.
        device: Where the node trains ("cpu", "cuda"); weights travel in messages on the CPU.

    Returns:
        The ClientApp (train messages only).
    """
    from federated.run import round_seed
    from models.nwp import nwp_loss

    ids = sorted(clients)
    config_json = _config_json(model_config)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content[CONFIG_KEY]
        if CLIENT_KEY in config:
            cid = str(config[CLIENT_KEY])
        else:
            cid = ids[int(context.node_config[PARTITION_KEY])]
        r = int(config[ROUND_KEY]) - 1
        bound, layout = _working_model(model_kind, config_json, device)
        params = _flat(layout, msg.content[ARRAYS_KEY]).to(device)
        update = train_client(bound, params, clients[cid].to(device), client_config,
                              derive_seed(round_seed(seed, r), "client", cid), nwp_loss,
                              bound.model.config.pad_id)
        loss = update.loss_sum / update.tokens if update.tokens else 0.0
        reply = RecordDict({
            ARRAYS_KEY: _arrays(layout, bound.weights.cpu()),
            METRICS_KEY: MetricRecord({WEIGHT_KEY: update.num_examples, "train-loss": loss,
                                       "steps": update.steps}),
        })
        return Message(reply, reply_to=msg)

    return app


# ---------------------------------------------------------------- the server side


class _KbsimFedAvg(FlowerFedAvg):
    """Flower's FedAvg, optionally on cohorts chosen by kbsim, timing each round, and failing
    loudly when a client's update is lost (Flower's FedAvg would average the others)."""

    def __init__(self, cohorts: Callable[[int], Sequence[str]] | None, num_nodes: int,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.cohorts = cohorts
        self.num_nodes = num_nodes
        self.chosen: dict[int, list[str]] = {}
        self.sent: dict[int, int] = {}  # round -> training messages sent

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        if self.cohorts is None:
            messages = list(super().configure_train(server_round, arrays, config, grid))
            self.sent[server_round] = len(messages)
            return messages
        wanted = sorted(self.cohorts(server_round - 1))
        if len(wanted) > self.num_nodes:
            raise FlowerError(f"round {server_round - 1}: cohort of {len(wanted)} clients but "
                              f"{self.num_nodes} nodes")
        while len(nodes := sorted(grid.get_node_ids())) < self.num_nodes:
            time.sleep(0.05)  # the simulation registers its nodes as the server starts
        self.chosen[server_round] = wanted
        messages = []
        for node, cid in zip(nodes, wanted, strict=False):
            node_config = ConfigRecord({**dict(config), ROUND_KEY: server_round, CLIENT_KEY: cid})
            messages.append(Message(RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: node_config}),
                                    dst_node_id=node, message_type=MessageType.TRAIN))
        self.sent[server_round] = len(messages)
        return messages

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        failed = [m for m in replies if m.has_error()]
        if failed:
            raise FlowerError(f"round {server_round - 1}: {len(failed)} of {len(replies)} "
                              f"clients failed; first: {failed[0].error.reason}")
        if len(replies) != self.sent.get(server_round, len(replies)):
            raise FlowerError(f"round {server_round - 1}: {self.sent[server_round]} clients "
                              f"asked to train, {len(replies)} replied")
        return super().aggregate_train(server_round, replies)


def run_flower(clients: Mapping[str, ClientDataset], model_kind: str, model_config: Mapping,
               client_config: ClientConfig, *, rounds: int, cohort_size: int, seed: int,
               initial_params: torch.Tensor,
               cohorts: Callable[[int], Sequence[str]] | None = None,
               backend_config: dict | None = None, workdir: str | Path | None = None,
               device: str = "cpu") -> dict:
    """Federated averaging of kbsim clients in Flower's simulation engine (Ray).

    Args:
        clients: Client id -> examples; one Flower node per client.
        model_kind: A `models.lm` kind.
        model_config: Its config fields.
        client_config: Local training settings.
        rounds: Rounds to run (>= 1).
        cohort_size: Clients Flower samples each round (ignored when `cohorts` is given).
        seed: The run seed (clients' batch orders).
        initial_params: The initial global weights (flat float32).
        cohorts: Round r (from 0) -> the client ids that train in it; None lets Flower sample.
        backend_config: Flower's backend config; default one CPU per client actor, i.e.
            {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}. Ray's own start options go
            under "init_args" (e.g. {"num_cpus": 1} for a single actor).
        workdir: Where the clients' examples are shared with the actors (default: a temporary
            folder, removed afterwards).
        device: Where the clients train ("cpu", "cuda"); give the actors GPUs too, e.g.
            backend_config {"client_resources": {"num_cpus": 1, "num_gpus": 0.25}}.

    Returns:
        {"params": final weights (flat float32), "round_seconds": wall time of each round
        (sending, training, replies, aggregation; Flower starts Ray and its actors while round
        0's messages wait, so round 0 includes that start-up), "setup_seconds": from the call to
        round 0 (the examples written, the server started), "seconds": the whole call,
        "history": round -> Flower's aggregated client metrics, "cohorts": round -> the client
        ids named (only with `cohorts`)}.

    Raises:
        FlowerError: Bad arguments, or a client failed in a round.
    """
    if importlib.util.find_spec("ray") is None:
        raise ImportError(f"Flower's simulation engine needs Ray: {_EXTRA}")
    from flwr.simulation import run_simulation

    from models.lm import build_lm

    started = time.perf_counter()
    ids = sorted(clients)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise FlowerError(f"rounds must be an int >= 1, got {rounds!r}")
    if not ids:
        raise FlowerError("no clients")
    if cohorts is None and not 1 <= cohort_size <= len(ids):
        raise FlowerError(f"cohort_size must be in [1, {len(ids)}], got {cohort_size!r}")
    model = build_lm(model_kind, dict(model_config), generator=torch.Generator())
    if getattr(model.config, "dropout", 0.0):
        raise FlowerError("federated training needs a dropout-free model (dropout: 0)")
    layout = ParamLayout.of(model)
    if initial_params.shape != (layout.numel,):
        raise FlowerError(f"initial_params must be a flat vector of {layout.numel} weights, "
                          f"got shape {tuple(initial_params.shape)}")
    if backend_config is None:
        backend_config = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}

    n = len(ids)
    strategy = _KbsimFedAvg(
        cohorts, n, fraction_train=1.0 if cohorts is not None else cohort_size / n,
        fraction_evaluate=0.0, min_train_nodes=cohort_size if cohorts is None else 1,
        min_available_nodes=n)
    # Strategy.start calls evaluate_fn before round 1 and after every round: the clock.
    clock: list[float] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> None:
        clock.append(time.perf_counter())

    out: dict = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        result = strategy.start(grid, _arrays(layout, initial_params.detach().float()),
                                num_rounds=rounds, evaluate_fn=evaluate_fn)
        out["result"] = result

    with tempfile.TemporaryDirectory(prefix="kbsim-flower-") as tmp:
        shared = SharedClients.write(clients, workdir if workdir is not None else tmp)
        app = client_app(shared, model_kind, model_config, client_config, seed, device)
        # Flower's Ray backend sets this process's PYTHONPATH to its whole sys.path (for its
        # actors) and leaves it so; put the caller's back, so later subprocesses (another
        # virtual environment's pip) do not see this environment's packages.
        saved = os.environ.get("PYTHONPATH")
        try:
            run_simulation(server_app=server, client_app=app, num_supernodes=n,
                           backend_config=backend_config)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        _open_shared.cache_clear()
    if "result" not in out or len(clock) != rounds + 1:
        raise FlowerError("the Flower simulation ended before its last round")
    result = out["result"]
    history = {r - 1: {k: float(v) for k, v in m.items()}
               for r, m in result.train_metrics_clientapp.items()}
    return {
        "params": _flat(layout, result.arrays),
        "round_seconds": [b - a for a, b in zip(clock[:-1], clock[1:], strict=True)],
        "setup_seconds": clock[0] - started,
        "seconds": time.perf_counter() - started,
        "history": history,
        "cohorts": {r - 1: c for r, c in strategy.chosen.items()},
    }


__all__ = ["FlowerError", "SharedClients", "client_app", "run_flower"]
