"""Benchmarks: YAML spec -> grid of runs -> results database -> HTML/Markdown report.

``load_spec(path_or_name)`` validates a spec (``check_spec`` also loads its data and builds its models,
listing every problem), ``expand(spec)`` gives the grid (one :class:`RunConfig`
per point, ``id`` = SHA-256 of the normalized config), ``run_sweep(spec, out, workers=, executor=)``
runs what is not yet completed in ``out/results.db`` (:class:`ResultStore`), and
``write_report(out, "report.html")`` renders the report from the database alone.
Shipped specs are listed in :data:`SPECS` (``robustlab list specs``); evaluation plug-ins in
:data:`EVALUATIONS`.
"""

from __future__ import annotations

from ._gridcheck import check_spec
from .evaluations import EVALUATIONS, EvalContext, EvalOutput, Evaluation, register_evaluation
from .runner import EXECUTORS, SweepResult, default_threads, run_sweep
from .spec import SPECS, BenchSpec, RunConfig, SpecError, canonical_json, expand, load_spec, run_id
from .store import ResultStore

__all__ = [
    "BenchSpec", "EVALUATIONS", "EXECUTORS", "EvalContext", "EvalOutput", "Evaluation", "ResultStore",
    "RunConfig", "SPECS", "SpecError", "SweepResult", "canonical_json", "check_spec", "default_threads", "expand",
    "load_report_data", "load_spec", "register_evaluation", "run_id", "run_sweep", "to_html", "to_markdown",
    "write_report",
]


def __getattr__(name: str):  # the report module is imported on first use
    if name in ("load_report_data", "to_html", "to_markdown", "write_report"):
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module 'robustlab.bench' has no attribute '{name}'")
