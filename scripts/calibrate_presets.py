"""Finds the scale factors of the `raw` and `committed` intent presets (see presets.py).

Simulates the first 5,000 messages of the default corpus with a two-thumb typist and bisects:
- raw: the touch spread scale, other rates at their defaults, to a character error rate of 8.5%;
- committed: one scale on the spread and every rate, to 2.3%.
Prints the factors and the rates they give; copy them into keyboard_sim/presets.py.
Run: .venv/bin/python scripts/calibrate_presets.py
"""

from __future__ import annotations

from data.chitchat import iter_messages
from keyboard_sim import presets, simulate
from keyboard_sim.stats import PairStats

N = 5000


def cer(texts, profile) -> float:
    return PairStats.of(simulate(texts, profile, "en-US", seed=0)).cer


def bisect(f, target, lo, hi, iters=30):
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def main() -> None:
    texts = [m["text"] for m in iter_messages(N)]
    raw = bisect(lambda s: cer(texts, presets.raw_profile(s)), presets.RAW_TARGET_CER, 0.1, 10)
    print(f"RAW_SIGMA_SCALE = {raw:.4f}  (CER {cer(texts, presets.raw_profile(raw)):.4f})")
    presets_raw = presets.raw_profile(raw)

    def committed(scale):
        p = presets.committed_profile(scale)
        return p.__class__(**{**p.to_dict(), "sigma_x_mm": presets_raw.sigma_x_mm * scale,
                              "sigma_y_mm": presets_raw.sigma_y_mm * scale})

    com = bisect(lambda s: cer(texts, committed(s)), presets.COMMITTED_TARGET_CER, 0.01, 1.0)
    print(f"COMMITTED_SCALE = {com:.4f}  (CER {cer(texts, committed(com)):.4f})")


if __name__ == "__main__":
    main()
