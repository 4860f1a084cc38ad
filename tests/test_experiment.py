"""kbsim run on a tiny config: every stage for real on a slice of chit-chat, the report complete
(every section, every number finite, every plot a valid PNG), and stage caching."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data.config import ConfigError
from kbsim.experiment import ExperimentConfig, run_experiment

pytest.importorskip("chitchat_dataset")
pytest.importorskip("matplotlib")
pytest.importorskip("jiwer")
pytest.importorskip("dp_accounting")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECTIONS = ("## Summary", "## Data", "## Next-word prediction", "## Proofreading and correction",
            "## Privacy audit", "## Realism")

TINY = {
    "name": "tiny", "seed": 1,
    "data": {"shard_size": 5000, "corpus": {"limit": 3000}, "clients": {"max_messages": None},
             "tokenizers": {"vocab_size": 300, "subword_vocab_size": 500}},
    "nwp": {"model_config": {"embed_dim": 16, "hidden_dim": 32}, "rounds": 4,
            "sampling": {"cohort_size": 10}, "client": {"lr": 0.5}, "eval_every": 2,
            "checkpoint_every": 2},
    "dp": {"noise_multiplier": 0.5, "clip_norm": 0.5},
    "canaries": {"repetitions": [0, 5], "per_repetition": 2, "candidates": 50},
    "proofreader": {"model": {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1,
                              "n_decoder_layers": 1, "d_ff": 64, "max_len": 64},
                    "steps": 20, "warmup_steps": 5, "eval_every": 0},
    "eval": {"simulated_messages": 30, "real_limit": 30, "nwp_messages": 100,
             "guard_messages": 30, "bootstrap": 50, "beam": 2},
    "realism": {"limit": 200},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny")
    lines = []
    try:
        results = run_experiment(ExperimentConfig.from_dict(TINY), out, log=lines.append)
    finally:
        torch.set_num_threads(n)
    return out, results, lines


def test_the_report_has_every_section_finite_numbers_and_valid_plots(tiny):
    from eval.report import check

    out, results, _ = tiny
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for section in SECTIONS:
        assert section in md, section
        assert section[3:] in html, section
    assert check(results) == []  # no number missing or non-finite
    saved = json.loads((out / "results.json").read_text())  # strict JSON: no NaN
    assert saved["nwp"]["runs"].keys() == {"federated", "federated_dp"}
    pngs = sorted((out / "figures").glob("*.png"))
    # error_mix.png needs the Aalto sample (../shared), absent on some machines
    assert len(pngs) >= (6 if results["realism"].get("profiles") else 5)
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    assert "http" not in html.split("<body", 1)[1]  # self-contained


def test_the_numbers_come_from_the_run(tiny):
    out, results, _ = tiny
    nwp = results["nwp"]["runs"]
    # The DP run spent privacy; the plain one did not.
    assert nwp["federated"]["epsilon"] is None and nwp["federated_dp"]["epsilon"] > 0
    assert results["privacy"]["epsilon"]["federated_dp"] == nwp["federated_dp"]["epsilon"]
    sets = results["correction"]["sets"]
    assert "simulated_test" in sets
    sim = sets["simulated_test"]["correctors"]
    assert set(sim) == {"no correction", "symspell", "noisy-channel", "proofreader"}
    base = sim["no correction"]["metrics"]
    assert base["cer_after"] == base["cer_before"] > 0  # typed pairs have errors
    # Every corrector scored the same messages: same CER before.
    assert {c["metrics"]["cer_before"] for c in sim.values()} == {base["cer_before"]}
    md = (out / "report.md").read_text()
    assert f"{results['data']['kept']:,}" in md


def test_a_second_run_is_served_from_the_cache_and_a_change_reruns_only_downstream(tiny):
    out, results, _ = tiny
    lines = []
    again = run_experiment(ExperimentConfig.from_dict(TINY), out, log=lines.append)
    assert all(s["cached"] for s in again["stages"].values())
    assert again["correction"] == results["correction"]
    changed = {**TINY, "realism": {"limit": 150}}
    third = run_experiment(ExperimentConfig.from_dict(changed), out, log=lines.append)
    rerun = {n for n, s in third["stages"].items() if not s["cached"]}
    assert rerun == {"realism"}


def test_bad_configs_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="unknown key"):
        ExperimentConfig.from_dict({**TINY, "federated": {}})
    with pytest.raises(ConfigError, match="nwp"):
        ExperimentConfig.from_dict({**TINY, "nwp": {**TINY["nwp"], "rounds": 0}})
    with pytest.raises(ConfigError, match="correctors"):
        ExperimentConfig.from_dict({**TINY, "correctors": ["magic"]})
    with pytest.raises(ConfigError, match="proofreader"):
        ExperimentConfig.from_dict({**TINY, "proofreader": None})


def test_shipped_configs_load():
    for name in ("demo.yaml", "experiment.yaml"):
        cfg = ExperimentConfig.load(REPO / "configs" / name)
        assert cfg.runs() == ("federated", "federated_dp")


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment:\n  seed: -1\n")
    r = subprocess.run([str(BIN / "kbsim"), "run", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "seed must be an int >= 0" in r.stderr
    assert "Traceback" not in r.stderr
