"""``robustlab certify --method lipschitz`` and the ``certify_lipschitz`` evaluation through a sweep and its report."""

import json

import pytest
import torch

from robustlab.cli import main
from robustlab.data import load
from robustlab.models import create
from robustlab.training import fit, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = load("digits")
    torch.manual_seed(0)
    model = create("lipschitz_mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=(32,))
    fit(model, data, objective="lipschitz_margin", objective_kw={"mode": "hinge", "margin": 1.0}, epochs=3,
        batch_size=64, optimizer="adam", lr=0.01, progress=False)
    path = tmp_path_factory.mktemp("run") / "model.pt"
    save_checkpoint(model, path)
    return path


def test_certify_lipschitz_cli(checkpoint, tmp_path, capsys):
    out = tmp_path / "lip.json"
    assert main(["certify", "--checkpoint", str(checkpoint), "--data", "digits", "--method", "lipschitz",
                 "--eps", "0", "36/255", "0.5", "--n-test", "200", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    acc = res["certified_accuracy"]
    assert res["bound_method"] == "by_construction" and res["lipschitz_constant"] == pytest.approx(1.001)
    assert acc["0"] == pytest.approx(res["clean_accuracy"]) and res["clean_accuracy"] > 0.8
    assert acc["0"] >= acc["0.141176"] >= acc["0.5"] and acc["0.141176"] > 0.6
    assert [s["kind"] for s in res["orthogonality"]] == ["CayleyLinear", "CayleyLinear"]
    assert all(s["deviation"] < 1e-5 for s in res["orthogonality"])
    text = capsys.readouterr().out
    assert "Lipschitz bound L = 1.001 (by_construction)" in text and "‖WᵀW − I‖" in text


def test_certify_lipschitz_cli_power_and_errors(tmp_path, capsys):
    data = load("digits")
    torch.manual_seed(0)
    model = create("lenet", input_shape=data.input_shape, num_classes=data.num_classes, channels=(4, 8), hidden=(16,))
    path = tmp_path / "lenet.pt"
    save_checkpoint(model, path)
    out = tmp_path / "p.json"
    assert main(["certify", "--checkpoint", str(path), "--data", "digits", "--method", "lipschitz", "--spectral",
                 "power", "--power-iters", "3000", "--n-test", "50", "--eps", "0.1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bound_method"] == "power" and [f["type"] for f in res["layers"]][0] == "Conv2d"
    capsys.readouterr()
    assert main(["certify", "--checkpoint", str(path), "--data", "digits", "--method", "lipschitz",
                 "--power-iters", "0"]) != 0
    err = capsys.readouterr().err
    assert "n_iter" in err and "Traceback" not in err


def test_sweep_with_the_certify_lipschitz_evaluation_and_report(tmp_path):
    from robustlab.bench import run_sweep, write_report

    spec = {"name": "lip", "data": [{"name": "digits", "n_train": 300, "n_test": 100}], "noise": ["none"],
            "models": [{"name": "lipschitz_mlp", "hidden": [32]}], "losses": ["ce"],
            "objectives": [{"name": "lipschitz_margin", "mode": "hinge", "margin": 1.0}], "seeds": [0],
            "train": {"epochs": 1, "optimizer": "adam", "lr": 0.01},
            "evaluations": ["clean", {"name": "certify_lipschitz", "eps": [0.0, 0.25], "n_test": 100}]}
    res = run_sweep(spec, tmp_path, progress=False)
    assert res.completed == 1 and not res.failed
    path = write_report(tmp_path, tmp_path / "report.md")
    text = (path[0] if isinstance(path, list) else path).read_text()
    assert "Lipschitz cert ε=0.25" in text
