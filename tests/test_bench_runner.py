"""The local executor, the results store and resume: real child processes, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from robustlab.bench import ResultStore, expand, run_sweep
from robustlab.bench._worker import execute_run
from robustlab.bench.store import ResultsDatabaseError

TINY = {
    "name": "tiny",
    "data": [{"name": "gaussians", "n_train": 80, "n_test": 40, "num_classes": 3, "dim": 4, "separation": 4.0}],
    "noise": ["none", "symmetric:0.3"],
    "models": ["linear"],
    "losses": ["ce", "gce"],
    "seeds": [0, 1],
    "train": {"epochs": 2, "batch_size": 32},
    "evaluations": ["clean", {"name": "topk", "k": [1, 2]}, "memorization"],
}


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec))
    return str(p)


def db_rows(out: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(out / "results.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sweep_records_every_run_once_and_resume_skips_completed(tmp_path):
    out = tmp_path / "out"
    res = run_sweep(TINY, out, workers=2, progress=False)
    runs = expand(TINY)
    assert (res.completed, res.failed, res.executed) == (len(runs), 0, len(runs))
    ids = sorted(r.id for r in runs)
    assert sorted(x[0] for x in db_rows(out, "SELECT id FROM runs WHERE status='completed'")) == ids
    assert db_rows(out, "PRAGMA journal_mode")[0][0] == "wal"
    # every completed run has its metrics, the environment and per-epoch history
    with ResultStore(out, readonly=True) as st:
        final = st.final_metrics()
        r0 = st.run(ids[0][:10])
    assert set(final) == set(ids)
    assert all({"acc/clean", "acc/top2", "acc/worst_class"} <= set(m) for m in final.values())
    assert r0["torch_version"] == torch.__version__ and r0["robustlab_version"]
    assert [m["step"] for m in r0["metrics"] if m["name"] == "train/loss"] == [1, 2]
    again = run_sweep(TINY, out, workers=2, progress=False)
    assert (again.skipped, again.executed) == (len(runs), 0)
    assert db_rows(out, "SELECT COUNT(*) FROM runs")[0][0] == len(runs)


def test_child_result_equals_in_process_execution(tmp_path):
    """Per-run determinism: the numbers depend on the config only, not on the process that ran it."""
    out = tmp_path / "out"
    run_sweep(TINY, out, workers=1, threads=1, progress=False)
    rc = expand(TINY)[3]
    torch.manual_seed(1234)  # global state must not leak into the run
    direct = execute_run(rc.config, threads=1)
    assert direct["status"] == "completed"
    with ResultStore(out, readonly=True) as st:
        stored = {(m["name"], m["step"]): m["value"] for m in st.metrics(rc.id)}
    for name, value, step in direct["metrics"]:
        if name.startswith("train/time_s"):
            continue
        assert stored[(name, step)] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_failing_run_is_recorded_and_does_not_stop_the_sweep(tmp_path):
    spec = dict(TINY, evaluations=["clean", {"name": "topk", "k": [5], "when": {"seed": 1}}])  # 3 classes: k=5 fails
    out = tmp_path / "out"
    res = run_sweep(spec, out, workers=2, progress=False)
    n = len(expand(spec))
    assert res.failed == n // 2 and res.completed == n - n // 2
    rows = db_rows(out, "SELECT seed, status, error, traceback FROM runs")
    for seed, status, error, tb in rows:
        if seed == 1:
            assert status == "failed" and "k=5 exceeds the 3 classes" in error and "Traceback" in tb
        else:
            assert status == "completed" and error is None
    # failed runs have no metrics; a rerun retries them (and only them)
    assert db_rows(out, "SELECT COUNT(*) FROM metrics m JOIN runs r ON r.id=m.run_id WHERE r.status='failed'")[0][0] == 0
    again = run_sweep(spec, out, workers=2, progress=False)
    assert again.executed == n // 2 and again.failed == n // 2
    assert db_rows(out, "SELECT MAX(attempts) FROM runs")[0][0] == 2


def test_timeout_kills_only_that_run(tmp_path):
    spec = dict(TINY, noise=["none"], losses=["ce"], seeds=[0],
                data=[TINY["data"][0], {"name": "gaussians", "label": "slow", "n_train": 3000, "num_classes": 3,
                                        "dim": 4, "train": {"epochs": 100000, "batch_size": 1}}])
    out = tmp_path / "out"
    t0 = time.time()
    res = run_sweep(spec, out, workers=2, timeout_s=4.0, progress=False)
    assert time.time() - t0 < 30
    status = dict(db_rows(out, "SELECT data, status FROM runs"))
    assert status == {"gaussians": "completed", "slow": "failed"}
    err = db_rows(out, "SELECT error FROM runs WHERE data='slow'")[0][0]
    assert "exceeded its 4 s limit" in err and res.failed == 1


def test_resume_after_sigkill_has_exactly_one_completed_row_per_grid_point(tmp_path):
    spec = dict(TINY, train={"epochs": 30, "batch_size": 8}, seeds=[0, 1, 2])
    path = write_spec(tmp_path, spec)
    out = tmp_path / "out"
    # the driver is a user script *without* a __main__ guard: the children must not re-run it
    marker = tmp_path / "marker.txt"
    script = tmp_path / "driver.py"
    script.write_text(
        "from robustlab.bench import run_sweep\n"
        f"open({str(marker)!r}, 'a').write('top-level ran\\n')\n"
        f"run_sweep({path!r}, {str(out)!r}, workers=1, progress=False)\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300  # generous: the machine may be busy
        done = 0
        while time.time() < deadline and done < 1:
            time.sleep(0.2)
            if (out / "results.db").exists():
                try:
                    done = db_rows(out, "SELECT COUNT(*) FROM runs WHERE status='completed'")[0][0]
                except sqlite3.OperationalError:
                    pass
            assert proc.poll() is None, proc.stderr.read().decode()
        assert done >= 1, "the sweep did not get going"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert marker.read_text() == "top-level ran\n"  # executed once, by the driver only
    n = len(expand(spec))
    before = dict(db_rows(out, "SELECT id, status FROM runs"))
    assert 1 <= sum(s == "completed" for s in before.values()) < n
    res = run_sweep(spec, out, workers=2, progress=False)
    rows = db_rows(out, "SELECT id, status FROM runs")
    assert len(rows) == n and {s for _, s in rows} == {"completed"}
    assert sorted(i for i, _ in rows) == sorted(r.id for r in expand(spec))
    assert res.skipped >= sum(s == "completed" for s in before.values())
    # no duplicated metrics: every completed run has the same number of rows
    counts = {c for (c,) in db_rows(out, "SELECT COUNT(*) FROM metrics GROUP BY run_id")}
    assert len(counts) == 2  # runs with and without noise differ by the memorization/noise metrics
    assert db_rows(out, "SELECT COUNT(DISTINCT run_id) FROM metrics")[0][0] == n


def test_concurrent_readers_while_the_driver_writes(tmp_path):
    spec = dict(TINY, seeds=[0, 1, 2])
    out = tmp_path / "out"
    errors: list[BaseException] = []
    seen: list[int] = []
    result = {}

    def drive():
        try:
            result["r"] = run_sweep(spec, out, workers=2, progress=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=drive)
    t.start()
    from robustlab.bench.report import load_report_data, to_html

    while t.is_alive():
        if (out / "results.db").exists():
            try:
                with ResultStore(out, readonly=True, timeout=5) as st:
                    c = st.counts()
                    fm = st.final_metrics()
                seen.append(c["completed"])
                assert all("acc/clean" in m for m in fm.values())  # a run is visible whole or not at all
                to_html(load_report_data(out))
            except (sqlite3.OperationalError, ResultsDatabaseError) as e:
                if "no such table" not in str(e) and "is empty" not in str(e):  # only before the schema exists
                    errors.append(e)
        time.sleep(0.05)
    t.join()
    assert not errors, errors
    assert seen == sorted(seen)  # monotone
    assert result["r"].completed == len(expand(spec))


def test_cli_run_prints_summary_and_leaderboard_then_report(tmp_path, capsys):
    from robustlab.cli import main

    path = write_spec(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["bench", "run", path, "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "8 runs in the grid" in text and "| clean acc |" in text
    assert main(["results", "list", str(out)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 8
    assert main(["results", "export", str(out), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and all(0.0 <= r["acc/clean"] <= 1.0 for r in rows)
    csv_path = tmp_path / "x.csv"
    assert main(["results", "export", str(out), "--format", "csv", "-o", str(csv_path), "--long"]) == 0
    assert csv_path.read_text().startswith("run_id,data,noise,model,loss,objective,seed,metric,step,value")
    assert main(["results", "show", str(out), rows[0]["run_id"][:8]]) == 0
    assert "acc/clean" in capsys.readouterr().out
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    assert "report: " in capsys.readouterr().out and (tmp_path / "r.html").exists()  # -o's suffix picks the format
    assert main(["results", "list", str(tmp_path / "missing")]) == 2


def test_optional_extras_missing_give_clear_cli_errors(tmp_path, capsys):
    from robustlab.cli import main

    path = write_spec(tmp_path, dict(TINY, seeds=[0], noise=["none"], losses=["ce"]))
    out = tmp_path / "out"
    try:
        import mlflow  # noqa: F401
    except ImportError:
        assert main(["bench", "run", path, "--out", str(out), "--mlflow", "sqlite:///x.db", "--no-progress"]) == 2
        assert "needs MLflow" in capsys.readouterr().err and not out.exists()
    assert main(["bench", "run", path, "--out", str(out), "--no-progress", "--quiet"]) == 0
    pq = tmp_path / "x.parquet"
    code = main(["results", "export", str(out), "--format", "parquet", "-o", str(pq)])
    try:
        import pyarrow.parquet as papq
    except ImportError:
        assert code == 2 and "needs pyarrow" in capsys.readouterr().err
    else:
        assert code == 0 and papq.read_table(pq).num_rows == 1
