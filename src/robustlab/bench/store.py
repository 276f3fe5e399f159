"""The results database: one SQLite file (WAL mode) per results directory, ``DIR/results.db``.

Tables: ``runs`` (one row per run id: config JSON, status in {running, completed, failed}, timings,
seed, versions, git commit, error and traceback), ``metrics`` (run id, name, value, step; long
format), ``artifacts`` (run id, name, path) and ``sweeps`` (spec name -> spec JSON) with
``sweep_runs`` linking specs to their runs. Only the sweep driver writes, each run in one
transaction; any number of readers may query while it writes.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["DB_NAME", "STATUSES", "ResultStore", "ResultsDatabaseError"]

DB_NAME = "results.db"
STATUSES = ("running", "completed", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps(
  spec TEXT PRIMARY KEY, spec_json TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
  robustlab_version TEXT, executor TEXT);
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, spec TEXT NOT NULL, config_json TEXT NOT NULL, labels_json TEXT NOT NULL,
  data TEXT, noise TEXT, noise_kind TEXT, noise_rate REAL, model TEXT, loss TEXT, objective TEXT,
  seed INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('running','completed','failed')),
  attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, executor TEXT,
  started_at REAL, finished_at REAL, duration_s REAL, train_s REAL, eval_s REAL,
  robustlab_version TEXT, torch_version TEXT, git_commit TEXT, host TEXT, env_json TEXT,
  error TEXT, traceback TEXT);
CREATE TABLE IF NOT EXISTS sweep_runs(
  spec TEXT NOT NULL REFERENCES sweeps(spec), run_id TEXT NOT NULL,
  PRIMARY KEY(spec, run_id));
CREATE TABLE IF NOT EXISTS metrics(
  run_id TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, step INTEGER NOT NULL DEFAULT -1,
  value REAL, PRIMARY KEY(run_id, name, step));
CREATE TABLE IF NOT EXISTS artifacts(
  run_id TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, path TEXT NOT NULL,
  PRIMARY KEY(run_id, name));
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


class ResultsDatabaseError(ValueError):
    """``results.db`` is damaged, foreign or unreadable; the message says how to recover."""


def _how_to_recover(p: Path) -> str:
    return (f"the per-run result files are the source of truth: run 'robustlab results rebuild {p.parent}' to "
            "rebuild the database from them (the damaged file is kept beside it).")


def _connect(p: Path, *, readonly: bool, timeout: float) -> sqlite3.Connection:
    """Writers open normally (WAL); readers open read-only, and immutable where they cannot write.

    A WAL database needs its ``-shm`` file, which a reader cannot create on read-only media: there the
    file is opened ``immutable=1`` (nothing can change it underneath) instead of failing.
    """
    if not readonly:
        return sqlite3.connect(p, timeout=timeout, isolation_level=None)
    uri = f"file:{quote(str(p.resolve()))}?mode=ro"
    if not (os.access(p.parent, os.W_OK) and os.access(p, os.W_OK)):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


class ResultStore:
    """Open (creating if needed) ``results.db`` in ``directory`` (or the ``.db`` path given).

    ``readonly=True`` opens for queries only (never creates). Use as a context manager or call
    :meth:`close`. Reads return plain dicts; metric values are floats (NaN stored as NULL).
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0) -> None:
        p = Path(path)
        if p.suffix != ".db":
            p = p / DB_NAME
        self.path = p
        self.readonly = readonly
        if readonly and not p.exists():
            raise FileNotFoundError(f"No results database at '{p}' (run 'robustlab bench run SPEC --out DIR' first).")
        if not readonly:
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = _connect(p, readonly=readonly, timeout=timeout)
        except sqlite3.DatabaseError as e:
            raise ResultsDatabaseError(f"Cannot open the results database '{p}' ({e}); {_how_to_recover(p)}") from None
        try:
            self._setup(timeout)
        except sqlite3.OperationalError as e:  # cannot open, lock or read the file: not necessarily damage
            self._con.close()
            access = "readable" if readonly else "readable and writable"
            raise ResultsDatabaseError(f"Cannot use the results database '{p}' ({e}). Check that it and its folder "
                                       f"are {access}; if the file is damaged, {_how_to_recover(p)}") from None
        except sqlite3.DatabaseError as e:
            self._con.close()
            raise ResultsDatabaseError(f"The results database '{p}' is damaged ({e}); {_how_to_recover(p)}") from None
        except BaseException:
            self._con.close()
            raise

    def _setup(self, timeout: float) -> None:
        con, p = self._con, self.path
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if not self.readonly:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        problems = [r[0] for r in con.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise ResultsDatabaseError(f"The results database '{p}' is damaged (integrity check: "
                                       f"{'; '.join(map(str, problems))}); {_how_to_recover(p)}")
        v = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
        if self.readonly and not tables:
            raise ResultsDatabaseError(f"The results database '{p}' is empty: a driver is creating it, or it was "
                                       f"truncated; {_how_to_recover(p)}")
        if v not in (0, SCHEMA_VERSION) or (tables and "runs" not in tables):
            raise ResultsDatabaseError(
                f"'{p}' is not a robustlab results database (schema {v}, tables: {', '.join(sorted(tables)) or 'none'}); "
                f"this robustlab reads schema {SCHEMA_VERSION}. Give the folder that 'robustlab bench run' wrote.")
        if not self.readonly:
            with self.transaction() as cur:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        cur.execute(stmt)
                if v == 0:
                    cur.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error)."""
        if self.readonly:
            raise PermissionError("This ResultStore was opened read-only.")
        cur = self._con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # -- driver writes --------------------------------------------------------------------------
    def record_sweep(self, spec: str, spec_json: str, *, executor: str | None = None) -> None:
        from .. import __version__

        now = time.time()
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO sweeps(spec, spec_json, created_at, updated_at, robustlab_version, executor) "
                "VALUES(?,?,?,?,?,?) ON CONFLICT(spec) DO UPDATE SET spec_json=excluded.spec_json, "
                "updated_at=excluded.updated_at, robustlab_version=excluded.robustlab_version, executor=excluded.executor",
                (spec, spec_json, now, now, __version__, executor))

    def link_runs(self, spec: str, run_ids: Iterable[str]) -> None:
        with self.transaction() as cur:
            cur.executemany("INSERT OR IGNORE INTO sweep_runs(spec, run_id) VALUES(?,?)",
                            [(spec, r) for r in run_ids])

    def claim(self, run_id: str, *, spec: str, config: dict[str, Any], labels: dict[str, Any],
              owner: str, executor: str | None, started_at: float | None = None) -> None:
        """Mark a run ``running`` (insert or update; ``attempts`` += 1) before it is submitted."""
        now = time.time() if started_at is None else float(started_at)
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO runs(id, spec, config_json, labels_json, data, noise, noise_kind, noise_rate, model, loss, "
                "objective, seed, status, attempts, owner, executor, started_at) "
                "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,'running',1,?,?,?) ON CONFLICT(id) DO UPDATE SET status='running', "
                "attempts=runs.attempts+1, owner=excluded.owner, executor=excluded.executor, started_at=excluded.started_at, "
                "finished_at=NULL, duration_s=NULL, error=NULL, traceback=NULL",
                (run_id, spec, json.dumps(config, sort_keys=True), json.dumps(labels, sort_keys=True),
                 labels.get("data"), labels.get("noise"), labels.get("noise_kind"), labels.get("noise_rate"),
                 labels.get("model"), labels.get("loss"), labels.get("objective"), int(config["seed"]),
                 owner, executor, now))
            cur.execute("INSERT OR IGNORE INTO sweep_runs(spec, run_id) VALUES(?,?)", (spec, run_id))

    def finish(self, run_id: str, result: dict[str, Any]) -> None:
        """Ingest a worker result in one transaction: metrics, artifacts, status and timings."""
        status = result.get("status")
        if status not in ("completed", "failed"):
            status = "failed"
        env = result.get("env") or {}
        timings = result.get("timings") or {}
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"run {run_id[:12]} is not in the database; claim it first.")
            cur.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            cur.execute("DELETE FROM artifacts WHERE run_id=?", (run_id,))
            if status == "completed":
                cur.executemany(
                    "INSERT OR REPLACE INTO metrics(run_id, name, step, value) VALUES(?,?,?,?)",
                    [(run_id, str(n), int(s), _db_float(v)) for n, v, s in result.get("metrics", [])])
                cur.executemany("INSERT OR REPLACE INTO artifacts(run_id, name, path) VALUES(?,?,?)",
                                [(run_id, str(n), str(p)) for n, p in result.get("artifacts", [])])
            cur.execute(
                "UPDATE runs SET status=?, finished_at=?, duration_s=?, train_s=?, eval_s=?, robustlab_version=?, "
                "torch_version=?, git_commit=?, host=?, env_json=?, error=?, traceback=? WHERE id=?",
                (status, result.get("finished_at", time.time()), timings.get("total_s"), timings.get("train_s"),
                 timings.get("eval_s"), env.get("robustlab"), env.get("torch"), env.get("git_commit"),
                 env.get("host"), json.dumps({**env, "timings": timings, "threads": result.get("threads")}),
                 result.get("error"), result.get("traceback"), run_id))

    def fail(self, run_id: str, error: str, traceback: str | None = None, *, duration_s: float | None = None) -> None:
        """Record a run as failed without a worker result (crash, timeout, interruption)."""
        with self.transaction() as cur:
            cur.execute("UPDATE runs SET status='failed', error=?, traceback=?, finished_at=?, duration_s=? WHERE id=?",
                        (error, traceback, time.time(), duration_s, run_id))

    # -- reads ----------------------------------------------------------------------------------
    def status_of(self, run_ids: Iterable[str] | None = None) -> dict[str, str]:
        rows = self._con.execute("SELECT id, status FROM runs").fetchall()
        want = None if run_ids is None else set(run_ids)
        return {r["id"]: r["status"] for r in rows if want is None or r["id"] in want}

    def runs(self, *, spec: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``runs`` (``config`` and ``labels`` parsed), optionally filtered, ordered by start time."""
        q = "SELECT runs.* FROM runs"
        args: list[Any] = []
        where = []
        if spec is not None:
            q += " JOIN sweep_runs ON sweep_runs.run_id = runs.id"
            where.append("sweep_runs.spec = ?")
            args.append(spec)
        if status is not None:
            where.append("runs.status = ?")
            args.append(status)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY runs.started_at, runs.id"
        out = []
        for r in self._con.execute(q, args).fetchall():
            d = dict(r)
            d["config"] = json.loads(d.pop("config_json"))
            d["labels"] = json.loads(d.pop("labels_json"))
            d["env"] = json.loads(d.pop("env_json") or "{}")
            out.append(d)
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        """One run by id or unique id prefix, with its ``metrics`` and ``artifacts``."""
        rows = self._con.execute("SELECT id FROM runs WHERE id LIKE ?", (run_id + "%",)).fetchall()
        if not rows:
            raise KeyError(f"No run with id '{run_id}' in {self.path}.")
        if len(rows) > 1:
            raise ValueError(f"Run id prefix '{run_id}' is ambiguous ({len(rows)} runs); give more characters.")
        rid = rows[0]["id"]
        d = next(r for r in self.runs() if r["id"] == rid)
        d["metrics"] = self.metrics(rid)
        d["artifacts"] = self.artifacts(rid)
        return d

    def artifacts(self, run_id: str) -> dict[str, str]:
        """``{name: path}`` of the files a run wrote (inside its run folder)."""
        rows = self._con.execute("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY name", (run_id,)).fetchall()
        return {r["name"]: r["path"] for r in rows}

    def metrics(self, run_id: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT run_id, name, step, value FROM metrics", []
        if run_id is not None:
            q += " WHERE run_id=?"
            args.append(run_id)
        q += " ORDER BY run_id, name, step"
        return [{"run_id": r["run_id"], "name": r["name"], "step": r["step"],
                 "value": float("nan") if r["value"] is None else r["value"]}
                for r in self._con.execute(q, args).fetchall()]

    def final_metrics(self) -> dict[str, dict[str, float]]:
        """``{run_id: {name: value}}`` for step-less metrics (step -1) of completed runs."""
        out: dict[str, dict[str, float]] = {}
        rows = self._con.execute(
            "SELECT m.run_id, m.name, m.value FROM metrics m JOIN runs r ON r.id = m.run_id "
            "WHERE m.step = -1 AND r.status = 'completed'").fetchall()
        for r in rows:
            out.setdefault(r["run_id"], {})[r["name"]] = float("nan") if r["value"] is None else r["value"]
        return out

    def sweeps(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._con.execute("SELECT * FROM sweeps ORDER BY created_at").fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self._con.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}


def _db_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
