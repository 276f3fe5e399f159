"""A sweep killed mid-training resumes each interrupted run from its last epoch, with the same numbers."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from robustlab.bench import run_sweep

SPEC = {
    "name": "resume",
    "data": [{"name": "gaussians", "n_train": 400, "n_test": 100, "num_classes": 3, "dim": 16, "separation": 2.0}],
    "noise": ["symmetric:0.2"],
    "models": [{"name": "mlp", "hidden": [64, 64]}],
    "losses": ["ce"],
    "seeds": [0],
    "train": {"epochs": 30, "batch_size": 8},
    "evaluations": ["clean"],
}


def _metrics(out: Path) -> list[tuple]:
    con = sqlite3.connect(out / "results.db")
    try:
        rows = con.execute("SELECT run_id, name, value, step FROM metrics ORDER BY run_id, name, step").fetchall()
        return [r for r in rows if "time" not in r[1]]  # wall-clock timings differ between any two runs
    finally:
        con.close()


def _kill_mid_training(spec_path: Path, out: Path) -> Path:
    """Start a driver, SIGKILL its whole process group once an epoch state exists; return that state file."""
    proc = subprocess.Popen([sys.executable, "-m", "robustlab.cli", "bench", "run", str(spec_path), "--out", str(out),
                             "--workers", "1", "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300  # generous: the machine may be busy
    state = None
    try:
        while time.time() < deadline and state is None:
            time.sleep(0.05)
            found = sorted(out.glob("runs/*/train_state/last.pt"))
            state = found[0] if found else None
            if proc.poll() is not None:
                raise AssertionError("the sweep ended before it was interrupted: " + proc.stderr.read().decode())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert state is not None, "no epoch state appeared"
    return state


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    ref = tmp_path / "ref"
    run_sweep(str(spec_path), ref, workers=1, progress=False)
    assert not list(ref.glob("runs/*/train_state")), "a finished run leaves no resumable state behind"

    out = tmp_path / "out"
    state = _kill_mid_training(spec_path, out)
    time.sleep(0.2)  # let a state write in flight land (it is atomic either way)
    epoch = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= epoch < SPEC["train"]["epochs"]

    tampered = tmp_path / "tampered"  # the same interrupted folder, with the saved weights nudged
    shutil.copytree(out, tampered)
    t_state = tampered / state.relative_to(out)
    saved = torch.load(t_state, weights_only=True)
    first = next(k for k, v in saved["model"].items() if v.is_floating_point())
    saved["model"][first] += 0.5
    torch.save(saved, t_state)

    run_sweep(str(spec_path), out, workers=1, progress=False)
    assert _metrics(out) == _metrics(ref)  # resumed == never interrupted, bit for bit
    run_sweep(str(spec_path), tampered, workers=1, progress=False)
    assert _metrics(tampered) != _metrics(ref)  # ... and the rerun really started from the saved epoch
