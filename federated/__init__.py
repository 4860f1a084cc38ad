"""federated: simulated cross-device federated training of kbsim's on-device models.

    FedAvg(model, FedAvgConfig(...), stages) -> init(params) -> state; apply(state, clients,
    seed) -> (state, metrics): a round as pure functions over explicit state, with client
    training (sequential or torch.func.vmap), a server-side chain (DP-FedAvg or DP-FTRL,
    secure aggregation) and a server optimizer (FedAvg/FedAvgM, FedAdam, FedYogi, FedAdagrad;
    FedProx on the client).

The public API, loaded lazily (importing `federated` does not import torch):
    FedAvg, FedAvgConfig, ServerState          the algorithm
    ClientConfig, ClientDataset, ClientUpdate  a client's training, data and what it sends
    ServerOptimizerConfig                      the server optimizer (federated.server_optim)
    SamplingConfig, sample_round, Cohort       who takes part in a round
    GaussianDP, TreeDP, SecAgg                 server-side chain stages (DP-FedAvg, DP-FTRL)
    PrivacyLedger, epsilon, noise_multiplier_for_epsilon, tree_epsilon   accounting
    FederatedConfig, run_federated, load_federated_model   a whole run (`kbsim federated`)
    Group, group_from_env                      scale-out with torch.distributed (torchrun)
    ParamLayout                                flat parameter vectors
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FedAvg": "federated.fedavg", "FedAvgConfig": "federated.fedavg",
    "ServerState": "federated.fedavg",
    "ClientConfig": "federated.client", "ClientDataset": "federated.client",
    "ClientUpdate": "federated.client",
    "ServerOptimizerConfig": "federated.server_optim",
    "SamplingConfig": "federated.sampling", "sample_round": "federated.sampling",
    "Cohort": "federated.sampling",
    "GaussianDP": "federated.dp", "TreeDP": "federated.dp_ftrl", "SecAgg": "federated.secagg",
    "PrivacyLedger": "federated.accounting", "epsilon": "federated.accounting",
    "noise_multiplier_for_epsilon": "federated.accounting",
    "tree_epsilon": "federated.accounting",
    "FederatedConfig": "federated.config", "run_federated": "federated.run",
    "load_federated_model": "federated.run",
    "Group": "federated.distributed", "group_from_env": "federated.distributed",
    "ParamLayout": "federated.params",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'federated' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
