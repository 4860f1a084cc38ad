"""data.config: defaults, validation naming the key, YAML and JSON files."""

import json

import pytest

from data.config import ConfigError, DataConfig


def test_defaults_and_roundtrip():
    c = DataConfig()
    assert c.corpus.source == "chitchat" and c.tokenizers.vocab_size == 10_000
    assert DataConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("d, match", [
    ({"sead": 1}, "unknown config key 'sead'"),
    ({"clients": {"partition": "random"}}, "clients.partition"),
    ({"clients": {"n_client": 3}}, "unknown key clients.n_client"),
    ({"splits": {"train": 0.5, "val": 0.1, "test": 0.1}}, "sum to 1"),
    ({"seed": "zero"}, "seed must be int"),
    ({"clean": {"min_known": "all"}}, "clean.min_known must be float"),
    ({"clean": {"filter": 1}}, "clean.filter must be bool"),
    ({"corpus": {"limit": -1}}, "corpus.limit"),
    ({"clients": []}, "clients must be a mapping"),
])
def test_bad_configs_name_the_key(d, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig.from_dict(d)


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "exp.yaml"
    y.write_text("data:\n  seed: 3\n  corpus:\n    source: msgs.txt\n    limit: 10\n"
                 "  splits:\n    late_fraction: 0\n")
    c = DataConfig.load(y)
    assert c.seed == 3 and c.corpus.limit == 10 and c.splits.late_fraction == 0.0
    # A relative corpus path is taken from the config file's folder.
    assert c.corpus.source == str(tmp_path / "msgs.txt")
    j = tmp_path / "exp.json"
    j.write_text(json.dumps({"clients": {"partition": "iid", "n_clients": 7}}))
    assert DataConfig.load(j).clients.n_clients == 7
    (tmp_path / "bad.yaml").write_text("a: [")
    with pytest.raises(ConfigError, match="bad.yaml: not valid yaml"):
        DataConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        DataConfig.load(tmp_path / "missing.yaml")


def test_shipped_config_states_the_defaults():
    from pathlib import Path

    shipped = Path(__file__).resolve().parent.parent / "configs" / "data.yaml"
    assert DataConfig.load(shipped) == DataConfig()
