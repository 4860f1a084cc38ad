"""The peers' own virtual environment (`.venv-peers`) and the subprocesses that time them.

kebbie pins numpy~=1.26 while kbsim may run on numpy 2, so the peers live in a separate
environment, created on first use with the standard library's `venv` and pip. Creating it again
is a no-op while its requirements are unchanged. Run `python benchmarks/peers.py` to (re)build it
without running the benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DEFAULT_VENV = ROOT / ".venv-peers"

# Exact versions, so that the figures in BENCHMARKS.md can be reproduced. kebbie imports
# `datasets` at import time, which pulls in pyarrow; pyarrow 21 and later need numpy 2, which
# kebbie's numpy~=1.26 pin rules out, so pyarrow is held below 21. `import kebbie` also imports
# pytesseract, which imports `packaging` without declaring it.
REQUIREMENTS = ("kebbie==0.5.1", "nlpaug==1.1.11", "pyarrow<21", "packaging")
_STAMP = "kbsim-peers.txt"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venv(venv: Path = DEFAULT_VENV, quiet: bool = False) -> Path:
    """Creates `venv` with the peers installed unless it already holds them; returns its python."""
    python = venv_python(venv)
    stamp = venv / _STAMP
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log = sys.stderr
    print(f"setting up the peers' environment in {venv} ...", file=log, flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # -I: isolated from the caller's PYTHONPATH (a test session's Ray sets one pointing at
    # kbsim's own packages, which pip would then take as already installed here).
    pip = [str(python), "-I", "-m", "pip", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    subprocess.run([*pip, "install", *REQUIREMENTS], check=True)
    # Fail here, with pip's own words, rather than halfway through a benchmark.
    subprocess.run(
        [str(python), "-I", "-c", "import kebbie, kebbie.noise_model, nlpaug.augmenter.char"],
        check=True
    )
    stamp.write_text(wanted)
    return python


def time_peer(python: Path, tool: str, workload: Path, repeat: int) -> dict:
    """Runs `run_peer.py` for `tool` in the peers' environment; returns its JSON report."""
    # Imported here so that eval.kebbie_adapter can load this file for `ensure_peer_venv` alone.
    from _timing import OtherLoad, single_thread_env

    with OtherLoad() as load:
        proc = subprocess.run(
            [str(python), str(HERE / "run_peer.py"), tool, str(workload), str(repeat)],
            env=single_thread_env(),
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    # Other programs' CPU use over the whole subprocess (set-up included), in cores.
    return {**json.loads(proc.stdout), "other_load_cores": load.cores}


if __name__ == "__main__":
    print(ensure_peer_venv())
