"""corruption_error / mCE and the ``robustlab shift`` command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustlab import data, models, shift, training
from robustlab.cli import main


@pytest.fixture(scope="module")
def digits_small():
    return data.load("digits").subset(n_train=600, n_test=120)


@pytest.fixture(scope="module")
def trained(digits_small, tmp_path_factory):
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=digits_small.input_shape, num_classes=10, hidden=(32,))
    run = tmp_path_factory.mktemp("run")
    training.fit(m, digits_small, epochs=8, lr=0.05, progress=False, checkpoint=run)
    return m, run


class ConstantModel(nn.Module):
    """Always predicts class k (a baseline whose error does not depend on the corruption)."""

    def __init__(self, k: int, num_classes: int = 10) -> None:
        super().__init__()
        self.k, self.c = k, num_classes

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.c)
        out[:, self.k] = 1.0
        return out


def test_accuracy_grid_matches_manual(trained, digits_small):
    model, _ = trained
    res = shift.corruption_error(model, digits_small, corruptions=["gaussian_noise", "contrast"], severities=(1, 5),
                                 generator=torch.Generator().manual_seed(4))
    assert set(res.accuracy) == {"gaussian_noise", "contrast"}
    assert set(res.accuracy["contrast"]) == {1, 5}
    # recompute with the same generator stream (corruptions drawn in order: name-major, severity-minor)
    g = torch.Generator().manual_seed(4)
    x, y = digits_small.x_test, digits_small.y_test
    manual = {}
    for name in ("gaussian_noise", "contrast"):
        for s in (1, 5):
            xc = shift.corrupt(x, name, severity=s, generator=g)
            manual[(name, s)] = float((training.predict_logits(model, xc).argmax(1) == y).float().mean())
    for (name, s), a in manual.items():
        assert res.accuracy[name][s] == pytest.approx(a)
    clean = float((training.predict_logits(model, x).argmax(1) == y).float().mean())
    assert res.clean_accuracy == pytest.approx(clean)
    cells = list(manual.values())
    assert res.mean_error == pytest.approx(1 - sum(cells) / len(cells))
    assert res.mce is None and res.ce is None


def test_mce_against_baseline(trained, digits_small):
    model, _ = trained
    names = ["contrast", "fog"]
    same = shift.corruption_error(model, digits_small, corruptions=names, severities=(1, 3, 5), baseline=model)
    assert same.mce == pytest.approx(100.0) and all(v == pytest.approx(100.0) for v in same.ce.values())
    const = ConstantModel(0)
    res = shift.corruption_error(model, digits_small, corruptions=names, severities=(1, 3, 5), baseline=const)
    base_err = 1 - float((digits_small.y_test == 0).float().mean())
    for c in names:
        err = sum(1 - res.accuracy[c][s] for s in (1, 3, 5))
        assert res.ce[c] == pytest.approx(100 * err / (3 * base_err))
    assert res.mce == pytest.approx(sum(res.ce.values()) / 2)
    # relative CE: the constant baseline does not degrade, so the denominator is 0 -> NaN
    assert all(v != v for v in res.relative_ce.values())
    # a stored result works as the baseline, too
    again = shift.corruption_error(model, digits_small, corruptions=names, severities=(1, 3, 5), baseline=same)
    assert again.mce == pytest.approx(100.0) and again.relative_mce == pytest.approx(100.0)
    json.dumps(res.to_dict())
    assert "mCE" in res.table() and "contrast" in res.table()


def test_relative_ce_closed_form(trained, digits_small):
    model, _ = trained
    base = shift.CorruptionResult({"fog": {1: 0.5, 2: 0.3}}, clean_accuracy=0.9, num_examples=10)
    res = shift.corruption_error(model, digits_small, corruptions=["fog"], severities=(1, 2), baseline=base)
    a = res.accuracy["fog"]
    d = (1 - a[1]) + (1 - a[2]) - 2 * (1 - res.clean_accuracy)
    assert res.relative_ce["fog"] == pytest.approx(100 * d / ((0.5 - 0.1) + (0.7 - 0.1)))
    assert res.ce["fog"] == pytest.approx(100 * ((1 - a[1]) + (1 - a[2])) / 1.2)


def test_corruption_error_validates(trained, digits_small):
    model, _ = trained
    with pytest.raises(ValueError, match="severities"):
        shift.corruption_error(model, digits_small, corruptions=["fog"], severities=(0,))  # only the unchanged input
    with pytest.raises(ValueError, match="severities"):
        shift.corruption_error(model, digits_small, corruptions=["fog"], severities=(6,))
    with pytest.raises(KeyError, match="Did you mean"):
        shift.corruption_error(model, digits_small, corruptions=["fogg"])
    with pytest.raises(ValueError, match="suite"):
        shift.corruption_error(model, digits_small, corruptions="nope")
    flat = data.load("gaussians", n_train=50, n_test=20)
    with pytest.raises(ValueError, match="tabular"):
        shift.corruption_error(model, flat, corruptions=["fog"])
    with pytest.raises(TypeError, match="baseline"):
        shift.corruption_error(model, digits_small, corruptions=["fog"], baseline="runs/x")


def test_cli_shift_table_and_json(trained, tmp_path, capsys):
    _, run = trained
    rc = main(["shift", "--checkpoint", str(run), "--data", "digits", "--corruptions", "contrast,rotate",
               "--severities", "1,5", "--n-test", "40", "--json", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["accuracy"]) == {"contrast", "rotate"} and set(doc["accuracy"]["rotate"]) == {"1", "5"}
    assert doc["num_examples"] == 40 and doc["meta"]["data"] == "digits"
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    rc = main(["shift", "--checkpoint", str(run), "--data", "digits", "--suite", "mnist_c", "--severities", "3",
               "--n-test", "20", "--baseline", str(run)])
    out = capsys.readouterr().out
    assert rc == 0 and "canny_edges" in out and "mCE 100.0%" in out


def test_cli_shift_reads_metrics_json(trained, tmp_path, capsys):
    _, run = trained
    (run / "metrics.json").write_text(json.dumps({"config": {"data": "digits", "data_args": {"flatten": True}}}))
    try:
        rc = main(["shift", "--checkpoint", str(run), "--corruptions", "fog", "--severities", "2", "--n-test", "10"])
        # flatten=True gives vectors: the data options were read (and the image model refuses them)
        assert rc == 2 and "inputs of shape (64,)" in capsys.readouterr().err
        (run / "metrics.json").write_text(json.dumps({"config": {"data": "digits", "data_args": {}}}))
        rc = main(["shift", "--checkpoint", str(run), "--corruptions", "fog", "--severities", "2", "--n-test", "10"])
        assert rc == 0 and "data set digits" in capsys.readouterr().out
    finally:
        (run / "metrics.json").unlink()


def test_cli_shift_errors(trained, capsys):
    _, run = trained
    assert main(["shift", "--checkpoint", str(run), "--corruptions", "fog"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", "--severities", "1,9"]) == 2
    assert "severities" in capsys.readouterr().err
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", "--suite", "cifar"]) == 2


def test_mnist_c_accuracy_fixed_parameters(trained, digits_small):
    model, _ = trained
    assert set(shift.MNIST_C_PARAMS) == set(shift.suite("mnist_c"))
    for name, sev in shift.MNIST_C_SEVERITY.items():  # graded corruptions: the MNIST-C setting is in the table
        assert shift.CORRUPTIONS.get(name, severity=sev).params == tuple(shift.MNIST_C_PARAMS[name])
    res = shift.mnist_c_accuracy(ConstantModel(3), digits_small, n_test=60)
    frac = float((digits_small.y_test[:60] == 3).float().mean())
    assert set(res) == set(shift.MNIST_C_PARAMS) | {"clean", "mean"}
    assert all(v == pytest.approx(frac) for v in res.values())
    # the trained model: the same stream gives the same numbers; MNIST-C shot noise (c = 3) is harsher than s5
    a = shift.mnist_c_accuracy(model, digits_small, generator=torch.Generator().manual_seed(1))
    b = shift.mnist_c_accuracy(model, digits_small, generator=torch.Generator().manual_seed(1))
    assert a == b
    grid = shift.corruption_error(model, digits_small, corruptions=["shot_noise"], severities=(5,))
    assert a["shot_noise"] < grid.accuracy["shot_noise"][5]


def test_severity_zero_is_the_unchanged_input_everywhere(trained, digits_small, tmp_path, capsys):
    """One rule (issue 11): severity 0 = unchanged input in shift.corrupt, corruption_error, the CLI and specs;
    its cells are shown and left out of the means and CE."""
    model, run = trained
    x = digits_small.x_test[:8]
    assert torch.equal(shift.corrupt(x, "fog", severity=0), x)
    gen = torch.Generator().manual_seed(1)
    res = shift.corruption_error(model, digits_small, corruptions=["fog", "contrast"], severities=(0, 3),
                                 generator=gen, baseline=ConstantModel(0))
    only3 = shift.corruption_error(model, digits_small, corruptions=["fog", "contrast"], severities=(3,),
                                   generator=torch.Generator().manual_seed(1), baseline=ConstantModel(0))
    assert res.accuracy["fog"][0] == res.clean_accuracy
    assert res.mean_error == only3.mean_error and res.mce == only3.mce and res.ce == only3.ce
    rc = main(["shift", "--checkpoint", str(run), "--data", "digits", "--corruptions", "fog", "--severities", "0,2",
               "--n-test", "20", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["accuracy"]["fog"]["0"] == doc["clean_accuracy"]
    from robustlab.bench import load_spec

    load_spec({"name": "s", "data": ["digits"], "models": ["mlp"], "losses": ["ce"], "seeds": [0],
               "evaluations": [{"name": "corruptions", "corruptions": ["fog"], "severities": [0, 1]}]})
