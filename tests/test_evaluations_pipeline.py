"""A real run through ``robustlab.pipeline`` writes only declared metrics (the pipeline's own and the
evaluations'), so the store and the report can read every name from the declarations."""

from __future__ import annotations

from robustlab import pipeline
from robustlab.bench.evaluations import EVALUATIONS, PIPELINE_METRICS, resolve_metric


def test_every_metric_of_a_run_is_declared():
    classification = [n for n in EVALUATIONS if getattr(EVALUATIONS.spec(n).factory, "task", "") != "regression"]
    evals = [{"name": n, **EVALUATIONS.spec(n).example_kwargs} for n in classification]  # regression: test_regression_*
    res = pipeline.run({"data": {"name": "digits", "n_train": 400, "n_test": 150}, "noise": "symmetric:0.2",
                        "model": {"name": "linear"}, "train": {"epochs": 3}, "evaluations": evals, "seed": 0})
    undeclared = sorted({n for n, _, _ in res.metrics if resolve_metric(n) is None})
    assert not undeclared, f"metrics written by a run but declared nowhere: {undeclared}"
    by = {}
    for n, _, _ in res.metrics:
        by.setdefault(resolve_metric(n).evaluation, set()).add(resolve_metric(n).metric.pattern)
    assert by.get("pipeline") == {m.pattern for m in PIPELINE_METRICS}  # each pipeline declaration is used
    assert set(by) == {*classification, "pipeline"}


def test_run_evaluation_fills_the_defaults_of_parameters_left_out():
    from robustlab.bench.evaluations import run_evaluation
    from robustlab.testing._evaluations import tiny_run

    out = run_evaluation({"name": "topk"}, tiny_run().ctx)
    assert [n for n, _, _ in out.metrics] == ["acc/top1", "acc/top5"]
