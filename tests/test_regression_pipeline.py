"""Regression runs through the one pipeline and the CLI: task inferred from the data set, target noise, metrics."""

import json

import pytest

from robustlab import pipeline
from robustlab._validation import InvalidParameterError
from robustlab.cli import main

TINY = {"data": {"name": "friedman", "options": {"n_samples": 200}}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "train": {"epochs": 2, "optimizer": "adam", "lr": 0.01, "batch_size": 32}}


def test_pipeline_regression_run_is_seeded_and_reports_metrics():
    cfg = {**TINY, "noise": "student_t:0.5", "loss": {"name": "quantile", "kwargs": {"tau": 0.5}}, "seed": 2}
    a, b = pipeline.run(cfg), pipeline.run(cfg)
    names = {m[0] for m in a.metrics}
    assert {"test/mse", "test/mae", "test/r2", "noise/realized_rate", "train/test_r2"} <= names
    assert [m for m in a.metrics if m[0] == "test/mse"] == [m for m in b.metrics if m[0] == "test/mse"]
    assert a.resolved["task"] == "regression" and a.resolved["loss"] == {"tau": 0.5, "reduction": "mean"}
    assert a.noisy.realized_rate == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("change, match", [
    ({"loss": "ce"}, "must be a regression loss"),
    ({"loss": "mse", "objective": "pgd_at"}, "objective 'standard' only"),
    ({"loss": "mse", "evaluations": [{"name": "clean"}, {"name": "attacks"}]}, r"evaluations \[.attacks.\] are classification"),
    ({"loss": "mse", "train": {"epochs": 1, "augment": "flip"}}, r"cannot augment.*images and class labels"),
    ({"loss": "mse", "train": {"epochs": 1, "select": "pgd"}}, r"selects on the held-out MSE.*'pgd'"),
])
def test_pipeline_regression_refuses_classification_parts(change, match):
    with pytest.raises(InvalidParameterError, match=match):
        pipeline.run({**TINY, **change})


def test_pipeline_regression_select_ema_and_resume(tmp_path):
    cfg = {**TINY, "loss": "mse", "train": {**TINY["train"], "epochs": 3, "select": "clean", "val_fraction": 0.2,
                                             "ema": 0.9}}
    ref = pipeline.run(cfg, checkpoint=False)
    assert ref.history["selected_epoch"][0] in (1.0, 2.0, 3.0) and len(ref.history["val_mse"]) == 3
    res = pipeline.run(cfg, out=tmp_path / "run", resume=True)  # keeps <out>/train_state; a rerun resumes from it
    assert (tmp_path / "run" / "train_state" / "last.pt").is_file()
    again = pipeline.run(cfg, out=tmp_path / "run", resume=True)
    test = {m[0]: m[1] for m in ref.metrics if m[0].startswith("test/")}
    assert test == {m[0]: m[1] for m in res.metrics if m[0].startswith("test/")}
    assert test == {m[0]: m[1] for m in again.metrics if m[0].startswith("test/")}
    with pytest.raises(InvalidParameterError, match="distributed=True.*not implemented for regression"):
        pipeline.run(cfg, checkpoint=False, fit_kw={"distributed": True})


def test_target_noise_in_config_is_validated():
    with pytest.raises(InvalidParameterError, match="'magnitud'"):
        pipeline.Config.from_dict({**TINY, "noise": {"kind": "outliers", "rate": 0.1, "options": {"magnitud": 3}}})
    with pytest.raises(KeyError, match="Did you mean 'outliers'"):
        pipeline.Config.from_dict({**TINY, "noise": "outlier:0.1"})


def test_cli_train_regression(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", "friedman", "--data-arg", "n_samples=200", "--model-arg", "hidden=16",
               "--loss", "huber", "--loss-arg", "delta=1.0", "--noise", "outliers:0.2", "--epochs", "2",
               "--optimizer", "adam", "--lr", "0.01", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "test r2 (clean)" in text and "huber delta=1" in text
    rec = json.loads((out / "metrics.json").read_text())
    assert set(rec["metrics"]) >= {"test_mse", "test_mae", "test_r2"} and rec["resolved"]["task"] == "regression"
    assert (out / "model.pt").is_file()
    assert main(["train", "--data", "friedman", "--loss", "gce", "--epochs", "1"]) == 2
    assert "Unknown regression loss 'gce'" in capsys.readouterr().err


def test_bench_spec_with_regression_runs_and_reports(tmp_path, capsys):
    spec = tmp_path / "reg.yaml"
    spec.write_text(
        "name: reg\ndata:\n  - {name: friedman, n_samples: 120}\nnoise: [none, 'outliers:0.2', "
        "{kind: adversarial, rate: 0.1, magnitude: 2.0}]\nmodels:\n  - {name: mlp, hidden: [8]}\n"
        "losses: [mse, {name: huber, delta: 1.0}]\nseeds: [0]\n"
        "train: {epochs: 1, batch_size: 32, optimizer: adam, lr: 0.01}\n")
    assert main(["bench", "run", str(spec), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "6 completed, 0 failed" in text and "test R²" in text and "test MSE" in text
    assert main(["report", str(tmp_path / "out"), "-o", str(tmp_path / "r.md")]) == 0
    assert "test R²" in (tmp_path / "r.md").read_text()


def test_cli_lists_the_new_registries(capsys):
    for kind, name in (("regression_losses", "cs_divergence"), ("target_noise", "student_t"),
                       ("regression_data", "friedman"), ("segmentation_losses", "soft_dice")):
        assert main(["list", kind]) == 0
        assert name in capsys.readouterr().out
