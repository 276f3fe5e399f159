"""Without MLflow installed, --mlflow is a clear usage error that writes nothing."""

from __future__ import annotations

import sys

import yaml

from robustlab.cli import main

SPEC = {"name": "m", "data": [{"name": "gaussians", "n_train": 30, "n_test": 10, "num_classes": 3, "dim": 4}],
        "models": ["linear"], "losses": ["ce"], "seeds": [0], "train": {"epochs": 1}, "evaluations": ["clean"]}


def test_mlflow_missing_is_a_clear_error_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "out"
    assert main(["bench", "run", str(spec), "--out", str(out), "--mlflow", "file:/nowhere", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs MLflow: pip install 'robustlab[mlflow]'" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["results", "export", str(out), "--mlflow", "file:/nowhere"]) == 2
    assert "needs MLflow" in capsys.readouterr().err
