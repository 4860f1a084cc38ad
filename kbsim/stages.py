"""Stages of an experiment cached by the hash of what they depend on.

A stage is a function that fills a folder. Its key is the sha256 of its name, kbsim's version,
its own config and the keys of the stages it reads, so a change anywhere upstream gives a new
key (and a new folder) downstream, while an unchanged stage is found done and skipped:

    runs/exp/stages/<name>-<key>/        what the stage wrote
    runs/exp/stages/<name>-<key>/done.json   its result, written last and atomically

A stage interrupted before done.json is run again on the same folder; long stages (the data
build, training) resume from what they left there.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DONE = "done.json"


@dataclass(frozen=True)
class StageResult:
    """A finished stage: its name, key, folder, result (JSON data) and whether it was cached."""

    name: str
    key: str
    dir: Path
    result: Any
    cached: bool
    seconds: float


def stage_key(name: str, config: Any, inputs: Mapping[str, str]) -> str:
    """The stage's key: 16 hex digits of sha256 over (name, version, config, input keys)."""
    from kbsim import __version__

    material = {"stage": name, "kbsim": __version__, "config": config, "inputs": dict(inputs)}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_stage(root: str | Path, name: str, config: Any, inputs: Mapping[str, str],
              fn: Callable[[Path], Any], log: Callable[[str], None] | None = None) -> StageResult:
    """Runs `fn(folder)` unless the stage with this key is already done; returns its result.

    Args:
        root: The experiment folder (stages go under root/stages/).
        name: The stage's name.
        config: JSON-able settings the stage depends on.
        inputs: Name -> key of each stage it reads.
        fn: Fills the folder and returns the stage's result (JSON-able).
        log: Called with one line when a stage starts, is skipped, or ends.
    """
    from keyboard_sim.io import atomic_write_text

    say = log or (lambda _line: None)
    key = stage_key(name, config, inputs)
    folder = Path(root) / "stages" / f"{name}-{key}"
    done = folder / DONE
    if done.exists():
        saved = json.loads(done.read_text(encoding="utf-8"))
        say(f"{name}: done before ({folder.name}), skipped")
        return StageResult(name, key, folder, saved["result"], True, saved["seconds"])
    folder.mkdir(parents=True, exist_ok=True)
    say(f"{name}: running in {folder}")
    t0 = time.perf_counter()
    result = fn(folder)
    seconds = time.perf_counter() - t0
    atomic_write_text(done, json.dumps({"stage": name, "key": key, "config": config,
                                        "inputs": dict(inputs), "seconds": seconds,
                                        "result": result}, indent=1, default=str) + "\n")
    say(f"{name}: finished in {seconds:.1f} s")
    return StageResult(name, key, folder, result, False, seconds)
