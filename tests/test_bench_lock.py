"""One driver per results folder, signals only to verified workers, a fork server blind to the cwd."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robustlab.bench import ResultStore, expand, run_sweep
from robustlab.bench._folder import FolderLock, ResultsFolderBusy, kill_recorded_worker, record_worker
from robustlab.bench.runner import SweepResult, _recover

CLI = str(Path(sys.executable).with_name("robustlab"))
QUICK = {
    "name": "quick1",
    "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "num_classes": 3, "dim": 4}],
    "noise": ["none"], "models": ["linear"], "losses": ["ce"], "seeds": [0],
    "train": {"epochs": 1, "batch_size": 32}, "evaluations": ["clean"],
}
# one run that trains until it is killed
SLOW = dict(QUICK, name="slow1", data=[{"name": "gaussians", "n_train": 3000, "num_classes": 3, "dim": 4}],
            train={"epochs": 100000, "batch_size": 1})


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # a zombie is dead (PID 1 may never reap it here)


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited early ({proc.returncode}): {proc.stderr.read().decode()}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _lock_holder(out: Path) -> int | None:
    try:
        return json.loads((out / "driver.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.skipif(not Path(CLI).exists(), reason="the robustlab console script is not installed")
def test_second_driver_exits_at_once_naming_the_holder_and_the_orphan_is_killed_later(tmp_path):
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump(SLOW))
    out = tmp_path / "out"
    cmd = [CLI, "bench", "run", str(spec), "--out", str(out), "--no-progress", "--quiet"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = None
    try:
        rd = out / "runs" / expand(SLOW)[0].id
        _wait_for(lambda: (rd / "worker.pid").exists(), 400, "the first driver's worker", first)
        assert _lock_holder(out) == first.pid
        worker = json.loads((rd / "worker.pid").read_text())["pid"]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        assert second.returncode == 2, second.stderr
        assert "in use by another robustlab driver" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr and first.poll() is None and _alive(worker)
        with ResultStore(out, readonly=True) as st:
            assert [r["attempts"] for r in st.runs()] == [1]  # the second driver claimed nothing
        first.send_signal(signal.SIGKILL)  # the driver dies; its worker trains on, orphaned
        first.wait(10)
        assert _alive(worker)
        # the kernel dropped the dead driver's lock; the next driver recovers: kills the verified orphan, reruns
        res = run_sweep(SLOW, out, timeout_s=1.0, progress=False)
        _wait_for(lambda: not _alive(worker), 60, "the orphaned worker to be killed")
        assert res.failed == 1 and "exceeded its 1 s limit" in res.failures[expand(SLOW)[0].id]
    finally:
        if first.poll() is None:
            first.kill()
        if worker is not None and _alive(worker):  # never leave a 100000-epoch run behind
            os.kill(worker, signal.SIGKILL)


def test_lock_is_exclusive_within_and_released_after(tmp_path):
    with FolderLock(tmp_path, purpose="bench run x"):
        with pytest.raises(ResultsFolderBusy, match=rf"bench run x, pid {os.getpid()} on host"):
            FolderLock(tmp_path).acquire()
        with pytest.raises(ResultsFolderBusy, match="in use by another robustlab driver"):
            run_sweep(QUICK, tmp_path, progress=False)
    with FolderLock(tmp_path):  # released: takes it again
        pass


def _sleeper() -> subprocess.Popen:
    """An unrelated live process whose command line contains 'multiprocessing' (what the old check matched)."""
    return subprocess.Popen([sys.executable, "-c", "import multiprocessing, time; time.sleep(60)"])


def _claimed_run(out: Path, owner: str) -> Path:
    rc = expand(QUICK)[0]
    with ResultStore(out) as st:
        st.record_sweep("quick1", "{}")
        st.claim(rc.id, spec="quick1", config=rc.config, labels=rc.labels, owner=owner, executor="local")
    rd = out / "runs" / rc.id
    rd.mkdir(parents=True)
    return rd


@pytest.mark.parametrize("pidfile", ["legacy", "wrong_token", "wrong_start", "other_host"])
def test_recovery_never_signals_an_unrelated_process_named_in_a_stale_pid_file(tmp_path, pidfile):
    proc = _sleeper()
    try:
        rd = _claimed_run(tmp_path, owner="1@h#sweeptoken")
        if pidfile == "legacy":  # what workers wrote before: a bare pid
            (rd / "worker.pid").write_text(str(proc.pid))
        else:
            record_worker(rd, proc.pid, "sweeptoken" if pidfile != "wrong_token" else "another")
            info = json.loads((rd / "worker.pid").read_text())
            if pidfile == "wrong_start":  # the pid was reused: the live process started at another time
                info["start_ticks"] -= 1
            if pidfile == "other_host":
                info["host"] = "elsewhere"
            (rd / "worker.pid").write_text(json.dumps(info))
        with ResultStore(tmp_path) as st:
            _recover(st, tmp_path, SweepResult(out=tmp_path, spec="quick1", run_ids=[]))
            assert st.status_of() == {rd.name: "failed"}  # reset for a retry all the same
        time.sleep(0.2)
        assert proc.poll() is None, "an unrelated process was signalled"
    finally:
        proc.kill()
        proc.wait()


def test_recovery_kills_a_verified_orphan(tmp_path):
    proc = _sleeper()
    try:
        rd = _claimed_run(tmp_path, owner="1@h#sweeptoken")
        record_worker(rd, proc.pid, "sweeptoken")
        assert not kill_recorded_worker(rd, "not-this-sweep")
        with ResultStore(tmp_path) as st:
            _recover(st, tmp_path, SweepResult(out=tmp_path, spec="quick1", run_ids=[]))
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH needs Python 3.11")
@pytest.mark.skipif(not Path(CLI).exists(), reason="the robustlab console script is not installed")
def test_fork_server_does_not_import_modules_from_the_working_directory(tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "yaml.py").write_text(f"open({str(tmp_path / 'yaml-ran')!r}, 'w').write('ran')\n")
    (cwd / "concurrent.py").write_text(f"open({str(tmp_path / 'concurrent-ran')!r}, 'w').write('ran')\n"
                                       "raise SystemExit('stray module')\n")
    spec = tmp_path / "quick.yaml"
    spec.write_text(yaml.safe_dump(QUICK))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    r = subprocess.run([CLI, "bench", "run", str(spec), "--out", str(tmp_path / "out"), "--no-progress", "--quiet"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "yaml-ran").exists() and not (tmp_path / "concurrent-ran").exists()
    con = sqlite3.connect(tmp_path / "out" / "results.db")
    assert con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    con.close()
