"""robustlab.pipeline: one run config -> trained model + result record, shared by `train` and the bench worker."""

from __future__ import annotations

import json

import pytest
import torch

from robustlab import pipeline
from robustlab._validation import InvalidParameterError
from robustlab.cli import main

TINY = {"data": {"name": "gaussians", "options": {"n_train": 120, "n_test": 60, "dim": 4}},
        "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "train": {"epochs": 2, "batch_size": 32}}


def _numbers(metrics):
    """Metric rows minus timings, NaN spelled as a string (NaN != NaN)."""
    return [(n, "nan" if v != v else v, s) for n, v, s in metrics if n != "train/time_s"]


def test_config_from_dict_normalizes_and_round_trips():
    cfg = pipeline.Config.from_dict({**TINY, "noise": "symmetric:0.2", "loss": "gce", "seed": 3})
    d = cfg.to_dict()
    assert d["noise"] == {"kind": "symmetric", "rate": 0.2, "options": {}}
    assert d["loss"] == {"name": "gce", "kwargs": {}} and d["seed"] == 3
    assert d["train"]["epochs"] == 2 and d["train"]["optimizer"] == "sgd"  # fit's defaults filled in
    assert pipeline.Config.from_dict(d) == cfg


@pytest.mark.parametrize("noise", [None, "none", "clean", "symmetric:0", {"kind": "asymmetric", "rate": 0.0}])
def test_zero_rate_noise_is_the_clean_run_everywhere(noise):
    assert pipeline.NoiseConfig.from_value(noise).to_dict() == {"kind": "none", "rate": 0.0, "options": {}}


@pytest.mark.parametrize("change, match", [
    ({"train": {"epochs": 0}}, r"'epochs' parameter of fit must be an int in \[1, inf\). Got 0"),
    ({"train": {"lr": -1.0}}, r"'lr' parameter of fit"),
    ({"train": {"epoch": 3}}, r"unknown parameter 'epoch'.*Did you mean 'epochs'"),
    ({"noise": "symetric:0.2"}, r"Did you mean 'symmetric'"),
    ({"noise": {"kind": "asymmetric", "rate": 0.2, "options": {"datset": "mnist"}}}, r"Did you mean 'dataset'"),
    ({"data": {"name": "mnist", "options": {"download": True}}}, r"fetch"),
    ({"seed": -1}, r"'seed'"),
    ({"colour": 1}, r"unknown parameter 'colour'"),
])
def test_bad_configs_fail_clearly(change, match):
    with pytest.raises(ValueError, match=match):
        pipeline.Config.from_dict({**TINY, **change})


def test_run_records_metrics_resolved_defaults_and_checkpoint(tmp_path):
    cfg = {**TINY, "noise": "symmetric:0.3", "objective": {"name": "pgd_at", "kwargs": {"steps": 2}},
           "evaluations": [{"name": "clean"}]}
    res = pipeline.run(cfg, out=tmp_path / "run")
    names = [m[0] for m in res.metrics]
    assert names[0] == "noise/realized_rate" and "acc/final_epoch_test" in names and "acc/clean" in names
    # defaults that matter to the result are resolved, the step size as the objective computed it
    obj = res.resolved["objective"]
    assert obj["steps"] == 2 and obj["eps"] == pytest.approx(8 / 255) and obj["step_size"] > 0
    assert res.resolved["loss"] == {"reduction": "mean"}
    from robustlab.training import load_checkpoint

    model = load_checkpoint(tmp_path / "run")
    assert model.robustlab_extra["run_config"] == res.config.to_dict()
    assert model.robustlab_extra["config"]["data"] == "gaussians"
    # deterministic: same config + seed -> same numbers
    again = pipeline.run(cfg)
    assert _numbers(again.metrics) == _numbers(res.metrics)


def test_asymmetric_map_is_chosen_from_the_data_name():
    d = pipeline.load_data({"name": "gaussians", "options": {"num_classes": 10, "n_train": 50, "n_test": 10}})
    assert pipeline.asymmetric_map_for(d) is None  # no map for 'gaussians'

    class Named:
        name, num_classes = "mnist", 10

    assert pipeline.noise_options(pipeline.NoiseConfig("asymmetric", 0.3), Named()) == {"dataset": "mnist"}
    Named.num_classes = 5  # the map names class 7: does not fit
    assert pipeline.noise_options(pipeline.NoiseConfig("asymmetric", 0.3), Named()) == {}
    given = pipeline.NoiseConfig("asymmetric", 0.3, {"mapping": {0: 1}})
    assert pipeline.noise_options(given, Named()) == {"mapping": {0: 1}}


def test_fetch_options_are_never_recorded(tmp_path, monkeypatch):
    seen = {}
    from robustlab import data

    real = data.load

    def spy(name, **kw):
        seen.update(kw)
        kw.pop("download", None)
        return real(name, **kw)

    monkeypatch.setattr(data, "load", spy)
    res = pipeline.run(TINY, out=tmp_path / "r", fetch={"download": True})
    assert seen.get("download") is True
    text = json.dumps(res.config.to_dict()) + (tmp_path / "r" / "model.pt").read_bytes().decode("latin-1")
    assert "download" not in text
    with pytest.raises(InvalidParameterError, match="fetch"):
        pipeline.run(TINY, fetch={"root": "x"})


def test_unwritable_out_fails_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    called = []
    monkeypatch.setattr(pipeline, "load_data", lambda *a, **k: called.append(1))
    with pytest.raises(InvalidParameterError, match="not a folder"):
        pipeline.run(TINY, out=blocker)
    assert not called


def test_cli_train_and_pipeline_give_the_same_numbers(tmp_path, capsys):
    """The CLI's train is the pipeline: same config -> same history and accuracy."""
    argv = ["train", "--data", "gaussians", "--data-arg", "n_train=120", "--data-arg", "n_test=60",
            "--data-arg", "dim=4", "--model-arg", "hidden=8", "--epochs", "2", "--batch-size", "32", "--quiet",
            "--noise", "symmetric:0.3", "--seed", "1", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    rec = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    res = pipeline.run({**TINY, "noise": "symmetric:0.3", "seed": 1})
    assert rec["history"]["loss"] == res.history["loss"]
    assert rec["resolved"]["train"] == res.resolved["train"]


def test_cli_train_prints_and_stores_objective_defaults(tmp_path, capsys):
    argv = ["train", "--data", "gaussians", "--data-arg", "n_train=60", "--data-arg", "n_test=30",
            "--model-arg", "hidden=8", "--epochs", "1", "--quiet", "--objective", "pgd_at", "--steps", "1",
            "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "eps=0.03137*" in out and "steps=1 " in out  # the default eps is shown, marked as a default
    rec = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert rec["resolved"]["objective"]["eps"] == pytest.approx(8 / 255)
    assert main([*argv[:-2], "--eps", "8/255", "--out", str(tmp_path / "s")]) == 0
    assert "eps=0.03137 " in capsys.readouterr().out


def test_bench_worker_is_the_pipeline():
    from robustlab.bench import expand
    from robustlab.bench._worker import execute_run

    rc = expand({"name": "t", "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4}],
                 "models": [{"name": "mlp", "hidden": [8]}], "losses": ["ce"], "noise": ["symmetric:0.2"],
                 "train": {"epochs": 1, "batch_size": 32}, "evaluations": ["clean"]})[0]
    res = execute_run(rc.config, threads=1)
    assert res["status"] == "completed", res.get("error")
    direct = pipeline.run(rc.config)
    assert _numbers(res["metrics"]) == _numbers(direct.metrics)
    assert res["resolved"]["noise"] == {"kind": "symmetric", "rate": 0.2}
    assert torch.is_tensor(direct.data.x_train)


def test_public_names_exist_and_are_documented():
    import inspect

    import robustlab

    assert robustlab.pipeline is pipeline and pipeline.__doc__
    for name in pipeline.__all__:
        obj = getattr(pipeline, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), name


def test_data_named_as_a_data_ref_or_with_root():
    from robustlab.data import DataRef

    ref = DataRef("gaussians", root="/nowhere", options={"dim": 4})
    a = pipeline.DataConfig.from_value(ref)
    b = pipeline.DataConfig.from_value({"name": "gaussians", "root": "/nowhere", "options": {"dim": 4}})
    c = pipeline.DataConfig.from_value({"name": "gaussians", "options": {"root": "/nowhere", "dim": 4}})
    assert a == b == c and a.to_dict()["options"] == {"root": "/nowhere", "dim": 4}
    assert pipeline.data_ref(a) == ref
    with pytest.raises(InvalidParameterError, match="disagree"):
        pipeline.DataConfig.from_value({"name": "gaussians", "root": "/a", "options": {"root": "/b"}})


def test_a_noise_kind_without_a_rate_is_an_error_not_the_clean_run():
    with pytest.raises(InvalidParameterError, match="needs a 'rate'"):
        pipeline.NoiseConfig.from_value({"kind": "symmetric"})
    with pytest.raises(InvalidParameterError, match=r"'rate' parameter of noise must be a float in \[0, 1\)"):
        pipeline.NoiseConfig.from_value({"kind": "symmetric", "rate": 1.0})
