"""Layouts: shipped files load, geometry is sane, decoding and keystroke costs are right."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keyboard_sim.layout import Layout, available_layouts, load_layout

REQUIRED = {"en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "ru-RU", "en-US-physical"}


def test_required_layouts_ship():
    assert REQUIRED <= set(available_layouts())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_layout_geometry_is_sane(name):
    L = load_layout(name)
    a = L.arrays
    assert (a["x0"] >= -1e-9).all() and (a["x1"] <= L.width_mm + 1e-6).all()
    assert (a["y0"] >= -1e-9).all() and (a["y1"] <= L.height_mm + 1e-6).all()
    # Keys of a layer never overlap.
    for layer in L.layer_names:
        idx = L.layer_keys(layer)
        for i in idx:
            for j in idx:
                if i < j:
                    ox = min(a["x1"][i], a["x1"][j]) - max(a["x0"][i], a["x0"][j])
                    oy = min(a["y1"][i], a["y1"][j]) - max(a["y0"][i], a["y0"][j])
                    assert ox <= 1e-6 or oy <= 1e-6, (layer, L.keys[i], L.keys[j])
    # Every key decodes to itself at its centre.
    got = L.decode(a["layer"], a["cx"], a["cy"])
    assert (got == np.arange(len(L.keys))).all()
    expected_pitch = 19.05 if name.endswith("physical") else 5.9
    assert L.pitch_mm >= expected_pitch


def test_characters_of_each_language_are_typeable():
    for name, text in [("fr-FR", "àéèçœ'"), ("de-DE", "äöüß"), ("es-ES", "ñáé¿¡"),
                       ("ru-RU", "привет ёъ"), ("en-GB", "£"), ("en-US", "hello?!")]:
        L = load_layout(name)
        ids = L.plan.lookup(np.array([ord(c) for c in text], dtype=np.uint32))
        assert (ids >= 0).all(), (name, [c for c, i in zip(text, ids, strict=True) if i < 0])


def test_keystroke_costs():
    L = load_layout("en-US")
    plan = L.plan

    def info(ch):
        i = plan.lookup(np.array([ord(ch)], dtype=np.uint32))[0]
        return plan.group[i], bool(plan.shift[i]), bool(plan.long_press[i])

    assert info("a") == (0, False, False)
    assert info("A") == (0, True, False)
    assert info("é") == (0, False, True)
    assert info("1") == (1, False, False)
    assert info("€") == (2, False, False)
    assert info(" ")[0] == -1  # on every layer
    assert L.switch_keys[0, 2].tolist()[1] >= 0  # letters -> symbols takes two taps


def test_off_keyboard_points_go_to_the_nearest_edge_key():
    L = load_layout("en-US")
    lay = np.zeros(3, dtype=np.int64)
    got = L.decode(lay, np.array([-5.0, 70.0, 1.0]), np.array([15.0, 15.0, -4.0]))
    assert [L.keys[k].label for k in got] == ["a", "l", "q"]


def test_bad_layout_file_gives_clear_error(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"name": "x", "width_mm": 10, "height_mm": 10, "layers": {}}))
    with pytest.raises(ValueError, match="letters"):
        load_layout(str(p))
    with pytest.raises(ValueError, match="unknown layout"):
        load_layout("xx-XX")
    with pytest.raises(ValueError, match="no area"):
        Layout({"name": "y", "width_mm": 10, "height_mm": 10,
                "layers": {"letters": [{"label": "a", "x": 0, "y": 0, "w": 0, "h": 1}]}})
