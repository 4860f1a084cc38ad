"""The machine's own two-core scaling for kbsim's work: one process on one core, timed in turns
with two independent processes on two cores that each simulate half of the messages.

Runs in kbsim's environment; prints one JSON object on stdout. Usage:
`python run_split.py WORKLOAD ROLE CORE START SLOT REPEAT`, where ROLE is "all", "even" or
"odd" (every message, or every other one: halves of equal cost), CORE the CPU to pin to, START
a `time.time()` at which the first slot begins and SLOT its length in seconds. The "all" process
runs in slots 0, 2, 4, ... and the two halves together in slots 1, 3, 5, ...; nothing of
kbsim's coordination (no queue, no pipes, no output) is in either, so the ratio of their times
is the most two workers could gain on this machine at that moment. A run that starts late (the
previous slot overran) is reported, not hidden.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from _timing import THREAD_VARS, pin_to_one_core, read_lines

for _var in THREAD_VARS:  # before numpy is imported
    os.environ[_var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> None:
    path, role, core, start, slot, repeat = argv
    start, slot, repeat = float(start), float(slot), int(repeat)
    pin_to_one_core(int(core))
    messages = read_lines(path)
    mine = {"all": messages, "even": messages[0::2], "odd": messages[1::2]}[role]
    from keyboard_sim.simulate import simulate

    simulate(messages[:200], profile="raw", layout="en-US", seed=0)  # set-up, untimed
    first = 0 if role == "all" else 1
    times, late = [], []
    for r in range(repeat):
        begin = start + (2 * r + first) * slot
        late.append(max(0.0, time.time() - begin))
        while (wait := begin - time.time()) > 0:
            time.sleep(min(wait, 0.05))
        t0 = time.perf_counter()
        simulate(mine, profile="raw", layout="en-US", seed=0)
        times.append(time.perf_counter() - t0)
    json.dump({"role": role, "core": int(core), "messages": len(mine), "seconds": times,
               "late_seconds": late}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
