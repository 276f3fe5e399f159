"""``robustlab results list|show|export|rebuild DIR``: query a results database, or rebuild it from the run files."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..pipeline import AXES as _AXES  # the one axis table
from ..pipeline import COLLAB_AXES as _COLLAB_AXES


def _axes_of(runs: list[dict[str, Any]]) -> list[str]:
    """The run axes, then the collab axes that some of ``runs`` have (collaborative runs)."""
    return [*_AXES, *(a for a in _COLLAB_AXES if any(a in r["labels"] for r in runs))]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("results", help="list, show or export the runs of a results directory")
    rsub = p.add_subparsers(dest="results_command", metavar="{list,show,export,rebuild}")
    rsub.required = True
    ls = rsub.add_parser("list", help="one line per run: id, axes, status, duration, clean accuracy")
    ls.add_argument("dir", help="results directory (or results.db)")
    ls.add_argument("--status", choices=("running", "completed", "failed"), default=None, help="only runs with this status")
    ls.add_argument("--spec", default=None, help="only runs of this spec")
    ls.set_defaults(func=list_cmd)
    sh = rsub.add_parser("show", help="one run: config, metrics, artifacts, error")
    sh.add_argument("dir", help="results directory (or results.db)")
    sh.add_argument("run_id", help="run id or a unique prefix")
    sh.set_defaults(func=show_cmd)
    ex = rsub.add_parser("export", help="export runs with their final metrics (one row per run, or --long)")
    ex.add_argument("dir", help="results directory (or results.db)")
    ex.add_argument("--format", choices=("csv", "json", "parquet"), default="csv", help="output format (default csv)")
    ex.add_argument("-o", "--out", default=None, help="output file, written atomically (default: stdout for csv/json)")
    ex.add_argument("--long", action="store_true", help="one row per (run, metric, step) instead of one per run")
    ex.add_argument("--mlflow", default=None, metavar="URI",
                    help="instead: mirror every run (config, metrics, files) and the report to this MLflow tracking URI")
    ex.set_defaults(func=export_cmd)
    rb = rsub.add_parser("rebuild", help="rebuild DIR/results.db from the per-run result files (e.g. after damage)")
    rb.add_argument("dir", help="results directory (holds runs/)")
    rb.set_defaults(func=rebuild_cmd)


def _export_mlflow(args: argparse.Namespace) -> int:
    from ..bench._mlflow import export_to_mlflow

    try:
        n = export_to_mlflow(args.dir, args.mlflow)
    except ImportError as e:  # the optional extra is missing: a usage error, not a crash
        raise ValueError(str(e)) from None
    print(f"MLflow {args.mlflow}: {n['logged']} runs logged, {n['skipped']} already there; "
          f"reports of {n['specs']} spec(s) logged")
    return 0


def rebuild_cmd(args: argparse.Namespace) -> int:
    from ..bench._rebuild import rebuild

    rep = rebuild(args.dir)
    print(f"rebuilt {rep.db}: {rep.runs} runs from their result files ({rep.completed} completed, {rep.failed} failed)")
    if rep.previous is not None:
        print(f"  the previous database is kept as {rep.previous}")
    if rep.without_result:
        print(f"  {len(rep.without_result)} run folder(s) have no result file; 'bench run' will run them again")
    for kept, why in rep.quarantined:
        print(f"  quarantined {kept}: {why}", file=sys.stderr)
    return 0


def _store(path: str) -> Any:
    from ..bench import ResultStore

    return ResultStore(path, readonly=True)


def plain(text: object) -> str:
    """Labels, names and errors come from result files: printed on one line without control sequences."""
    from ..bench.report import plain as _plain

    return _plain(text)


def list_cmd(args: argparse.Namespace) -> int:
    with _store(args.dir) as st:
        runs = st.runs(spec=args.spec, status=args.status)
        final = st.final_metrics()
    axes = _axes_of(runs)
    width = {a: 14 if a in _AXES else max([len(a), *(len(plain(r["labels"].get(a, ""))) for r in runs)])
             for a in axes}
    print(f"{'run':<12}  " + "  ".join(f"{a:<{width[a]}}" for a in axes) + f"  {'status':<9}  {'time_s':>7}  {'clean':>6}")
    for r in runs:
        clean = final.get(r["id"], {}).get("acc/clean")
        dur = r.get("duration_s")
        print(f"{r['id'][:12]}  " + "  ".join(f"{plain(r['labels'].get(a, '')):<{width[a]}}" for a in axes)
              + f"  {r['status']:<9}  {'' if dur is None else f'{dur:7.2f}':>7}  {'' if clean is None else f'{clean:.3f}':>6}")
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    with _store(args.dir) as st:
        r = st.run(args.run_id)
    print(f"run {r['id']}\nspec {plain(r['spec'])}  status {r['status']}  attempts {r['attempts']}  "
          f"duration {r.get('duration_s')} s")
    print("labels: " + " ".join(f"{a}={plain(r['labels'].get(a))}" for a in _axes_of([r])))
    print("config: " + json.dumps(r["config"], sort_keys=True))
    print(f"versions: robustlab {r.get('robustlab_version')}, torch {r.get('torch_version')}, git {r.get('git_commit')}")
    if r.get("error"):
        print(f"error: {plain(r['error'])}")
        print("\n".join(plain(line) for line in (r.get("traceback") or "").splitlines()))
    print("metrics:")
    for m in r["metrics"]:
        step = "" if m["step"] < 0 else f" @ {m['step']}"
        print(f"  {plain(m['name'])}{step} = {m['value']:.6g}")
    for name, path in r["artifacts"].items():
        print(f"artifact {plain(name)}: {plain(path)}")
    return 0


def _rows(st: Any, long: bool) -> list[dict[str, Any]]:
    runs = st.runs()
    axes = _axes_of(runs)
    if long:
        labels = {r["id"]: r for r in runs}
        out = []
        for m in st.metrics():
            r = labels[m["run_id"]]
            out.append({"run_id": m["run_id"], **{a: r["labels"].get(a) for a in axes}, "metric": m["name"],
                        "step": m["step"], "value": m["value"]})
        return out
    final = st.final_metrics()
    rows = []
    for r in runs:
        row = {"run_id": r["id"], "spec": r["spec"], **{a: r["labels"].get(a) for a in axes},
               "noise_kind": r["labels"].get("noise_kind"), "noise_rate": r["labels"].get("noise_rate"),
               "status": r["status"], "duration_s": r.get("duration_s"), "train_s": r.get("train_s"),
               "robustlab_version": r.get("robustlab_version"), "torch_version": r.get("torch_version"),
               "git_commit": r.get("git_commit"), "error": r.get("error"), "config": json.dumps(r["config"], sort_keys=True)}
        row.update(final.get(r["id"], {}))
        rows.append(row)
    return rows


def export_cmd(args: argparse.Namespace) -> int:
    if args.mlflow:
        return _export_mlflow(args)
    with _store(args.dir) as st:
        rows = _rows(st, args.long)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    if args.format == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("--format parquet needs pyarrow (pip install pyarrow); use csv or json otherwise.") from None
        if not args.out:
            raise ValueError("--format parquet needs --out FILE.")
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows]), tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        print(f"wrote {len(rows)} rows to {out}", file=sys.stderr)
        return 0
    if args.format == "json":
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
        text = json.dumps(clean, indent=1, sort_keys=False) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        text = buf.getvalue()
    if args.out:
        from ..training import atomic_write_text

        atomic_write_text(Path(args.out), text)
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
