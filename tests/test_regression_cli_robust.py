"""``robustlab evaluate`` / ``certify`` on a regression checkpoint: PGD MSE and certified output intervals."""

import json

import pytest

from robustlab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "run"
    assert main(["train", "--data", "friedman", "--data-arg", "n_samples=200", "--model-arg", "hidden=8", "--loss",
                 "mse", "--epochs", "2", "--optimizer", "adam", "--lr", "0.01", "--out", str(out), "--quiet"]) == 0
    return out


def test_evaluate_and_certify_a_regression_checkpoint(run_dir, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run_dir), "--eps", "0.05", "--n-test", "20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["results"]
    assert doc["task"] == "regression" and doc["n"] == 20
    assert row["mse"] <= row["adv_mse"] <= row["certified_mse_bound"]
    assert main(["certify", "--checkpoint", str(run_dir), "--method", "crown", "--eps", "0.02", "0.05",
                 "--n-test", "20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["eps"] for r in rows] == [0.02, 0.05] and rows[0]["certified_mean_deviation"] < rows[1]["certified_mean_deviation"]
    assert "adv_mse" not in rows[0]


def test_certify_refuses_classifier_methods_on_regression(run_dir, capsys):
    assert main(["certify", "--checkpoint", str(run_dir), "--method", "smoothing", "--n-test", "5"]) == 2
    assert "a regression model takes ibp, crown_ibp or crown" in capsys.readouterr().err
