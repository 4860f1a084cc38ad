"""Writes the layout data files in keyboard_sim/layouts/ from compact row descriptions.

The JSON files are the shipped data (the simulator reads only them); this script documents how
their geometry was derived and regenerates them: `python scripts/make_layouts.py`.

Phone geometry. Relative proportions follow the measured en-US phone keyboard in
../shared/data/layouts/fleksy_en-US_geometry.json (FleksySDK/kebbie, MIT): ten equal letter keys
across the width, the second row inset by half a key, shift and backspace 1.5 keys wide on the
third row, and a bottom row of 14% / 11% / 50% / 11% / 14% of the width (layer switch, a key,
space bar, full stop, enter). Absolute size: a 1080 px wide display at 420 dpi (a common 6.1-inch
phone) is 65.3 mm wide, so a ten-key row has a 6.53 mm pitch. The fleksy reference's vertical unit
differs from its horizontal one, so the row height is set to 10 mm (four rows, 40 mm, about the
default keyboard height on such phones). Parhi, Karlson & Bederson 2006 (MobileHCI) found thumb
targets of about 9.2 mm needed for low error: phone keys are well under that horizontally, which is
why touch noise matters.

Physical geometry. ISO/IEC 9995 and ANSI keyboards use a 19.05 mm (0.75 inch) key pitch; rows are
staggered by 1.5, 1.75 and 2.25 key units on the tab, caps-lock and shift rows.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "keyboard_sim" / "layouts"

PHONE_WIDTH = 65.3
ROW_H = 10.0
PHYS_PITCH = 19.05

# Numbers and symbols layers shared by the phone layouts (Gboard-style). A key is a label or a
# (label, width-in-keys, action) tuple; `None` in a row's start means no inset.
NUMBERS = [
    list("1234567890"),
    list("@#$_&-+()/"),
    [("=\\<", 1.5, "layer:symbols"), *list("*\"':;!?"), ("⌫", 1.5, "backspace")],
]
SYMBOLS = [
    list("~`|•√π÷×¶∆"),
    list("£¥€¢^°={}\\"),
    [("?123", 1.5, "layer:numbers"), *list("%©®™✓[]"), ("⌫", 1.5, "backspace")],
]


def phone_layout(name, language, rows, shift_rows, insets, long_press, description,
                 numbers=NUMBERS, symbols=SYMBOLS, bottom_extra=","):
    """Builds a phone layout: `rows` of letters (lists), insets in key units per row."""
    n_cols = max(len([k for k in r if isinstance(k, str)]) for r in rows[:2])
    pitch = PHONE_WIDTH / n_cols

    def row_keys(row, y, inset, layer_text_case):
        keys = []
        text_keys = [k for k in row if isinstance(k, str)]
        specials = [k for k in row if not isinstance(k, str)]
        special_w = sum(w for _, w, _ in specials)
        # Letters on a row with specials (shift, backspace) share what is left of the width.
        if specials:
            w = (PHONE_WIDTH - special_w * pitch) / len(text_keys)
        else:
            w = pitch
        x = inset * pitch
        for k in row:
            if isinstance(k, str):
                t = layer_text_case(k)
                keys.append(key(t, x, y, w, ROW_H, text=t))
                x += w
            else:
                label, kw, action = k
                keys.append(key(label, x, y, kw * pitch, ROW_H, action=action))
                x += kw * pitch
        return keys

    def bottom(y, switch_label, switch_action):
        w = PHONE_WIDTH
        spec = [(switch_label, 0.14, {"action": switch_action}),
                (bottom_extra, 0.11, {"text": bottom_extra}),
                ("space", 0.50, {"text": " "}),
                (".", 0.11, {"text": "."}),
                ("enter", 0.14, {"action": "enter"})]
        out, x = [], 0.0
        for label, frac, kind in spec:
            out.append(key(label, x, y, frac * w, ROW_H, **kind))
            x += frac * w
        return out

    def letters_layer(case, shift_label):
        keys = []
        for r, row in enumerate(rows):
            full = list(row)
            if r == len(rows) - 1:
                full = [(shift_label, 1.5, "shift"), *row, ("⌫", 1.5, "backspace")]
            keys += row_keys(full, r * ROW_H, insets[r], case)
        keys += bottom(len(rows) * ROW_H, "?123", "layer:numbers")
        return keys

    def plain_layer(layer_rows, switch_label="ABC"):
        keys = []
        for r, row in enumerate(layer_rows):
            keys += row_keys(row, r * ROW_H, 0.0, lambda s: s)
        keys += bottom(len(layer_rows) * ROW_H, switch_label, "layer:letters")
        return keys

    return {
        "name": name,
        "language": language,
        "kind": "phone",
        "description": description,
        "geometry": (
            f"Phone keyboard {PHONE_WIDTH} mm wide, {n_cols} letter keys per row "
            f"({pitch:.2f} mm pitch), rows {ROW_H} mm tall; proportions from the measured "
            "fleksy en-US reference (see scripts/make_layouts.py)."
        ),
        "width_mm": PHONE_WIDTH,
        "height_mm": (len(rows) + 1) * ROW_H,
        "layers": {
            "letters": letters_layer(lambda s: s, "⇧"),
            "shift": letters_layer(shift_rows, "⇧"),
            "numbers": plain_layer(numbers),
            "symbols": plain_layer(symbols),
        },
        "long_press": long_press,
    }


# Touch typing: the left hand types these keys (and the keys left of them) on a physical
# keyboard; the right hand the rest. The split runs between 5/6, t/y, g/h and b/n.
LEFT_HAND = set("`12345qwertasdfgzxcvb~!@#$%QWERTASDFGZXCVB")


def key(label, x, y, w, h, text=None, action=None, hand=None):
    # Round the edges, not the sizes, so that neighbouring keys share an edge exactly.
    x0, x1, y0, y1 = (round(v + 1e-9, 3) for v in (x, x + w, y, y + h))
    k = {"label": label, "x": x0, "y": y0, "w": round(x1 - x0, 3), "h": round(y1 - y0, 3)}
    if text is not None:
        k["text"] = text
    if action is not None:
        k["action"] = action
    if hand is not None:
        k["hand"] = hand
    return k


def with_upper(lp: dict) -> dict:
    """Long-press table for lower case plus the same for upper case."""
    out = dict(lp)
    for base, accents in lp.items():
        out[base.upper()] = [a.upper() for a in accents]
    return out


LATIN_LP = {
    "a": ["á", "à", "â", "ä", "ã", "å", "æ", "ā"],
    "c": ["ç", "ć", "č"],
    "e": ["é", "è", "ê", "ë", "ē", "ę"],
    "i": ["í", "ì", "î", "ï", "ī"],
    "n": ["ñ", "ń"],
    "o": ["ó", "ò", "ô", "ö", "õ", "ø", "œ", "ō"],
    "s": ["ß", "ś", "š"],
    "u": ["ú", "ù", "û", "ü", "ū"],
    "y": ["ý", "ÿ"],
    "z": ["ž", "ź", "ż"],
}


def physical_layout():
    """ANSI US keyboard, 19.05 mm pitch, with shift giving the upper symbols."""
    rows = [
        (0.0, "`1234567890-=", "~!@#$%^&*()_+"),
        (1.5, "qwertyuiop[]\\", "QWERTYUIOP{}|"),
        (1.75, "asdfghjkl;'", 'ASDFGHJKL:"'),
        (2.25, "zxcvbnm,./", "ZXCVBNM<>?"),
    ]
    p = PHYS_PITCH

    def layer(shifted):
        keys = []
        for r, (inset, base, upper) in enumerate(rows):
            y = r * p
            if inset:
                label, action = {1.5: ("tab", "tab"), 1.75: ("caps", "caps"),
                                 2.25: ("shift", "shift")}[inset]
                keys.append(key(label, 0.0, y, inset * p, p, action=action))
            x = inset * p
            for b, u in zip(base, upper, strict=True):
                t = u if shifted else b
                keys.append(key(t, x, y, p, p, text=t,
                                hand="left" if t in LEFT_HAND else "right"))
                x += p
            tail = {0: ("backspace", 2.0), 1: None, 2: ("enter", 2.25), 3: ("shift", 2.75)}[r]
            if tail:
                keys.append(key(tail[0], x, y, tail[1] * p, p, action=tail[0]))
        y = 4 * p
        x = 0.0
        for label, w in (("ctrl", 1.25), ("meta", 1.25), ("alt", 1.25)):
            keys.append(key(label, x, y, w * p, p, action=label))
            x += w * p
        keys.append(key("space", x, y, 6.25 * p, p, text=" ", hand="thumb"))
        x += 6.25 * p
        for label, w in (("alt", 1.25), ("meta", 1.25), ("menu", 1.25), ("ctrl", 1.25)):
            keys.append(key(label, x, y, w * p, p, action=label + "_r"))
            x += w * p
        return keys

    return {
        "name": "en-US-physical",
        "language": "en",
        "kind": "physical",
        "description": "US ANSI physical keyboard (ten-finger typing), for logs such as the "
        "Aalto 136M keystrokes data.",
        "geometry": "19.05 mm key pitch (ISO/IEC 9995, ANSI); row stagger 1.5/1.75/2.25 units.",
        "width_mm": round(15 * p, 3),
        "height_mm": round(5 * p, 3),
        "layers": {"letters": layer(False), "shift": layer(True)},
        "long_press": {},
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    qwerty = [list("qwertyuiop"), list("asdfghjkl"), list("zxcvbnm")]
    layouts = [
        phone_layout("en-US", "en", qwerty, str.upper, [0.0, 0.5, 0.0], with_upper(LATIN_LP),
                     "English (US) QWERTY phone keyboard."),
        phone_layout(
            "en-GB", "en", qwerty, str.upper, [0.0, 0.5, 0.0], with_upper(LATIN_LP),
            "English (UK) QWERTY phone keyboard; the numbers layer puts £ first.",
            numbers=[list("1234567890"), list("@#£_&-+()/"), NUMBERS[2]],
            symbols=[SYMBOLS[0], list("$¥€¢^°={}\\"), SYMBOLS[2]],
        ),
        phone_layout(
            "fr-FR", "fr",
            [list("azertyuiop"), list("qsdfghjklm"), list("wxcvbn'")],
            lambda s: s.upper() if s != "'" else s,
            [0.0, 0.0, 0.0],
            with_upper({"a": ["à", "â", "æ"], "c": ["ç"], "e": ["é", "è", "ê", "ë"],
                        "i": ["î", "ï"], "o": ["ô", "œ"], "u": ["ù", "û", "ü"], "y": ["ÿ"]}),
            "French AZERTY phone keyboard (apostrophe on the letter layer).",
            numbers=[list("1234567890"), list("@#€_&-+()/"), NUMBERS[2]],
            symbols=[SYMBOLS[0], list("£¥$¢^°={}\\"), SYMBOLS[2]],
        ),
        phone_layout(
            "de-DE", "de",
            [list("qwertzuiopü"), list("asdfghjklöä"), list("yxcvbnm")],
            str.upper,
            [0.0, 0.0, 0.0],
            with_upper({"a": ["à", "á", "â", "æ"], "e": ["é", "è", "ê"], "o": ["ó", "ò", "ô", "ø"],
                        "u": ["ú", "ù", "û"], "s": ["ß"]}),
            "German QWERTZ phone keyboard with umlaut keys on the letter rows.",
            numbers=[list("1234567890"), list("@#€_&-+()/"), NUMBERS[2]],
            symbols=[SYMBOLS[0], list("£¥$¢^°={}\\"), SYMBOLS[2]],
        ),
        phone_layout(
            "es-ES", "es",
            [list("qwertyuiop"), list("asdfghjklñ"), list("zxcvbnm")],
            str.upper,
            [0.0, 0.0, 0.0],
            with_upper({"a": ["á", "à", "â"], "e": ["é", "è", "ê"], "i": ["í", "ì", "ï"],
                        "o": ["ó", "ò", "ô"], "u": ["ú", "ü", "ù"], "c": ["ç"]}),
            "Spanish phone keyboard with ñ on the second row.",
            numbers=[list("1234567890"), list("@#€_&-+()/"),
                     [("=\\<", 1.5, "layer:symbols"), *list("*\"':;¿?"), ("⌫", 1.5, "backspace")]],
            symbols=[SYMBOLS[0], list("£¥$¢^°={}\\"),
                     [("?123", 1.5, "layer:numbers"), *list("%¡!™✓[]"), ("⌫", 1.5, "backspace")]],
        ),
        phone_layout(
            "ru-RU", "ru",
            [list("йцукенгшщзх"), list("фывапролджэ"), list("ячсмитьбю")],
            str.upper,
            [0.0, 0.0, 0.0],
            with_upper({"е": ["ё"], "ь": ["ъ"]}),
            "Russian ЙЦУКЕН phone keyboard (ё and ъ by long press).",
            numbers=[list("1234567890"), list("@#₽_&-+()/"), NUMBERS[2]],
            symbols=[SYMBOLS[0], list("£¥$€^°={}\\"), SYMBOLS[2]],
        ),
        physical_layout(),
    ]
    for layout in layouts:
        path = OUT / f"{layout['name']}.json"
        path.write_text(json.dumps(layout, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
