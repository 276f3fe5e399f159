"""``robustlab certify`` and ``robustlab conformal`` end to end on a tiny checkpoint."""

import json

import pytest
import torch

from robustlab.cli import main
from robustlab.data import load
from robustlab.models import create
from robustlab.training import fit, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = load("blobs2d")
    torch.manual_seed(0)
    model = create("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=(16,))
    fit(model, data, objective="ibp", objective_kw={"eps": 0.02}, epochs=3, batch_size=64, optimizer="adam",
        lr=0.01, progress=False)
    path = tmp_path_factory.mktemp("run") / "model.pt"
    save_checkpoint(model, path)
    return path


def test_certify_bounds_and_smoothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "ibp.json"
    assert main(["certify", "--checkpoint", str(checkpoint), "--data", "blobs2d", "--method", "crown_ibp",
                 "--eps", "0", "0.05", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    acc = res["certified_accuracy"]
    assert acc["0"] == pytest.approx(res["clean_accuracy"]) and acc["0.05"] <= acc["0"]
    assert main(["certify", "--checkpoint", str(checkpoint), "--data", "blobs2d", "--method", "smoothing",
                 "--sigma", "0.1", "--n", "200", "--n0", "20", "--n-test", "20", "--radii", "0", "0.1",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_points"] == 20 and res["certified_accuracy"]["0.1"] <= res["certified_accuracy"]["0"]
    assert "radius" in capsys.readouterr().out


def test_conformal_split_and_robust(checkpoint, tmp_path):
    out = tmp_path / "cp.json"
    assert main(["conformal", "--checkpoint", str(checkpoint), "--data", "blobs2d", "--score", "thr", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert 0.7 <= res["coverage"] <= 1 and 1 <= res["average_set_size"] <= 3
    assert main(["conformal", "--checkpoint", str(checkpoint), "--data", "blobs2d", "--robust", "--n-mc", "32",
                 "--sigma", "0.1", "--eps", "0.02", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["robust"] is True


def test_cli_errors_exit_2(checkpoint, capsys):
    assert main(["conformal", "--checkpoint", str(checkpoint), "--data", "blobs2d", "--score", "apss"]) == 2
    assert "Did you mean 'aps'" in capsys.readouterr().err
    assert main(["certify", "--checkpoint", str(checkpoint), "--data", "blobs2d", "--eps", "-1"]) == 2


def test_data_set_defaults_to_the_one_recorded_by_train(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "blobs2d", "--model", "linear", "--epochs", "1", "--out", str(run)]) == 0
    out = tmp_path / "c.json"
    assert main(["certify", "--checkpoint", str(run), "--method", "ibp", "--eps", "0.01", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["data"] == "blobs2d"
    assert main(["conformal", "--checkpoint", str(run), "--alpha", "0.2"]) == 0
    bare = tmp_path / "bare.pt"
    save_checkpoint(create("linear", input_shape=(2,), num_classes=3), bare)
    assert main(["certify", "--checkpoint", str(bare), "--method", "ibp", "--eps", "0.01"]) == 2
    assert "pass --data" in capsys.readouterr().err
