"""The noise engine: turns a batch of clean texts into pairs, vectorised over the whole batch.

Two stages, both drawn from counter-based random numbers keyed by (record, position), so a
record's output is the same whatever batch it is in:

A. Habits and cognition on the clean text: misspelled and confused words, dropped apostrophes,
   punctuation, capitals and accents. The result is what the typist means to type.
B. Typing it: each character costs its taps (layer switches, shift, the key, long presses);
   each tap lands according to the touch model and is decoded to the key under it (a missed
   shift or layer-switch tap types whatever it hit, and the key is then read on the layer still
   showing); motor slips (omissions, double taps, neighbour touches, transpositions, space-bar
   misses) come on top, scaled by the profile's place weights.

Each unit of text takes at most one edit, so edits never overlap. Every edit is recorded with
its type and spans in both strings when it is made; nothing is recovered by diffing.
"""

from __future__ import annotations

import gc
from functools import partial

import numpy as np

from keyboard_sim import rng
from keyboard_sim.channels import PLACE_WEIGHTED, Channel
from keyboard_sim.layout import Layout
from keyboard_sim.lexicon import Lexicon, load_lexicon, match_case
from keyboard_sim.pair import Edit, Pair, Touch
from keyboard_sim.profile import TypistProfile
from keyboard_sim.touch import digits, tap_spread
from keyboard_sim.unicode_tables import APOSTROPHES, PUNCTUATION, lookup, tables

CHANNELS = list(Channel)
CODE = {c: i for i, c in enumerate(CHANNELS)}
_CHANNEL_OBJ = np.array(CHANNELS, dtype=object)
STREAM_HABIT, STREAM_SLIP, STREAM_TOUCH = 1, 2, 3
_APOS = np.array([ord(c) for c in APOSTROPHES], dtype=np.uint32)
_PUNCT = np.array([ord(c) for c in PUNCTUATION], dtype=np.uint32)
_SPACE = np.uint32(32)
# Per-character habit channels, in priority order (one uniform partitioned among them).
_HABITS = (Channel.DROP_APOSTROPHE, Channel.DROP_PUNCTUATION, Channel.DROP_CAPITAL,
           Channel.SIMPLIFY_ACCENT)
_HABIT_CODES = np.array([CODE[c] for c in _HABITS], dtype=np.int64)
# Per-character slip channels, in priority order.
_SLIPS = (Channel.SPACE_OMISSION, Channel.SPACE_SUBSTITUTION, Channel.SPACE_INSERTION,
          Channel.OMISSION, Channel.DOUBLE_TAP, Channel.NEIGHBOR_INSERTION)


def _shift_prev(a: np.ndarray, first: np.ndarray, fill) -> np.ndarray:
    """a[i-1], or `fill` where i is the first element of its record."""
    out = np.empty_like(a)
    out[1:] = a[:-1]
    if len(a):
        out[0] = fill
    out[first] = fill
    return out


def _shift_next(a: np.ndarray, last: np.ndarray, fill) -> np.ndarray:
    """a[i+1], or `fill` where i is the last element of its record."""
    out = np.empty_like(a)
    out[:-1] = a[1:]
    if len(a):
        out[-1] = fill
    out[last] = fill
    return out


def _partition(u: np.ndarray, eligible: list[np.ndarray], rates: list) -> np.ndarray:
    """Index of the channel whose slice of [0, 1) holds u, among the eligible ones; -1 if none.

    Each eligible channel fires with exactly its rate (a number, or one per element), while
    the eligible rates sum to <= 1.
    """
    choice = np.full(len(u), -1, dtype=np.int64)
    lo = np.zeros(len(u), dtype=np.float64)
    for c, (elig, rate) in enumerate(zip(eligible, rates, strict=True)):
        if np.all(np.asarray(rate) <= 0):
            continue
        hi = lo + elig * rate
        fire = elig & (u >= lo) & (u < hi) & (choice < 0)
        choice[fire] = c
        lo = hi
    return choice


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - offs, lengths) + np.arange(total)


def _cps_to_str(cps: np.ndarray) -> str:
    return cps.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


class Engine:
    """Simulates typing for one layout and one typist profile.

    Construction is cheap; tables (decoding grid, character plans, the misspelling list) are
    built the first time they are needed and reused.
    """

    def __init__(self, layout: Layout, profile: TypistProfile,
                 lexicon: Lexicon | str = "codespell") -> None:
        self.layout = layout
        self.profile = profile
        self._lexicon = lexicon
        self.rates = {c: float(r) for c, r in profile.rates.items()}

    def prepare(self) -> Engine:
        """Builds every lazily built table now (layout grids and plans, Unicode tables, the
        misspelling lexicon if a word channel is on), e.g. before forking workers that should
        inherit them. Returns self."""
        L = self.layout
        for name in ("grid", "_bins", "plan", "neighbors", "space_row", "hands", "key_cp",
                     "switch_keys"):
            getattr(L, name)
        L.plan.lookup(np.zeros(1, dtype=np.uint32))
        tables()
        if self.rates[Channel.MISSPELLING] > 0 or self.rates[Channel.REAL_WORD] > 0:
            _ = self.lexicon
        return self

    def _place_factor(self, cp, is_letter, first, last):
        """Per character, the profile's weight for its place in its word (None if all 1)."""
        w = self.profile.place_weights
        if w == (1.0, 1.0, 1.0):
            return None
        is_apos = (cp == _APOS[0]) | (cp == _APOS[1]) | (cp == _APOS[2])
        inner = is_apos & _shift_prev(is_letter, first, False) & _shift_next(is_letter, last,
                                                                                False)
        wordchar = is_letter | inner
        starts = is_letter & ~_shift_prev(wordchar, first, False)
        ends = is_letter & ~_shift_next(wordchar, last, False)
        care = np.ones(len(cp))
        care[is_letter] = w[1]
        care[ends] = w[2]
        care[starts] = w[0]  # a one-letter word counts as a first letter
        return care

    @property
    def lexicon(self) -> Lexicon:
        if not isinstance(self._lexicon, Lexicon):
            self._lexicon = load_lexicon(self._lexicon)
        return self._lexicon

    # ------------------------------------------------------------------------------- run
    def run(self, texts: list[str], ids: list[str], seed: int, touches: bool = False):
        """Pairs for a batch of texts with their ids (see module docstring)."""
        n = len(texts)
        if len(ids) != n:
            raise ValueError(f"{n} texts but {len(ids)} ids")
        lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
        joined = "".join(texts)
        cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        starts = np.concatenate(([0], np.cumsum(lens)))
        keys = rng.record_keys(seed, ids)
        if len(cp) == 0:
            empty = () if touches else None
            return [Pair(i, t, t, (), empty) for i, t in zip(ids, texts, strict=True)]

        edits_a, t1 = self._habits(cp, lens, starts, keys, joined)
        edits_b, taps = self._typing(t1, lens, keys, touches)
        # Building the records allocates many small tuples and no reference cycles; pausing the
        # cyclic garbage collector meanwhile saves it from scanning them over and over. The
        # previous state is restored whatever happens.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._assemble(texts, ids, cp, starts, edits_a, edits_b, taps)
        finally:
            if was_enabled:
                gc.enable()

    # ------------------------------------------------------------------- stage A: habits
    def _habits(self, cp, lens, starts, keys, joined):
        n_chars = len(cp)
        rec = np.repeat(np.arange(len(lens), dtype=np.int32), lens)
        pos = (np.arange(n_chars) - starts[rec]).astype(np.int32)
        first = starts[:-1][lens > 0]
        last = starts[1:][lens > 0] - 1
        kc = keys[rec]
        T = tables()
        is_letter = lookup(T["is_letter"], cp, False)
        is_apos = (cp == _APOS[0]) | (cp == _APOS[1]) | (cp == _APOS[2])
        prev_letter = _shift_prev(is_letter, first, False)
        next_letter = _shift_next(is_letter, last, False)
        inner_apos = is_apos & prev_letter & next_letter
        wordchar = is_letter | inner_apos
        u_habit, u_word, u_pick = rng.uniforms3(kc, pos, STREAM_HABIT)
        r = self.rates

        eligible = [
            inner_apos,
            np.isin(cp, _PUNCT),
            lookup(T["is_upper"], cp, False),
            is_letter & (lookup(T["accent_base"], cp, None) != cp),
        ]
        choice = _partition(u_habit, eligible, [r[c] for c in _HABITS])

        # Whole words: attested misspellings and real-word confusions.
        rm, rr = r[Channel.MISSPELLING], r[Channel.REAL_WORD]
        word_start = wordchar & ~_shift_prev(wordchar, first, False)
        word_edits = []  # (start, end, replacement, channel)
        if rm + rr > 0:
            cand = np.flatnonzero(word_start & (u_word < rm + rr))
            if len(cand):
                word_end_mask = wordchar & ~_shift_next(wordchar, last, False)
                ends = np.flatnonzero(word_end_mask) + 1
                cand_end = ends[np.searchsorted(ends, cand, side="right")]
                is_miss = u_word[cand] < rm
                lex = self.lexicon
                miss, conf = lex.misspellings, lex.confusions
                for s, e, mi, u in zip(cand.tolist(), cand_end.tolist(), is_miss.tolist(),
                                       u_pick[cand].tolist(), strict=True):
                    word = joined[s:e]
                    options = (miss if mi else conf).get(word.lower())
                    if not options:
                        continue
                    rep = match_case(word, options[int(u * len(options))])
                    word_edits.append((s, e, rep, Channel.MISSPELLING if mi else Channel.REAL_WORD))

        # Output code points of the intended text T1 (what the typist means to type).
        new_cp = cp.copy()
        is_cap = choice == _HABITS.index(Channel.DROP_CAPITAL)
        new_cp[is_cap] = lookup(T["lower"], cp[is_cap], None)
        is_acc = choice == _HABITS.index(Channel.SIMPLIFY_ACCENT)
        new_cp[is_acc] = lookup(T["accent_base"], cp[is_acc], None)
        count = np.ones(n_chars, dtype=np.int64)
        count[(choice == 0) | (choice == 1)] = 0  # dropped apostrophe / punctuation
        edited = choice >= 0
        for s, e, rep, _ in word_edits:
            count[s:e] = 0
            count[s] = len(rep)
            edited[s:e] = True
            choice[s:e] = -1
        habit_idx = np.flatnonzero(choice >= 0)
        edits = {
            "start": habit_idx,
            "end": habit_idx + 1,
            "type": _HABIT_CODES[choice[habit_idx]],
            "rep": np.where(count[habit_idx] > 0, new_cp[habit_idx].astype(np.int64), -1)[:, None],
            "words": word_edits,
        }

        t1_src = np.repeat(np.arange(n_chars, dtype=np.int32), count)
        t1_cp = new_cp[t1_src]
        t1_prot = edited[t1_src]
        if word_edits:
            # Fill the replacement words' characters in place of the first-character copies.
            t1_starts = np.cumsum(count) - count
            for s, _, rep, _ in word_edits:
                if rep:
                    o = t1_starts[s]
                    t1_cp[o : o + len(rep)] = np.frombuffer(
                        rep.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        t1_rec = rec[t1_src]
        t1_lens = np.bincount(t1_rec, minlength=len(lens))
        t1 = {"cp": t1_cp, "src": t1_src, "prot": t1_prot, "rec": t1_rec, "lens": t1_lens}
        return edits, t1

    # ------------------------------------------------------------------- stage B: typing
    def _typing(self, t1, lens, keys, touches):
        L, prof, r = self.layout, self.profile, self.rates
        cp, src, prot, rec = t1["cp"], t1["src"], t1["prot"], t1["rec"]
        m = len(cp)
        t_starts = np.concatenate(([0], np.cumsum(t1["lens"])))
        pos = np.arange(m, dtype=np.int32) - t_starts[rec]
        nonempty = t1["lens"] > 0
        first = t_starts[:-1][nonempty]
        last = t_starts[1:][nonempty] - 1
        kc = keys[rec]
        plan, a = L.plan, L.arrays
        cid = plan.lookup(cp)
        typeable = cid >= 0
        safe_cid = np.where(typeable, cid, 0)
        is_space = cp == _SPACE
        is_letter = lookup(tables()["is_letter"], cp, False)
        care = self._place_factor(cp, is_letter, first, last)

        # Layer state: which group the keyboard is in before each character.
        group = np.where(typeable, plan.group[safe_cid], -2)
        anchor = (typeable & (group >= 0)) | is_space
        anchor_val = np.where(is_space, 0, group)
        idx = np.where(anchor, np.arange(m, dtype=np.int32), -1)
        last_anchor = np.maximum.accumulate(idx) if m else idx
        first_of = t_starts[rec]
        state_after = np.where(last_anchor >= first_of, anchor_val[np.maximum(last_anchor, 0)], 0)
        prev_state = _shift_prev(state_after, first, 0)
        neutral = typeable & (group == -1)
        target_group = np.where(neutral, prev_state, np.maximum(group, 0))
        key = np.where(neutral, plan.key_in_group[safe_cid, np.clip(prev_state, 0, 2)],
                       plan.key[safe_cid])
        key = np.where(typeable & (key >= 0), key, np.where(typeable, plan.key[safe_cid], 0))
        needs_switch = typeable & ~neutral & (target_group != prev_state)
        sw1 = np.full(m, -1, dtype=np.int32)
        sw2 = np.full(m, -1, dtype=np.int32)
        ns = np.flatnonzero(needs_switch)
        if len(ns):
            switch = L.switch_keys[prev_state[ns], target_group[ns]]
            sw1[ns], sw2[ns] = switch[:, 0], switch[:, 1]
        shift_key = L.find_key("letters", action="shift")
        shift = typeable & plan.shift[safe_cid] & (shift_key >= 0)

        # Taps, in time order: switch taps (slots 0, 1), shift (2), then the key (3). Most
        # characters have only the key tap, so modifier taps are placed separately.
        n_mod = (sw1 >= 0).astype(np.int64) + (sw2 >= 0) + shift
        n_per = n_mod + typeable
        tap_end = np.cumsum(n_per)
        n_taps = int(tap_end[-1]) if m else 0
        tap_char = np.repeat(np.arange(m, dtype=np.int32), n_per)
        tk = np.empty(n_taps, dtype=np.int32)
        tap_slot = np.full(n_taps, 3, dtype=np.int32)
        tk[tap_end[typeable] - 1] = key[typeable]
        with_mod = np.flatnonzero(n_mod)
        if len(with_mod):
            mods = np.stack([sw1[with_mod], sw2[with_mod],
                             np.where(shift[with_mod], shift_key, -1)], axis=1)
            row, col = np.nonzero(mods >= 0)
            rank = np.arange(len(row)) - np.searchsorted(row, row)
            at = (tap_end - n_per)[with_mod[row]] + rank
            tk[at] = mods[row, col]
            tap_slot[at] = col
        # Temporaries are dropped as soon as they are spent: the working memory of a batch,
        # first touched page by page, is a large part of a fresh process's cost.
        del group, anchor, anchor_val, idx, last_anchor, first_of, state_after, needs_switch
        del target_group, sw1, sw2, n_mod, n_per, tap_end
        tap_rec = rec[tap_char]
        taps_per_rec = np.bincount(tap_rec, minlength=len(lens))
        tap_first = (np.cumsum(taps_per_rec) - taps_per_rec)[tap_rec]
        del tap_rec, taps_per_rec
        cx, cy = a["cx"][tk], a["cy"][tk]
        dig = digits(prof.posture, tk, L)
        sx, sy, ox, oy = tap_spread(prof, cx, cy, dig, tap_first)
        del dig, tap_first
        gx, gy, _ = rng.normals2(kc[tap_char], pos[tap_char] * 4 + tap_slot, STREAM_TOUCH)
        tx = cx + ox + sx * gx
        ty = cy + oy + sy * gy
        del cx, cy, sx, sy, ox, oy, gx, gy
        hit_key = L.decode(a["layer"][tk], tx, ty)
        missed = hit_key != tk
        # A missed switch or shift tap leaves the keyboard on the layer it was on.
        # The first missed modifier tap types whatever key it landed on (nothing for a function
        # key); the typist then skips the remaining modifier taps and taps the key on the
        # layer still showing.
        miss_mod = np.zeros(m, dtype=bool)
        first_miss_slot = np.full(m, 3, dtype=np.int32)
        extra_cp = np.full(m, -1, dtype=np.int32)
        showing = np.zeros(m, dtype=np.int32)  # the layer on screen after a missed modifier
        mm = np.flatnonzero((tap_slot < 3) & missed)
        if len(mm):
            c_mm, first_at = np.unique(tap_char[mm], return_index=True)
            miss_mod[c_mm] = True
            first_miss_slot[c_mm] = tap_slot[mm[first_at]]
            extra_cp[c_mm] = L.key_cp[hit_key[mm[first_at]]]
            showing[c_mm] = a["layer"][tk[mm[first_at]]]  # the missed key's own layer
        main = tap_slot == 3
        main_char = tap_char[main]
        main_x, main_y = tx[main], ty[main]
        letters = L.layer_names.index("letters")
        decoded = hit_key[main]
        redo = np.flatnonzero(miss_mod[main_char])
        if len(redo):
            c = main_char[redo]
            decoded[redo] = L.decode(showing[c], main_x[redo], main_y[redo])
        dec = np.full(m, -1, dtype=np.int32)
        dec[main_char] = decoded
        touch_wrong = typeable & (dec != key)
        del decoded, missed, mm
        if not touches:
            del tx, ty, hit_key, tk, tap_char, tap_slot

        # Slips on the intended text.
        del prev_state, neutral, cid, safe_cid, main
        u_slip, u_aux, u_trans = rng.uniforms3(kc, pos, STREAM_SLIP)
        del kc, pos
        free = typeable & ~prot
        above = L.space_row["above"][key] & free & ~is_space
        nb_table, nb_count = L.neighbors
        eligible = [
            free & is_space,
            free & is_space,
            above,
            free & ~is_space,
            free & ~is_space,
            free & ~is_space & (nb_count[key] > 0),
        ]
        slip_rates = [r[c] if c not in PLACE_WEIGHTED or care is None else r[c] * care
                      for c in _SLIPS]
        slip = _partition(u_slip, eligible, slip_rates)
        del u_slip, eligible, slip_rates

        # Transpositions of adjacent letters (more likely across digits).
        rt = r[Channel.TRANSPOSITION]
        trans = np.zeros(m, dtype=bool)
        partner = np.zeros(m, dtype=bool)
        if rt > 0 and m > 1:
            nxt_cp = _shift_next(cp.astype(np.int64), last, -1)
            nxt_free = _shift_next(free & is_letter, last, False)
            nxt_src = _shift_next(src, last, -1)
            dig_char = digits(prof.posture, key, L)
            nxt_dig = _shift_next(dig_char, last, -1)
            rate = np.where(dig_char != nxt_dig, min(1.0, rt * prof.cross_hand_factor), rt)
            if care is not None:
                rate = np.minimum(rate * care, 1.0)
            trans = (free & is_letter & nxt_free & (nxt_cp != cp) & (nxt_src == src + 1)
                     & (u_trans < rate))
            # Overlapping pairs (a run of consecutive firings): greedily from the left, every
            # other one is kept, as a typist swapping (a, b) cannot also swap (b, c).
            run_start = trans & ~_shift_prev(trans, first, False)
            starts_idx = np.maximum.accumulate(np.where(run_start, np.arange(m, dtype=np.int32), 0))
            trans &= (np.arange(m, dtype=np.int32) - starts_idx) % 2 == 0
            del nxt_cp, nxt_free, nxt_src, dig_char, nxt_dig, rate, run_start, starts_idx
            partner = _shift_prev(trans, first, False)
            slip[trans | partner] = -1
            touch_wrong &= ~(trans | partner)

        # Build the edits (position in T1, span length, up to two replacement code points).
        rep1 = np.full(m, -1, dtype=np.int32)
        rep2 = np.full(m, -1, dtype=np.int32)
        etype = np.full(m, -1, dtype=np.int32)
        span = np.ones(m, dtype=np.int32)
        c64 = cp.astype(np.int64)
        sl = {c: slip == i for i, c in enumerate(_SLIPS)}
        etype[sl[Channel.SPACE_OMISSION]] = CODE[Channel.SPACE_OMISSION]
        etype[sl[Channel.OMISSION]] = CODE[Channel.OMISSION]
        s = sl[Channel.SPACE_INSERTION]
        etype[s], rep1[s] = CODE[Channel.SPACE_INSERTION], 32
        s = sl[Channel.DOUBLE_TAP]
        etype[s], rep1[s], rep2[s] = CODE[Channel.DOUBLE_TAP], c64[s], c64[s]
        s = sl[Channel.NEIGHBOR_INSERTION]
        if s.any():
            k = key[s]
            f = u_aux[s] * nb_count[k]
            nb = nb_table[k, f.astype(np.int64)]
            nb_cp = L.key_cp[nb]
            before = (f % 1.0) >= 0.5
            etype[s] = CODE[Channel.NEIGHBOR_INSERTION]
            rep1[s] = np.where(before, nb_cp, c64[s])
            rep2[s] = np.where(before, c64[s], nb_cp)
        s = sl[Channel.SPACE_SUBSTITUTION]
        if s.any():
            sr = L.space_row
            # The space tap's x, moved up onto the letter row above the space bar.
            tap_x = main_x[np.searchsorted(main_char, np.flatnonzero(s))]
            xs = np.clip(tap_x, sr["x_lo"], sr["x_hi"] - 1e-6)
            hit = L.decode(np.full(len(xs), letters), xs, np.full(len(xs), sr["above_y"]))
            etype[s] = CODE[Channel.SPACE_SUBSTITUTION]
            rep1[s] = L.key_cp[hit]
        if rt > 0:
            etype[trans] = CODE[Channel.TRANSPOSITION]
            span[trans] = 2
            rep1[trans] = _shift_next(c64, last, -1)[trans]
            rep2[trans] = c64[trans]
        # Touch errors where nothing else happened.
        tw = touch_wrong & (etype < 0) & ~prot
        from_touch = tw.copy()
        if tw.any():
            out_cp = L.key_cp[dec[tw]]
            extra = extra_cp[tw]
            kind = np.full(len(out_cp), CODE[Channel.SUBSTITUTION])
            alone = extra < 0
            kind[alone & is_space[tw] & (out_cp >= 0) & (out_cp != 32)] = CODE[
                Channel.SPACE_SUBSTITUTION]
            kind[alone & ~is_space[tw] & (out_cp == 32)] = CODE[Channel.SPACE_INSERTION]
            same = alone & (out_cp == c64[tw])
            idx_tw = np.flatnonzero(tw)[~same]
            etype[idx_tw] = kind[~same]
            rep1[idx_tw] = np.where(alone, out_cp, extra)[~same]
            rep2[idx_tw] = np.where(alone, -1, out_cp)[~same]

        # Characters the layout cannot type pass through; runs become one noted edit.
        passthrough = ~typeable & ~prot
        e_idx = np.flatnonzero(etype >= 0)
        edits = {
            "start": src[e_idx],
            "end": src[e_idx] + span[e_idx],
            "type": etype[e_idx],
            "rep": np.stack([rep1[e_idx], rep2[e_idx]], axis=1),
        }
        if passthrough.any():
            p = np.flatnonzero(passthrough)
            brk = np.concatenate(([True], (np.diff(p) != 1) | (np.diff(src[p]) != 1)
                                  | (np.diff(rec[p]) != 0)))
            run_id = np.cumsum(brk) - 1
            run_start = p[brk]
            run_len = np.bincount(run_id)
            edits["pass_start"] = src[run_start]
            edits["pass_end"] = src[run_start] + run_len
        taps = None
        if touches:
            taps = {"char": tap_char, "slot": tap_slot, "x": tx, "y": ty, "hit": hit_key,
                    "dec": dec, "etype": etype, "prot": prot, "partner": partner,
                    "from_touch": from_touch, "rec": rec, "key_of_char": key,
                    "first_miss_slot": first_miss_slot,
                    "rep1": rep1, "rep2": rep2}
        return edits, taps

    # ------------------------------------------------------------------------- assembly
    def _assemble(self, texts, ids, cp, starts, edits_a, edits_b, taps):
        """Applies every edit at once: builds the noisy code points, then the records."""
        # Gather edits: clean spans, types and replacement code points (ragged).
        g_start, g_end, g_type, rep_cps, rep_len = [], [], [], [], []
        for ed in (edits_a, edits_b):
            rep = ed["rep"]
            valid = rep >= 0
            g_start.append(ed["start"])
            g_end.append(ed["end"])
            g_type.append(ed["type"])
            rep_cps.append(rep[valid])
            rep_len.append(valid.sum(axis=1))
        words = edits_a["words"]
        if words:
            g_start.append(np.array([w[0] for w in words], dtype=np.int64))
            g_end.append(np.array([w[1] for w in words], dtype=np.int64))
            g_type.append(np.array([CODE[w[3]] for w in words], dtype=np.int64))
            joined = "".join(w[2] for w in words)
            rep_cps.append(np.frombuffer(joined.encode("utf-32-le", "surrogatepass"),
                                         dtype=np.uint32).astype(np.int64))
            rep_len.append(np.array([len(w[2]) for w in words], dtype=np.int64))
        if "pass_start" in edits_b:
            ps, pe = edits_b["pass_start"], edits_b["pass_end"]
            g_start.append(ps)
            g_end.append(pe)
            g_type.append(np.full(len(ps), CODE[Channel.PASSTHROUGH]))
            lens = pe - ps
            rep_cps.append(cp[_ranges(ps, lens)].astype(np.int64))
            rep_len.append(lens)
        g_start = np.concatenate(g_start).astype(np.int64)
        g_end = np.concatenate(g_end).astype(np.int64)
        g_type = np.concatenate(g_type).astype(np.int64)
        rep_cps = np.concatenate(rep_cps)
        rep_len = np.concatenate(rep_len).astype(np.int64)
        rep_off = np.cumsum(rep_len) - rep_len
        order = np.argsort(g_start, kind="stable")
        g_start, g_end, g_type = g_start[order], g_end[order], g_type[order]
        rep_cps = rep_cps[_ranges(rep_off[order], rep_len[order])]
        rep_len = rep_len[order]

        # Output count per clean position: 1 if untouched, the replacement's length at an
        # edit's first position, 0 elsewhere inside an edit.
        n = len(cp)
        depth = np.zeros(n + 1, dtype=np.int64)
        np.add.at(depth, g_start, 1)
        np.add.at(depth, g_end, -1)
        inside = np.cumsum(depth[:-1]) > 0
        count = (~inside).astype(np.int64)
        count[g_start] = rep_len
        out_start = np.cumsum(count) - count
        noisy_cp = np.empty(int(count.sum()), dtype=np.uint32)
        keep = np.flatnonzero(~inside)
        noisy_cp[out_start[keep]] = cp[keep]
        noisy_cp[_ranges(out_start[g_start], rep_len)] = rep_cps
        noisy_all = _cps_to_str(noisy_cp)
        rec_out = np.concatenate(([0], np.cumsum(count)))[starts]

        # Edits with spans local to their record, in both strings.
        bounds = np.searchsorted(g_start, starts)
        rec_of = np.repeat(np.arange(len(texts)), np.diff(bounds))
        cs = g_start - starts[rec_of]
        ce = g_end - starts[rec_of]
        ns = out_start[g_start] - rec_out[rec_of]
        ne = ns + rep_len
        make_edit = partial(tuple.__new__, Edit)
        edits = list(map(make_edit, zip(_CHANNEL_OBJ[g_type].tolist(), cs.tolist(), ce.tolist(),
                                        ns.tolist(), ne.tolist(), strict=True)))
        touch_lists = self._touch_lists(taps, len(texts)) if taps is not None else None
        b = bounds.tolist()
        ro = rec_out.tolist()
        noisy = [texts[r] if b[r] == b[r + 1] else noisy_all[ro[r] : ro[r + 1]]
                 for r in range(len(texts))]
        rec_edits = [tuple(edits[b[r] : b[r + 1]]) if b[r] < b[r + 1] else ()
                     for r in range(len(texts))]
        make_pair = partial(tuple.__new__, Pair)
        tl = touch_lists if touch_lists is not None else [None] * len(texts)
        return list(map(make_pair, zip(ids, texts, noisy, rec_edits, tl, strict=True)))

    def _touch_lists(self, taps, n_records):
        """Per record, every keystroke (x, y, key label) in time order.

        Taps the touch model drew are reported where they landed, with the key decoded there.
        Characters a channel changed (or a habit produced) are reported as exact taps on the
        keys of what was typed instead: both taps of a double tap, neighbour touch or
        transposition, none for an omission.
        """
        L = self.layout
        a = L.arrays
        char, slot = taps["char"], taps["slot"]
        et, prot = taps["etype"], taps["prot"]
        gone = (et == CODE[Channel.OMISSION]) | (et == CODE[Channel.SPACE_OMISSION])
        gone |= taps["partner"]  # the second letter of a transposition: typed by the first
        drawn_char = ~gone & ~prot & ((et < 0) | taps["from_touch"])
        # Drawn taps: modifier taps of any typed character, and key taps left to the touch model.
        # Modifier taps up to the first missed one (the typist skips the rest).
        mod_ok = slot <= taps["first_miss_slot"][char]
        keep = ~gone[char] & (((slot < 3) & mod_ok) | ((slot == 3) & drawn_char[char]))
        main = keep & (slot == 3)
        key_drawn = np.where(main, taps["dec"][char], taps["hit"])
        order = [char[keep] * 8 + slot[keep]]
        xs, ys, ks = [taps["x"][keep]], [taps["y"][keep]], [key_drawn[keep]]
        # Exact taps on the keys of what was typed instead.
        plan = L.plan
        for sub, reps in ((3, taps["rep1"]), (4, taps["rep2"])):
            c = np.flatnonzero(~gone & ~drawn_char & (prot | (reps >= 0)))
            if sub == 3:
                k = np.where(prot[c], taps["key_of_char"][c], -1)
                todo = ~prot[c]
            else:
                c = c[~prot[c]]
                k = np.full(len(c), -1, dtype=np.int64)
                todo = np.ones(len(c), dtype=bool)
            cid = plan.lookup(np.maximum(reps[c[todo]], 0).astype(np.uint32))
            k[todo] = np.where((cid >= 0) & (reps[c[todo]] >= 0), plan.key[np.maximum(cid, 0)],
                               -1)
            ok = k >= 0
            c, k = c[ok], k[ok]
            order.append(c * 8 + sub)
            xs.append(a["cx"][k])
            ys.append(a["cy"][k])
            ks.append(k)
        order = np.concatenate(order)
        srt = np.argsort(order, kind="stable")
        char_of = order[srt] // 8
        x = np.concatenate(xs)[srt].astype(np.float64)
        y = np.concatenate(ys)[srt].astype(np.float64)
        k = np.concatenate(ks)[srt]
        labels = np.array([q.label for q in L.keys], dtype=object)
        make = partial(tuple.__new__, Touch)
        touches = list(map(make, zip(x.tolist(), y.tolist(), labels[k].tolist(), strict=True)))
        per_rec = np.bincount(taps["rec"][char_of], minlength=n_records)
        b = np.concatenate(([0], np.cumsum(per_rec))).tolist()
        return [tuple(touches[b[r] : b[r + 1]]) for r in range(n_records)]
