"""run_sweep checks the whole grid first (as ``robustlab bench run`` does): a bad grid fails before anything is written."""

from __future__ import annotations

import pytest

from robustlab._validation import InvalidParameterError
from robustlab.bench import SpecError, check_spec, run_sweep

BAD = {
    "name": "bad-grid",
    "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4},
             {"name": "mnist", "root": "/nonexistent/robustlab-test-mnist"}],
    "models": ["linear", "lenet"],  # lenet is an image model: it cannot take 4 features
    "losses": ["ce"],
    "train": {"epochs": 1, "batch_size": 16},
    "evaluations": ["clean"],
}


def test_python_run_sweep_gives_the_grid_check_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SpecError) as e:
        run_sweep(BAD, out, progress=False)
    text = " | ".join(e.value.problems)
    assert "data[1] (mnist): cannot be loaded" in text and "models[1] (lenet)" in text
    assert not out.exists()  # no results folder, no database, no run directory
    with pytest.raises(SpecError) as cli_path:  # what `robustlab bench run` reports for the same spec
        check_spec(BAD)
    assert e.value.problems == cli_path.value.problems


def test_run_sweep_check_flag_is_validated(tmp_path):
    with pytest.raises(InvalidParameterError, match="'check' parameter of run_sweep"):
        run_sweep(BAD, tmp_path / "o", check="yes", progress=False)
