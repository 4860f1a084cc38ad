"""models: small on-device language models, a proofreader and correctors, exported for phones.

The public API, loaded lazily (importing `models` does not import torch):
    CIFGLanguageModel, CIFGConfig      Gboard's next-word CIFG-LSTM (Hard et al. 2018), 1.4M params
    TransformerLM, TransformerLMConfig a tiny causal Transformer LM of comparable size
    build_lm, lm_config_from_dict, LM_KINDS
    nwp_loss, NWPMetrics, suggest      the next-word task: loss, mergeable metrics, top-k
    NWPTrainConfig, train_nwp, load_trained_lm   centralised training, exact resume
    save_checkpoint, load_checkpoint, CheckpointError   safetensors + JSON, never pickle
    KeyboardLikelihood                 keyboard_sim's error model scored: log P(typed | intended)
    NoisyChannelCorrector, BigramPrior, NextWordLMPrior, LMPrior   the keyboard-decoder corrector
    SymSpellCorrector                  the dictionary baseline (symspellpy)
    Proofreader, ProofreaderConfig, ProofreaderCorrector   the seq2seq proofreader and its guard
    ProofreaderTrainConfig, train_proofreader, load_proofreader, load_corrector
    export_onnx, export_executorch, export_next_word, export_proofreader, open_runner   phones
Every corrector has `name` and `correct(texts) -> list[str]`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CIFGLanguageModel": "models.cifg", "CIFGConfig": "models.cifg",
    "TransformerLM": "models.transformer_lm", "TransformerLMConfig": "models.transformer_lm",
    "build_lm": "models.lm", "lm_config_from_dict": "models.lm", "LM_KINDS": "models.lm",
    "nwp_loss": "models.nwp", "NWPMetrics": "models.nwp", "suggest": "models.nwp",
    "NWPTrainConfig": "models.train", "train_nwp": "models.train",
    "load_trained_lm": "models.train",
    "save_checkpoint": "models.checkpoint", "load_checkpoint": "models.checkpoint",
    "CheckpointError": "models.checkpoint",
    "KeyboardLikelihood": "models.keyboard_likelihood",
    "NoisyChannelCorrector": "models.noisy_channel", "BigramPrior": "models.noisy_channel",
    "NextWordLMPrior": "models.noisy_channel", "LMPrior": "models.noisy_channel",
    "SymSpellCorrector": "models.symspell_baseline",
    "Proofreader": "models.proofreader", "ProofreaderConfig": "models.proofreader",
    "ProofreaderCorrector": "models.proofreader",
    "ProofreaderTrainConfig": "models.train_proofreader",
    "train_proofreader": "models.train_proofreader",
    "load_proofreader": "models.train_proofreader", "load_corrector": "models.train_proofreader",
    "export_onnx": "models.export", "export_executorch": "models.export",
    "export_next_word": "models.export", "export_proofreader": "models.export",
    "open_runner": "models.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
