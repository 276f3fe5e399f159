"""The Ray executor on a real local Ray instance gives the same numbers as the local executor."""

from __future__ import annotations

import pytest

from robustlab.bench import ResultStore, expand, run_sweep

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'robustlab[ray]'")

SPEC = {
    "name": "ray-vs-local",
    "data": [{"name": "gaussians", "n_train": 80, "n_test": 40, "num_classes": 3, "dim": 4}],
    "noise": ["none", "symmetric:0.3"],
    "models": ["linear"],
    "losses": ["ce"],
    "seeds": [0, 1],
    "train": {"epochs": 2, "batch_size": 32},
    "evaluations": ["clean"],
}


@pytest.mark.ray
def test_ray_and_local_executors_give_the_same_numbers(tmp_path):
    spec = dict(SPEC, evaluations=["clean", {"name": "topk", "k": [1, 2]},
                                   "memorization"])
    spec["evaluations"].append({"name": "conformal", "scores": ["thr"], "when": {"seed": 0}})
    local = run_sweep(spec, tmp_path / "local", workers=2, threads=1, progress=False)
    remote = run_sweep(spec, tmp_path / "ray", workers=2, threads=1, executor="ray", progress=False)
    n = len(expand(spec))
    assert local.completed == remote.completed == n and remote.failed == 0
    with ResultStore(tmp_path / "local", readonly=True) as a, ResultStore(tmp_path / "ray", readonly=True) as b:
        ma = {(m["run_id"], m["name"], m["step"]): m["value"] for m in a.metrics() if "time_s" not in m["name"]}
        mb = {(m["run_id"], m["name"], m["step"]): m["value"] for m in b.metrics() if "time_s" not in m["name"]}
        assert {r["executor"] for r in b.runs()} == {"ray"}
    assert ma.keys() == mb.keys() and len(ma) > 0
    for k in ma:
        assert mb[k] == pytest.approx(ma[k], rel=1e-6, abs=1e-9), k
    assert not ray.is_initialized()  # the executor shuts down the instance it started
