"""Regression robustness: PGD on the squared error (worst-case MSE) and IBP/CROWN certified output intervals."""

import pytest
import torch
from torch import nn

from robustlab._validation import InvalidParameterError
from robustlab.certify import certified_deviation, certified_worst_mse, regression_output_bounds
from robustlab.evaluate import regression_pgd, regression_robustness


def _linear():
    torch.manual_seed(0)
    m = nn.Linear(4, 1)
    x = torch.rand(40, 4, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2
    y = torch.randn(40, generator=torch.Generator().manual_seed(2))
    return m, x, y


@pytest.mark.parametrize("norm, dual", [("linf", lambda w: w.abs().sum()), ("l2", lambda w: w.norm())])
def test_linear_model_worst_case_is_attained_and_certified_exactly(norm, dual):
    m, x, y = _linear()
    eps = 0.05
    with torch.no_grad():
        f = m(x).reshape(-1)
        shift = eps * float(dual(m.weight))
    exact = float(((f - y).abs() + shift).pow(2).mean())  # |f - y| grows by eps * ||w||_dual at the worst point
    res = regression_robustness(m, x, y, eps=eps, norm=norm, clip=None, steps=10, random_start=False)
    assert res["adv_mse"] == pytest.approx(exact, rel=1e-5) and res["mse"] < res["adv_mse"]
    assert res["mean_change"] == pytest.approx(shift, rel=1e-4)
    assert certified_worst_mse(m, x, y, eps=eps, norm=norm, clip=None) == pytest.approx(exact, rel=1e-5)
    assert torch.allclose(certified_deviation(m, x, eps=eps, norm=norm, clip=None), torch.full((40,), shift), rtol=1e-4)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_mlp_attack_stays_within_the_certified_interval(method):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    _, x, y = _linear()
    for norm in ("linf", "l2"):
        xa = regression_pgd(mlp, x, y, eps=0.1, norm=norm, generator=torch.Generator().manual_seed(0))
        delta = (xa - x).flatten(1)
        assert float(delta.abs().max() if norm == "linf" else delta.norm(dim=1).max()) <= 0.1 + 1e-6
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
        lo, up = regression_output_bounds(mlp, x, eps=0.1, norm=norm, method=method)
        with torch.no_grad():
            fa = mlp(xa).reshape(-1)
        assert bool((fa >= lo - 1e-5).all() and (fa <= up + 1e-5).all())
        res = regression_robustness(mlp, x, y, eps=0.1, norm=norm)
        assert res["mse"] <= res["adv_mse"] <= certified_worst_mse(mlp, x, y, eps=0.1, norm=norm, method=method) + 1e-6
    ibp = certified_worst_mse(mlp, x, y, eps=0.1)
    assert certified_worst_mse(mlp, x, y, eps=0.1, method="crown") <= ibp + 1e-6


def test_seeded_and_validated():
    m, x, y = _linear()
    a = regression_robustness(m, x, y, eps=0.05, seed=3)
    assert a == regression_robustness(m, x, y, eps=0.05, seed=3)
    assert regression_robustness(m, x, y, eps=0.0)["adv_mse"] == pytest.approx(a["mse"])
    with pytest.raises(InvalidParameterError, match="'norm'.*'l1'"):
        regression_pgd(m, x, y, eps=0.1, norm="l1")
    with pytest.raises(InvalidParameterError, match="'eps'"):
        regression_pgd(m, x, y, eps=-1.0)
    with pytest.raises(InvalidParameterError, match="one output per sample"):
        regression_pgd(nn.Linear(4, 3), x, y, eps=0.1)
    with pytest.raises(InvalidParameterError, match="one output per sample"):
        regression_output_bounds(nn.Linear(4, 3), x, eps=0.1)


def test_pipeline_regression_run_with_regression_robust_evaluation():
    from robustlab import pipeline

    cfg = {"data": {"name": "friedman", "options": {"n_samples": 200}}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
           "loss": "mse", "train": {"epochs": 2, "optimizer": "adam", "lr": 0.01, "batch_size": 32},
           "evaluations": [{"name": "clean"}, {"name": "regression_robust", "eps": [0.02, 0.1], "steps": 5, "n_test": 40}]}
    res = pipeline.run(cfg, checkpoint=False)
    m = {k: v for k, v, _ in res.metrics}
    assert m["test/mse"] >= 0 and m["reg_adv_mse/eps=0.02"] <= m["reg_adv_mse/eps=0.1"]
    for e in ("0.02", "0.1"):
        assert m[f"reg_adv_mse/eps={e}"] <= m[f"reg_cert_mse/eps={e}"] and m[f"reg_cert_dev/eps={e}"] > 0
    bad = {**cfg, "data": "digits", "loss": "ce", "model": "linear", "train": {"epochs": 1}}
    with pytest.raises(InvalidParameterError, match=r"\['regression_robust'\] apply to regression runs"):
        pipeline.run(bad, checkpoint=False)
    with pytest.raises(InvalidParameterError, match=r"classification evaluations.*regression_robust"):
        pipeline.run({**cfg, "evaluations": [{"name": "attacks"}]}, checkpoint=False)


def test_every_metric_of_a_regression_run_is_declared():
    from robustlab import pipeline
    from robustlab._regression_run import regression_evaluations
    from robustlab.bench.evaluations import EVALUATIONS, resolve_metric

    names = regression_evaluations()
    assert names == ["regression_robust"]
    evals = [{"name": "clean"}] + [{"name": n, **EVALUATIONS.spec(n).example_kwargs} for n in names]
    res = pipeline.run({"data": {"name": "friedman", "options": {"n_samples": 150}}, "model": "linear", "loss": "mse",
                        "noise": "outliers:0.1", "train": {"epochs": 2, "lr": 0.01}, "evaluations": evals},
                       checkpoint=False)
    assert not sorted(n for n, _, _ in res.metrics if resolve_metric(n) is None)
    assert {resolve_metric(n).evaluation for n, _, _ in res.metrics} == {*names, "pipeline", "regression"}
