"""Result files are validated and quarantined; a damaged results.db is refused and rebuilt; read-only media read."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustlab.bench import ResultStore, expand, run_sweep
from robustlab.bench._resultfile import InvalidResult, validate_result
from robustlab.bench.store import ResultsDatabaseError
from robustlab.cli import main

SPEC = {
    "name": "integrity",
    "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "num_classes": 3, "dim": 4}],
    "noise": ["none", "symmetric:0.2"], "models": ["linear"], "losses": ["ce"], "seeds": [0],
    "train": {"epochs": 1, "batch_size": 32}, "evaluations": ["clean"],
}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished two-run sweep (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("done") / "out"
    res = run_sweep(SPEC, out, workers=1, threads=1, progress=False)
    assert res.completed == 2
    return out


def _copy(done: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(done, out)
    return out


def _as_left_running(out: Path, rid: str) -> None:
    """What a driver killed between the worker's result and its ingestion leaves."""
    con = sqlite3.connect(out / "results.db")
    con.execute("UPDATE runs SET status='running' WHERE id=?", (rid,))
    con.commit()
    con.close()


# -- result files -------------------------------------------------------------------------------
GOOD = {"status": "completed", "metrics": [["acc/clean", 0.5, -1], ["train/loss", None, 1]], "artifacts": [],
        "timings": {"total_s": 1.0}, "env": {"torch": "2", "git_commit": None}, "error": None}


@pytest.mark.parametrize("bad, field", [
    ([], "JSON object"),
    ({"metrics": []}, "status"),
    (dict(GOOD, status="done"), "status"),
    (dict(GOOD, metrics=[["acc/clean"]]), "metrics"),
    (dict(GOOD, metrics=[["acc/clean", "0.5", -1]]), "metrics"),
    (dict(GOOD, metrics=[["acc/clean", True, -1]]), "metrics"),
    (dict(GOOD, metrics={"acc/clean": 0.5}), "metrics"),
    (dict(GOOD, artifacts=[["checkpoint"]]), "artifacts"),
    (dict(GOOD, timings={"total_s": "1"}), "timings"),
    (dict(GOOD, error=3), "error"),
    (dict(GOOD, run_id="0" * 64), "run_id"),
])
def test_malformed_results_are_refused_naming_the_field(tmp_path, bad, field):
    with pytest.raises(InvalidResult, match=field):
        validate_result(bad, tmp_path / "abc")


def test_artifact_paths_must_stay_inside_the_run_folder(tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "curves.json").write_text("{}")
    (rd / "link").symlink_to("/etc")
    ok = validate_result(dict(GOOD, artifacts=[["curves", "curves.json"], ["ck", str(rd / "model.pt")]]), rd)
    assert ok["artifacts"] == [["curves", str((rd / "curves.json").resolve())], ["ck", str((rd / "model.pt").resolve())]]
    for path in ("/etc/shadow", "../../etc/shadow", str(rd / ".." / "x"), "link/shadow"):
        with pytest.raises(InvalidResult, match="outside the run folder"):
            validate_result(dict(GOOD, artifacts=[["checkpoint", path]]), rd)


@pytest.mark.parametrize("tamper", ["shadow", "malformed", "not_json"])
def test_an_invalid_result_file_is_quarantined_and_its_run_rerun(done, tmp_path, tamper):
    out = _copy(done, tmp_path)
    rid = expand(SPEC)[0].id
    rf = out / "runs" / rid / "result.json"
    result = json.loads(rf.read_text())
    if tamper == "shadow":
        result["artifacts"] = [["checkpoint", "/etc/shadow"]]
        rf.write_text(json.dumps(result))
    elif tamper == "malformed":  # valid JSON, wrong shape: used to make every later `bench run` crash
        rf.write_text(json.dumps({"status": "completed", "metrics": [["acc/clean"]]}))
    else:
        rf.write_text('{"status": "completed", ')
    _as_left_running(out, rid)
    res = run_sweep(SPEC, out, progress=False)
    assert (res.skipped, res.executed, res.completed) == (1, 1, 2)
    assert len(res.quarantined) == 1
    kept = list((out / "quarantine").glob(f"{rid}.result.json.invalid-*"))
    assert [str(k) for k in kept] == [res.quarantined[0][0]]  # kept outside the run's (fresh) folder
    with ResultStore(out, readonly=True) as st:
        r = st.run(rid)
    assert r["status"] == "completed" and "/etc/shadow" not in r["artifacts"].values()
    assert {m["name"] for m in r["metrics"]} >= {"acc/clean"}


# -- a damaged database -------------------------------------------------------------------------
def _damage(db: Path, how: str) -> None:
    data = bytearray(db.read_bytes())
    if how == "header":
        data[:16] = b"not a database!!"
    else:  # scribble over every page but the first (schema): tables and indexes are garbage
        for i in range(4096 + 100, len(data), 97):
            data[i] = (data[i] * 31 + 7) % 256
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["header", "pages"])
def test_a_damaged_database_is_refused_by_every_command_and_rebuilt_from_the_run_files(done, tmp_path, capsys, how):
    out = _copy(done, tmp_path)
    assert main(["results", "export", str(out), "--format", "json"]) == 0
    before = json.loads(capsys.readouterr().out)
    _damage(out / "results.db", how)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    for argv in (["bench", "run", str(spec), "--out", str(out), "--no-progress", "--quiet"],
                 ["results", "list", str(out)], ["report", str(out), "-o", str(tmp_path / "r.md")]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err and f"robustlab results rebuild {out}" in err, (argv, err)
    with pytest.raises(ResultsDatabaseError, match="results rebuild"):
        run_sweep(SPEC, out, progress=False)
    assert main(["results", "rebuild", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 runs from their result files (2 completed, 0 failed)" in text and "before-rebuild" in text
    assert main(["results", "export", str(out), "--format", "json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after == before  # specs, labels, metrics, timings and versions all come back
    assert run_sweep(SPEC, out, progress=False).skipped == 2


def test_rebuild_quarantines_invalid_files_and_leaves_runs_without_results_to_rerun(done, tmp_path, capsys):
    out = _copy(done, tmp_path)
    a, b = (r.id for r in expand(SPEC))
    (out / "runs" / a / "result.json").write_text(json.dumps({"status": "completed", "artifacts": [["x", "/etc"]]}))
    (out / "runs" / b / "result.json").unlink()
    assert main(["results", "rebuild", str(out)]) == 0
    cap = capsys.readouterr()
    assert "0 runs" in cap.out and "2 run folder(s)" not in cap.out and "1 run folder(s) have no result" in cap.out
    assert "quarantined" in cap.err and list((out / "quarantine").glob(f"{a}.result.json.invalid-*"))
    res = run_sweep(SPEC, out, progress=False)
    assert (res.skipped, res.executed, res.completed) == (0, 2, 2)


def test_rebuild_of_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    assert main(["results", "rebuild", str(tmp_path)]) == 2
    assert "no 'runs/' folder" in capsys.readouterr().err


def test_a_foreign_or_empty_database_is_refused(tmp_path):
    db = tmp_path / "results.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE other(x)")
    con.commit()
    con.close()
    for ro in (True, False):
        with pytest.raises(ResultsDatabaseError, match="not a robustlab results database"):
            ResultStore(tmp_path, readonly=ro)
    db.write_bytes(b"")
    with pytest.raises(ResultsDatabaseError, match="is empty"):
        ResultStore(tmp_path, readonly=True)


# -- read-only media ----------------------------------------------------------------------------
_READ = ("import sys; from robustlab.bench import ResultStore\n"
         "with ResultStore(sys.argv[1], readonly=True) as st: print(st.counts()['completed'])\n")


def _read_only_prefix(d: Path) -> list[str] | None:
    """A command prefix under which ``d`` is read-only for the process (None: cannot arrange it here)."""
    if os.geteuid() != 0:  # permissions hold for everyone but root
        os.chmod(d, 0o555)
        return []
    if shutil.which("unshare") and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", str(d)]  # a private read-only bind mount
    return None


def test_a_database_copied_alone_onto_read_only_media_can_be_read(done, tmp_path):
    ro = tmp_path / "media"
    ro.mkdir()
    shutil.copy(done / "results.db", ro / "results.db")  # WAL-mode file, no -wal/-shm beside it
    prefix = _read_only_prefix(ro)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    try:
        r = subprocess.run(prefix + [sys.executable, "-c", _READ, str(ro)], capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(ro, 0o755)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"
    assert sorted(p.name for p in ro.iterdir()) == ["results.db"]


def test_readers_open_immutable_when_they_cannot_write(done, monkeypatch):
    seen = []
    real = sqlite3.connect

    def spy(target, *a, **kw):
        seen.append(str(target))
        return real(target, *a, **kw)

    monkeypatch.setattr(sqlite3, "connect", spy)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with ResultStore(done, readonly=True) as st:
        assert st.counts()["completed"] == 2
    assert seen and seen[-1].endswith("?mode=ro&immutable=1")


def test_export_takes_out_like_every_command_and_writes_atomically(done, tmp_path, capsys):
    target = tmp_path / "x.csv"
    assert main(["results", "export", str(done), "--out", str(target)]) == 0
    assert target.read_text().startswith("run_id,") and sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
    assert main(["results", "export", str(done), "--output", str(target)]) == 2
    assert "unrecognized arguments: --output" in capsys.readouterr().err


def test_rebuild_without_any_record_but_the_run_files_names_runs_from_their_configs(done, tmp_path):
    out = _copy(done, tmp_path)
    (out / "results.db").unlink()
    shutil.rmtree(out / "sweeps")
    for meta in (out / "runs").glob("*/run.json"):
        meta.unlink()
    from robustlab.bench._rebuild import rebuild

    rep = rebuild(out)
    assert (rep.runs, rep.completed, rep.previous) == (2, 2, None)
    with ResultStore(out, readonly=True) as st:
        runs = st.runs()
    assert {r["spec"] for r in runs} == {"rebuilt"}
    assert sorted(r["labels"]["noise"] for r in runs) == ["none", "symmetric:0.2"]
    assert {(r["labels"]["data"], r["labels"]["model"], r["labels"]["seed"]) for r in runs} == {("gaussians", "linear", 0)}
