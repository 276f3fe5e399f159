"""Executing one run: data -> noise -> model -> fit -> evaluations -> a result dict.

Used by every executor (in a child process, a Ray task, or in-process). Everything random is seeded
from the run config: noise from ``seed``, model init by ``torch.manual_seed(seed)``, training order
by ``fit(seed=seed)``, each evaluation by a generator derived from (seed, evaluation).
"""

from __future__ import annotations

import json
import os
import platform
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
        "host": socket.gethostname(),
        "git_commit": git_commit(),
    }


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
    from .. import data as data_mod
    from .. import models
    from ..training import fit, save_checkpoint
    from .evaluations import EvalContext, run_evaluation

    timings = result["timings"]
    metrics = result["metrics"]
    seed = int(config["seed"])
    dev = torch.device(device) if device else torch.device("cpu")

    t = time.perf_counter()
    dc = config["data"]
    d = data_mod.load(dc["name"], **dc["options"])
    if dc.get("n_train") or dc.get("n_test"):
        d = d.subset(n_train=dc.get("n_train"), n_test=dc.get("n_test"))
    nc = config["noise"]
    is_noisy = None
    train_data = d
    if nc["kind"] != "none":
        from .. import noise

        nl = noise.inject(d.y_train, kind=nc["kind"], rate=nc["rate"], num_classes=d.num_classes,
                          generator=torch.Generator().manual_seed(seed), x=d.x_train, **nc["options"])
        is_noisy = nl.is_noisy
        train_data = d.with_train_labels(nl.labels, noise=f"{nc['kind']}:{nc['rate']}")
        metrics.append(["noise/realized_rate", float(nl.realized_rate), -1])
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(seed)
    mc = config["model"]
    mkw = _tuplify(mc["kwargs"])
    if mkw.get("normalize") == "data":  # statistics of the (clean) training inputs; labels play no part
        mkw["normalize"] = (float(d.x_train.mean()), float(d.x_train.std().clamp_min(1e-6)))
    model = models.create(mc["name"], input_shape=d.input_shape, num_classes=d.num_classes, **mkw)
    tc = config["train"]
    lc, oc = config["loss"], config["objective"]
    loss_kw = dict(lc["kwargs"])
    if "num_samples" in _params(lc["name"]) and "num_samples" not in loss_kw:
        loss_kw["num_samples"] = int(train_data.x_train.shape[0])  # per-sample state (e.g. ALDR-KL)
    res = fit(model, train_data, loss=lc["name"], loss_kw=loss_kw, objective=oc["name"],
              objective_kw=oc["kwargs"], seed=seed, progress=False, device=dev, **tc)
    model = res.model.eval()
    timings["train_s"] = time.perf_counter() - t
    hist = res.history
    for i, ep in enumerate(hist.get("epoch", [])):
        for k, vals in hist.items():
            if k in ("epoch",) or i >= len(vals):
                continue
            metrics.append([f"train/{k}", float(vals[i]), int(ep)])
    if hist.get("test_acc"):
        metrics.append(["acc/final_epoch_test", float(hist["test_acc"][-1]), -1])

    t = time.perf_counter()
    ctx = EvalContext(model=model, data=d, train_labels=train_data.y_train, is_noisy=is_noisy, seed=seed, device=dev)
    curves: dict[str, Any] = {}
    for ev in config["evaluations"]:
        te = time.perf_counter()
        out = run_evaluation(ev, ctx)
        metrics.extend([list(m) for m in out.metrics])
        curves.update(out.curves)
        timings[f"eval_{ev['name']}_s"] = time.perf_counter() - te
    timings["eval_s"] = time.perf_counter() - t
    if run_dir is not None:
        if checkpoint:
            p = save_checkpoint(model, run_dir / "model.pt", extra={"run_config": config})
            result["artifacts"].append(["checkpoint", str(p)])
        if curves:
            from ..training import atomic_write_text

            cp = run_dir / "curves.json"
            atomic_write_text(cp, json.dumps(curves, sort_keys=True))
            result["artifacts"].append(["curves", str(cp)])
    result["curves"] = curves


def _params(loss_name: str) -> Any:
    import inspect

    from ..losses import LOSSES

    return inspect.signature(LOSSES.spec(loss_name).factory).parameters


def _tuplify(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}


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
    (rd / PID_NAME).write_text(str(os.getpid()))
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
