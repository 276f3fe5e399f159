"""A collaborative run through the one pipeline: config, bench spec grid, report plot."""

import re

import pytest

from robustlab import pipeline
from robustlab._validation import InvalidParameterError
from robustlab.bench.spec import SpecError, expand, load_spec

BASE = {"data": {"name": "digits", "n_train": 300, "n_test": 100}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.5, "schedule": "constant"}}


def test_config_round_trip_and_plain_runs_unchanged():
    plain = pipeline.Config.from_dict(BASE)
    assert "collab" not in plain.to_dict() and plain.collab is None  # run ids of plain runs are unchanged
    cfg = pipeline.Config.from_dict({**BASE, "collab": {"workers": 5, "f": 1, "aggregator": "krum",
                                                         "byzantine": {"name": "ipm", "kwargs": {"epsilon": 0.5}}}})
    d = cfg.to_dict()
    assert d["collab"] == {"workers": 5, "f": 1, "aggregator": {"name": "krum", "kwargs": {}},
                           "byzantine": {"name": "ipm", "kwargs": {"epsilon": 0.5}}, "heterogeneity": "iid",
                           "exchange": None}
    assert pipeline.Config.from_dict(d).to_dict() == d
    no_attack = pipeline.Config.from_dict({**BASE, "collab": {"workers": 5, "f": 0, "byzantine": "alie"}})
    assert no_attack.collab.byzantine == "none"  # f = 0: nobody attacks, one run for every behaviour


@pytest.mark.parametrize("collab, extra, match", [
    ({"workers": 4, "f": 2}, {}, "'f' parameter of collab must be < workers / 2"),
    ({"workers": 4, "aggregator": "krun"}, {}, "Did you mean 'krum'"),
    ({"workers": 4, "wrokers": 3}, {}, "Did you mean 'workers'"),
    ({"f": 1}, {}, "needs 'workers'"),
    ({"workers": 4, "heterogeneity": "dirichlet"}, {}, "'heterogeneity'"),
    ({"workers": 4}, {"objective": "pgd_at"}, "'standard' objective only"),
    ({"workers": 4}, {"train": {"optimizer": "adam"}}, "'optimizer' train option of a collaborative run"),
    ({"workers": 4}, {"train": {"ema": 0.99}}, "not supported by a collaborative run"),
])
def test_config_errors_name_the_problem(collab, extra, match):
    with pytest.raises((InvalidParameterError, KeyError), match=match):
        pipeline.Config.from_dict({**BASE, **extra, "collab": collab})


def test_pipeline_run_trains_collaboratively():
    res = pipeline.run({**BASE, "collab": {"workers": 5, "f": 1, "aggregator": "trimmed_mean",
                                           "byzantine": "sign_flip"}, "evaluations": [{"name": "clean"}]})
    m = {n: v for n, v, _ in res.metrics}
    assert m["acc/final_epoch_test"] == pytest.approx(m["acc/clean"], abs=1e-6)  # worker 0's model is evaluated
    assert res.resolved["collab"]["exchange"] == "momentum" and "train/honest_spread" in m
    again = pipeline.run({**BASE, "collab": {"workers": 5, "f": 1, "aggregator": "trimmed_mean",
                                             "byzantine": "sign_flip"}, "evaluations": [{"name": "clean"}]})
    assert again.metrics == res.metrics


SPEC = {"name": "t", "data": [{"name": "digits", "n_train": 300, "n_test": 100}], "models": [{"name": "mlp"}],
        "losses": ["ce"], "train": {"epochs": 1},
        "collab": {"workers": 5, "f": [0, 1], "aggregator": ["mean", {"name": "centered_clipping",
                                                                       "kwargs": {"tau": 2.0}, "label": "cc2"}],
                   "byzantine": ["sign_flip", "alie"], "heterogeneity": ["iid", "dirichlet:1"]}}


def test_spec_grid_over_the_collab_axes():
    runs = expand(SPEC)
    # f = 0: 2 aggregators x 2 splits (the behaviours coincide); f = 1: 2 x 2 behaviours x 2 splits
    assert len(runs) == 4 + 8 and len({r.id for r in runs}) == 12
    labels = {(r.labels["aggregator"], r.labels["byzantine"], r.labels["f"], r.labels["heterogeneity"]) for r in runs}
    assert ("cc2", "alie", 1, "dirichlet:1") in labels and ("mean", "none", 0, "iid") in labels
    assert all(r.config["collab"]["workers"] == 5 for r in runs)
    assert "aggregator=cc2" in [r for r in runs if r.labels["aggregator"] == "cc2"][0].describe()
    plain = expand({k: v for k, v in SPEC.items() if k != "collab"})
    assert len(plain) == 1 and "collab" not in plain[0].config


@pytest.mark.parametrize("collab, match", [
    ({"workers": 5, "aggregator": ["mean", "monnaa"]}, "Did you mean 'monna'"),
    ({"workers": 5, "f": [1, 3]}, "collab f=3 workers=5: The 'f' parameter of collab must be < workers / 2"),
    ({"workers": 5, "byzantines": ["alie"]}, "unknown key 'byzantines'"),
    ({"f": 1}, "needs 'workers'"),
])
def test_spec_collab_errors(collab, match):
    with pytest.raises(SpecError, match=match):
        load_spec({**SPEC, "collab": collab})


def test_report_plots_accuracy_vs_f(tmp_path):
    from robustlab.bench import ResultStore, report

    spec = {**SPEC, "seeds": [0, 1], "collab": {"workers": 5, "f": [0, 1, 2], "aggregator": ["mean", "monna"],
                                                "byzantine": ["sign_flip", "alie"]}}
    runs = expand(spec)
    acc = {}
    with ResultStore(tmp_path) as st:
        st.record_sweep("t", "{}", executor="local")
        for r in runs:
            lab = r.labels
            acc[r.id] = 0.9 - (0.3 if lab["aggregator"] == "mean" else 0.05) * lab["f"] + 0.01 * r.seed
            st.claim(r.id, spec="t", config=r.config, labels=lab, owner="test", executor="local")
            st.finish(r.id, {"status": "completed", "metrics": [("acc/final_epoch_test", acc[r.id], -1),
                                                                ("acc/clean", acc[r.id], -1)],
                             "timings": {"total_s": 1.0}, "env": {}})
    rd = report.load_report_data(tmp_path)
    from robustlab.bench._report_collab import collab_plots

    plots = collab_plots(rd)
    assert len(plots) == 2  # one panel per behaviour; the f = 0 runs start both
    sec, cap, svg = plots[0]
    assert sec == "Accuracy vs Byzantine workers" and "alie" in cap and "f (Byzantine workers)" in svg
    assert "mean" in svg and "monna" in svg
    assert "Accuracy vs Byzantine workers" in report.to_html(rd)
    lb = report.leaderboards(rd)[0]
    assert {"aggregator", "f"} <= set(lb.axes)  # the leaderboard tells the collaborative runs apart


def test_cli_train_collaborative(capsys):
    from robustlab.cli import main

    argv = ["train", "--data", "digits", "--model-arg",
            "hidden=8", "--epochs", "1", "--workers", "5", "--f", "1", "--aggregator", "centered_clipping",
            "--aggregator-arg", "tau=2", "--byzantine", "ipm", "--byzantine-arg", "epsilon=0.5", "--heterogeneity",
            "dirichlet:1", "--json"]
    assert main(argv) == 0
    import json

    rec = json.loads(capsys.readouterr().out)
    assert rec["config"]["collab"]["aggregator"] == {"name": "centered_clipping", "kwargs": {"tau": 2}}
    assert rec["resolved"]["collab"]["heterogeneity"] == "dirichlet:1" and "honest_spread" in rec["history"]


@pytest.mark.parametrize("argv, match", [
    (["--f", "2"], "--f need.*--workers"),
    (["--workers", "4", "--f", "2"], "'f' parameter of collab must be < workers / 2"),
    (["--workers", "4", "--aggregator", "median"], "Unknown aggregator 'median'"),
    (["--workers", "4", "--optimizer", "adam"], "'optimizer' train option of a collaborative run must be 'sgd'"),
])
def test_cli_train_collab_errors(argv, match, capsys):
    from robustlab.cli import main

    assert main(["train", "--data", "digits", "--epochs", "1", *argv]) != 0
    assert re.search(match, capsys.readouterr().err)


def test_docs_page_names_every_aggregator_and_behaviour():
    from pathlib import Path

    from robustlab.collab import AGGREGATORS, BYZANTINE

    text = (Path(__file__).parents[1] / "docs" / "concepts" / "collab.md").read_text(encoding="utf-8")
    missing = [n for n in (*AGGREGATORS.available(), *BYZANTINE.available()) if f"`{n}`" not in text]
    assert not missing, f"docs/concepts/collab.md does not mention {missing}"
