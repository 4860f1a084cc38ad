"""eval.report: report.md and a self-contained report.html, every number taken from results."""

from __future__ import annotations

import base64
import copy
import math
import re

import matplotlib.image
import pytest

from eval.realism import compare_mixes, mix_summary
from eval.report import (
    ReportError,
    check,
    fmt,
    fmt_ci,
    headline,
    markdown_to_html,
    to_markdown,
    write_report,
)
from keyboard_sim.fidelity import ErrorMix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("## Summary", "## Data", "## Next-word prediction", "### Learning curves",
            "### Accuracy by client size", "## Proofreading and correction", "## Privacy audit",
            "## Realism", "## Method notes")


def make_results() -> dict:
    """A results dict in the runner's schema, the realism part from the real code path."""
    real = ErrorMix.of_pairs([("the cat", "teh cat"), ("a dog.", "a dog")], None)
    sim = ErrorMix.of_pairs([("the cat", "hte cat"), ("a dog.", "a dgo.")], None)
    curve = lambda a, e: [{"round": r, "loss": 6.0 - a * r, "accuracy": 0.03 * r,  # noqa: E731
                           "top3_accuracy": 0.05 * r, "epsilon": e and e * r} for r in (1, 2)]
    test = lambda acc: {"loss": 4.25, "perplexity": 70.11, "accuracy": acc,  # noqa: E731
                        "top3_accuracy": 0.2468, "accuracy_all": 0.1111,
                        "top3_accuracy_all": 0.2222, "tokens": 5000, "ksr": 0.3141}
    return {
        "experiment": {"name": "tiny", "config_hash": "c0ffee12", "seed": 3,
                       "kbsim_version": "0.0.1", "seconds": 12.5},
        "data": {"clients": {"train": 40, "test": 10}, "messages": 1234, "pair_cer": 0.0789},
        "nwp": {
            "runs": {"federated": {"curve": curve(0.5, None), "test": test(0.1357),
                                   "epsilon": None, "delta": None},
                     "federated_dp": {"curve": curve(0.4, 1.5), "test": test(0.0975),
                                      "epsilon": 3.25, "delta": 1e-5}},
            "by_client_size": {"federated": {"1-9": {"accuracy": 0.0912, "top3_accuracy": 0.1823,
                                                     "clients": 7, "words": 321}}},
        },
        "correction": {"sets": {"simulated_test": {
            "source": "simulated (committed preset)", "messages": 250,
            "correctors": {
                "no correction": {"metrics": {"cer_after": 0.0456, "edit_f05": 0.0},
                                  "ci": {"cer_after": [0.0401, 0.0512]}, "gain": {}},
                "symspell": {"metrics": {"cer_after": 0.0321, "edit_f05": 0.4321},
                             "ci": {"cer_after": [0.0288, 0.0355], "edit_f05": [0.39, 0.47]},
                             "gain": {"cer_after": {"value": -0.0135,
                                                    "ci": [-0.0171, -0.0102]}}},
            },
            "fix_rate_by_type": {"symspell": {"substitution": {"total": 8, "fixed": 6}}},
        }}},
        "privacy": {"canaries": [{"id": "canary-0", "repetitions": 4,
                                  "exposure": {"federated": 7.75, "federated_dp": 1.25}}],
                    "epsilon": {"federated": None, "federated_dp": 3.25}, "delta": 1e-5,
                    "candidate_space_bits": 39.86},
        "realism": {"source": "hand pairs", "seed": 0, "limit": None,
                    "split": {"calibrate": {"pairs": 2, "participants": 1},
                              "compare": {"pairs": 2, "participants": 1}},
                    "real": mix_summary(real),
                    "profiles": {"physical": {"profile": "physical", "layout": "en-US-physical",
                                              "calibrated": False, **compare_mixes(real, sim)}}},
    }


def md_table(md: str, header_start: str) -> list[list[str]]:
    """The rows (header first) of the first table whose header starts with `header_start`."""
    lines = md.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("| " + header_start))
    rows = []
    for ln in lines[i:]:
        if not ln.startswith("|"):
            break
        if not ln.startswith("|---"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", ln.strip().strip("|"))])
    return rows


def numbers(x, path=""):
    """(path, value) of every finite int/float leaf."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        yield path, x


def test_fmt_golden():
    assert fmt(0.1357) == "0.1357"
    assert fmt(0.013579) == "0.01358"  # four significant digits
    assert fmt(70.11) == "70.11"
    assert fmt(1234.56) == "1,234.6"
    assert fmt(5000) == "5,000"
    assert fmt(1e-5) == "1e-05"
    for bad in (None, math.nan, math.inf, True, "0.5"):
        assert fmt(bad) == "n/a"
    assert fmt_ci(0.5, [0.25, 0.75]) == "0.5 [0.25, 0.75]"
    assert fmt_ci(0.5, None) == "0.5"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = make_results()
    paths = write_report(results, out)
    return results, out, paths


def test_every_section_and_figure(written):
    _, out, paths = written
    md = paths["markdown"].read_text(encoding="utf-8")
    html = paths["html"].read_text(encoding="utf-8")
    for s in SECTIONS:
        assert s in md, s
        assert f"<h{s.count('#')}>{s.lstrip('# ')}</h{s.count('#')}>" in html, s
    figs = {k: p for k, p in paths.items() if k not in ("markdown", "html")}
    assert set(figs) == {"touch_heatmap", "learning_curves", "accuracy_by_client_size",
                         "fix_rate_simulated_test", "canary_exposure", "error_mix"}
    for name, p in figs.items():
        assert p.parent == out / "figures"
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert matplotlib.image.imread(p).ndim == 3
        assert f"](figures/{p.name})" in md


def test_html_is_self_contained(written):
    _, _, paths = written
    html = paths["html"].read_text(encoding="utf-8")
    srcs = re.findall(r'src="([^"]*)"', html)
    figs = [p for k, p in paths.items() if k not in ("markdown", "html")]
    assert len(srcs) == len(figs)
    embedded = set()
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        embedded.add(base64.b64decode(s.split(",", 1)[1]))
    assert embedded == {p.read_bytes() for p in figs}
    assert "<style>" in html
    for external in ("http://", "https://", "<link", "<script", "href="):
        assert external not in html


def test_numbers_equal_results(written):
    results, _, paths = written
    md = paths["markdown"].read_text(encoding="utf-8")
    nwp = md_table(md, "run | top-1 (headline)")
    assert nwp[0][:3] == ["run", "top-1 (headline)", "top-3 (headline)"]
    assert nwp[1] == ["federated", "0.1357", "0.2468", "0.1111", "0.2222", "70.11", "4.25",
                      "0.3141", "none (no DP)", "none"]
    assert nwp[2][:2] == ["federated_dp", "0.0975"] and nwp[2][-2:] == ["3.25", "1e-05"]
    corr = md_table(md, "metric | no correction | symspell")
    assert corr[1] == ["cer_after", "0.0456 [0.0401, 0.0512]", "0.0321 [0.0288, 0.0355]"]
    assert corr[2] == ["edit_f05", "0", "0.4321 [0.39, 0.47]"]
    gain = md_table(md, "metric | symspell")
    assert gain[1] == ["cer_after", "-0.0135 [-0.0171, -0.0102]"]
    fix = md_table(md, "error type | symspell")
    assert fix[1] == ["substitution", "6/8 (0.75)"]  # 6 fixed of 8
    canary = md_table(md, "canary | repetitions")
    assert canary[1] == ["canary-0", "4", "7.75", "1.25"]
    size = md_table(md, "client size")
    assert size[1] == ["1-9", "7", "321", "0.0912", "0.1823"]
    real = md_table(md, "profile | layout")
    # Hand pairs: CER 2/13 = 0.1538 on both sides; JSD types = position = 0.3113 bits (see
    # tests/test_realism.py), per text 0, combined 0.2075.
    assert real[2] == ["physical", "en-US-physical", "no", "0.1538", "1", "2", "0.3113",
                       "0.3113", "0", "0.2075"]
    data = md_table(md, "quantity | value")
    assert ["clients.train", "40"] in data and ["messages", "1,234"] in data
    # Every finite number of the results (but the curves, which are plotted, not tabulated)
    # appears in the report as `fmt` writes it.
    for path, v in numbers(results):
        if ".curve[" in path or path.startswith(".realism.profiles.physical.simulated"):
            continue
        if path.startswith((".realism.real.", ".realism.seed", ".realism.split.calibrate")):
            continue
        assert fmt(v) in md, path


def test_numbers_follow_the_results(tmp_path):
    # Change the results and the report changes with them: nothing is typed in.
    a = make_results()
    b = copy.deepcopy(a)
    b["nwp"]["runs"]["federated"]["test"]["accuracy"] = 0.4321
    b["privacy"]["canaries"][0]["exposure"]["federated"] = 9.5
    md_a, md_b = to_markdown(a), to_markdown(b)
    assert "| federated | 0.1357 |" in md_a and "| federated | 0.4321 |" in md_b
    assert "| canary-0 | 4 | 9.5 | 1.25 |" in md_b


def test_headline_golden():
    lines = headline(make_results())
    assert lines[0] == "tiny: seed 3, config c0ffee12, kbsim 0.0.1, 12.5 s"
    assert lines[1] == ("next-word federated: top-1 0.1357, top-3 0.2468 (words, without "
                        "OOV/EOS), perplexity 70.11, KSR 0.3141, epsilon none (no DP)")
    assert lines[2].endswith("epsilon 3.25")
    assert lines[3] == ("correction simulated_test (250 messages), cer_after: no correction "
                        "0.0456; symspell 0.0321 (gain -0.0135 [-0.0171, -0.0102])")
    assert lines[4] == ("canary exposure, highest: federated 7.75 bits (epsilon none (no DP)); "
                        "federated_dp 1.25 bits (epsilon 3.25); log2 |R| 39.86 bits")
    assert lines[5] == "realism (hand pairs): edit-type JSD from real, bits: physical 0.3113"


def test_missing_numbers_are_na_and_checked():
    r = make_results()
    assert check(r) == []  # None epsilon/delta/limit mean "no DP" / "no limit"
    r["nwp"]["runs"]["federated"]["test"]["accuracy"] = math.nan
    r["nwp"]["runs"]["federated"]["test"]["ksr"] = None
    r["correction"]["sets"]["simulated_test"]["correctors"]["symspell"]["ci"]["cer_after"] = [
        0.02, math.inf]
    problems = check(r)
    assert problems == ["nwp.runs.federated.test.accuracy: nan",
                        "nwp.runs.federated.test.ksr: None",
                        "correction.sets.simulated_test.correctors.symspell.ci.cer_after[1]: inf"]
    md = to_markdown(r)
    assert md_table(md, "run | top-1")[1][1] == "n/a"
    assert "0.0321 [0.02, n/a]" in md
    assert "`nwp.runs.federated.test.ksr: None`" in md  # listed in the summary


def test_empty_results_keep_every_section(tmp_path):
    paths = write_report({"experiment": {"name": "empty"}}, tmp_path / "r", figures=True,
                         typists=())
    md = paths["markdown"].read_text(encoding="utf-8")
    for s in SECTIONS:
        assert s in md or s.startswith("###")
    assert "No next-word runs" in md and "No canaries" in md
    assert set(paths) == {"markdown", "html"}


def test_no_figures(tmp_path):
    paths = write_report(make_results(), tmp_path, figures=False)
    assert set(paths) == {"markdown", "html"}
    assert not (tmp_path / "figures").exists()
    assert "<img" not in paths["html"].read_text(encoding="utf-8")
    assert "![" not in paths["markdown"].read_text(encoding="utf-8")


def test_markdown_to_html_golden():
    md = ("# Title\n\nSome `code` & text\ncontinued.\n\n- one\n- two\n\n"
          "| a | b\\|c |\n|---|---|\n| 1 | <2> |\n\n![fig](figures/x.png)\n")
    html = markdown_to_html(md, {"figures/x.png": b"PNGDATA"}, title="t")
    body = html.split("<body>\n", 1)[1].split("\n</body>", 1)[0]
    assert body.splitlines() == [
        "<h1>Title</h1>",
        "<p>Some <code>code</code> &amp; text continued.</p>",
        "<ul><li>one</li><li>two</li></ul>",
        "<table><thead><tr><th>a</th><th>b|c</th></tr></thead><tbody><tr><td>1</td>"
        "<td>&lt;2&gt;</td></tr></tbody></table>",
        f'<img alt="fig" src="data:image/png;base64,{base64.b64encode(b"PNGDATA").decode()}">',
    ]
    with pytest.raises(ReportError, match="figures/y.png"):
        markdown_to_html("![f](figures/y.png)\n", {})


def test_bad_results(tmp_path):
    with pytest.raises(ReportError, match="mapping"):
        write_report([1, 2], tmp_path)
