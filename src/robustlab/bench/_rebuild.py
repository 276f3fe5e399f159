"""Rebuild ``results.db`` from the per-run files (``robustlab results rebuild DIR``).

The driver keeps everything needed beside the database: ``runs/<id>/config.json`` (the run config;
its hash is the folder's name), ``runs/<id>/run.json`` (spec name and display labels, written at
claim), ``runs/<id>/result.json`` (the worker's result) and ``sweeps/<spec>.json`` (each spec and
its grid). :func:`rebuild` builds a new database from them in a temporary file under the folder's
lock, keeps the old database as ``results.db.before-rebuild-<UTC time>`` and renames the new one
into place; result files that do not validate are quarantined and their runs will run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ._folder import FolderLock
from ._resultfile import QUARANTINE_DIR, InvalidResult, load_config, load_result, quarantine
from ._worker import RESULT_NAME
from .store import DB_NAME, ResultStore

__all__ = ["META_NAME", "RUNS_DIR", "SWEEPS_DIR", "RebuildReport", "rebuild", "write_run_meta", "write_sweep_meta"]

RUNS_DIR = "runs"
SWEEPS_DIR = "sweeps"
META_NAME = "run.json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_run_meta(run_dir: Path, *, spec: str, labels: dict[str, Any]) -> None:
    """Record what the database knows of a run beyond its config (spec name, labels) in ``run.json``."""
    _write_atomic(run_dir / META_NAME, json.dumps({"spec": spec, "labels": labels}, sort_keys=True))


def _sweep_file(out: Path, spec: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", spec)[:80]
    return out / SWEEPS_DIR / f"{safe}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}.json"


def write_sweep_meta(out: Path, *, spec: str, spec_json: str, run_ids: list[str]) -> None:
    """Record a sweep (spec name, spec JSON, grid run ids) in ``sweeps/``."""
    p = _sweep_file(out, spec)
    p.parent.mkdir(exist_ok=True)
    _write_atomic(p, json.dumps({"spec": spec, "spec_json": spec_json, "run_ids": run_ids}))


@dataclass
class RebuildReport:
    """What :func:`rebuild` did."""

    db: Path
    runs: int = 0
    completed: int = 0
    failed: int = 0
    without_result: list[str] = field(default_factory=list)  # run folders with no result file (will rerun)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (file kept as, why)
    previous: Path | None = None  # where the old database was kept


def rebuild(out: str | os.PathLike[str]) -> RebuildReport:
    """Rebuild ``out/results.db`` from the per-run files, atomically (temp file + rename)."""
    outp = Path(out).resolve()
    runs_dir = outp / RUNS_DIR
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"'{outp}' has no '{RUNS_DIR}/' folder: there are no per-run files to rebuild from.")
    with FolderLock(outp, purpose="results rebuild"):
        db = outp / DB_NAME
        salvaged = _salvage(db)
        tmp = outp / f".rebuild-{os.getpid()}.db"  # ends in .db: ResultStore opens it as the file
        for sfx in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{sfx}").unlink(missing_ok=True)
        report = RebuildReport(db=db)
        try:
            with ResultStore(tmp) as store:
                _fill(store, outp, salvaged, report)
            report.previous = _swap(tmp, db)
        finally:
            for sfx in ("", "-wal", "-shm"):
                Path(f"{tmp}{sfx}").unlink(missing_ok=True)
    return report


def _fill(store: ResultStore, outp: Path, salvaged: dict[str, Any], report: RebuildReport) -> None:
    sweeps = []
    for p in sorted((outp / SWEEPS_DIR).glob("*.json")):
        try:
            s = json.loads(p.read_text(encoding="utf-8"))
            sweeps.append((str(s["spec"]), str(s["spec_json"]), [str(r) for r in s["run_ids"]]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    sweeps += [(name, sj, salvaged["links"].get(name, [])) for name, sj in salvaged["sweeps"].items()
               if name not in {s[0] for s in sweeps}]
    spec_of: dict[str, str] = {}
    known = {s[0] for s in sweeps}
    for name, spec_json, run_ids in sweeps:
        store.record_sweep(name, spec_json)
        store.link_runs(name, run_ids)
        spec_of.update((r, name) for r in run_ids)
    for rd in sorted(p for p in (outp / RUNS_DIR).iterdir() if p.is_dir()):
        rf = rd / RESULT_NAME
        if not rf.exists():
            report.without_result.append(rd.name)
            continue
        try:
            config = load_config(rd)
            result = load_result(rd)
        except InvalidResult as e:
            kept = quarantine(rf, outp / QUARANTINE_DIR)
            report.quarantined.append((str(kept or rf), str(e)))
            continue
        meta = _read_meta(rd) or salvaged["runs"].get(rd.name) or {}
        spec = str(meta.get("spec") or spec_of.get(rd.name) or "rebuilt")
        if spec not in known:  # a run whose sweep file is gone: keep the link table consistent
            store.record_sweep(spec, "{}")
            known.add(spec)
        given = meta.get("labels")
        labels: dict[str, Any] = given if isinstance(given, dict) else _labels_from(config)
        store.claim(rd.name, spec=spec, config=config, labels=labels, owner="rebuilt", executor=None,
                    started_at=result.get("started_at"))
        store.finish(rd.name, result)
        report.runs += 1
        if result["status"] == "completed":
            report.completed += 1
        else:
            report.failed += 1


def _read_meta(rd: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((rd / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _labels_from(config: dict[str, Any]) -> dict[str, Any]:
    """Display labels when neither ``run.json`` nor the old database has them (registry names)."""
    def name(key: str) -> Any:
        v = config.get(key)
        return v.get("name") if isinstance(v, dict) else v

    from ..pipeline import AXES, COLLAB_AXES

    nc = config.get("noise")
    noise: dict[str, Any] = nc if isinstance(nc, dict) else {}
    kind, rate = noise.get("kind", "none"), noise.get("rate", 0.0)
    labels = {a: name(a) for a in AXES}
    labels.update(noise="none" if kind == "none" else f"{kind}:{rate}", noise_kind=kind, noise_rate=rate)
    cc = config.get("collab")
    if isinstance(cc, dict):  # a collaborative run: its collab section's names, as CollabConfig.labels() gives them
        labels.update({a: (cc[a].get("name") if isinstance(cc.get(a), dict) else cc.get(a)) for a in COLLAB_AXES})
    return labels


def _salvage(db: Path) -> dict[str, Any]:
    """Whatever the old (possibly damaged) database still gives: sweeps, links, spec and labels per run."""
    out: dict[str, Any] = {"sweeps": {}, "links": {}, "runs": {}}
    if not db.exists():
        return out
    try:
        con = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True)
    except sqlite3.Error:
        return out
    try:
        for query, put in (
            ("SELECT spec, spec_json FROM sweeps", lambda r: out["sweeps"].__setitem__(r[0], r[1])),
            ("SELECT spec, run_id FROM sweep_runs", lambda r: out["links"].setdefault(r[0], []).append(r[1])),
            ("SELECT id, spec, labels_json FROM runs",
             lambda r: out["runs"].__setitem__(r[0], {"spec": r[1], "labels": json.loads(r[2])})),
        ):
            try:
                for row in con.execute(query):
                    try:
                        put(row)
                    except (ValueError, TypeError):
                        continue
            except sqlite3.Error:
                continue
    finally:
        con.close()
    return out


def _swap(tmp: Path, db: Path) -> Path | None:
    """Keep the old database (and its WAL) aside, then rename the new one into place."""
    previous = None
    if db.exists():
        previous = db.with_name(f"{DB_NAME}.before-rebuild-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.replace(db, previous)
    for sfx in ("-wal", "-shm"):  # a stale WAL must never be applied to the new file
        stale = Path(f"{db}{sfx}")
        if stale.exists():
            if previous is not None and sfx == "-wal":
                os.replace(stale, Path(f"{previous}{sfx}"))
            else:
                stale.unlink()
    os.replace(tmp, db)
    return previous
