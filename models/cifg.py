"""The CIFG-LSTM next-word model of Gboard's federated keyboard (Hard et al. 2018).

Hard et al. 2018, "Federated Learning for Mobile Keyboard Prediction" (arXiv:1811.03604),
section 3: one layer of 670 CIFG cells, 96-dimensional word embeddings, a projection of the
cell output back to 96 dimensions, input and output embeddings tied, a 10,000-word vocabulary,
1.4M parameters. CIFG (coupled input and forget gate; Greff et al. 2017, "LSTM: A Search Space
Odyssey") is an LSTM whose input gate is one minus its forget gate, which saves a quarter of
the gate parameters and compute. One step, with h the projected output (size P = embed_dim):

    f = sigmoid(W_f [x_t, h_{t-1}] + b_f)        forget gate; input gate i = 1 - f
    g = tanh(W_g [x_t, h_{t-1}] + b_g)           candidate cell
    o = sigmoid(W_o [x_t, h_{t-1}] + b_o)        output gate
    c_t = f * c_{t-1} + (1 - f) * g
    h_t = W_p (o * tanh(c_t))                    projection, no bias (P x H)

and the next-word logits are h_t @ E^T + b_out with E the (tied) embedding matrix.

Choices the paper leaves open, made as TensorFlow's `CoupledInputForgetGateLSTMCell` (the TF 1.x
contrib cell of that name) makes them by default: no peephole connections
(`use_peepholes=False`; Sak et al. 2014's peepholes would add 2 * H parameters), gate biases, a
projection without bias, and a forget bias of 1.0 (`forget_bias=1.0`). TF adds that bias to the
forget pre-activation at run time; here it is the forget gate's bias at initialisation, which
trains the same and leaves nothing implicit in an exported graph. The output layer has a
per-word bias (10,004 parameters, a learnable unigram prior); `output_bias=False` drops it.

With the defaults (10,000 words + 4 specials, E = P = 96, H = 670) the model has

    V*E + 3*H*(E + P) + 3*H + P*H + V = 960,384 + 385,920 + 2,010 + 64,320 + 10,004 = 1,422,638

parameters, the paper's "1.4M". The forward pass is plain tensor code with no in-place updates
of parameters and no branching on tensor values (only a Python loop over time), so it runs
under `torch.func.functional_call` and `torch.func.vmap` over stacked parameters, as the
federated stage needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from data.vocab import DEFAULT_SIZE, PAD, SPECIALS


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class CIFGConfig:
    """Hyperparameters of `CIFGLanguageModel`; the defaults are Hard et al. 2018's model.

    Attributes:
        vocab_size: Output and input ids: the 10,000 words and the 4 specials of `data.vocab`.
        embed_dim: Word embedding size, also the projected state size (tied embeddings).
        hidden_dim: CIFG cells (the cell state size).
        pad_id: The padding id (never a target; `suggest` masks it).
        forget_bias: Initial bias of the forget gate (TF's `forget_bias` default, 1.0).
        output_bias: Whether the output layer has a per-word bias.
    """

    vocab_size: int = DEFAULT_SIZE + len(SPECIALS)
    embed_dim: int = 96
    hidden_dim: int = 670
    pad_id: int = PAD
    forget_bias: float = 1.0
    output_bias: bool = True

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, len(SPECIALS))
        _check_int("embed_dim", self.embed_dim, 1)
        _check_int("hidden_dim", self.hidden_dim, 1)
        _check_int("pad_id", self.pad_id, 0)
        if self.pad_id >= self.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} must be below vocab_size {self.vocab_size}")
        fb = self.forget_bias
        if isinstance(fb, bool) or not isinstance(fb, (int, float)) or not math.isfinite(fb):
            raise ValueError(f"forget_bias must be a finite number, got {fb!r}")
        object.__setattr__(self, "forget_bias", float(fb))
        if not isinstance(self.output_bias, bool):
            raise ValueError(f"output_bias must be a bool, got {self.output_bias!r}")

    def to_dict(self) -> dict:
        """The config as plain JSON data (`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CIFGConfig:
        """A config from `to_dict`'s output; missing keys take the defaults.

        Raises:
            ValueError: A key is not a field of the config, or a value is out of range.
        """
        if not isinstance(d, dict):
            raise ValueError(f"CIFG config must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"CIFG config: unknown keys {unknown}")
        return cls(**d)

    def num_parameters(self) -> int:
        """The model's parameter count, from the formula in the module docstring."""
        v, e, h = self.vocab_size, self.embed_dim, self.hidden_dim
        p = e  # the projected state is fed back to the output embedding, so P = E
        return v * e + 3 * h * (e + p) + 3 * h + p * h + (v if self.output_bias else 0)


class CIFGCell(nn.Module):
    """One CIFG-LSTM layer with an output projection (see the module docstring).

    The gate weights are one matrix over [x_t, h_{t-1}], rows in the order forget, candidate,
    output. `input_gates` applies the input half to every step at once; `step` adds the
    recurrent half and advances the state by one step; `forward` is both for one step.
    """

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int):
        super().__init__()
        self.input_dim, self.hidden_dim, self.proj_dim = input_dim, hidden_dim, proj_dim
        # Filled by `reset_parameters`; torch.empty keeps construction free of RNG use.
        self.weight = nn.Parameter(torch.empty(3 * hidden_dim, input_dim + proj_dim))
        self.bias = nn.Parameter(torch.empty(3 * hidden_dim))
        self.proj = nn.Parameter(torch.empty(proj_dim, hidden_dim))

    @torch.no_grad()
    def reset_parameters(
        self, forget_bias: float = 1.0, generator: torch.Generator | None = None
    ) -> None:
        """Glorot-uniform gate and projection weights (per gate), zero biases but the forget's."""
        h = self.hidden_dim
        for gate in range(3):
            nn.init.xavier_uniform_(self.weight[gate * h : (gate + 1) * h], generator=generator)
        nn.init.xavier_uniform_(self.proj, generator=generator)
        self.bias.zero_()
        self.bias[:h].fill_(forget_bias)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """The input's share of the gate pre-activations, with the bias: (..., I) -> (..., 3H)."""
        return F.linear(x, self.weight[:, : self.input_dim], self.bias)

    def step(
        self, gx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One time step from `input_gates` of x_t: (B, 3H), ((B, P), (B, H)) -> h, (h, c)."""
        h_prev, c_prev = state
        z = gx + F.linear(h_prev, self.weight[:, self.input_dim :])  # (B, 3H)
        zf, zg, zo = z.chunk(3, dim=-1)  # each (B, H)
        f = torch.sigmoid(zf)
        c = f * c_prev + (1.0 - f) * torch.tanh(zg)  # coupled gates: input gate = 1 - f
        h = F.linear(torch.sigmoid(zo) * torch.tanh(c), self.proj)  # (B, P)
        return h, (h, c)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One time step: x (B, I), state ((B, P), (B, H)) -> h (B, P), new state."""
        return self.step(self.input_gates(x), state)


class CIFGLanguageModel(nn.Module):
    """Next-word CIFG-LSTM with tied input/output embeddings (Hard et al. 2018).

    Args:
        config: The hyperparameters (`CIFGConfig()` is the paper's model).
        generator: Source of the initial weights; None uses torch's default generator. Pass a
            seeded `torch.Generator` for an initialisation that depends on nothing else.
    """

    def __init__(self, config: CIFGConfig, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(config, CIFGConfig):
            raise TypeError(f"config must be a CIFGConfig, got {type(config).__name__}")
        self.config = config
        v, e = config.vocab_size, config.embed_dim
        self.embedding = nn.Parameter(torch.empty(v, e))  # (V, E), also the output layer
        self.cell = CIFGCell(e, config.hidden_dim, e)
        self.out_bias = nn.Parameter(torch.empty(v)) if config.output_bias else None
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Embeddings uniform in +-0.05 (Keras' `Embedding` default, which TFF's Stack
        Overflow models use), the cell as `CIFGCell.reset_parameters`, output bias zero."""
        nn.init.uniform_(self.embedding, -0.05, 0.05, generator=generator)
        self.cell.reset_parameters(self.config.forget_bias, generator=generator)
        if self.out_bias is not None:
            self.out_bias.zero_()

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The zero state (h (B, P), c (B, H)) on the model's device and dtype."""
        w = self.embedding
        return (
            w.new_zeros(batch_size, self.config.embed_dim),
            w.new_zeros(batch_size, self.config.hidden_dim),
        )

    def forward_with_state(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits for every position and the state after the last one.

        Feeding a sequence in pieces, passing the state on, gives the same logits as feeding
        it whole (what a keyboard does: one word at a time).

        Args:
            x: Word ids, (B, T) int64.
            state: (h (B, P), c (B, H)) from a previous call; None starts from zeros.

        Returns:
            logits (B, T, V) and the state (h, c) after step T.
        """
        if x.dim() != 2:
            raise ValueError(f"x must be (batch, time) ids, got shape {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[0])
        emb = F.embedding(x, self.embedding)  # (B, T, E)
        gx = self.cell.input_gates(emb)  # (B, T, 3H): the input half, for all steps at once
        outputs = []
        for t in range(x.shape[1]):
            h, state = self.cell.step(gx[:, t], state)  # h: (B, P)
            outputs.append(h)
        hs = torch.stack(outputs, dim=1)  # (B, T, P)
        logits = F.linear(hs, self.embedding, self.out_bias)  # (B, T, V), tied weights
        return logits, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-word logits at every position: ids (B, T) int64 -> (B, T, V) float."""
        return self.forward_with_state(x)[0]

    def num_parameters(self) -> int:
        """Trainable parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())
