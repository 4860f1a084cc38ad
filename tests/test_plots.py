"""eval.plots: every plot writes a valid, deterministic PNG of the numbers it is given."""

from __future__ import annotations

import dataclasses
import math

import matplotlib.image
import numpy as np
import pytest

from eval import plots
from eval.plots import PlotError
from eval.realism import compare_mixes, mix_summary
from keyboard_sim.fidelity import ErrorMix
from keyboard_sim.layout import load_layout
from keyboard_sim.profile import load_profile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # Something is drawn: not a blank canvas.
    assert float(img[..., :3].std()) > 0.01
    return img


def realism_dict() -> dict:
    """A realism result built with the real code path from hand pairs."""
    real = ErrorMix.of_pairs([("the cat", "teh cat"), ("a dog.", "a dog")], None)
    sim = ErrorMix.of_pairs([("the cat", "hte cat"), ("a dog.", "a dgo.")], None)
    return {"source": "hand pairs", "real": mix_summary(real),
            "split": {"compare": {"pairs": 2, "participants": 1}},
            "profiles": {"physical": {"layout": "en-US-physical", "calibrated": False,
                                      **compare_mixes(real, sim)}}}


RUNS = {
    "federated": {"curve": [{"round": r, "loss": 6.0 - 0.5 * r, "accuracy": 0.05 * r,
                             "top3_accuracy": 0.08 * r, "epsilon": None} for r in (1, 2, 3)]},
    "federated_dp": {"curve": [{"round": r, "loss": 6.2 - 0.4 * r, "accuracy": 0.04 * r,
                                "top3_accuracy": 0.07 * r, "epsilon": 2.0 * r}
                               for r in (1, 2, 3)]},
}
BY_SIZE = {"federated": {"1-9": {"accuracy": 0.1, "top3_accuracy": 0.2, "clients": 4,
                                 "words": 50},
                         "10-49": {"accuracy": 0.2, "top3_accuracy": 0.3, "clients": 2,
                                   "words": 400}}}
FIX = {"no correction": {"substitution": {"total": 4, "fixed": 0},
                         "omission": {"total": 2, "fixed": 0}},
       "symspell": {"substitution": {"total": 4, "fixed": 3},
                    "omission": {"total": 2, "fixed": 1},
                    "transposition": {"total": 0, "fixed": 0}}}
PRIVACY = {"canaries": [{"id": "c0", "repetitions": 1,
                         "exposure": {"federated": 4.5, "federated_dp": 1.2}},
                        {"id": "c1", "repetitions": 16,
                         "exposure": {"federated": 10.0, "federated_dp": 1.9}}],
           "epsilon": {"federated": None, "federated_dp": 6.0}, "delta": 1e-5,
           "candidate_space_bits": 26.6}


def test_error_mix_series_golden():
    # Real edits: transposition 1, drop_punctuation 1 -> shares 1/2, 1/2.
    # Simulated: transposition 2 -> shares 1, 0. Types seen on either side, channel order.
    types, series = plots.error_mix_series(realism_dict())
    assert types == ["transposition", "drop_punctuation"]
    assert series[0] == ("real (2 edits)", [0.5, 0.5])
    label, shares = series[1]
    assert shares == [1.0, 0.0]
    assert label.startswith("physical on en-US-physical: JSD types 0.311 bits")


def test_fix_rate_series_golden():
    # symspell: substitution 3/4 = 0.75, omission 1/2 = 0.5; transposition has no errors and
    # is left out; "no correction" fixes nothing: 0/4, 0/2.
    types, totals, series = plots.fix_rate_series(FIX)
    assert types == ["substitution", "omission"]
    assert totals == {"substitution": 4, "omission": 2}
    assert series == [("no correction", [0.0, 0.0]), ("symspell", [0.75, 0.5])]
    partial = {"a": {"x": {"total": 2, "fixed": 1}}, "b": {}}
    _, _, s = plots.fix_rate_series(partial)
    assert s[0] == ("a", [0.5]) and math.isnan(s[1][1][0])


def test_touch_points_exact_profile_land_on_key_centres():
    # With every error channel off and zero spread, each tap is at its key's centre:
    # en-US letters "a" (x 3.265 + 6.53/2 = 6.53, y 10 + 10/2 = 15), "b" and the space bar.
    lay = load_layout("en-US")
    exact = load_profile("two_thumbs").only(None)
    pts = plots.touch_points(exact, lay, ["ab a"], 2, seed=0)
    assert pts.shape == (8, 2)
    a = next(k for k in lay.keys if k.layer == "letters" and k.text == "a")
    b = next(k for k in lay.keys if k.layer == "letters" and k.text == "b")
    sp = next(k for k in lay.keys if k.layer == "letters" and k.text == " ")
    expect = [(a.cx, a.cy), (b.cx, b.cy), (sp.cx, sp.cy), (a.cx, a.cy)] * 2
    np.testing.assert_allclose(pts, np.array(expect), atol=1e-4)
    assert (a.cx, a.cy) == pytest.approx((6.53, 15.0))


def test_touch_points_offset_statistics():
    # index_finger: offset (0, +0.6) mm, spread about 1 mm; over ~4,000 letter taps the mean
    # vertical offset from the aimed key centre is within 5 standard errors (~0.08 mm) of 0.6.
    lay = load_layout("en-US")
    prof = load_profile("index_finger").only(None)
    prof = dataclasses.replace(prof, sigma_x_mm=1.0, sigma_y_mm=1.0, offset_y_mm=0.6)
    text = "asdf ghjk"
    pts = plots.touch_points(prof, lay, [text], 500, seed=1)
    centres = {k.text: (k.cx, k.cy) for k in lay.keys if k.layer == "letters" and k.text}
    aimed = np.array([centres[c] for c in text] * 500)
    letters = np.array([c != " " for c in text] * 500)
    dy = (pts[:, 1] - aimed[:, 1])[letters]
    assert abs(dy.mean() - 0.6) < 5 * dy.std() / math.sqrt(len(dy))


def test_every_plot_writes_a_valid_png(tmp_path):
    paths = [
        plots.touch_heatmap([("two_thumbs", load_profile("two_thumbs")),
                             ("one_thumb", load_profile("one_thumb"))], tmp_path / "heat.png",
                            n=40),
        plots.error_mix(realism_dict(), tmp_path / "mix.png"),
        plots.learning_curves(RUNS, tmp_path / "curves.png"),
        plots.accuracy_by_client_size(BY_SIZE, tmp_path / "size.png"),
        plots.fix_rate_by_type(FIX, tmp_path / "sub" / "fix.png", title="set"),
        plots.canary_exposure(PRIVACY, tmp_path / "canary.png"),
    ]
    for p in paths:
        assert p.exists()
        assert_png(p)


def test_deterministic_bytes(tmp_path):
    prof = [("two_thumbs", load_profile("two_thumbs"))]
    a = plots.touch_heatmap(prof, tmp_path / "a.png", n=30, seed=5).read_bytes()
    b = plots.touch_heatmap(prof, tmp_path / "b.png", n=30, seed=5).read_bytes()
    c = plots.touch_heatmap(prof, tmp_path / "c.png", n=30, seed=6).read_bytes()
    assert a == b and a != c
    x = plots.learning_curves(RUNS, tmp_path / "x.png").read_bytes()
    y = plots.learning_curves(RUNS, tmp_path / "y.png").read_bytes()
    assert x == y
    assert b"Software" not in x[:2000]


def test_missing_numbers_are_gaps_not_errors(tmp_path):
    runs = {"r": {"curve": [{"round": 1, "loss": None, "accuracy": float("nan"),
                             "top3_accuracy": 0.1, "epsilon": None},
                            {"round": 2, "loss": 3.0, "accuracy": 0.2, "top3_accuracy": 0.3}]}}
    assert_png(plots.learning_curves(runs, tmp_path / "c.png"))
    priv = {**PRIVACY, "epsilon": {}, "candidate_space_bits": None}
    assert_png(plots.canary_exposure(priv, tmp_path / "p.png"))


def test_nothing_to_plot(tmp_path):
    with pytest.raises(PlotError, match="no profiles"):
        plots.touch_heatmap([], tmp_path / "h.png")
    with pytest.raises(PlotError, match="no run has a curve"):
        plots.learning_curves({"r": {"curve": []}}, tmp_path / "c.png")
    with pytest.raises(PlotError, match="no buckets"):
        plots.accuracy_by_client_size({"r": {}}, tmp_path / "s.png")
    with pytest.raises(PlotError, match=r"no errors counted"):
        plots.fix_rate_by_type({"x": {"t": {"total": 0, "fixed": 0}}}, tmp_path / "f.png")
    with pytest.raises(PlotError, match="no canaries"):
        plots.canary_exposure({"canaries": []}, tmp_path / "p.png")
    with pytest.raises(PlotError, match="lack"):
        plots.error_mix({"real": {}}, tmp_path / "m.png")
    assert not list(tmp_path.iterdir())
