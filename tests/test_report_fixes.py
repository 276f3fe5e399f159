"""Report fixes a reader needs (issue 12) and escaping of untrusted text (issue 11), each against a
small database written here; metric names come from the evaluations' declarations."""

from __future__ import annotations

import re

import pytest
from test_report import name

from robustlab.bench import ResultStore
from robustlab.bench.report import leaderboard_markdown, load_report_data, to_html, to_markdown

BASE = {"data": "digits", "noise": "none", "noise_kind": "none", "noise_rate": 0.0, "model": "mlp", "loss": "ce",
        "objective": "standard"}


def write_runs(out, runs, spec="s") -> None:
    """``runs``: (labels overrides, seed, metrics dict, status/error) -> a results database."""
    with ResultStore(out) as st:
        st.record_sweep(spec, '{"name": "s"}', executor="local")
        for i, (over, seed, metrics, *err) in enumerate(runs):
            labels = {**BASE, **over, "seed": seed}
            rid = f"{i:04d}".ljust(64, "0")
            st.claim(rid, spec=spec, config={"seed": seed, "labels": {k: v for k, v in labels.items() if k != "seed"}},
                     labels=labels, owner="t", executor="local")
            result = {"status": "failed" if err else "completed", "metrics": [(n, v, -1) for n, v in metrics.items()]}
            if err:
                result["error"] = err[0]
            st.finish(rid, result)


def _row(md: str, first: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_a_collapsed_seed_is_flagged_not_averaged(tmp_path):
    # seed 1 predicts one class only: averaging it in gave "0.475 ± 0.601" for a 0.9 model
    healthy = {name("acc/clean"): 0.9, name("pred/missing_classes"): 0.0, name("acc/chance"): 0.1}
    collapsed = {name("acc/clean"): 0.1, name("pred/missing_classes"): 9.0, name("acc/chance"): 0.1}
    at_chance = {name("acc/clean"): 0.1, name("pred/missing_classes"): 0.0, name("acc/chance"): 0.1}
    write_runs(tmp_path, [({}, 0, healthy), ({}, 1, collapsed), ({"loss": "gce"}, 0, at_chance),
                          ({"loss": "gce"}, 1, at_chance)])
    rd = load_report_data(tmp_path)
    md = leaderboard_markdown(rd)
    ce, gce = _row(md, "ce"), _row(md, "gce")
    assert ce[1:3] == ["1 (+1 collapsed)", "**0.900**"]
    assert gce[1] == "2 collapsed" and "**" not in gce[2]  # every seed collapsed: shown, flagged, never "best"
    text = to_markdown(rd)
    assert "3 run(s) collapsed" in text and "9 class(es) never predicted" in text and "at chance" in text
    assert "collapsed: 9 class(es) never predicted" in to_html(rd)


def test_collapse_is_recognised_in_results_written_before_the_collapse_metrics():
    from robustlab.bench.evaluations import collapse_reason

    per_class = {name("acc/class/{cls}", cls=k): v for k, v in enumerate([0.9, 0.8, 0.0])}
    assert "1 class(es) never correctly predicted" in collapse_reason({name("acc/clean"): 0.6, **per_class})
    flat = {name("acc/class/{cls}", cls=k): 0.3 for k in range(3)}
    assert "at chance" in collapse_reason({name("acc/clean"): 0.3, **flat})
    assert collapse_reason({name("acc/clean"): 0.6, **flat}) is None


def test_plot_axes_use_the_data_range():
    from robustlab.bench import _svg

    svg = _svg.line_chart([{"label": "a", "x": [0.0, 0.2, 0.4], "y": [0.82, 0.85, 0.88]}], title="t", xlabel="x",
                          ylabel="y")
    ticks = [float(t) for t in re.findall(r'text-anchor="end">([0-9.e-]+)</text>', svg)]
    assert ticks and min(ticks) >= 0.8 and max(ticks) <= 0.9  # not the fixed [0, 1] that flattened the lines
    bars = _svg.bar_chart(["a", "b"], [{"label": "s", "y": [0.2, 0.3]}], title="t", ylabel="y")
    assert max(float(t) for t in re.findall(r'text-anchor="end">([0-9.e-]+)</text>', bars)) <= 0.35


def _conformal_db(tmp_path):
    runs = []
    for loss, size in (("ce", 1.2), ("gce", 1.8)):
        for seed in (0, 1):
            runs.append(({"loss": loss}, seed, {name("acc/clean"): 0.9, name("conformal/{score}/coverage", score="aps"): 0.91,
                                                name("conformal/{score}/set_size", score="aps"): size,
                                                name("conformal/{score}/target", score="aps"): 0.9}))
    write_runs(tmp_path, runs)


def test_conformal_points_are_labelled_without_hovering(tmp_path):
    _conformal_db(tmp_path)
    html = to_html(load_report_data(tmp_path))
    svg = html[html.index("digits — conformal sets"):]
    svg = svg[:svg.index("</svg>")]
    visible = re.sub(r"<title>.*?</title>", "", svg)  # tooltips need hovering; the text must be outside them
    assert re.search(r"<text [^>]*>ce</text>", visible) and re.search(r"<text [^>]*>gce</text>", visible)


def test_smoothing_radii_beyond_the_certifiable_one_are_not_results(tmp_path):
    runs = []
    for loss, acc in (("ce", 0.8), ("gce", 0.7)):
        for seed in (0, 1):
            runs.append(({"loss": loss}, seed, {name("acc/clean"): acc, name("cert_acc/rs/r={r}", r=0.25): acc / 2,
                                                name("cert_acc/rs/r={r}", r=0.75): 0.0,
                                                name("cert/rs/radius_max"): 0.424}))
    write_runs(tmp_path, runs)
    rd = load_report_data(tmp_path)
    md = leaderboard_markdown(rd)
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    col = header.index("RS cert r=0.75")
    assert _row(md, "ce")[col] == "n/a (max 0.424)" and _row(md, "gce")[col] == "n/a (max 0.424)"
    assert _row(md, "ce")[header.index("RS cert r=0.25")].startswith("**0.400")
    compact = leaderboard_markdown(rd, compact=True)  # what `bench run` prints: one radius, a certifiable one
    assert "RS cert r=0.25" in compact and "r=0.75" not in compact
    html = to_html(rd)
    svg = html[html.index("randomized smoothing certified accuracy"):]
    svg = svg[:svg.index("</svg>")]
    xticks = [float(t) for t in re.findall(r'font-size="10" text-anchor="middle">([0-9.e-]+)</text>', svg)]
    assert xticks and max(xticks) < 0.75  # r = 0.75 is not drawn (as a 0)
    assert "max certifiable" in svg and "σ·Φ⁻¹(α^(1/n))" in html


HOSTILE = "evil|loss\nnext <script>alert(1)</script> \x1b[31mred\x1b[0m *x* `y`"


def test_untrusted_text_is_escaped_in_markdown_html_and_the_terminal(tmp_path, capsys):
    from robustlab.cli import main

    runs = [({"loss": HOSTILE}, s, {name("acc/clean"): 0.8}) for s in (0, 1)]
    runs += [({"loss": "ce"}, s, {name("acc/clean"): 0.7}) for s in (0, 1)]
    runs.append(({"loss": "bad"}, 0, {}, "ValueError: x | y\n<img src=x onerror=alert(1)> \x1b]0;title\x07"))
    write_runs(tmp_path, runs, spec="spec|<b>name</b>\n")
    rd = load_report_data(tmp_path)
    md = to_markdown(rd)
    assert "\x1b" not in md and "\x07" not in md and not re.search(r"(?<!\\)<", md)  # no raw HTML
    for table in re.findall(r"(?:^\|.*\n)+", md, re.M):  # '|' in a label is escaped: rows keep their columns
        assert len({len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}) == 1, table
    assert md.splitlines()[0] == r"# robustlab benchmark report: spec\|\<b\>name\</b\>"
    html = to_html(rd)
    assert "\x1b" not in html and "<script>alert" not in html and "<img" not in html and "<b>name" not in html
    assert html.count("<script>") == 1  # the report's own sorting script only
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.md"), "--leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\|loss next" in out


def test_leaderboard_and_plots_follow_the_declarations(tmp_path, monkeypatch):
    # a metric becomes a column, with its declared header and direction, only by being declared
    from robustlab._registry import Spec
    from robustlab.bench.evaluations import EVALUATIONS, Evaluation, Metric

    class Toy(Evaluation):
        metrics = (Metric("toy/err/eps={eps}", "toy error ε={eps}", higher_is_better=False, leaderboard=True,
                          plots=(("robust_eps", "y"),)),)

    runs = [({"loss": loss}, s, {name("acc/clean"): 0.8, "toy/err/eps=0.1": v, "undeclared/thing": 5.0})
            for loss, v in (("ce", 0.3), ("gce", 0.2)) for s in (0, 1)]
    write_runs(tmp_path, runs)
    md = leaderboard_markdown(load_report_data(tmp_path))
    assert "toy error" not in md and "undeclared" not in md
    monkeypatch.setitem(EVALUATIONS._specs, "toy", Spec("toy", Toy))
    rd = load_report_data(tmp_path)
    md = leaderboard_markdown(rd)
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    assert "toy error ε=0.1" in header and "undeclared" not in md
    col = header.index("toy error ε=0.1")
    assert _row(md, "gce")[col].startswith("**0.200") and _row(md, "ce")[col].startswith("0.300")  # lower is better
    assert "digits — robust accuracy vs ε" in to_html(rd)


@pytest.mark.parametrize("text", [HOSTILE, "a\r\nb", "\x9b31mc"])
def test_md_escape_and_plain_leave_no_markup_or_controls(text):
    from robustlab.bench.report import md_escape, plain

    for s in (md_escape(text), plain(text)):
        assert "\n" not in s and "\r" not in s and "\x1b" not in s and "\x9b" not in s
    assert not re.search(r"(?<!\\)[|<>`*]", md_escape(text))
