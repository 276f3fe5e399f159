"""The optional MLflow mirror of a results folder (``bench run --mlflow URI``, ``results export --mlflow URI``).

One MLflow experiment per spec (``robustlab/<spec>``), one MLflow run per robustlab run, found again
by its ``robustlab.run_id`` tag (so mirroring twice logs once). Each run gets every resolved config
value as a parameter (``train.lr``, ``loss.kwargs.q``, ...), the axis labels and versions as tags,
a readable name (``mnist sym:0.4 mlp gce standard seed=0``), its metrics (with steps), its files
(``config.json``, ``result.json`` and the artifacts the run wrote) and, per spec, a ``report`` run
holding the HTML report and Markdown summary. The database stays the source of truth.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from ._rebuild import RUNS_DIR
from ._worker import CONFIG_NAME, RESULT_NAME

__all__ = ["MlflowMirror", "export_to_mlflow", "flatten_config", "require_mlflow"]

log = logging.getLogger(__name__)
_MAX_PARAM = 6000  # MLflow's limit on a parameter value


def require_mlflow() -> Any:
    """Import MLflow or raise ImportError saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise ImportError("--mlflow needs MLflow: pip install 'robustlab[mlflow]' (or mlflow).") from None
    return mlflow


def flatten_config(config: Any, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}, "evaluations": [{"name": "clean"}]}`` -> ``{"train.lr": "0.1", "evaluations.0.name": "clean"}``."""
    out: dict[str, str] = {}
    if isinstance(config, dict) and config:
        for k, v in config.items():
            out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(config, list) and config and any(isinstance(v, (dict, list)) for v in config):
        for i, v in enumerate(config):
            out.update(flatten_config(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix or "value"] = str(config)[:_MAX_PARAM]
    return out


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . : /`` and spaces."""
    return re.sub(r"[^\w\-.:/ ]", "_", name)[:250]


def run_name(labels: dict[str, Any]) -> str:
    """A readable MLflow run name from the axis labels (the run id is a tag)."""
    from ..pipeline import AXES

    return " ".join(f"seed={labels.get(a)}" if a == "seed" else str(labels.get(a)) for a in AXES)


class MlflowMirror:
    """Logs robustlab runs to the MLflow tracking server or store at ``uri``."""

    def __init__(self, uri: str) -> None:
        mlflow = require_mlflow()
        try:  # fail before the sweep starts, not with a warning per run
            self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)
        except Exception as e:
            raise ValueError(f"--mlflow {uri!r}: cannot use this MLflow tracking store ({type(e).__name__}: "
                             f"{str(e)[:500]}).") from None
        self._entities = mlflow.entities
        self._experiments: dict[str, str] = {}

    def _experiment(self, spec: str) -> str:
        if spec not in self._experiments:
            name = f"robustlab/{spec}"
            exp = self.client.get_experiment_by_name(name)
            self._experiments[spec] = exp.experiment_id if exp else self.client.create_experiment(name)
        return self._experiments[spec]

    def _find(self, exp_id: str, tag: str, value: str) -> Any:
        found = self.client.search_runs([exp_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
        return found[0] if found else None

    def log_run(self, *, spec: str, run_id: str, labels: dict[str, Any], config: dict[str, Any], status: str,
                metrics: list[tuple[str, float | None, int]], artifacts: list[tuple[str, str]],
                env: dict[str, Any] | None = None, error: str | None = None, run_dir: Path | None = None,
                resolved: dict[str, Any] | None = None) -> bool:
        """Log one run (or skip it when a completed copy is there); return whether anything was logged.

        Parameters: the run config flattened (``train.lr``), and ``resolved`` (every hyper-parameter the
        run used, defaults included) under ``resolved.`` (``resolved.loss.q``).
        """
        E = self._entities
        exp_id = self._experiment(spec)
        old = self._find(exp_id, "robustlab.run_id", run_id)
        if old is not None and old.data.tags.get("robustlab.status") == "completed":
            return False
        tags = {"robustlab.run_id": run_id, "robustlab.spec": spec, "robustlab.status": status,
                **{f"axis.{k}": str(v) for k, v in labels.items()},
                **{f"version.{k}": str(v) for k, v in (env or {}).items() if k in ("robustlab", "torch", "git_commit")}}
        if error:
            tags["robustlab.error"] = error[:5000]
        run = old or self.client.create_run(exp_id, tags=tags, run_name=run_name(labels))
        rid = run.info.run_id
        now = int(time.time() * 1000)
        flat = flatten_config(config)
        if resolved:
            flat.update(flatten_config(resolved, "resolved"))
        params = [E.Param(_key(k), v) for k, v in flat.items()]
        if old is None:  # parameters are immutable in MLflow; a retried run has the same config anyway
            for i in range(0, len(params), 100):
                self.client.log_batch(rid, params=params[i:i + 100])
        mets = [E.Metric(_key(n), float(v), now, max(int(s), 0)) for n, v, s in metrics
                if v is not None and v == v]
        for i in range(0, len(mets), 1000):
            self.client.log_batch(rid, metrics=mets[i:i + 1000])
        self.client.log_batch(rid, tags=[E.RunTag(k, v) for k, v in tags.items()])
        files: list[tuple[str | None, Path]] = []
        if run_dir is not None:
            files += [(None, run_dir / CONFIG_NAME), (None, run_dir / RESULT_NAME)]
        files += [(name, Path(path)) for name, path in artifacts]
        for name, path in files:
            if path.is_file():
                self.client.log_artifact(rid, str(path), artifact_path=_key(name) if name else None)
        self.client.set_terminated(rid, status="FINISHED" if status == "completed" else "FAILED")
        return True

    def log_report(self, spec: str, out: str | os.PathLike[str]) -> None:
        """Write the results folder's report and summary and log them to the spec's ``report`` run."""
        from .report import write_report

        exp_id = self._experiment(spec)
        old = self._find(exp_id, "robustlab.kind", "report")
        rid = old.info.run_id if old else self.client.create_run(
            exp_id, tags={"robustlab.kind": "report", "robustlab.spec": spec}, run_name=f"report {spec}").info.run_id
        with tempfile.TemporaryDirectory(prefix="robustlab-mlflow-") as tmp:
            for name in ("report.html", "report.md"):
                for p in write_report(out, Path(tmp) / name):
                    self.client.log_artifact(rid, str(p))
        self.client.set_terminated(rid, status="FINISHED")


def _resolved(run_dir: Path) -> dict[str, Any] | None:
    """The resolved hyper-parameters from a run's result file (not kept in the database)."""
    from ._resultfile import InvalidResult, load_result

    try:
        return load_result(run_dir).get("resolved")
    except (InvalidResult, OSError):
        return None


def export_to_mlflow(out: str | os.PathLike[str], uri: str) -> dict[str, int]:
    """Mirror every run of a results folder to MLflow (backfill); return ``{"logged", "skipped", "specs"}``."""
    from .store import ResultStore

    mirror = MlflowMirror(uri)
    outp = Path(out)
    if outp.suffix == ".db":
        outp = outp.parent
    counts = {"logged": 0, "skipped": 0, "specs": 0}
    with ResultStore(outp, readonly=True) as st:
        specs = [s["spec"] for s in st.sweeps()]
        for spec in specs:
            for r in st.runs(spec=spec):
                if r["status"] == "running":
                    continue
                logged = mirror.log_run(
                    spec=spec, run_id=r["id"], labels=r["labels"], config=r["config"], status=r["status"],
                    metrics=[(m["name"], m["value"], m["step"]) for m in st.metrics(r["id"])],
                    artifacts=list(st.artifacts(r["id"]).items()), env=r["env"], error=r.get("error"),
                    run_dir=outp / RUNS_DIR / r["id"], resolved=_resolved(outp / RUNS_DIR / r["id"]))
                counts["logged" if logged else "skipped"] += 1
    for spec in specs:
        mirror.log_report(spec, outp)
        counts["specs"] += 1
    return counts
