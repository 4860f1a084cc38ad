"""data: real corpora with natural users as federated clients, cleaning, tokenizers, datasets.

    corpus -> normalise + clean filter -> clients -> caps -> splits -> per-client typists ->
    (noisy, clean) pairs, word vocabulary and subword model, on disk as Parquet shards

The public API (torch views live in `data.torch_data`, imported on their own so that this
package does not need torch):
    build(config, out), DataConfig            a whole experiment's data (`kbsim data build`)
    BuiltDataset(out)                          a built dataset read back
    Message, derive_seed, unit_float           records and seeds derived from names
    read_corpus, open_corpus, chitchat_corpus  streaming corpus readers
    normalize, CleanFilter, FilterCounts       normalisation and the clean-text filter
    Natural, IID, Dirichlet, PerUserCap, user_split, time_split   clients and splits
    client_profile, PopulationConfig, population_around           typists per client
    ClientData, ClientPool, group_clients      a client's data, built lazily
    tokenize_spaced, detokenize (data.tokenize.tokenize: the module shares its name),
    WordVocab, SubwordTokenizer, train_subword
Submodules load their dependencies (wordfreq, nltk, sentencepiece, pyarrow) when first used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build": "data.build", "format_summary": "data.build",
    "DataConfig": "data.config", "ConfigError": "data.config",
    "BuiltDataset": "data.built",
    "Message": "data.record", "derive_seed": "data.record", "unit_float": "data.record",
    "read_corpus": "data.corpus", "open_corpus": "data.corpus",
    "chitchat_corpus": "data.corpus",
    "normalize": "data.clean", "CleanFilter": "data.clean", "FilterCounts": "data.clean",
    "Natural": "data.partition", "IID": "data.partition", "Dirichlet": "data.partition",
    "PerUserCap": "data.partition", "user_split": "data.partition",
    "time_split": "data.partition", "PartitionStats": "data.partition",
    "client_profile": "data.population", "PopulationConfig": "data.population",
    "population_around": "data.population",
    "ClientData": "data.clients", "ClientPool": "data.clients",
    "group_clients": "data.clients",
    "tokenize_spaced": "data.tokenize",
    "detokenize": "data.tokenize",
    "WordVocab": "data.vocab",
    "SubwordTokenizer": "data.subword", "SubwordConfig": "data.subword",
    "train_subword": "data.subword",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
