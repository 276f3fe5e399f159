"""The report is built from the database alone and shows what is in it (checked against numpy)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from robustlab.bench import ResultStore
from robustlab.bench.evaluations import declared_metrics
from robustlab.bench.report import leaderboard_markdown, load_report_data, to_html, to_markdown, write_report


def name(pattern: str, **values) -> str:
    """A metric name from its declaration (a pattern no evaluation declares fails here, loudly)."""
    decl = {m.pattern: m for _, m in declared_metrics()}
    assert pattern in decl, f"no evaluation declares '{pattern}'"
    return decl[pattern].name(**values)

LOSSES = ("ce", "gce", "aldr_kl")
RATES = (0.0, 0.2, 0.4)
EPS = (0.05, 0.1, 0.2)


def _value(loss: str, rate: float, seed: int, salt: float = 0.0) -> float:
    rng = np.random.default_rng(abs(hash((loss, rate, seed, salt))) % 2**32)
    base = {"ce": 0.9, "gce": 0.85, "aldr_kl": 0.88}[loss] - rate * {"ce": 0.8, "gce": 0.3, "aldr_kl": 0.2}[loss]
    return float(np.clip(base + rng.normal(0, 0.01), 0, 1))


def make_db(out) -> dict:
    """A synthetic results database with every metric family; returns the values written."""
    written: dict = {}
    with ResultStore(out) as st:
        st.record_sweep("synthetic", '{"name": "synthetic", "data": ["digits"]}', executor="local")
        for loss in LOSSES:
            for rate in RATES:
                for seed in (0, 1, 2):
                    noise = "none" if rate == 0 else f"symmetric:{rate:g}"
                    labels = {"data": "digits", "noise": noise, "noise_kind": "none" if rate == 0 else "symmetric",
                              "noise_rate": rate, "model": "mlp", "loss": loss, "objective": "standard", "seed": seed}
                    config = {"seed": seed, "labels": {k: v for k, v in labels.items() if k != "seed"}}
                    rid = f"{loss}-{rate}-{seed}".ljust(64, "0")
                    st.claim(rid, spec="synthetic", config=config, labels=labels, owner="test", executor="local")
                    acc = _value(loss, rate, seed)
                    metrics = [(name("acc/clean"), acc, -1), (name("acc/worst_class"), acc - 0.1, -1),
                               (name("acc/top{k}", k=5), 0.99, -1), (name("pred/missing_classes"), 0.0, -1),
                               (name("acc/chance"), 0.1, -1), (name("train/{key}", key="loss"), 1.0, 1),
                               (name("train/{key}", key="loss"), 0.5, 2)]
                    if rate == 0:
                        for i, e in enumerate(EPS):
                            metrics.append((name("robust_acc/any/eps={eps}", eps=e), acc * (1 - e) ** (i + 2), -1))
                            metrics.append((name("robust_acc/worst_class/eps={eps}", eps=e), acc * 0.5, -1))
                            metrics.append((name("cert_acc/ibp/eps={eps}", eps=e), acc * (1 - 2 * e), -1))
                        metrics += [(name("powerlaw/k"), 1.5 + seed * 0.1, -1), (name("powerlaw/k_lo"), 1.2, -1),
                                    (name("powerlaw/k_hi"), 1.9, -1), (name("powerlaw/a"), 3.0, -1),
                                    (name("conformal/{score}/coverage", score="aps"), 0.9, -1),
                                    (name("conformal/{score}/set_size", score="aps"), 1.5 + seed, -1),
                                    (name("conformal/{score}/target", score="aps"), 0.9, -1),
                                    (name("cert_acc/rs/r={r}", r=0.0), acc, -1),
                                    (name("cert_acc/rs/r={r}", r=0.25), acc / 2, -1),
                                    (name("cert_acc/rs/r={r}", r=0.5), 0.0, -1), (name("cert/rs/radius_max"), 0.42, -1),
                                    (name("corr_acc/{corruption}/{severity}", corruption="gaussian_noise", severity=1),
                                     acc, -1),
                                    (name("corr_acc/{corruption}/{severity}", corruption="gaussian_noise", severity=3),
                                     acc - 0.2, -1),
                                    (name("corr_acc/mean"), acc - 0.1, -1)]
                    status = "failed" if (loss, rate, seed) == ("gce", 0.4, 2) else "completed"
                    result = {"status": status, "metrics": metrics, "timings": {"total_s": 1.0},
                              "env": {"robustlab": "0.1.0", "torch": "2.x", "git_commit": "abc123", "host": "h",
                                      "cpu": "Some CPU (AVX2)"}}
                    if status == "failed":
                        result.update(error="ValueError: boom <script>", traceback="Traceback ...\nValueError: boom")
                    st.finish(rid, result)
                    if status == "completed":
                        written[(loss, rate, seed)] = acc
    return written


@pytest.fixture
def db(tmp_path):
    written = make_db(tmp_path)
    return tmp_path, written


def _stats(written, loss, rate):
    vals = [v for (lo, r, _), v in written.items() if lo == loss and r == rate]
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0), len(vals)


def test_leaderboard_mean_std_and_bold_best_match_numpy(db):
    out, written = db
    md = leaderboard_markdown(load_report_data(out))
    for loss in LOSSES:
        for rate in RATES:
            m, sd, n = _stats(written, loss, rate)
            noise = "none" if rate == 0 else f"symmetric:{rate:g}"
            row = next(line for line in md.splitlines() if line.startswith(f"| {noise} | {loss} |"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[2] == str(n)
            assert cells[3].strip("*") == (f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}")
    # the best clean accuracy is bold within each group of comparable runs (same noise), not across noise rates
    bold = [line for line in md.splitlines() if line.startswith("| ") and "**" in line.split("|")[4]]
    assert len(bold) == len(RATES)
    for rate in RATES:
        best = max((_stats(written, lo, rate)[0], lo) for lo in LOSSES)
        noise = "none" if rate == 0 else f"symmetric:{rate:g}"
        assert sum(line.startswith(f"| {noise} | {best[1]} |") for line in bold) == 1, (rate, best)
    # lower-is-better column: the smallest mean set size is bold
    header = md.splitlines()[2]
    col = [c.strip() for c in header.strip("|").split("|")].index("aps set size ↓")
    rows = [line for line in md.splitlines() if line.startswith("| none |")]
    sizes = {r.split("|")[2].strip(): r.strip("|").split("|")[col].strip() for r in rows}
    assert all(v.startswith("**2.500") for v in sizes.values())  # all equal: 1.5, 2.5, 3.5 -> mean 2.5, tie


def test_html_is_self_contained_and_has_every_plot(db):
    out, _ = db
    html = to_html(load_report_data(out))
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "<img" not in html
    for section in ("Leaderboard", "Accuracy vs label-noise rate", "Robust accuracy vs ε", "Certified accuracy vs radius",
                    "Conformal coverage vs set size", "Per-class disparity", "Accuracy under corruptions", "Environment",
                    "Spec", "Failed runs (1)"):
        assert f">{section}</h2>" in html, section
    svgs = re.findall(r'<svg [^>]*width="(\d+)" height="(\d+)"', html)
    assert len(svgs) == 7 and all(int(w) > 0 and int(h) > 0 for w, h in svgs)
    # the power-law exponent (mean over seeds 1.5, 1.6, 1.7) is in the robust-accuracy legend, on a line of
    # its own (a long configuration label used to truncate it away), and the fitted curve is drawn
    eps_svg = html[html.index("digits — robust accuracy vs ε"):]
    eps_svg = eps_svg[:eps_svg.index("</svg>")]
    assert re.search(r">k = 1\.60 \[1\.20, 1\.90\]</text>", eps_svg)
    assert len(re.findall(r"<title>[^<]*: power-law fit</title>", eps_svg)) == 3
    # untrusted text is escaped
    assert "boom &lt;script&gt;" in html and "boom <script>" not in html
    # accuracy-vs-noise plot: one polyline per loss with 3 points (rates 0, 0.2, 0.4)
    noise_svg = html[html.index("digits — symmetric noise"):]
    noise_svg = noise_svg[:noise_svg.index("</svg>")]
    lines = re.findall(r'<polyline [^>]*points="([^"]+)"', noise_svg)
    assert len(lines) == 3 and all(len(p.split()) == 3 for p in lines)


def test_markdown_summary_and_write_report_from_db_only(db):
    out, written = db
    md = to_markdown(load_report_data(out))
    assert md.startswith("# robustlab benchmark report: synthetic")
    assert "completed 26" in md and "failed 1" in md
    assert "## Failed runs" in md and "ValueError: boom" in md
    assert "- torch: 2.x" in md and "- git commit: abc123" in md and "- cpu: Some CPU (AVX2)" in md
    assert "single seed" not in md  # every group has >= 2 seeds
    (md_path,) = write_report(out, out / "sub" / "summary.md")
    assert md_path.read_text() == md.replace(
        md.splitlines()[2], md_path.read_text().splitlines()[2])  # identical up to the timestamp line
    assert not any(out.glob("runs"))  # nothing but results.db was needed
    assert sorted(p.name for p in write_report(out)) == ["report.html", "report.md"]  # default: both, in DIR


def test_report_cli_prints_the_path(db, capsys):
    from robustlab.cli import main

    out, _ = db
    assert main(["report", str(out), "-o", str(out / "r.html"), "--leaderboard"]) == 0
    text = capsys.readouterr().out
    assert f"report: {(out / 'r.html').resolve()}" in text and "| clean acc |" in text
    assert main(["report", str(out / "nope")]) == 2


def test_report_out_suffix_picks_the_format_and_nothing_is_overwritten(db, capsys):
    # review fix: -o r.md wrote the HTML into r.md, then the Markdown over it (with_suffix(".md") is itself)
    from robustlab.cli import main

    out, _ = db
    assert main(["report", str(out), "-o", str(out / "r.md")]) == 0
    assert main(["report", str(out), "-o", str(out / "r.html")]) == 0
    assert (out / "r.md").read_text().startswith("# robustlab benchmark report")
    assert (out / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert f"summary: {(out / 'r.md').resolve()}" in capsys.readouterr().out
    assert main(["report", str(out), "-o", str(out / "r.txt")]) == 2
    err = capsys.readouterr().err
    assert "r.txt" in err and ".html" in err and ".md" in err and "Traceback" not in err
    assert not (out / "r.txt").exists()


def test_runs_with_the_same_labels_but_different_configs_are_not_pooled_as_seeds(tmp_path):
    # review fix: a spec rerun into the same directory after editing (here: epochs 1 -> 5) left two
    # configurations with identical labels, which the report averaged together as if they were seeds
    labels = {"data": "digits", "noise": "none", "noise_kind": "none", "noise_rate": 0.0, "model": "mlp",
              "loss": "ce", "objective": "standard"}
    with ResultStore(tmp_path) as st:
        st.record_sweep("s", "{}", executor="local")
        for epochs, acc in ((1, 0.5), (5, 0.9)):
            for seed in (0, 1):
                rid = f"e{epochs}s{seed}".ljust(64, "0")
                st.claim(rid, spec="s", config={"seed": seed, "train": {"epochs": epochs}},
                         labels={**labels, "seed": seed}, owner="t", executor="local")
                st.finish(rid, {"status": "completed", "metrics": [("acc/clean", acc + 0.01 * seed, -1)]})
    rd = load_report_data(tmp_path)
    stats = sorted(g.stat("acc/clean") for g in rd.groups)
    assert [(round(m, 3), n) for m, _, n in stats] == [(0.505, 2), (0.905, 2)]
    assert any("different configurations" in w for w in to_markdown(rd).split("\n") if "label combination" in w)


def test_runs_record_the_cpu_model_and_vector_extension():
    from robustlab.bench._worker import environment

    cpu = environment()["cpu"]
    assert isinstance(cpu, str) and cpu and cpu != "unknown ()"
    cap = torch.backends.cpu.get_cpu_capability()
    assert cpu.endswith(f"({cap})")
