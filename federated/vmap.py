"""Many clients' local training at once: stacked weights, `torch.func.vmap` over clients.

Each client trains its own copy of the weights on its own batches, so a round's local training
is the same computation repeated per client; vectorising it runs the model once per step over a
stack of client weights (clients, params) and client batches (clients, batch, seq_len), which
turns each client's small matrix products into one batched product and pays Python's per-op
overhead once per step instead of once per client.

Clients differ in how many steps they take (their examples differ) and in the size of their
last batch. Within a chunk, clients are ordered by steps, most first, so at step k the clients
still training are a prefix of the stack and train on a view of it, with no copy and no wasted
steps. A short batch is padded to `batch_size` with rows whose targets are all PAD, which add
nothing to the loss (the loss is a mean over non-PAD targets) nor to the gradient. Each client
takes exactly its batches of `federated.client.batch_plan`, so the result equals
`federated.client.train_client` up to float rounding (tested).

The model must be free of randomness (no dropout) and of in-place state (no batch norm), as
`torch.func` requires. Everything runs on the device of `params` (the model and the clients'
examples must be there too); this is the engine meant for accelerators, where a chunk's step is
one batched kernel instead of one per client.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from federated.client import (
    ClientConfig,
    ClientDataset,
    ClientError,
    ClientUpdate,
    LossFn,
    batch_plan,
    clip_factor,
)
from federated.params import ParamLayout


def train_clients_vmap(model: nn.Module, layout: ParamLayout, params: torch.Tensor,
                       clients: Sequence[ClientDataset], config: ClientConfig,
                       seeds: Sequence[int], loss_fn: LossFn, pad_id: int,
                       chunk: int = 16) -> Iterator[ClientUpdate]:
    """Local training of `clients` from the server's weights, `chunk` clients at a time.

    Args:
        model: The model architecture (its own weights are not used nor changed).
        layout: The flat layout of its parameters.
        params: The server's weights (flat); not modified.
        clients: The clients' examples; all of one seq_len.
        config: Local training settings.
        seeds: Each client's seed for this round (its batch order).
        loss_fn: (logits, y) -> mean loss over non-PAD targets.
        pad_id: The PAD id, used to pad short batches.
        chunk: Clients trained together (memory grows with it: activations of chunk * batch
            examples at once).

    Yields:
        Each client's update, in the order of `clients`.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if len(clients) != len(seeds):
        raise ValueError(f"{len(clients)} clients but {len(seeds)} seeds")
    for start in range(0, len(clients), chunk):
        yield from _train_chunk(model, layout, params, clients[start:start + chunk], config,
                                seeds[start:start + chunk], loss_fn, pad_id)


def _train_chunk(model, layout, params, clients, config, seeds, loss_fn,
                 pad_id) -> list[ClientUpdate]:
    for c in clients:
        if len(c) == 0:
            raise ClientError(f"client {c.client_id}: no examples to train on")
    plans = [batch_plan(len(c), config, s) for c, s in zip(clients, seeds, strict=True)]
    # Most steps first: the clients still training at any step are a prefix of the stack.
    order = sorted(range(len(clients)), key=lambda i: -len(plans[i]))
    clients = [clients[i] for i in order]
    plans = [plans[i] for i in order]
    n, b = len(clients), config.batch_size
    seq_len = clients[0].x.shape[1]
    if any(c.x.shape[1] != seq_len for c in clients):
        raise ClientError("clients trained together must share one sequence length")

    def loss_of(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, layout.unflatten(w), (x,)), y)

    step_fn = vmap(grad_and_value(loss_of), randomness="error")
    weights = params.detach().unsqueeze(0).repeat(n, 1)  # (clients, P), on params' device
    loss_sums = [0.0] * n
    tokens = [0] * n
    was_training = model.training
    model.train()
    try:
        for k in range(len(plans[0])):
            active = sum(1 for p in plans if len(p) > k)  # a prefix, by the order above
            x = torch.full((active, b, seq_len), pad_id, dtype=torch.int64, device=weights.device)
            y = torch.full((active, b, seq_len), pad_id, dtype=torch.int64, device=weights.device)
            for i in range(active):
                idx = plans[i][k]
                x[i, : len(idx)] = clients[i].x[idx]
                y[i, : len(idx)] = clients[i].y[idx]
            w = weights[:active]
            g, loss = step_fn(w, x, y)  # (active, P), (active,)
            with torch.no_grad():
                if config.prox_mu:
                    g.add_(w - params, alpha=config.prox_mu)
                if config.clip_grad_norm is not None:
                    g.mul_(clip_factor(g.norm(dim=1, keepdim=True), config.clip_grad_norm))
                w.add_(g, alpha=-config.lr)
            # One transfer each per step (on an accelerator, not one per client).
            counts = (y != pad_id).sum(dim=(1, 2)).tolist()
            for i, (li, t) in enumerate(zip(loss.tolist(), counts, strict=True)):
                loss_sums[i] += li * t
                tokens[i] += t
    finally:
        model.train(was_training)
    updates: list[ClientUpdate | None] = [None] * n
    for i, pos in enumerate(order):
        updates[pos] = ClientUpdate(weights[i] - params, len(clients[i]), len(plans[i]),
                                    loss_sums[i], tokens[i])
    return updates
