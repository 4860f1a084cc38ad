"""Times one peer tool on the workload, on one core; prints one JSON object on stdout.

Runs inside the peers' own virtual environment (`.venv-peers`, see `peers.py`), never inside
kbsim's: kebbie pins numpy~=1.26. Usage: `python run_peer.py {nlpaug,kebbie} WORKLOAD [REPEAT]`.
Only the processing loop is timed, not reading the file; import and construction are timed
apart and reported as set-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from importlib import metadata

from _timing import THREAD_VARS, best_of, changed_fraction, pin_to_one_core, read_lines

for _var in THREAD_VARS:  # before numpy is imported by either peer
    os.environ[_var] = "1"


def nlpaug_runner(messages: list[str]):
    """`nlpaug.augmenter.char.KeyboardAug()` with its default arguments, one call per message."""
    import numpy as np
    from nlpaug.augmenter.char import KeyboardAug

    aug = KeyboardAug()

    def run() -> list[str]:
        random.seed(0)  # nlpaug draws from the global RNGs
        np.random.seed(0)
        out = []
        for text in messages:
            noisy = aug.augment(text)  # nlpaug >= 1.1.11 returns a list of augmentations
            if isinstance(noisy, list):
                noisy = noisy[0] if noisy else text
            out.append(noisy)
        return out

    return run


def kebbie_noise(model, text: str) -> str:
    """Noises a whole message with kebbie's `NoiseModel`, the way kebbie itself drives it.

    kebbie has no sentence-level noising call: its public typing method is
    `NoiseModel.type_till_space(words)`, which applies the word-level typos (common typos,
    transpositions, deletions, insertions, accent and case simplification) and then the Gaussian
    "fuzzy typing" over the key geometry to the next word and its following space, and returns the
    typed characters and how many words it consumed (more than one when the space is mistyped or
    dropped). kebbie's own evaluation loop (`kebbie/oracle.py`) calls it repeatedly on the
    remaining words of a sentence; we do the same over the whole message, so kebbie gets its full
    fuzzy typing plus typos on every word. Unlike the oracle we do not strip punctuation first
    (`BasicTokenizer.preprocess`): every tool here types the same full text.
    """
    words = text.split()
    typed: list[str] = []
    while words:
        _, chars, n_words, _ = model.type_till_space(words)
        typed.append(chars)
        words = words[n_words:]
    return " ".join(typed)


def kebbie_runner(messages: list[str]):
    """kebbie's `NoiseModel(lang="en-US", common_typos={})` over every message.

    `common_typos={}` because its default downloads a typo list from the web in `__init__`.
    Each message's seed comes from its sha256, as kebbie's oracle does, so kebbie pays for the
    same per-record determinism that kbsim provides.
    """
    from kebbie.noise_model import NoiseModel

    model = NoiseModel(lang="en-US", common_typos={})

    def run() -> list[str]:
        out = []
        for text in messages:
            random.seed(int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16))
            out.append(kebbie_noise(model, text))
        return out

    return run


RUNNERS = {"nlpaug": nlpaug_runner, "kebbie": kebbie_runner}


def main(argv: list[str]) -> None:
    tool, path = argv[0], argv[1]
    repeat = int(argv[2]) if len(argv) > 2 else 3
    core = pin_to_one_core()
    messages = read_lines(path)
    t0 = time.perf_counter()
    run = RUNNERS[tool](messages)  # import and construction: reported, not in the rate
    setup = time.perf_counter() - t0
    times, noisy = best_of(repeat, run)
    # kebbie re-joins words with single spaces; do not count that as noise.
    clean = [" ".join(m.split()) for m in messages] if tool == "kebbie" else messages
    json.dump(
        {
            "tool": tool,
            "version": metadata.version(tool),
            "numpy": metadata.version("numpy"),
            "core": core,
            "messages": len(messages),
            "chars": sum(len(m) for m in messages),
            "setup_seconds": setup,
            "seconds": times,
            "changed": changed_fraction(clean, noisy),
            "example": [messages[1], noisy[1]],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
