"""Model parameters as one flat vector: what the server holds, sends and receives.

Federated code moves whole models around every round (server -> clients -> deltas -> sum ->
server step). Keeping them as one 1-D float32 tensor makes each of those a single tensor
operation: a delta is a subtraction, a clip one norm, an all-reduce one call, a checkpoint one
safetensors entry. `ParamLayout` maps between the flat vector and a model's named parameters
(tied weights appear once, as `named_parameters` lists them).

    layout = ParamLayout.of(model)
    vec = layout.vector(model)              # a copy of the model's weights, flat
    params = layout.unflatten(vec)          # name -> view into vec (for torch.func)
    bind = layout.bind(model)               # the model's parameters become views of one
                                            # flat buffer, and their gradients of another
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamLayout:
    """Where each named parameter sits in the flat vector.

    Attributes:
        names: Parameter names, in `model.named_parameters()` order.
        shapes: Their shapes.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        """The layout of a model's trainable parameters (all must be float32)."""
        names, shapes = [], []
        for name, p in model.named_parameters():
            if p.dtype != torch.float32:
                raise TypeError(f"parameter {name} is {p.dtype}; federated training holds "
                                "float32 parameters")
            names.append(name)
            shapes.append(tuple(p.shape))
        return cls(tuple(names), tuple(shapes))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def numel(self) -> int:
        """Length of the flat vector."""
        return sum(self.sizes)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Name -> tensor (same names and shapes) as a new flat float32 vector."""
        if set(tensors) != set(self.names):
            raise ValueError(f"expected parameters {list(self.names)}, got {sorted(tensors)}")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"parameter {name}: shape {tuple(t.shape)}, expected {shape}")
            parts.append(t.detach().reshape(-1).to(torch.float32))
        return torch.cat(parts)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> view into `vec` (..., numel): leading dimensions are kept, so a stack of
        vectors (clients, numel) unflattens to per-name stacks (clients, *shape)."""
        if vec.shape[-1] != self.numel:
            raise ValueError(f"flat vector has {vec.shape[-1]} elements, the model {self.numel}")
        lead = tuple(vec.shape[:-1])
        out = {}
        for name, shape, part in zip(self.names, self.shapes,
                                     vec.split(self.sizes, dim=-1), strict=True):
            out[name] = part.view(*lead, *shape)
        return out

    def vector(self, model: nn.Module) -> torch.Tensor:
        """A copy of the model's parameters as a flat vector."""
        return self.flatten(dict(model.named_parameters()))

    def load(self, model: nn.Module, vec: torch.Tensor) -> None:
        """Copies a flat vector into the model's parameters."""
        views = self.unflatten(vec)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(views[name])

    def bind(self, model: nn.Module) -> BoundModel:
        """Makes the model's parameters views of one flat buffer, and their `.grad`s views of
        another, so that training steps can update the whole model with one vector operation.

        The model is changed in place: its current weights are copied into the buffer first.
        """
        if ParamLayout.of(model) != self:
            raise ValueError("the model's parameters do not match this layout")
        weights = self.vector(model)
        grads = torch.zeros_like(weights)
        w_views, g_views = self.unflatten(weights), self.unflatten(grads)
        for name, p in model.named_parameters():
            p.data = w_views[name]
            p.grad = g_views[name]
        return BoundModel(model, weights, grads)


@dataclass(frozen=True)
class BoundModel:
    """A model whose parameters and gradients live in two flat buffers (`ParamLayout.bind`).

    Writing `weights` changes the model; a backward pass accumulates into `grads` (zero it
    first: `grads.zero_()`, never `model.zero_grad()`, which would unbind the views).
    """

    model: nn.Module
    weights: torch.Tensor
    grads: torch.Tensor

    def check(self) -> None:
        """Raises if something replaced a parameter's storage or gradient since binding (e.g.
        `zero_grad(set_to_none=True)` or `p.data = ...`)."""
        for name, p in self.model.named_parameters():
            if p.grad is None or not (_inside(p, self.weights) and _inside(p.grad, self.grads)):
                raise RuntimeError(f"parameter {name} is no longer bound to the flat buffers")


def _inside(t: torch.Tensor, buffer: torch.Tensor) -> bool:
    start, size = buffer.data_ptr(), buffer.numel() * buffer.element_size()
    return start <= t.data_ptr() < start + size
