"""The next-word models by name, for configs, checkpoints and the command line.

    model = build_lm("cifg", {"hidden_dim": 670})      # missing keys take the defaults
    build_lm(kind, model.config.to_dict())              # the same architecture again

Kinds: "cifg" (`models.cifg.CIFGLanguageModel`, Gboard's model) and "transformer"
(`models.transformer_lm.TransformerLM`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from models.cifg import CIFGConfig, CIFGLanguageModel
from models.transformer_lm import TransformerLM, TransformerLMConfig

_REGISTRY: dict[str, tuple[type, type[nn.Module]]] = {
    "cifg": (CIFGConfig, CIFGLanguageModel),
    "transformer": (TransformerLMConfig, TransformerLM),
}
LM_KINDS = tuple(_REGISTRY)


def _entry(kind: str) -> tuple[type, type[nn.Module]]:
    try:
        return _REGISTRY[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown language model kind {kind!r}; expected one of {LM_KINDS}"
        ) from None


def lm_config_from_dict(kind: str, d: Mapping | None = None) -> CIFGConfig | TransformerLMConfig:
    """The config of a model kind from plain data (e.g. a YAML file or `config.to_dict()`).

    Raises:
        ValueError: Unknown kind, unknown key or a value out of range (the message says which).
    """
    config_cls, _ = _entry(kind)
    return config_cls.from_dict(dict(d or {}))


def build_lm(
    kind: str, config_dict: Mapping | None = None, *, generator: torch.Generator | None = None
) -> nn.Module:
    """A freshly initialised model of `kind`; it has `.config` (with `.to_dict()`).

    Args:
        kind: One of `LM_KINDS`.
        config_dict: Config fields; missing ones take the defaults.
        generator: Source of the initial weights (None: torch's default generator).

    Raises:
        ValueError: As `lm_config_from_dict`.
    """
    config = lm_config_from_dict(kind, config_dict)
    _, model_cls = _entry(kind)
    return model_cls(config, generator=generator)


def lm_kind(model: nn.Module) -> str:
    """The kind name of a model built here (the inverse of `build_lm`'s first argument).

    Raises:
        ValueError: The model is not one of the registered kinds.
    """
    for kind, (_, model_cls) in _REGISTRY.items():
        if type(model) is model_cls:
            return kind
    raise ValueError(f"{type(model).__name__} is not a registered language model")
