"""The run's report: report.md, figures/*.png and a self-contained report.html, from results.

Every number in the report is read from the results mapping that the experiment runner writes
as results.json; nothing is typed in here. Missing or non-finite numbers show as "n/a" and are
listed by `check`, so a run that produced one is visible rather than silently rounded away.

The results schema (keys the report reads; everything else is shown where a section lists
"whatever is present"):

    experiment: {name, config_hash, seed, kbsim_version, seconds}
    data: free-form summary numbers (nested dicts are flattened to dotted keys)
    nwp: {runs: {RUN: {curve: [{round, loss, accuracy, top3_accuracy, epsilon}], test: {...},
                       epsilon, delta}},
          by_client_size: {RUN: {BUCKET: {accuracy, top3_accuracy, clients, words}}}}
    correction: {sets: {SET: {source, messages,
                              correctors: {NAME: {metrics: {K: v}, ci: {K: [lo, hi]},
                                                  gain: {K: {value, ci: [lo, hi]}}}},
                              fix_rate_by_type: {NAME: {TYPE: {total, fixed}}}}}}
    privacy: {canaries: [{id, repetitions, exposure: {RUN: bits}}], epsilon: {RUN: eps|None},
              delta, candidate_space_bits}
    realism: eval.realism.realism() output

The HTML comes from the Markdown by a small renderer of exactly the constructs written here
(headings, paragraphs, bullet lists, pipe tables, images on their own line, `code`), with the
CSS inline and the PNGs embedded as base64 data URIs, so the file opens anywhere offline.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

NA = "n/a"
BASELINE = "no correction"  # the corrector that gains are measured against
# Test metrics of a next-word run shown as columns, in this order (models.nwp.NWPMetrics keys
# and eval.nwp's keystroke savings rate); any other key goes to the "further numbers" table.
NWP_COLUMNS = (
    ("accuracy", "top-1 (headline)"),
    ("top3_accuracy", "top-3 (headline)"),
    ("accuracy_all", "top-1 incl. OOV/EOS"),
    ("top3_accuracy_all", "top-3 incl. OOV/EOS"),
    ("perplexity", "perplexity"),
    ("loss", "loss (nats)"),
    ("ksr", "KSR"),
)
# Keys whose None is a statement ("no differential privacy", "no limit"), not a missing number.
NONE_MEANS_ABSENT = frozenset({"epsilon", "delta", "limit"})
# Correction metric preferred for the headline line, first one present.
HEADLINE_CORRECTION_KEYS = ("cer_after", "cer", "wer_after", "wer")
TYPISTS = ("two_thumbs", "one_thumb", "index_finger")  # heatmap panels: the posture presets


class ReportError(ValueError):
    """Results the report cannot render (the message names the part and the reason)."""


# ------------------------------------------------------------------------------ numbers


def is_number(x) -> bool:
    """True for int and float values (not bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt(x, digits: int = 4) -> str:
    """A number as the report shows it: ints with thousands separators, floats with `digits`
    significant digits (one decimal from 1,000 up), "n/a" for None, NaN, infinities and
    anything that is not a number."""
    if not is_number(x):
        return NA
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return NA
    if abs(x) >= 1000:
        return f"{x:,.1f}"
    return f"{x:.{digits}g}"


def fmt_ci(value, ci) -> str:
    """"value [lo, hi]", or the value alone when there is no interval."""
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"
    return fmt(value)


def fmt_eps(eps) -> str:
    """Epsilon: "none (no DP)" for None (a run without differential privacy), else `fmt`."""
    return "none (no DP)" if eps is None else fmt(eps)


def check(results: Mapping) -> list[str]:
    """Every number the report would show as "n/a": one line per place, as a dotted path and the
    value (None, NaN, infinite). A None epsilon, delta or limit (or a None inside a mapping of
    that name, as privacy.epsilon.RUN) means "none" and is fine."""
    problems: list[str] = []

    def walk(x, path: str, keys: tuple[str, ...]) -> None:
        if isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, f"{path}.{k}" if path else str(k), (*keys[-1:], str(k)))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]", keys)
        elif x is None:
            if not NONE_MEANS_ABSENT.intersection(keys):
                problems.append(f"{path}: None")
        elif is_number(x) and not math.isfinite(x):
            problems.append(f"{path}: {x}")

    walk(results, "", ())
    return problems


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


# ---------------------------------------------------------------------------- markdown


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown pipe table (cells as given, pipes escaped)."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _image(figures: Mapping[str, Path], name: str, alt: str) -> list[str]:
    if name not in figures:
        return []
    return [f"![{alt}](figures/{figures[name].name})", ""]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "set"


# ------------------------------------------------------------------------------ headline


def headline(results: Mapping) -> list[str]:
    """The report's headline numbers, one line each (what `make demo` prints)."""
    lines: list[str] = []
    exp = results.get("experiment") or {}
    if exp:
        lines.append(f"{exp.get('name', 'run')}: seed {fmt(exp.get('seed'))}, config "
                     f"{exp.get('config_hash', NA)}, kbsim {exp.get('kbsim_version', NA)}, "
                     f"{fmt(exp.get('seconds'))} s")
    for run, r in (_get(results, "nwp", "runs") or {}).items():
        t = r.get("test") or {}
        lines.append(f"next-word {run}: top-1 {fmt(t.get('accuracy'))}, top-3 "
                     f"{fmt(t.get('top3_accuracy'))} (words, without OOV/EOS), perplexity "
                     f"{fmt(t.get('perplexity'))}, KSR {fmt(t.get('ksr'))}, epsilon "
                     f"{fmt_eps(r.get('epsilon'))}")
    for name, s in (_get(results, "correction", "sets") or {}).items():
        correctors = s.get("correctors") or {}
        keys = [k for k in HEADLINE_CORRECTION_KEYS
                if any(k in (c.get("metrics") or {}) for c in correctors.values())]
        if not keys:
            continue
        key = keys[0]
        parts = []
        for cname, c in correctors.items():
            v = (c.get("metrics") or {}).get(key)
            gain = (c.get("gain") or {}).get(key)
            part = f"{cname} {fmt(v)}"
            if cname != BASELINE and isinstance(gain, Mapping):
                part += f" (gain {fmt_ci(gain.get('value'), gain.get('ci'))})"
            parts.append(part)
        lines.append(f"correction {name} ({fmt(s.get('messages'))} messages), {key}: "
                     + "; ".join(parts))
    privacy = results.get("privacy") or {}
    if privacy.get("canaries"):
        runs: list[str] = []
        for c in privacy["canaries"]:
            runs += [r for r in (c.get("exposure") or {}) if r not in runs]
        parts = []
        for r in runs:
            vals = [c["exposure"][r] for c in privacy["canaries"] if r in (c.get("exposure") or {})]
            finite = [v for v in vals if is_number(v) and math.isfinite(v)]
            top = max(finite) if len(finite) == len(vals) and finite else None
            parts.append(f"{r} {fmt(top)} bits (epsilon "
                         f"{fmt_eps((privacy.get('epsilon') or {}).get(r))})")
        lines.append(f"canary exposure, highest: {'; '.join(parts)}; log2 |R| "
                     f"{fmt(privacy.get('candidate_space_bits'))} bits")
    realism = results.get("realism") or {}
    if realism.get("profiles"):
        parts = [f"{n} {fmt(_get(p, 'divergence', 'types'))}"
                 for n, p in realism["profiles"].items()]
        lines.append(f"realism ({realism.get('source', NA)}): edit-type JSD from real, bits: "
                     + ", ".join(parts))
    return lines


# ------------------------------------------------------------------------------ sections


def _summary(results: Mapping) -> list[str]:
    lines = ["## Summary", ""]
    head = headline(results)
    lines += [f"- {h}" for h in head] if head else ["No results recorded."]
    problems = check(results)
    lines += [""]
    if problems:
        lines += [f"Numbers missing or not finite ({len(problems)}), shown as n/a:", ""]
        lines += [f"- `{p}`" for p in problems] + [""]
    return lines


def _data(results: Mapping, figures: Mapping[str, Path]) -> list[str]:
    lines = ["## Data", ""]
    data = results.get("data") or {}
    if data:
        lines += table(["quantity", "value"],
                       [(k, fmt(v) if is_number(v) or v is None else str(v))
                        for k, v in _flatten(data)])
    else:
        lines += ["No data summary recorded.", ""]
    if "touch_heatmap" in figures:
        lines += ["Where simulated taps land on the en-US phone keyboard for the posture "
                  "presets (pangrams typed with each profile; key rectangles from the layout "
                  "file):", ""]
        lines += _image(figures, "touch_heatmap", "touch heatmap")
    return lines


def _nwp(results: Mapping, figures: Mapping[str, Path]) -> list[str]:
    lines = ["## Next-word prediction", ""]
    runs = _get(results, "nwp", "runs") or {}
    if not runs:
        return lines + ["No next-word runs in this report.", ""]
    lines += ["Held-out test metrics per run. The headline accuracy is over word targets "
              "only (`accuracy`, `top3_accuracy`: OOV and end-of-message targets excluded, as "
              "TFF's `accuracy_no_oov_or_eos`); the columns marked incl. OOV/EOS count every "
              "non-padding target. KSR: keystroke savings rate.", ""]
    header = ["run", *(lab for _, lab in NWP_COLUMNS), "epsilon", "delta"]
    rows = []
    for run, r in runs.items():
        t = r.get("test") or {}
        rows.append([run, *(fmt(t.get(k)) for k, _ in NWP_COLUMNS), fmt_eps(r.get("epsilon")),
                     fmt_eps(r.get("delta")) if r.get("delta") is not None else "none"])
    lines += table(header, rows)
    shown = {k for k, _ in NWP_COLUMNS}
    extra: list[str] = []
    for r in runs.values():
        extra += [k for k, _ in _flatten(r.get("test") or {}) if k not in shown and k not in extra]
    if extra:
        lines += ["Further test numbers:", ""]
        flat = {run: dict(_flatten(r.get("test") or {})) for run, r in runs.items()}
        lines += table(["quantity", *runs], [[k, *(fmt(flat[run].get(k)) for run in runs)]
                                             for k in extra])
    lines += ["### Learning curves", ""]
    rounds = {run: len(r.get("curve") or []) for run, r in runs.items()}
    lines += ["Held-out loss, top-1 and top-3 accuracy after each logged round ("
              + ", ".join(f"{run}: {fmt(n)} points" for run, n in rounds.items())
              + "); epsilon spent so far on the twin axis for runs with differential privacy.",
              ""]
    lines += _image(figures, "learning_curves", "learning curves")
    lines += ["### Accuracy by client size", ""]
    by_size = _get(results, "nwp", "by_client_size") or {}
    if not by_size:
        lines += ["No per-client-size evaluation recorded.", ""]
    for run, buckets in by_size.items():
        lines += [f"Run `{run}`:", ""]
        lines += table(["client size", "clients", "words", "top-1", "top-3"],
                       [[b, fmt(v.get("clients")), fmt(v.get("words")), fmt(v.get("accuracy")),
                         fmt(v.get("top3_accuracy"))] for b, v in buckets.items()])
    lines += _image(figures, "accuracy_by_client_size", "accuracy by client size")
    return lines


def _correction(results: Mapping, figures: Mapping[str, Path]) -> list[str]:
    lines = ["## Proofreading and correction", ""]
    sets = _get(results, "correction", "sets") or {}
    if not sets:
        return lines + ["No correction sets in this report.", ""]
    level = _get(results, "correction", "ci_level")
    level_text = f" ({fmt(level)} coverage)" if is_number(level) else ""
    lines += ["Each cell: the metric over the set's messages and its bootstrap percentile "
              f"interval{level_text} over messages [lo, hi]. Gains are the corrector's metric "
              f"minus that of `{BASELINE}` on the same messages, with paired bootstrap "
              "intervals.", ""]
    skipped = _get(results, "correction", "skipped") or {}
    for name, why in skipped.items():
        lines += [f"Set `{name}` was not evaluated: {why}.", ""]
    for name, s in sets.items():
        lines += [f"### {name}", "",
                  f"Source: {s.get('source', NA)}; messages: {fmt(s.get('messages'))}.", ""]
        correctors = s.get("correctors") or {}
        keys: list[str] = []
        for c in correctors.values():
            keys += [k for k, v in (c.get("metrics") or {}).items()
                     if k not in keys and (is_number(v) or v is None)]
        if keys:
            lines += table(["metric", *correctors],
                           [[k, *(fmt_ci(_get(c, "metrics", k), _get(c, "ci", k))
                                  for c in correctors.values())] for k in keys])
        gainers = {n: c for n, c in correctors.items() if c.get("gain")}
        gkeys: list[str] = []
        for c in gainers.values():
            gkeys += [k for k in c["gain"] if k not in gkeys]
        if gkeys:
            lines += [f"Gain over `{BASELINE}`:", ""]
            lines += table(["metric", *gainers],
                           [[k, *(fmt_ci(_get(c, "gain", k, "value"), _get(c, "gain", k, "ci"))
                                  for c in gainers.values())] for k in gkeys])
        fix = s.get("fix_rate_by_type") or {}
        if fix:
            types: list[str] = []
            for per in fix.values():
                types += [t for t in per if t not in types]

            def cell(c) -> str:
                if not isinstance(c, Mapping):
                    return NA
                tot, fixed = c.get("total"), c.get("fixed")
                rate = fixed / tot if is_number(fixed) and is_number(tot) and tot else None
                return f"{fmt(fixed)}/{fmt(tot)} ({fmt(rate)})"

            lines += ["Errors fixed per error type (fixed/total, rate):", ""]
            lines += table(["error type", *fix], [[t, *(cell(per.get(t)) for per in fix.values())]
                                                  for t in types])
        lines += _image(figures, f"fix_rate_{_safe(name)}", f"fix rate per error type, {name}")
    return lines


def _privacy(results: Mapping, figures: Mapping[str, Path]) -> list[str]:
    lines = ["## Privacy audit", ""]
    p = results.get("privacy") or {}
    canaries = p.get("canaries") or []
    if not canaries:
        return lines + ["No canaries in this report.", ""]
    eps = p.get("epsilon") or {}
    runs: list[str] = []
    for c in canaries:
        runs += [r for r in (c.get("exposure") or {}) if r not in runs]
    ceiling = p.get("max_exposure_bits")
    lines += [f"Canary exposure in bits (higher: more memorised), per run beside its "
              f"differential-privacy epsilon (delta {fmt_eps(p.get('delta'))}). The candidate "
              f"space holds 2^{fmt(p.get('candidate_space_bits'))} random parts"
              + (f"; ranked among sampled candidates, exposure is measured up to "
                 f"{fmt(ceiling)} bits" if ceiling is not None else "")
              + ". Rounds: how many rounds the canary's client took part in (a client never "
              "sampled cannot leak its canary).", ""]
    lines += table(["run", "epsilon"], [[r, fmt_eps(eps.get(r))] for r in runs])
    with_rounds = any("rounds" in c for c in canaries)
    lines += table(["canary", "repetitions", *(["rounds"] if with_rounds else []),
                    *(f"exposure {r}" for r in runs)],
                   [[c.get("id", NA), fmt(c.get("repetitions")),
                     *([fmt(c.get("rounds"))] if with_rounds else []),
                     *(fmt((c.get("exposure") or {}).get(r)) for r in runs)] for c in canaries])
    lines += _image(figures, "canary_exposure", "canary exposure")
    return lines


def _realism(results: Mapping, figures: Mapping[str, Path]) -> list[str]:
    lines = ["## Realism", ""]
    r = results.get("realism") or {}
    profiles = r.get("profiles") or {}
    if not profiles:
        why = f" (skipped: {r['skipped']})" if r.get("skipped") else ""
        return lines + [f"No realism comparison in this report{why}.", ""]
    real = r.get("real") or {}
    cal = _get(r, "split", "calibrate") or {}
    cmp_ = _get(r, "split", "compare") or {}
    lines += [f"Real pairs: {r.get('source', NA)}. Calibrated on {fmt(cal.get('pairs'))} pairs "
              f"of {fmt(cal.get('participants'))} participants; compared on the "
              f"{fmt(cmp_.get('pairs'))} pairs of {fmt(cmp_.get('participants'))} other "
              "participants, whose intended texts each profile types. Jensen-Shannon "
              "divergences in bits (0 = same mix, 1 = disjoint; lower is closer).", ""]
    rows = [["real (held out)", "", "", fmt(real.get("cer")), fmt(real.get("error_share")),
             fmt(real.get("edits")), "", "", "", ""]]
    for name, p in profiles.items():
        s, d = p.get("simulated") or {}, p.get("divergence") or {}
        rows.append([name, p.get("layout", NA), "yes" if p.get("calibrated") else "no",
                     fmt(s.get("cer")), fmt(s.get("error_share")), fmt(s.get("edits")),
                     fmt(d.get("types")), fmt(d.get("position")), fmt(d.get("per_text")),
                     fmt(d.get("combined"))])
    lines += table(["profile", "layout", "calibrated", "CER", "texts with error", "edits",
                    "JSD types", "JSD position", "JSD per text", "JSD combined"], rows)
    types = list(real.get("types") or {})
    for p in profiles.values():
        types += [t for t in _get(p, "simulated", "types", default={}) if t not in types]
    lines += ["Edits per type (counts):", ""]
    lines += table(["edit type", "real", *profiles],
                   [[t, fmt(_get(real, "types", t, default=0)),
                     *(fmt(_get(p, "simulated", "types", t, default=0))
                       for p in profiles.values())] for t in types])
    lines += _image(figures, "error_mix", "error-type mix, simulated vs real")
    return lines


METHOD_NOTES = """## Method notes

- Next-word accuracy: top-1 and top-3 hits of the model's ranking over the vocabulary (Gboard \
reports top-1 and top-3 recall, Hard et al. 2018, "Federated Learning for Mobile Keyboard \
Prediction"); the headline excludes OOV and end-of-message targets, as TFF's Stack Overflow \
`accuracy_no_oov_or_eos`. Perplexity is the exponential of the mean cross-entropy in nats.
- Keystroke savings rate: share of the intended characters a user need not type when tapping a \
shown suggestion (Trnka & McCoy 2008, "Evaluating Word Prediction: Framing Keystroke Savings").
- Federated training and privacy: FedAvg (McMahan et al. 2017) and DP-FedAvg with per-user \
clipping and Gaussian noise (McMahan et al. 2018, "Learning Differentially Private Recurrent \
Language Models"); epsilon at the stated delta from the run's privacy accountant (Renyi \
differential privacy, Mironov 2017; Poisson-subsampled Gaussian).
- Canary exposure: log2 of the candidate-space size minus log2 of the canary's rank by \
log-perplexity (Carlini et al. 2019, "The Secret Sharer"), estimated from sampled candidates; \
canaries repeated in some users' data as in Ramaswamy et al. 2020.
- Correction: character and word error rates are edit distances over reference length \
(Levenshtein 1966); edit precision, recall and F0.5 as in the CoNLL-2014 shared task (Ng et al. \
2014); fix rate per error type counts the simulator's (or the aligner's) labelled errors that \
the corrector restored.
- Confidence intervals: bootstrap percentile intervals resampling messages (Efron & Tibshirani \
1993); gains use the paired bootstrap, resampling the same messages for both systems (Koehn \
2004, "Statistical Significance Tests for Machine Translation Evaluation").
- Realism: error mixes labelled by the same alignment on both sides and compared by \
Jensen-Shannon divergence in bits (Lin 1991); real typing from the Aalto "136M Keystrokes" data \
(Dhakal, Feit, Kristensson & Oulasvirta, CHI 2018).
"""


def to_markdown(results: Mapping, figures: Mapping[str, Path] | None = None) -> str:
    """The report as Markdown; `figures` maps figure names to PNG paths (shown as
    figures/NAME.png, relative to the report)."""
    figures = figures or {}
    exp = results.get("experiment") or {}
    lines = [f"# kbsim report: {exp.get('name', 'run')}", ""]
    if exp:
        lines += [f"Config `{exp.get('config_hash', NA)}`, seed {fmt(exp.get('seed'))}, kbsim "
                  f"{exp.get('kbsim_version', NA)}, {fmt(exp.get('seconds'))} s.", ""]
    lines += _summary(results)
    lines += _data(results, figures)
    lines += _nwp(results, figures)
    lines += _correction(results, figures)
    lines += _privacy(results, figures)
    lines += _realism(results, figures)
    lines += METHOD_NOTES.splitlines()
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------ figures


def make_figures(results: Mapping, fig_dir: str | Path,
                 typists: Sequence[str] = TYPISTS) -> dict[str, Path]:
    """Draws every figure the results have data for into `fig_dir`; returns {name: path}."""
    from eval import plots
    from keyboard_sim.profile import load_profile

    fig_dir = Path(fig_dir)
    out: dict[str, Path] = {}
    seed = _get(results, "experiment", "seed", default=0)
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    if typists:
        out["touch_heatmap"] = plots.touch_heatmap(
            [(t, load_profile(t)) for t in typists], fig_dir / "touch_heatmap.png", seed=seed)
    runs = _get(results, "nwp", "runs") or {}
    if any(r.get("curve") for r in runs.values()):
        out["learning_curves"] = plots.learning_curves(runs, fig_dir / "learning_curves.png")
    by_size = _get(results, "nwp", "by_client_size") or {}
    if any(by_size.values()):
        out["accuracy_by_client_size"] = plots.accuracy_by_client_size(
            by_size, fig_dir / "accuracy_by_client_size.png")
    for name, s in (_get(results, "correction", "sets") or {}).items():
        fix = s.get("fix_rate_by_type") or {}
        if any(c.get("total") for per in fix.values() for c in per.values()):
            key = f"fix_rate_{_safe(name)}"
            out[key] = plots.fix_rate_by_type(fix, fig_dir / f"{key}.png", title=name)
    if _get(results, "privacy", "canaries"):
        out["canary_exposure"] = plots.canary_exposure(results["privacy"],
                                                       fig_dir / "canary_exposure.png")
    if _get(results, "realism", "profiles"):
        out["error_mix"] = plots.error_mix(results["realism"], fig_dir / "error_mix.png")
    return out


# --------------------------------------------------------------------------------- HTML

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 62em;
       margin: 2em auto; padding: 0 1em; line-height: 1.45; color: #1f2328; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; }
th { background: #f6f8fa; } tr:nth-child(even) td { background: #fbfbfc; }
code { background: #f0f2f4; padding: 0 .25em; border-radius: 3px; font-size: .9em; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0 1.2em; }
"""
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_PIPE = re.compile(r"(?<!\\)\|")


def _inline(text: str) -> str:
    parts = text.split("`")
    out = []
    for i, p in enumerate(parts):
        esc = html.escape(p, quote=False)
        out.append(f"<code>{esc}</code>" if i % 2 else esc)
    if len(parts) % 2 == 0:  # an unmatched backtick: keep it literally
        return html.escape(text, quote=False)
    return "".join(out)


def _row(line: str) -> list[str]:
    cells = _PIPE.split(line.strip().strip("|") if line.strip() != "|" else "")
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(markdown: str, images: Mapping[str, bytes], title: str = "kbsim report"
                     ) -> str:
    """Renders the Markdown this module writes as a standalone HTML page.

    Args:
        markdown: `to_markdown` output.
        images: PNG bytes by the image path written in the Markdown (figures/NAME.png); each
            is embedded as a base64 data URI.
        title: The page title.

    Raises:
        ReportError: An image path has no bytes in `images`.
    """
    body: list[str] = []
    para: list[str] = []
    items: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if rows:
            head, rest = rows[0], rows[1:]
            if rest and all(c and set(c) <= set("-:") for c in rest[0]):
                rest = rest[1:]  # the header separator
            out = ["<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                   + "</tr></thead><tbody>"]
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                    for r in rest]
            body.append("".join(out) + "</tbody></table>")
            rows.clear()

    for line in markdown.splitlines():
        s = line.strip()
        m = _IMAGE.match(s)
        heading = re.match(r"^(#{1,6}) (.*)$", s)
        if not s:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif m:
            flush()
            alt, src = m.groups()
            if src not in images:
                raise ReportError(f"report.html: image {src} was not drawn")
            data = base64.b64encode(images[src]).decode("ascii")
            body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        elif s.startswith("|"):
            if para or items:
                flush()
            rows.append(_row(s))
        elif s.startswith("- "):
            if para or rows:
                flush()
            items.append(s[2:])
        else:
            if items and line.startswith("  "):  # continuation of a list item
                items[-1] += " " + s
                continue
            if rows or items:
                flush()
            para.append(s)
    flush()
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------------- write


def write_report(results: Mapping, out_dir: str | Path, figures: bool = True, *,
                 typists: Sequence[str] = TYPISTS) -> dict[str, Path]:
    """Writes report.md, figures/*.png (when `figures`) and a self-contained report.html.

    Args:
        results: The run's results (see the module doc for the schema).
        out_dir: The run folder; created if missing.
        figures: Draw the plots (needs matplotlib); without them the report has tables only.
        typists: Posture presets shown in the touch heatmap (empty: no heatmap).

    Returns:
        {"markdown": report.md, "html": report.html, and one entry per figure by name}.

    Raises:
        ReportError: `results` is not a mapping.
    """
    if not isinstance(results, Mapping):
        raise ReportError(f"write_report: results must be a mapping, got "
                          f"{type(results).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = make_figures(results, out / "figures", typists) if figures else {}
    md = to_markdown(results, figs)
    md_path = out / "report.md"
    md_path.write_text(md, encoding="utf-8")
    images = {f"figures/{p.name}": p.read_bytes() for p in figs.values()}
    name = _get(results, "experiment", "name", default="run")
    html_path = out / "report.html"
    html_path.write_text(markdown_to_html(md, images, f"kbsim report: {name}"), encoding="utf-8")
    return {"markdown": md_path, "html": html_path, **figs}
