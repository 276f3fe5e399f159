"""The collab axes (COLLAB_AXES) in bench include/exclude rules, the `results` CLI and `results rebuild`."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from robustlab.bench import ResultStore, run_sweep
from robustlab.bench.spec import SpecError, expand
from robustlab.cli import main
from robustlab.pipeline import COLLAB_AXES

GRID = {"name": "rules", "data": [{"name": "digits", "n_train": 300, "n_test": 100}], "models": [{"name": "mlp"}],
        "losses": ["ce"], "train": {"epochs": 1},
        "collab": {"workers": 10, "f": [0, 1, 2, 3], "aggregator": ["mean", "monna", {"name": "centered_clipping",
                                                                                     "kwargs": {"tau": 2.0},
                                                                                     "label": "cc2"}],
                   "byzantine": ["sign_flip", "alie"], "heterogeneity": ["iid", "dirichlet:1"]}}
# 3 aggregators x 2 splits x (f = 0, plus 3 f x 2 behaviours)
FULL = 3 * 2 * (1 + 3 * 2)


def _points(spec):
    return [{a: r.labels[a] for a in COLLAB_AXES} for r in expand(spec)]


def test_exclude_and_include_rules_take_the_collab_axes():
    assert len(expand(GRID)) == FULL
    pts = _points({**GRID, "exclude": [{"aggregator": "mean", "byzantine": "alie"}, {"f": 3, "heterogeneity": "dirichlet:1.0"}]})
    assert not any(p["aggregator"] == "mean" and p["byzantine"] == "alie" for p in pts)
    assert not any(p["f"] == 3 and p["heterogeneity"] == "dirichlet:1" for p in pts)
    assert len(pts) == FULL - 2 * 3 - 3 * 2 + 1  # mean x alie (3 f x 2 splits), f = 3 on dirichlet, their overlap
    # a custom label is what rules name; include puts points back
    pts = _points({**GRID, "exclude": [{"f": [2, 3]}], "include": [{"aggregator": "cc2", "f": 3}]})
    assert {(p["aggregator"], p["f"]) for p in pts if p["f"] >= 2} == {("cc2", 3)}
    # f = 0 runs carry byzantine 'none': a behaviour rule leaves them alone
    pts = _points({**GRID, "exclude": [{"byzantine": ["sign_flip", "alie"]}]})
    assert len(pts) == 3 * 2 and {p["f"] for p in pts} == {0}


@pytest.mark.parametrize("rule, match", [
    ({"f": 4}, r"exclude\[0\]: f 4 is not in the spec's collab f axis. Values: 0, 1, 2, 3"),
    ({"aggregatr": "mean"}, r"unknown axis 'aggregatr'. Did you mean 'aggregator'\?.* heterogeneity"),
    ({"heterogeneity": "dirichlet:2"}, r"heterogeneity 'dirichlet:2' is not in .* Values: iid, dirichlet:1"),
    ({"aggregator": "centered_clipping"}, r"aggregator 'centered_clipping' is not in .* Values: mean, monna, cc2"),
    ({"f": True}, r"f True is not in"),
])
def test_collab_rule_errors_name_the_value_and_what_is_accepted(rule, match):
    with pytest.raises(SpecError, match=match):
        expand({**GRID, "exclude": [rule]})


def test_collab_axes_in_a_spec_without_collab_or_in_when_are_refused():
    plain = {k: v for k, v in GRID.items() if k != "collab"}
    with pytest.raises(SpecError, match=r"'f' is a collab axis but the spec has no \(valid\) 'collab' block"):
        expand({**plain, "include": [{"f": 1}]})
    with pytest.raises(SpecError, match="'f' is a collab axis; only include/exclude rules take collab axes"):
        expand({**GRID, "evaluations": [{"name": "clean", "when": {"f": 0}}]})


COLLAB = {"name": "tinycollab", "data": [{"name": "digits", "n_train": 120, "n_test": 40}],
          "models": [{"name": "mlp", "hidden": [8]}], "losses": ["ce"], "train": {"epochs": 1, "batch_size": 16},
          "collab": {"workers": 4, "f": [0, 1], "aggregator": "trimmed_mean", "byzantine": "sign_flip"},
          "evaluations": ["clean"]}
PLAIN = {"name": "tinyplain", "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "num_classes": 3, "dim": 4}],
         "models": ["linear"], "losses": ["ce"], "train": {"epochs": 1, "batch_size": 32}, "evaluations": ["clean"]}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """One results folder with two collaborative runs and one plain run."""
    out = tmp_path_factory.mktemp("collab") / "out"
    assert run_sweep(COLLAB, out, workers=1, threads=1, progress=False).completed == 2
    assert run_sweep(PLAIN, out, workers=1, threads=1, progress=False).completed == 1
    return out


def test_results_list_show_and_export_have_the_collab_columns(done, capsys):
    assert main(["results", "list", str(done)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(a in lines[0] for a in COLLAB_AXES)
    rows = [ln.split() for ln in lines[1:]]
    collab_rows = [r for r in rows if "trimmed_mean" in r]
    assert len(collab_rows) == 2 and {("sign_flip" in r, "1" in r) for r in collab_rows} == {(True, True), (False, False)}
    assert any("gaussians" in r and "trimmed_mean" not in r for r in rows)
    assert main(["results", "list", str(done), "--spec", "tinyplain"]) == 0
    assert "aggregator" not in capsys.readouterr().out  # no collab run listed: no collab columns

    with ResultStore(done, readonly=True) as st:
        rid = next(r["id"] for r in st.runs(spec="tinycollab") if r["labels"]["f"] == 1)
    assert main(["results", "show", str(done), rid[:12]]) == 0
    assert "aggregator=trimmed_mean byzantine=sign_flip f=1 workers=4 heterogeneity=iid" in capsys.readouterr().out

    assert main(["results", "export", str(done)]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    got = sorted((r["aggregator"], r["byzantine"], r["f"], r["workers"], r["heterogeneity"]) for r in table)
    assert got == [("", "", "", "", ""), ("trimmed_mean", "none", "0", "4", "iid"),
                   ("trimmed_mean", "sign_flip", "1", "4", "iid")]
    assert main(["results", "export", str(done), "--long", "--format", "json"]) == 0
    long = json.loads(capsys.readouterr().out)
    assert {r["f"] for r in long if r["metric"] == "acc/clean"} == {None, 0, 1}


def test_rebuild_from_the_run_files_alone_gives_the_collab_labels(done, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(done, out)
    with ResultStore(out, readonly=True) as st:
        before = {r["id"]: r["labels"] for r in st.runs()}
    (out / "results.db").unlink()
    shutil.rmtree(out / "sweeps")
    for meta in (out / "runs").glob("*/run.json"):
        meta.unlink()
    from robustlab.bench._rebuild import rebuild

    assert rebuild(out).completed == 3
    with ResultStore(out, readonly=True) as st:
        after = {r["id"]: r["labels"] for r in st.runs()}
    assert after == before
    assert sum("f" in labels for labels in after.values()) == 2


def test_collab_report_counts_completed_runs_per_seed(done, tmp_path, capsys, monkeypatch):
    import sys

    from _helpers import load_script

    mod = load_script("benchmarks/collab_report.py", "collab_report")
    from robustlab.bench import report

    rd = report.load_report_data(done)
    assert mod.coverage(rd) == (["sweep tinycollab: 2 of 2 runs completed (seed 0: 2 of 2)"], 1)
    bigger = {**COLLAB, "seeds": [0, 1]}  # against a grid with a second seed: half of it is done
    lines, most = mod.coverage(rd, bigger)
    assert lines == [f"sweep {bigger}: 2 of 4 runs completed (seed 0: 2 of 2, seed 1: 0 of 2)"] and most == 2
    monkeypatch.setattr(sys, "argv", ["collab_report.py", str(done), "--figures", str(tmp_path / "fig")])
    assert mod.main() == 0
    out = capsys.readouterr().out
    assert "| trimmed_mean | " in out and "sign_flip, iid split" in out
    assert list((tmp_path / "fig").glob("*.svg"))
