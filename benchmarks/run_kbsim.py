"""Times kbsim's Python API on the workload, on one core; prints one JSON object on stdout.

Runs in kbsim's environment. Usage: `python run_kbsim.py WORKLOAD [REPEAT] [--touches]`.
What is timed is the `simulate` call alone, after a short warm-up that pays the one-off
set-up (reported apart, like the peers' construction); file reading is not timed. It runs the
`raw` preset, en-US layout, the full touch model and every error channel, with each pair's edits
as provenance (and every keystroke's touch point too with `--touches`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

from _timing import THREAD_VARS, best_of, changed_fraction, pin_to_one_core, read_lines

for _var in THREAD_VARS:  # before numpy is imported
    os.environ[_var] = "1"

# Time the checkout this script belongs to, whether or not kbsim is installed from it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> None:
    touches = "--touches" in argv
    args = [a for a in argv if a != "--touches"]
    path = args[0]
    repeat = int(args[1]) if len(args) > 1 else 3
    core = pin_to_one_core()
    messages = read_lines(path)

    # Import and one-off set-up (layout, profile, misspelling lexicon), timed apart and reported
    # as set-up, as the peers' import and construction are: the rate is the steady state.
    t0 = time.perf_counter()
    from keyboard_sim.simulate import simulate

    # A few hundred messages, so that every lazily loaded table (the misspelling lexicon is
    # loaded at the first word it could replace) is in place; their time counts as set-up.
    simulate(messages[:200], profile="raw", layout="en-US", seed=0, touches=touches)
    setup = time.perf_counter() - t0

    def run():
        return simulate(messages, profile="raw", layout="en-US", seed=0, touches=touches)

    times, pairs = best_of(repeat, run)
    noisy = [p.noisy for p in pairs]
    json.dump(
        {
            "tool": "kbsim",
            "version": metadata.version("kbsim"),
            "numpy": metadata.version("numpy"),
            "core": core,
            "touches": touches,
            "messages": len(messages),
            "chars": sum(len(m) for m in messages),
            "setup_seconds": setup,
            "seconds": times,
            "changed": changed_fraction(messages, noisy),
            "edits_per_message": sum(len(p.edits) for p in pairs) / max(1, len(pairs)),
            "example": [messages[1], noisy[1]],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
