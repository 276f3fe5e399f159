"""``robustlab attack`` / ``robustlab evaluate`` end to end on a tiny checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from robustlab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from robustlab import data, models, training

    d = data.load("digits")
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(32,))
    training.fit(m, d, epochs=3, batch_size=64, lr=0.1, progress=False)
    out = tmp_path_factory.mktemp("run")
    training.save_checkpoint(m, out, extra={"config": {"data": "digits", "data_args": {}}})
    return out


def test_attack_json(run_dir, capsys):
    rc = main(["attack", "--checkpoint", str(run_dir), "--attack", "pgd", "--norm", "linf", "--eps", "0.1",
               "--steps", "5", "--n-test", "40", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"] == "digits" and doc["n"] == 40
    assert 0 <= doc["robust_accuracy"] <= doc["clean_accuracy"] <= 1
    assert {"worst_class", "ci", "per_class"} <= set(doc)


def test_attack_table_and_targeted(run_dir, capsys):
    rc = main(["attack", "--checkpoint", str(run_dir), "--attack", "fgsm", "--eps", "0.05", "--n-test", "30",
               "--targeted"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "robust accuracy" in out and "worst-class" in out and "target hit" in out


def test_evaluate_standard_with_curve_and_sanity(run_dir, capsys, tmp_path):
    out_file = tmp_path / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(run_dir), "--suite", "standard", "--eps", "0.05", "--steps", "5",
               "--n-queries", "30", "--n-test", "30", "--curve", "0.01,0.02,0.04,0.08,0.16", "--sanity",
               "--out", str(out_file)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "after apgd_ce" in text and "after square" in text and "sanity" in text
    doc = json.loads(out_file.read_text())
    from robustlab.evaluate import SUITES

    assert list(doc["per_attack"]) == SUITES["standard"].names()
    assert len(doc["suite_members"]) == len(doc["per_attack"]) and doc["suite_kw"] == {"steps": 5, "n_queries": 30}
    assert all(m.get("steps", 5) == 5 and m.get("n_queries", 30) == 30 for m in doc["suite_members"])
    assert "curve" in doc and "sanity" in doc


def test_clear_errors(run_dir, capsys):
    assert main(["attack", "--checkpoint", str(run_dir), "--attack", "pgdd", "--eps", "0.1"]) == 2
    assert "Did you mean 'pgd'" in capsys.readouterr().err
    assert main(["attack", "--checkpoint", str(run_dir), "--eps", "1.5"]) == 2
    assert "'eps' parameter" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(run_dir / "nope"), "--eps", "0.1"]) == 2
