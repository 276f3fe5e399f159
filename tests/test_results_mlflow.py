"""The MLflow mirror against a local file store: every config value, readable names, files, report, backfill."""

from __future__ import annotations

import pytest

from robustlab.bench import expand, run_sweep
from robustlab.bench._mlflow import flatten_config, run_name
from robustlab.cli import main

mlflow = pytest.importorskip("mlflow", reason="MLflow is optional: pip install mlflow-skinny")

SPEC = {
    "name": "mirror",
    "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "num_classes": 3, "dim": 4}],
    "noise": ["none", "symmetric:0.2"], "models": ["linear"], "losses": ["ce"], "seeds": [0],
    "train": {"epochs": 2, "batch_size": 32}, "evaluations": ["clean"], "run": {"checkpoints": True},
}


def test_flatten_config_names_every_leaf():
    flat = flatten_config({"train": {"lr": 0.1, "schedule": None}, "evaluations": [{"name": "clean"}], "k": [1, 2]})
    assert flat == {"train.lr": "0.1", "train.schedule": "None", "evaluations.0.name": "clean", "k": "[1, 2]"}


def _mirrored(uri: str) -> dict:
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("robustlab/mirror")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    out = {}
    for r in runs:
        files = {f.path for f in client.list_artifacts(r.info.run_id)}
        for d in [f.path for f in client.list_artifacts(r.info.run_id) if f.is_dir]:
            files |= {f.path for f in client.list_artifacts(r.info.run_id, d)}
        key = r.data.tags.get("robustlab.run_id") or r.data.tags.get("robustlab.kind")
        out[key] = {"name": r.info.run_name, "params": r.data.params, "metrics": r.data.metrics,
                    "tags": r.data.tags, "files": files, "status": r.info.status}
    return out


def test_sweep_mirror_and_backfill_log_the_same_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "out"
    res = run_sweep(SPEC, out, progress=False, mlflow_uri=uri)
    assert res.completed == 2
    live = _mirrored(uri)
    runs = expand(SPEC)
    assert set(live) == {r.id for r in runs} | {"report"}
    for rc in runs:
        m = live[rc.id]
        assert m["name"] == run_name(rc.labels) and rc.id[:8] not in m["name"]  # readable, not a hash
        config = {k: v for k, v in m["params"].items() if not k.startswith("resolved.")}
        assert config == flatten_config(rc.config)  # every config value ...
        assert {"data.options.dim", "evaluations.0.name", "seed", "train.epochs"} <= set(config)
        assert m["params"]["resolved.data.num_classes"] == "3"  # ... and every hyper-parameter as used
        assert {"resolved.train.lr", "resolved.noise.rate"} <= set(m["params"])
        assert m["tags"]["axis.noise"] == rc.labels["noise"] and m["status"] == "FINISHED"
        assert 0.0 <= m["metrics"]["acc/clean"] <= 1.0
        assert {"config.json", "result.json", "checkpoint/model.pt"} <= m["files"]
    assert {"report.html", "report.md"} <= live["report"]["files"]

    uri2 = (tmp_path / "mlruns2").as_uri()
    assert main(["results", "export", str(out), "--mlflow", uri2]) == 0
    assert "2 runs logged, 0 already there" in capsys.readouterr().out
    back = _mirrored(uri2)
    for rc in runs:
        assert {k: back[rc.id][k] for k in ("name", "params", "metrics", "files")} == \
               {k: live[rc.id][k] for k in ("name", "params", "metrics", "files")}
    assert main(["results", "export", str(out), "--mlflow", uri2]) == 0  # idempotent
    assert "0 runs logged, 2 already there" in capsys.readouterr().out
    assert len(_mirrored(uri2)) == 3


def test_an_unusable_tracking_store_fails_before_the_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="cannot use this MLflow tracking store"):
        run_sweep(SPEC, out, progress=False, mlflow_uri="bogus-scheme://nowhere")
    assert not out.exists()
