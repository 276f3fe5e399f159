"""Executing one run in a sweep: :func:`robustlab.pipeline.run` wrapped into a result dict.

Used by every executor (in a child process, a Ray task, or in-process). The run itself (data, noise,
model, fit, evaluations, seeding) is the pipeline's; this module adds timings, the environment,
failure capture and the result file.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import torch

RESULT_NAME = "result.json"
CONFIG_NAME = "config.json"
PID_NAME = "worker.pid"


def environment() -> dict[str, Any]:
    """Versions and host facts recorded with every run (never part of the run id)."""
    from .. import __version__

    return {
        "robustlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "host": socket.gethostname(),
        "git_commit": git_commit(),
    }


def cpu_name() -> str:
    """The CPU model and the vector extension torch's kernels use (e.g. ``AMD EPYC (AVX512)``): float32 results of
    the same code and seed can differ between CPU types, whose BLAS and convolution kernels sum in other orders."""
    name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        cap = ""
    return f"{name or 'unknown'}" + (f" ({cap})" if cap else "")


def git_commit() -> str | None:
    """The git commit of the robustlab source tree, when it is a checkout (read from .git, no subprocess)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        g = parent / ".git"
        if g.is_dir():
            try:
                head = (g / "HEAD").read_text().strip()
                if head.startswith("ref: "):
                    ref = head[5:]
                    p = g / ref
                    if p.exists():
                        return p.read_text().strip()
                    packed = g / "packed-refs"
                    if packed.exists():
                        for line in packed.read_text().splitlines():
                            if line.endswith(" " + ref):
                                return line.split()[0]
                    return None
                return head
            except OSError:
                return None
    return None


def execute_run(config: dict[str, Any], *, run_dir: str | os.PathLike[str] | None = None,
                threads: int | None = None, checkpoint: bool = False, device: str | None = None) -> dict[str, Any]:
    """Run one config and return ``{"status", "metrics", "artifacts", "timings", "env", "error", ...}``.

    Exceptions are caught and returned as ``status="failed"`` with the traceback.
    """
    t0, c0 = time.time(), time.process_time()
    if threads:
        torch.set_num_threads(int(threads))
    result: dict[str, Any] = {"status": "failed", "metrics": [], "artifacts": [], "timings": {},
                              "started_at": t0, "env": environment(), "pid": os.getpid(),
                              "threads": torch.get_num_threads()}
    try:
        _execute(config, result, run_dir=Path(run_dir) if run_dir else None, checkpoint=checkpoint, device=device)
        result["status"] = "completed"
    except Exception as e:  # a failing run is recorded, never raised into the sweep
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
    result["finished_at"] = time.time()
    result["timings"]["total_s"] = result["finished_at"] - t0
    result["timings"]["cpu_s"] = time.process_time() - c0  # all threads of this process
    return result


def _execute(config: dict[str, Any], result: dict[str, Any], *, run_dir: Path | None, checkpoint: bool,
             device: str | None) -> None:
    """One run through :func:`robustlab.pipeline.run` (the same pipeline as ``robustlab train``)."""
    from .. import pipeline

    # resume=True: fit keeps its epoch state in run_dir/train_state, and a rerun of an interrupted run
    # (the driver keeps that folder) continues from its last epoch with bit-identical results
    res = pipeline.run(config, out=run_dir, checkpoint=checkpoint, device=device, progress=False,
                       resume=run_dir is not None)
    if run_dir is not None:
        shutil.rmtree(run_dir / "train_state", ignore_errors=True)  # finished: nothing to resume
    result["metrics"].extend([list(m) for m in res.metrics])
    result["timings"].update(res.timings)
    result["artifacts"].extend([list(a) for a in res.artifacts])
    result["curves"] = res.curves
    result["resolved"] = res.resolved  # every hyper-parameter used, defaults included


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    """Write ``result.json`` by temp file + fsync + atomic rename (+ directory fsync)."""
    from ..training import atomic_write_text

    path = run_dir / RESULT_NAME
    atomic_write_text(path, json.dumps(result, allow_nan=True))
    try:
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def child_main(run_dir: str, threads: int, checkpoint: bool, device: str | None) -> None:
    """Entry point of a local child process: one run, result file, exit."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    rd = Path(run_dir)
    # worker.pid (PID_NAME) is written by the driver, with this process's verified identity
    log = open(rd / "log.txt", "ab", buffering=0)  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    config = json.loads((rd / CONFIG_NAME).read_text())
    result = execute_run(config, run_dir=rd, threads=threads, checkpoint=checkpoint, device=device)
    result["run_id"] = rd.name
    if result["status"] != "completed":
        os.write(2, (result.get("traceback") or "").encode())
    write_result(rd, result)


def ray_task(config: dict[str, Any], threads: int, checkpoint_dir: str | None, device: str | None) -> dict[str, Any]:
    """What a Ray task runs: the result comes back as the return value (no shared filesystem needed)."""
    rd = Path(checkpoint_dir) if checkpoint_dir else None
    if rd is not None:
        rd.mkdir(parents=True, exist_ok=True)
    return execute_run(config, run_dir=rd, threads=threads, checkpoint=rd is not None, device=device)
