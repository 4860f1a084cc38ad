"""What happens on a client's device: local training on its own examples, and the update it sends.

A client holds its examples (`ClientDataset`) and never hands them over: local training
(`train_client`, or `federated.vmap.train_clients_vmap` for many clients at once) runs SGD from
the server's weights and returns a `ClientUpdate`, which holds the weight delta and counts only.
That is all the server side ever receives (`federated.fedavg` takes updates, never datasets).

Local training is client SGD for `epochs` passes over the client's examples in batches of
`batch_size` (the Stack Overflow benchmark's 1 epoch of batch 16, Reddi et al. 2021 appendix
C), each epoch in an order drawn from the client's own seed (derived by the caller from (run
seed, round, client id)), optionally with FedProx's proximal term mu/2 ||w - w_server||^2 (Li et
al. 2020, "Federated Optimization in Heterogeneous Networks"). Both engines take the same
batches (`batch_plan`) and the same steps, so they agree up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from federated.params import BoundModel

# Client SGD learning rate 10^-0.5: the best client rate Reddi et al. (2021, appendix D, Table
# 8) report for Stack Overflow next-word prediction with FedAvg and FedAdam alike.
DEFAULT_CLIENT_LR = 10 ** -0.5

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ClientError(ValueError):
    """A client whose data or settings cannot be trained on: the message names it."""


@dataclass(frozen=True)
class ClientConfig:
    """Local training of every client.

    Attributes:
        lr: Client SGD learning rate.
        epochs: Passes over the client's examples per round.
        batch_size: Examples per local step (a client's last batch of an epoch may be smaller).
        prox_mu: FedProx's proximal weight mu (0: plain FedAvg local SGD).
        max_steps: Stop local training after this many steps (None: no cap). Caps how much a
            client with many examples works per round, as deployments do.
        clip_grad_norm: Clip each local step's gradient (loss and proximal term) to this global
            L2 norm (None: no clipping). A safeguard against the exploding gradients that
            recurrent models meet now and then at a client learning rate as high as 10^-0.5
            (Pascanu et al. 2013); at the CIFG's typical gradient norm on chat data (about 0.15
            at the start, measured) a clip of 1 acts only on such outliers.
    """

    lr: float = DEFAULT_CLIENT_LR
    epochs: int = 1
    batch_size: int = 16
    prox_mu: float = 0.0
    max_steps: int | None = None
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        c = self.clip_grad_norm
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) \
                    or c <= 0:
                raise ClientError(f"client clip_grad_norm must be a finite number > 0 or None, "
                                  f"got {c!r}")
            object.__setattr__(self, "clip_grad_norm", float(c))
        for name in ("lr", "prox_mu"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (name == "lr" and v == 0):
                raise ClientError(f"client {name} must be a finite number "
                                  f"{'> 0' if name == 'lr' else '>= 0'}, got {v!r}")
            object.__setattr__(self, name, float(v))
        for name in ("epochs", "batch_size", "max_steps"):
            v = getattr(self, name)
            if v is None and name == "max_steps":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ClientError(f"client {name} must be an int >= 1, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClientDataset:
    """A client's next-word examples, on its device: x and y of shape (examples, seq_len).

    Attributes:
        client_id: The client.
        x: Input ids (n, T) int64.
        y: Target ids (n, T) int64 (PAD targets carry no loss).
    """

    client_id: str
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 2 or self.x.shape != self.y.shape:
            raise ClientError(f"client {self.client_id}: x and y must both be (examples, "
                              f"seq_len), got {tuple(self.x.shape)} and {tuple(self.y.shape)}")
        if self.x.dtype != torch.int64 or self.y.dtype != torch.int64:
            raise ClientError(f"client {self.client_id}: ids must be int64")

    def to(self, device: str | torch.device) -> ClientDataset:
        """The same examples on `device` (this object when they are there already)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        return ClientDataset(self.client_id, self.x.to(device), self.y.to(device))

    @classmethod
    def from_dataset(cls, client_id: str, dataset) -> ClientDataset:
        """From a `data.torch_data.NextWordDataset` (its sequences, without copying)."""
        seqs = dataset.sequences
        return cls(client_id, seqs[:, :-1], seqs[:, 1:])

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class ClientUpdate:
    """What a client sends back: never its examples, only what training made of them.

    Attributes:
        delta: Trained weights minus the server's weights (flat float32).
        num_examples: Examples the client trained on (its aggregation weight when weighted).
        steps: Local SGD steps taken.
        loss_sum: Sum over steps of the batch's mean training loss times its target tokens.
        tokens: Target tokens trained on (so loss_sum / tokens is the mean training loss).
    """

    delta: torch.Tensor
    num_examples: int
    steps: int
    loss_sum: float
    tokens: int


def batch_plan(num_examples: int, config: ClientConfig, seed: int) -> list[torch.Tensor]:
    """The example indices of each local step: `epochs` seeded permutations cut into batches.

    A function of (num_examples, config, seed) only, so every engine trains a client on the
    same batches in the same order.
    """
    g = torch.Generator().manual_seed(seed)
    plan: list[torch.Tensor] = []
    for _ in range(config.epochs):
        order = torch.randperm(num_examples, generator=g)
        plan.extend(order.split(config.batch_size))
    if config.max_steps is not None:
        plan = plan[: config.max_steps]
    return plan


def clip_factor(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The factor that scales a gradient of L2 norm `norm` to at most `max_norm` (elementwise
    over a batch of norms)."""
    return (max_norm / norm.clamp(min=1e-12)).clamp(max=1.0)


def tokens_of(y: torch.Tensor, pad_id: int) -> int:
    return int((y != pad_id).sum())


def train_client(bound: BoundModel, params: torch.Tensor, data: ClientDataset,
                 config: ClientConfig, seed: int, loss_fn: LossFn, pad_id: int) -> ClientUpdate:
    """Local training of one client from the server's weights `params`.

    Args:
        bound: The working model, bound to flat buffers (`ParamLayout.bind`); its weights are
            overwritten.
        params: The server's weights (flat); not modified.
        data: The client's examples.
        config: Local training settings.
        seed: The client's seed for this round (its batch order).
        loss_fn: (logits, y) -> mean loss over non-PAD targets (`models.nwp.nwp_loss`).
        pad_id: The PAD target id (for token counts).

    Returns:
        The client's update.
    """
    if len(data) == 0:
        raise ClientError(f"client {data.client_id}: no examples to train on")
    model, w, g = bound.model, bound.weights, bound.grads
    model.train()
    with torch.no_grad():
        w.copy_(params)
    loss_sum, tokens = 0.0, 0
    plan = batch_plan(len(data), config, seed)
    for idx in plan:
        x, y = data.x[idx], data.y[idx]
        g.zero_()
        loss = loss_fn(model(x), y)
        loss.backward()
        with torch.no_grad():
            if config.prox_mu:
                g.add_(w - params, alpha=config.prox_mu)  # grad of mu/2 ||w - w0||^2
            if config.clip_grad_norm is not None:
                g.mul_(clip_factor(g.norm(), config.clip_grad_norm))
            w.add_(g, alpha=-config.lr)
        n = tokens_of(y, pad_id)
        loss_sum += float(loss.detach()) * n
        tokens += n
    bound.check()
    return ClientUpdate(w - params, len(data), len(plan), loss_sum, tokens)


def train_clients_sequential(bound: BoundModel, params: torch.Tensor,
                             clients: Sequence[ClientDataset], config: ClientConfig,
                             seeds: Sequence[int], loss_fn: LossFn,
                             pad_id: int) -> Iterator[ClientUpdate]:
    """`train_client` for each client in turn (one working model, reused), yielding each
    update as it is made so that only one is held at a time."""
    for c, s in zip(clients, seeds, strict=True):
        yield train_client(bound, params, c, config, s, loss_fn, pad_id)
