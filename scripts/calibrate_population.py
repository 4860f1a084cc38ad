"""Finds data/population.py's CALIBRATED_SCALE: the factor that puts a typist population's mean
character error rate at its intent preset's target (raw 8.5%, committed 2.3%).

    .venv/bin/python scripts/calibrate_population.py        # about 2.5 minutes on 2 cores

Texts: the first 5,000 messages of the default corpus (as scripts/calibrate_presets.py uses);
500 typists; the CER averaged over seeds 0-7. Copy the printed factors into
data/population.py; tests/test_population.py re-measures both targets on other seeds.
"""

from __future__ import annotations

from data.chitchat import iter_messages
from data.population import PRESET_TARGET_CER, calibrate_scale


def main() -> None:
    texts = [m["text"] for m in iter_messages(5000)]
    for preset, target in PRESET_TARGET_CER.items():
        scale = calibrate_scale(preset, texts)
        print(f"{preset}: target CER {target:.3f} -> scale {scale}")


if __name__ == "__main__":
    main()
