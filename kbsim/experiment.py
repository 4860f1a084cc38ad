"""`kbsim run CONFIG`: one experiment end to end, from the corpus to the report.

    data -> federated next-word training, without and with DP (canaries in some clients' data)
         -> proofreader training -> evaluation (next word, correction on simulated and real
         errors, canary exposure, realism) -> results.json, report.md, report.html

Every stage is cached by the hash of its settings and of the stages it reads
(`kbsim.stages`): running the same config again skips what is done and resumes what was
interrupted; changing one setting re-runs that stage and those after it only. This module is
the one place that knows every stage (STYLE: the runner sits on top).

The config (YAML/JSON, fields at top level or under `experiment:`):

    name, seed            the experiment's name and seed (every stage's seed derives from it)
    data                  `data.config.DataConfig` fields (seed: the experiment's)
    nwp                   `federated.config.FederatedConfig` fields but data and seed
    dp                    `federated.config.DPConfig` fields: a second run, "federated_dp",
                          with weighting uniform; null: no DP run
    canaries              `eval.canary.CanaryConfig` fields, inserted into both runs; null: none
    proofreader           `models.proofreader_recipe.RecipeConfig` fields; null: no proofreader
    correctors            which correctors to evaluate beside "no correction"
    eval                  `EvalSettings` fields
    realism               `eval.realism` settings ({limit: ...}); null: no realism section
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.config import ConfigError, read_config_file
from kbsim.stages import StageResult, run_stage

CORRECTORS = ("symspell", "noisy-channel", "proofreader")
RUNS = ("federated", "federated_dp")


@dataclass(frozen=True)
class EvalSettings:
    """How much is evaluated (the demo keeps these small; a real experiment raises them).

    Attributes:
        simulated_messages: Held-out test users' messages (evenly spaced) typed by their own
            typists, for correction.
        real_sets: Real-error sets (`eval.real_data`), each reported apart; those missing on
            this machine are skipped and said so in the report.
        real_limit: Messages per real set (evenly spaced; None: all).
        nwp_messages: Test users' messages for next-word metrics and keystroke savings (None:
            all).
        guard_messages: Validation users' messages the proofreader's guard is tuned on.
        bootstrap: Bootstrap resamples for confidence intervals.
        beam: Beam width of the proofreader and the noisy-channel corrector.
    """

    simulated_messages: int = 500
    real_sets: tuple[str, ...] = ("aalto", "bea322", "jfleg_spell")
    real_limit: int | None = 500
    nwp_messages: int | None = 2000
    guard_messages: int = 500
    bootstrap: int = 1000
    beam: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "real_sets", tuple(self.real_sets))
        for name, low in (("simulated_messages", 1), ("guard_messages", 1), ("bootstrap", 10),
                          ("beam", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"eval.{name} must be an int >= {low}, got {v!r}")
        for name in ("real_limit", "nwp_messages"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"eval.{name} must be an int >= 1 or null, got {v!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment (see the module docstring for each field)."""

    name: str = "experiment"
    seed: int = 0
    data: dict = field(default_factory=dict)
    nwp: dict = field(default_factory=dict)
    dp: dict | None = None
    canaries: dict | None = None
    proofreader: dict | None = None
    correctors: tuple[str, ...] = CORRECTORS
    eval: EvalSettings = field(default_factory=EvalSettings)
    realism: dict | None = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        for name in ("data", "nwp"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{name} must be a mapping")
        for name in ("dp", "canaries", "proofreader", "realism"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Mapping):
                raise ConfigError(f"{name} must be a mapping or null")
        object.__setattr__(self, "correctors", tuple(self.correctors))
        unknown = sorted(set(self.correctors) - set(CORRECTORS))
        if unknown:
            raise ConfigError(f"correctors: unknown {unknown} (known: {', '.join(CORRECTORS)})")
        if "proofreader" in self.correctors and self.proofreader is None:
            raise ConfigError("correctors lists proofreader but the proofreader section is null")
        if isinstance(self.eval, Mapping):
            object.__setattr__(self, "eval", _section("eval", self.eval, EvalSettings))
        # Check every section now, before any stage runs for minutes.
        self.data_config()
        for run in self.runs():
            self.federated_config(run, "<data>")
        if self.proofreader is not None:
            self.recipe_config()
        if self.canaries is not None:
            self.canary_config()

    # ---------------------------------------------------------------- sections

    def data_config(self):
        from data.config import DataConfig

        d = {"seed": self.seed, **self.data}
        try:
            return DataConfig.from_dict(d)
        except (ConfigError, ValueError, TypeError) as e:
            raise ConfigError(f"data: {e}") from None

    def runs(self) -> tuple[str, ...]:
        return RUNS if self.dp is not None else RUNS[:1]

    def federated_config(self, run: str, data_dir: str):
        from federated.config import FederatedConfig

        d = {**self.nwp, "data": data_dir, "seed": self.seed}
        if run == "federated_dp":
            d.update(weighting="uniform", dp=dict(self.dp))
        try:
            return FederatedConfig.from_dict(d)
        except (ConfigError, ValueError, TypeError) as e:
            raise ConfigError(f"nwp ({run}): {e}") from None

    def recipe_config(self):
        from models.proofreader_recipe import RecipeConfig

        try:
            return RecipeConfig.from_dict({"seed": self.seed, **self.proofreader})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"proofreader: {e}") from None

    def canary_config(self):
        from eval.canary import CanaryConfig

        try:
            return _section("canaries", {"seed": self.seed, **self.canaries}, CanaryConfig)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"canaries: {e}") from None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["correctors"] = list(self.correctors)
        d["eval"]["real_sets"] = list(self.eval.real_sets)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        if not isinstance(d, Mapping):
            raise ConfigError("an experiment config must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
        return cls(**d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentConfig:
        path = Path(path)
        try:
            return cls.from_dict(read_config_file(path, "experiment"))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _section(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping, got {value!r}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
    try:
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}") from None


# --------------------------------------------------------------------------- the stages


@dataclass
class Experiment:
    """A running experiment: its config, folder and the stages done so far."""

    config: ExperimentConfig
    root: Path
    log: Callable[[str], None]
    progress: bool = False
    stages: dict[str, StageResult] = field(default_factory=dict)

    def stage(self, name: str, config: Any, inputs: tuple[str, ...],
              fn: Callable[[Path], Any]) -> StageResult:
        keys = {i: self.stages[i].key for i in inputs}
        result = run_stage(self.root, name, config, keys, fn, self.log)
        self.stages[name] = result
        return result

    def dir(self, name: str) -> Path:
        return self.stages[name].dir

    # ---------------------------------------------------------------- training

    def data(self) -> StageResult:
        from data.build import build

        cfg = self.config.data_config()
        return self.stage("data", cfg.to_dict(), (), lambda d: _summary_numbers(
            build(cfg, d, progress=self.progress)))

    def canaries(self):
        """The canaries (None without a canaries section) and their extra training messages."""
        if self.config.canaries is None:
            return None, None
        from data.built import BuiltDataset
        from eval.canary import canary_messages, make_canaries

        ds = BuiltDataset(self.dir("data"), verify=False)
        clients = sorted(ds.client_texts("train", "early"))
        canaries = make_canaries(ds.vocab(), clients, self.config.canary_config())
        return canaries, canary_messages(canaries)

    def nwp(self, run: str) -> StageResult:
        from federated.run import run_federated

        cfg = self.config.federated_config(run, str(self.dir("data")))
        settings = {k: v for k, v in cfg.to_dict().items() if k != "data"}
        settings["canaries"] = self.config.canaries

        def fn(d: Path) -> dict:
            _, extra = self.canaries()
            s = run_federated(cfg, d, progress=self.progress, extra_train_messages=extra)
            return {k: s[k] for k in ("round", "parameters", "clients", "eval", "epsilon",
                                      "delta", "noise_multiplier", "seconds_per_round")}

        return self.stage(f"nwp_{run}", settings, ("data",), fn)

    def proofreader(self) -> StageResult:
        from models.proofreader_recipe import train_recipe

        cfg = self.config.recipe_config()
        return self.stage("proofreader", cfg.to_dict(), ("data",),
                          lambda d: train_recipe(cfg, self.dir("data"), d, log=self.log))


    # ---------------------------------------------------------------- evaluation

    def _built(self):
        from data.built import BuiltDataset

        return BuiltDataset(self.dir("data"), verify=False)

    def eval_nwp(self) -> StageResult:
        """Test users' next-word metrics, keystroke savings and per-client-size accuracy of each
        run's final model, and its learning curve (held-out val users per logged round)."""
        runs = self.config.runs()
        settings = {"nwp_messages": self.config.eval.nwp_messages, "runs": list(runs)}

        def fn(d: Path) -> dict:
            from data.torch_data import NextWordDataset
            from eval.nwp import accuracy_by_client_size, client_size_buckets, keystroke_savings
            from federated.run import load_federated_model
            from models.proofreader_recipe import spaced
            from models.train import evaluate_nwp

            ds = self._built()
            vocab = ds.vocab()
            seq_len = self.config.federated_config(runs[0], "<data>").seq_len
            texts = [t for ts in ds.client_texts("test").values() for t in ts]
            k = self.config.eval.nwp_messages
            picked = [texts[i] for i in spaced(len(texts), k if k is not None else len(texts))]
            by_client = ds.next_word_datasets("test", None, seq_len)
            sizes = {c: len(x) for c, x in by_client.items()}
            members = client_size_buckets(sizes)
            out: dict = {"runs": {}, "by_client_size": {}, "test_messages": len(picked)}
            for run in runs:
                run_dir = self.dir(f"nwp_{run}")
                model = load_federated_model(run_dir)
                test = evaluate_nwp(model, NextWordDataset.from_texts(picked, vocab, seq_len))
                ksr = keystroke_savings(model, vocab, picked, k=3, seq_len=seq_len)
                summary = self.stages[f"nwp_{run}"].result
                out["runs"][run] = {
                    "curve": _curve(run_dir),
                    "test": {**test.to_dict(), "ksr": ksr.ksr,
                             "ksr_with_spaces": ksr.ksr_with_spaces,
                             "prediction_rate": ksr.prediction_rate},
                    "epsilon": summary.get("epsilon"), "delta": summary.get("delta"),
                    "rounds": summary.get("round"),
                    "seconds_per_round": summary.get("seconds_per_round"),
                }
                if summary.get("noise_multiplier") is not None:
                    out["runs"][run]["noise_multiplier"] = summary["noise_multiplier"]
                buckets = accuracy_by_client_size(model, by_client)
                out["by_client_size"][run] = {
                    label: {"accuracy": m.accuracy, "top3_accuracy": m.top3_accuracy,
                            "clients": len(members.get(label, ())), "words": m.words}
                    for label, m in buckets.items() if m.words}  # empty buckets left out
            return out

        return self.stage("eval_nwp", settings, ("data", *(f"nwp_{r}" for r in runs)), fn)

    def privacy(self) -> StageResult:
        """Each canary's exposure under each run's final model, beside the run's epsilon."""
        runs = self.config.runs()

        def fn(d: Path) -> dict:
            from eval.canary import exposures
            from federated.run import load_federated_model

            canaries, _ = self.canaries()
            cfg = self.config.canary_config()
            vocab = self._built().vocab()
            per_run = {run: exposures(load_federated_model(self.dir(f"nwp_{run}")), vocab,
                                      canaries, cfg) for run in runs}
            first = per_run[runs[0]]
            rounds = _participation(self.config.federated_config(runs[0], "<data>"),
                                    sorted(self._built().client_texts("train", "early")),
                                    {c.client for c in canaries})
            return {
                "canaries": [{"id": c.canary_id, "repetitions": c.repetitions,
                              "rounds": rounds[c.client],
                              "exposure": {run: per_run[run][i].exposure for run in runs}}
                             for i, c in enumerate(first)],
                "epsilon": {run: self.stages[f"nwp_{run}"].result.get("epsilon")
                            for run in runs},
                "delta": self.stages[f"nwp_{runs[-1]}"].result.get("delta"),
                "candidate_space_bits": first[0].log2_space if first else None,
                "max_exposure_bits": first[0].max_exposure if first else None,
            }

        return self.stage("privacy", {"canaries": self.config.canaries},
                          ("data", *(f"nwp_{r}" for r in runs)), fn)

    def correctors(self) -> list:
        """The correctors evaluated: no correction first, then the configured ones."""
        from eval.correction import Identity

        out = [Identity()]
        cfg = self.config
        data_cfg = cfg.data_config()
        for name in cfg.correctors:
            if name == "symspell":
                from models.symspell_baseline import SymSpellCorrector

                out.append(SymSpellCorrector())
            elif name == "noisy-channel":
                from federated.run import load_federated_model
                from models.keyboard_likelihood import KeyboardLikelihood
                from models.noisy_channel import NextWordLMPrior, NoisyChannelCorrector

                vocab = self._built().vocab()
                prior = NextWordLMPrior(load_federated_model(self.dir("nwp_federated")), vocab)
                likelihood = KeyboardLikelihood(data_cfg.typists.layout, data_cfg.typists.preset
                                                if data_cfg.typists.preset != "postures"
                                                else "raw")
                out.append(NoisyChannelCorrector(prior, dict(zip(vocab.words, vocab.counts,
                                                                 strict=True)),
                                                 likelihood, beam=cfg.eval.beam))
            elif name == "proofreader":
                out.append(self._proofreader())
        return out

    def _proofreader(self):
        """The trained proofreader with its guard tuned on validation users' pairs."""
        from models.proofreader_recipe import guard_decisions, spaced, tune_guard
        from models.train_proofreader import load_corrector

        corrector = load_corrector(self.dir("proofreader"), beam=self.config.eval.beam)
        pairs = [p for ps in self._built().client_pairs("val").values() for p in ps]
        pairs = [pairs[i] for i in spaced(len(pairs), self.config.eval.guard_messages)]
        noisy, clean = [p.noisy for p in pairs], [p.clean for p in pairs]
        guard = tune_guard(guard_decisions(corrector, noisy), noisy, clean)
        corrector.min_confidence = guard["min_confidence"]
        corrector.min_gain = guard["min_gain"]
        corrector.name = "proofreader"
        return corrector

    def eval_correction(self) -> StageResult:
        """Every corrector on held-out simulated pairs and on each real-error set."""
        ev = self.config.eval
        settings = {"correctors": list(self.config.correctors),
                    "simulated_messages": ev.simulated_messages, "real_sets": list(ev.real_sets),
                    "real_limit": ev.real_limit, "bootstrap": ev.bootstrap, "beam": ev.beam,
                    "guard_messages": ev.guard_messages}
        inputs = ["data"]
        if "noisy-channel" in self.config.correctors:
            inputs.append("nwp_federated")
        if "proofreader" in self.config.correctors:
            inputs.append("proofreader")

        def fn(d: Path) -> dict:
            from eval.real_data import RealDataError, from_pairs, load_set
            from models.proofreader_recipe import spaced

            pairs = [p for ps in self._built().client_pairs("test").values() for p in ps]
            pairs = [pairs[i] for i in spaced(len(pairs), ev.simulated_messages)]
            sets = [(from_pairs("simulated_test", pairs, "held-out test users typed by their "
                                "own simulated typists"), [p.edits for p in pairs])]
            skipped = {}
            for name in ev.real_sets:
                try:
                    real = load_set(name)
                except RealDataError as e:
                    skipped[name] = str(e)
                    continue
                if ev.real_limit is not None:
                    real = _spaced_set(real, ev.real_limit)
                sets.append((real, None))
            correctors = self.correctors()
            out = {"sets": {}, "skipped": skipped}
            for real, edits in sets:
                self.log(f"eval_correction: {real.name} ({len(real)} messages)")
                out["sets"][real.name] = _score_set(real, edits, correctors, ev.bootstrap,
                                                    self.config.seed)
            return out

        return self.stage("eval_correction", settings, tuple(inputs), fn)

    def realism(self) -> StageResult:
        """The simulator's error mix against held-out real typists (Aalto): the preset for
        physical keyboards (what Aalto's typists used), the experiment's own preset, and one
        calibrated on the other half of the typists."""
        settings = dict(self.config.realism or {})
        preset = self.config.data_config().typists.preset
        settings.setdefault("presets", list(dict.fromkeys(
            ["physical", *([preset] if preset != "postures" else [])])))

        def fn(d: Path) -> dict:
            from eval.realism import realism

            path = settings.get("pairs_path")
            from eval.realism import DEFAULT_PAIRS

            if not Path(path or DEFAULT_PAIRS).exists():  # e.g. a machine without ../shared
                return {"skipped": f"{path or DEFAULT_PAIRS} not found"}
            return realism(seed=self.config.seed,
                           **{**settings, "presets": tuple(settings["presets"])})

        return self.stage("realism", settings, (), fn)


# The correction metrics whose bootstrap intervals the report shows, and whether lower is
# better (a gain is then a fall).
CI_METRICS = {"cer_after": True, "wer_after": True, "edit_f05": False,
              "messages_fixed_share": False, "message_overcorrection_rate": True,
              "autocorrect_fbeta": False}


def _metric(name: str):
    if name == "autocorrect_fbeta":
        return lambda c: c.autocorrect_fbeta()
    return lambda c: getattr(c, name)


def _score_set(real, edits, correctors, n_boot: int, seed: int) -> dict:
    """Per-corrector totals, bootstrap intervals and paired gains over no correction."""
    from data.record import derive_seed
    from eval.bootstrap import bootstrap_ci, paired_bootstrap_ci
    from eval.correction import evaluate_corrector

    per = {}
    for c in correctors:
        per[c.name] = evaluate_corrector(c, real.noisy, real.clean, edits, ids=real.ids)
    base_name = correctors[0].name
    out = {"source": real.source, "citation": real.citation, "messages": len(real),
           "correctors": {}, "fix_rate_by_type": {}}
    for name, counts in per.items():
        total = sum(counts)
        metrics = {k: v for k, v in total.to_dict().items() if isinstance(v, (int, float))}
        metrics["autocorrect_fbeta"] = total.autocorrect_fbeta()
        entry = {"metrics": metrics, "ci": {}, "gain": {}}
        for key, lower_better in CI_METRICS.items():
            boot_seed = derive_seed(seed, "bootstrap", real.name, name, key)
            ci = bootstrap_ci(counts, _metric(key), n=n_boot, seed=boot_seed)
            entry["ci"][key] = [ci.lo, ci.hi]
            if name != base_name:
                sign = -1.0 if lower_better else 1.0
                paired = paired_bootstrap_ci(per[base_name], counts,
                                             lambda c, k=key, s=sign: s * _metric(k)(c),
                                             n=n_boot, seed=boot_seed)
                entry["gain"][key] = {"value": paired.gain, "ci": [paired.lo, paired.hi],
                                      "share_not_better": paired.share_not_better,
                                      "lower_is_better": lower_better}
        out["correctors"][name] = _finite_only(entry)
        if edits is not None or real.name != "simulated_test":
            out["fix_rate_by_type"][name] = {t: {"total": n, "fixed": f}
                                             for t, n, f in total.by_type}
    return out


def _finite_only(entry: dict) -> dict:
    """The entry without undefined figures (0/0: e.g. the precision of a corrector that changed
    nothing), whose names are listed under "undefined" instead."""
    import math

    def ok(v) -> bool:
        if isinstance(v, (list, tuple)):
            return all(ok(x) for x in v)
        if isinstance(v, Mapping):
            return all(ok(x) for x in v.values())
        return not isinstance(v, float) or math.isfinite(v)

    undefined = sorted({k for part in ("metrics", "ci", "gain") for k, v in entry[part].items()
                        if not ok(v)})
    out = {part: {k: v for k, v in entry[part].items() if ok(v)}
           for part in ("metrics", "ci", "gain")}
    out["undefined"] = undefined
    return out


def _spaced_set(real, k: int):
    from eval.real_data import RealSet
    from models.proofreader_recipe import spaced

    idx = spaced(len(real), k)
    return RealSet(real.name, [real.noisy[i] for i in idx], [real.clean[i] for i in idx],
                   [real.ids[i] for i in idx], real.source, real.citation)


def _participation(cfg, client_ids: list[str], wanted: set[str]) -> dict[str, int]:
    """Rounds in which each wanted client reported (the runs' cohorts are a function of the
    seed and the sampling config, the same for both runs)."""
    from federated.sampling import sample_round

    counts = dict.fromkeys(wanted, 0)
    for r in range(cfg.rounds):
        for c in sample_round(client_ids, cfg.sampling, cfg.seed, r).reporting:
            if c in counts:
                counts[c] += 1
    return counts


def _curve(run_dir: Path) -> list[dict]:
    """Held-out loss and accuracy per evaluated round, with epsilon after that round."""
    import csv

    with open(run_dir / "eval.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    with open(run_dir / "metrics.csv", newline="") as f:
        eps = {int(r["round"]): float(r["epsilon"]) for r in csv.DictReader(f)}
    out = []
    for r in evals:
        e = eps.get(int(r["round"]))
        out.append({"round": int(r["round"]), "loss": float(r["loss"]),
                    "accuracy": float(r["accuracy"]), "top3_accuracy": float(r["top3_accuracy"]),
                    "epsilon": e if e is not None and e == e else None})
    return out


def _summary_numbers(summary: Mapping) -> dict:
    """The data build's summary, JSON-safe."""
    return json.loads(json.dumps(summary, default=str))


def run_experiment(config: ExperimentConfig, out: str | Path, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> dict:
    """Runs (or resumes) every stage of the experiment; returns the results (results.json).

    Args:
        config: The experiment.
        out: Its folder (stages/ and the report go there).
        progress: Progress bars on stderr for the long stages.
        log: Called with a line per stage event (default: silent).
    """
    from keyboard_sim.io import atomic_write_text

    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.json",
                      json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n")
    exp = Experiment(config, root, log or (lambda _line: None), progress)
    from kbsim import __version__

    data = exp.data()
    for run in config.runs():
        exp.nwp(run)
    if config.proofreader is not None:
        exp.proofreader()
    nwp = exp.eval_nwp()
    privacy = exp.privacy() if config.canaries is not None else None
    correction = exp.eval_correction()
    realism = exp.realism() if config.realism is not None else None
    from kbsim.stages import stage_key

    results = {
        "experiment": {"name": config.name, "seed": config.seed, "kbsim_version": __version__,
                       "config_hash": stage_key("experiment", config.to_dict(), {}),
                       # compute time of every stage, whether run now or found done
                       "seconds": sum(s.seconds for s in exp.stages.values()),
                       "wall_seconds_this_call": time.perf_counter() - t0},
        "data": _data_section(data.result),
        "nwp": nwp.result,
        "correction": correction.result,
        "privacy": privacy.result if privacy is not None else None,
        "realism": realism.result if realism is not None else None,
        "stages": {n: {"key": s.key, "dir": str(s.dir), "cached": s.cached,
                       "seconds": round(s.seconds, 3)} for n, s in exp.stages.items()},
    }
    atomic_write_text(root / "results.json",
                      json.dumps(results, indent=1, default=str, allow_nan=False) + "\n")
    from eval.report import write_report

    results["files"] = {k: str(v) for k, v in write_report(results, root).items()}
    return results


def _data_section(summary: Mapping) -> dict:
    """The data build's headline numbers for the report."""
    out = {"records": summary["records"], "kept": summary["kept"],
           "filtered": sum(summary.get("filtered", {}).values()),
           "rejected": sum(summary.get("rejected", {}).values()),
           "vocab_words": summary.get("vocab_words")}
    for split, c in summary.get("clients", {}).items():
        out[f"{split}_clients"] = c["clients"]
        out[f"{split}_messages"] = c["messages"]
    for split, p in summary.get("pairs", {}).items():
        if p.get("pairs"):
            out[f"{split}_pair_cer"] = p["cer"]
    for split, v in summary.get("vocab_coverage", {}).items():
        out[f"{split}_vocab_coverage"] = v
    return out
