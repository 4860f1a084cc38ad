"""models.lm: building next-word models by kind from plain config data, and back."""

from __future__ import annotations

import json

import pytest
import torch

from models.cifg import CIFGConfig, CIFGLanguageModel
from models.lm import LM_KINDS, build_lm, lm_config_from_dict, lm_kind
from models.transformer_lm import TransformerLM, TransformerLMConfig

TINY = {
    "cifg": {"vocab_size": 9, "embed_dim": 4, "hidden_dim": 5},
    "transformer": {"vocab_size": 9, "d_model": 4, "n_heads": 2, "d_ff": 6, "n_layers": 1},
}


def test_kinds():
    assert LM_KINDS == ("cifg", "transformer")


def test_defaults_are_the_documented_models():
    assert lm_config_from_dict("cifg", {}) == CIFGConfig()
    assert lm_config_from_dict("transformer") == TransformerLMConfig()
    assert isinstance(build_lm("cifg"), CIFGLanguageModel)
    assert build_lm("cifg").num_parameters() == 1_422_638
    assert build_lm("transformer").num_parameters() == 1_386_356


@pytest.mark.parametrize("kind", LM_KINDS)
def test_config_round_trips_through_json(kind):
    model = build_lm(kind, TINY[kind], generator=torch.Generator().manual_seed(0))
    data = json.loads(json.dumps(model.config.to_dict()))
    again = build_lm(kind, data, generator=torch.Generator().manual_seed(0))
    assert again.config == model.config
    assert lm_kind(again) == kind
    # Same config and generator seed: the same weights, so the same logits.
    x = torch.tensor([[1, 4, 5, 2]])
    assert torch.equal(model(x), again(x))
    assert model(x).shape == (1, 4, 9)


def test_kinds_build_their_classes():
    assert type(build_lm("cifg", TINY["cifg"])) is CIFGLanguageModel
    assert type(build_lm("transformer", TINY["transformer"])) is TransformerLM


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown language model kind 'lstm'"):
        build_lm("lstm", {})
    with pytest.raises(ValueError, match="unknown keys \\['d_model'\\]"):
        build_lm("cifg", {"d_model": 96})
    with pytest.raises(ValueError, match="hidden_dim"):
        lm_config_from_dict("cifg", {"hidden_dim": -1})
    with pytest.raises(ValueError, match="not a registered"):
        lm_kind(torch.nn.Linear(2, 2))
