"""The sweep driver and its executors (``local``: one child process per run; ``ray``: Ray core tasks).

The driver alone writes the database. Protocol per run (see ``shift-and-sweeps.md`` B2.4):
claim (``running``, one transaction) -> execute -> result (local: ``runs/<id>/result.json`` by temp
file + atomic rename; Ray: the task's return value) -> ingest (one transaction). On start the driver
ingests result files of runs left ``running`` by a dead driver and resets the others, so rerunning
the same command resumes: completed runs are skipped, failed and interrupted runs are retried.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from .._validation import check_bool, check_in_range, check_int, check_option
from ._folder import FolderLock, kill_recorded_worker, record_worker
from ._gridcheck import check_spec
from ._mlflow import MlflowMirror
from ._rebuild import RUNS_DIR, write_run_meta, write_sweep_meta
from ._resultfile import QUARANTINE_DIR, InvalidResult, load_result, quarantine
from ._worker import CONFIG_NAME, RESULT_NAME, write_result
from .spec import BenchSpec, RunConfig, expand, load_spec
from .store import ResultStore

__all__ = ["EXECUTORS", "SweepResult", "default_threads", "run_sweep"]

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: counts over the grid and the wall time of this invocation."""

    out: Path
    spec: str
    run_ids: list[str]
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    executed: int = 0
    wall_s: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (result file kept as, why it was refused)

    @property
    def db(self) -> Path:
        return self.out / "results.db"


def default_threads(workers: int) -> int:
    """Torch threads per run so that ``workers`` concurrent runs do not oversubscribe the cores."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, workers))


TRAIN_STATE = "train_state"  # pipeline.run(resume=True) keeps fit's epoch checkpoints here


def _keep_train_state(rd: Path, outp: Path) -> Path | None:
    """Move an interrupted attempt's ``train_state`` out of ``rd`` (to resume from it); None if there is none."""
    state = rd / TRAIN_STATE
    if not state.is_dir() or state.is_symlink():
        return None
    parked = outp / f".{rd.name}.{TRAIN_STATE}.{os.getpid()}"
    if parked.exists():
        shutil.rmtree(parked)
    state.rename(parked)
    return parked


def run_sweep(
    spec: str | os.PathLike[str] | dict[str, Any] | BenchSpec,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    timeout_s: float | None = None,
    threads: int | None = None,
    progress: bool = True,
    mlflow_uri: str | None = None,
    check: bool = True,
) -> SweepResult:
    """Run every grid point of ``spec`` not yet completed in ``out/results.db``; return the counts.

    ``workers``: concurrent runs. ``threads``: torch threads per run (default: cores // workers).
    ``timeout_s``: per-run wall-clock limit (kills only that run; default from the spec's ``run``
    section, else none). A failing run is recorded as failed and the sweep goes on. Ctrl-C kills
    the runs in flight, records them as interrupted and re-raises ``KeyboardInterrupt``.

    One driver per ``out``: a second one raises :class:`~robustlab.bench._folder.ResultsFolderBusy`
    naming the holder. Result files that do not validate are quarantined (``res.quarantined``) and
    their runs are run again.

    ``check`` (default True): first :func:`~robustlab.bench.check_spec` the whole grid (every data set
    loads, every model builds, one dry-run training step per combination) and raise its
    :class:`~robustlab.bench.SpecError` listing every problem before anything is written, as
    ``robustlab bench run`` does; ``False`` only validates the spec's structure (``load_spec``).
    """
    check_int(workers, "workers", 1, None, owner="run_sweep")
    check_option(executor, "executor", EXECUTORS, owner="run_sweep")
    bs = check_spec(spec) if check_bool(check, "check", owner="run_sweep") else load_spec(spec)
    if timeout_s is None:
        timeout_s = bs.run.get("timeout_s")
    if timeout_s is not None:
        check_in_range(timeout_s, "timeout_s", 0.0, None, closed="neither", owner="run_sweep")
    if threads is None:
        threads = default_threads(workers)
    check_int(threads, "threads", 1, None, owner="run_sweep")
    mirror = MlflowMirror(mlflow_uri) if mlflow_uri else None  # ImportError (before any file is written) if absent
    runs = expand(bs)
    outp = Path(out).resolve()
    (outp / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    lock = FolderLock(outp, purpose=f"bench run {bs.name}").acquire()  # before anything reads or writes
    t0 = time.time()
    res = SweepResult(out=outp, spec=bs.name, run_ids=[r.id for r in runs])
    store = None
    try:
        store = ResultStore(outp)
        spec_json = json.dumps(bs.source, sort_keys=True)
        write_sweep_meta(outp, spec=bs.name, spec_json=spec_json, run_ids=res.run_ids)
        store.record_sweep(bs.name, spec_json, executor=executor)
        store.link_runs(bs.name, res.run_ids)
        _recover(store, outp, res)
        status = store.status_of(res.run_ids)
        todo = [r for r in runs if status.get(r.id) != "completed"]
        res.skipped = len(runs) - len(todo)
        token = secrets.token_hex(8)  # this sweep's workers carry it in worker.pid; recovery checks it
        owner = f"{os.getpid()}@{socket.gethostname()}#{token}"
        bar = _progress(len(todo), bs.name, progress)

        def on_result(rc: RunConfig, result: dict[str, Any]) -> None:
            store.finish(rc.id, result)
            res.executed += 1
            if result.get("status") == "completed":
                res.completed += 1
            else:
                res.failed += 1
                res.failures[rc.id] = str(result.get("error"))
                log.warning("run %s (%s) failed: %s", rc.short_id, rc.describe(), result.get("error"))
            if mirror is not None:
                _mirror(mirror, bs.name, rc, result, outp / RUNS_DIR / rc.id)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=res.failed)

        def claim(rc: RunConfig) -> Path:
            rd = outp / RUNS_DIR / rc.id
            kept = _keep_train_state(rd, outp)
            if rd.exists():
                shutil.rmtree(rd)  # a fresh attempt never sees files of an earlier one ...
            rd.mkdir(parents=True)
            if kept is not None:  # ... except the interrupted attempt's epoch state, which it resumes from
                kept.rename(rd / TRAIN_STATE)
            (rd / CONFIG_NAME).write_text(json.dumps(rc.config, sort_keys=True, indent=1))
            write_run_meta(rd, spec=bs.name, labels=rc.labels)
            store.claim(rc.id, spec=bs.name, config=rc.config, labels=rc.labels, owner=owner, executor=executor)
            return rd

        def fail(rc: RunConfig, error: str, tb: str | None = None, duration: float | None = None) -> None:
            on_result(rc, {"status": "failed", "error": error, "traceback": tb,
                           "timings": {"total_s": duration}, "finished_at": time.time()})

        def ingest(rc: RunConfig, rd: Path, duration: float | None = None) -> None:
            """Record the run's result file, or quarantine it and record the run failed if it does not validate."""
            try:
                result = load_result(rd)
            except InvalidResult as e:
                _quarantine(res, rd / RESULT_NAME, e)
                fail(rc, f"InvalidResult: {e}", None, duration)
                return
            on_result(rc, result)

        checkpoint, device = bool(bs.run.get("checkpoints", False)), bs.run.get("device")
        try:
            if executor == "local":
                _run_local(todo, workers=workers, claim=claim, ingest=ingest, fail=fail, threads=threads,
                           timeout_s=timeout_s, checkpoint=checkpoint, device=device, token=token)
            else:
                _run_ray(todo, workers=workers, address=ray_address, num_gpus=float(bs.run.get("num_gpus", 0)),
                         claim=claim, ingest=ingest, fail=fail, threads=threads, timeout_s=timeout_s,
                         checkpoint=checkpoint, device=device)
        finally:
            if bar is not None:
                bar.close()
        res.completed = res.skipped + res.completed
        if mirror is not None:
            try:
                mirror.log_report(bs.name, outp)
            except Exception as e:  # the mirror is a copy: never fail the sweep for it
                log.warning("MLflow: could not log the report: %s: %s", type(e).__name__, e)
    finally:
        res.wall_s = time.time() - t0
        if store is not None:
            store.close()
        lock.release()
    return res


def _mirror(mirror: MlflowMirror, spec: str, rc: RunConfig, result: dict[str, Any], rd: Path) -> None:
    try:
        mirror.log_run(spec=spec, run_id=rc.id, labels=rc.labels, config=rc.config, status=str(result.get("status")),
                       metrics=[tuple(m) for m in result.get("metrics", [])], artifacts=result.get("artifacts", []),
                       env=result.get("env"), error=result.get("error"), run_dir=rd, resolved=result.get("resolved"))
    except Exception as e:  # the mirror is a copy: never fail the sweep for it
        log.warning("MLflow: could not log run %s: %s: %s", rc.short_id, type(e).__name__, e)


def _progress(total: int, name: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"bench {name}", unit="run", file=sys.stderr, dynamic_ncols=True)


def _recover(store: ResultStore, out: Path, res: SweepResult) -> None:
    """Ingest valid result files of runs left ``running`` by a dead driver; mark the rest failed (retried).

    A worker of the dead driver still running such a run is killed, but only when its recorded
    identity (pid, start time, boot id, host, the claim's sweep token) matches the live process.
    """
    for row in store.runs(status="running"):
        rid, rd = row["id"], out / RUNS_DIR / row["id"]
        rf = rd / RESULT_NAME
        if rf.exists():
            try:
                store.finish(rid, load_result(rd))
                continue
            except InvalidResult as e:
                _quarantine(res, rf, e)
        token = (row.get("owner") or "").rpartition("#")[2] or None
        if kill_recorded_worker(rd, token):
            log.warning("killed the orphaned worker of run %s left by a stopped driver", rid[:12])
        store.fail(rid, "interrupted: the driver stopped before this run finished; reset on restart")


def _quarantine(res: SweepResult, rf: Path, err: Exception) -> None:
    kept = quarantine(rf, res.out / QUARANTINE_DIR)
    res.quarantined.append((str(kept or rf), str(err)))
    log.warning("quarantined an invalid result file as %s (the run will run again): %s", kept or rf, err)


def _log_tail(rd: Path, n: int = 30) -> str:
    try:
        lines = (rd / "log.txt").read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


# -- local executor -----------------------------------------------------------------------------
# Imported once by the fork server (a missing one is skipped): torch's optimizer path pulls in
# torch._dynamo (~1.5 s), scikit-learn's data sets ~1.5 s; the evaluation pillars pull in scipy.
_PRELOAD = ["torch", "torch._dynamo", "yaml", "numpy", "scipy.stats", "sklearn.datasets", "robustlab.bench._worker",
            "robustlab.data", "robustlab.models", "robustlab.losses", "robustlab.training", "robustlab.noise",
            "robustlab.metrics", "robustlab.bench.evaluations", "robustlab.attacks", "robustlab.evaluate",
            "robustlab.certify", "robustlab.certify.ibp", "robustlab.certify.smoothing", "robustlab.conformal",
            "robustlab.shift"]


def _mp_context() -> Any:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Children fork from a server that has imported torch and robustlab once, instead of paying
        # ~2 s of imports per run; the server never runs tensor ops, so forking it is safe.
        ctx.set_forkserver_preload(_PRELOAD)
        _start_forkserver_without_cwd()
        return ctx
    return mp.get_context("spawn")  # pragma: no cover - Windows


def _start_forkserver_without_cwd() -> None:
    """Start the fork server (if not running) with no working-directory entry on its ``sys.path``.

    The server is ``python -c ...``, which puts the working directory first on ``sys.path``: a
    ``yaml.py`` or ``concurrent.py`` there would be imported by the preload (and run in every run).
    ``PYTHONSAFEPATH`` (Python >= 3.11) stops that; the runs inherit the server's clean path.
    """
    from multiprocessing import forkserver

    old, path = os.environ.get("PYTHONSAFEPATH"), list(sys.path)
    os.environ["PYTHONSAFEPATH"] = "1"
    cwd = os.getcwd()
    sys.path[:] = [p for p in path if p not in ("", ".", cwd)]  # Pythons that hand the server our sys.path
    try:
        forkserver.ensure_running()
    finally:
        sys.path[:] = path
        if old is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = old


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start children without re-importing the driver's ``__main__`` (the target lives in robustlab).

    multiprocessing's spawn/forkserver re-run the main script (or ``-m`` module) in every child, which
    re-executes a user's unguarded top-level code; our children never need it, so hide it while starting.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    had_file, file_ = hasattr(main, "__file__"), getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    try:
        if had_file:
            del main.__file__
        main.__spec__ = None
        yield
    finally:
        if had_file:
            main.__file__ = file_
        main.__spec__ = spec


def _run_local(todo: list[RunConfig], *, workers: int, threads: int, timeout_s: float | None, checkpoint: bool,
               device: str | None, claim: Callable[[RunConfig], Path], ingest: Callable[..., None],
               fail: Callable[..., None], token: str) -> None:
    from ._worker import child_main

    ctx = _mp_context()
    pending = list(todo)
    live: dict[Any, tuple[RunConfig, Path, float]] = {}  # process -> (run, dir, start)
    try:
        while pending or live:
            while pending and len(live) < workers:
                rc = pending.pop(0)
                rd = claim(rc)
                p = ctx.Process(target=child_main, args=(str(rd), threads, checkpoint, device),
                                name=f"robustlab-run-{rc.short_id}", daemon=False)
                live[p] = (rc, rd, time.time())  # before start: an interrupt inside start() is accounted for
                with _main_not_reimported():
                    p.start()
                record_worker(rd, p.pid, token)
            wait_for = 0.5
            if timeout_s is not None:
                nearest = min(start + timeout_s for _, _, start in live.values())
                wait_for = max(0.01, min(wait_for, nearest - time.time()))
            ready = mp_wait([p.sentinel for p in live], timeout=wait_for)
            now = time.time()
            for p in list(live):
                rc, rd, start = live[p]
                if p.sentinel in ready or not p.is_alive():
                    p.join()
                    del live[p]
                    rf = rd / RESULT_NAME
                    if p.exitcode == 0 and rf.exists():
                        ingest(rc, rd, now - start)
                    else:
                        code = p.exitcode
                        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        fail(rc, f"WorkerCrashed: the run's process died ({why}) without a result",
                             _log_tail(rd), now - start)
                elif timeout_s is not None and now - start > timeout_s:
                    p.kill()
                    p.join()
                    del live[p]
                    fail(rc, f"TimeoutError: the run exceeded its {timeout_s:g} s limit and was killed",
                         _log_tail(rd), now - start)
    except BaseException as exc:
        why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        for p, (rc, rd, start) in list(live.items()):
            if p.pid is not None:  # started
                p.kill()
                p.join()
            fail(rc, f"interrupted: the sweep was stopped ({why}) while this run was in flight", _log_tail(rd),
                 time.time() - start)
        raise


# -- Ray executor -------------------------------------------------------------------------------
def _run_ray(todo: list[RunConfig], *, workers: int, address: str | None, num_gpus: float, threads: int,
             timeout_s: float | None, checkpoint: bool, device: str | None,
             claim: Callable[[RunConfig], Path], ingest: Callable[..., None], fail: Callable[..., None]) -> None:
    try:
        import ray
    except ImportError:
        raise ImportError("The ray executor needs Ray: pip install 'robustlab[ray]'.") from None
    from ._worker import ray_task

    started_here = not ray.is_initialized()
    if started_here:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **kw)
        else:  # a private local instance sized to the requested concurrency
            ray.init(address="local", num_cpus=workers * threads, num_gpus=int(num_gpus * workers) if num_gpus else 0,
                     object_store_memory=200 * 1024 * 1024, **kw)
    try:
        cluster_cpus = float(ray.cluster_resources().get("CPU", workers * threads))
        limit = workers if not address else max(workers, int(2 * cluster_cpus // threads))
        remote = ray.remote(num_cpus=threads, num_gpus=num_gpus, max_retries=1)(ray_task)
        pending = list(todo)
        live: dict[Any, tuple[RunConfig, Path, float]] = {}
        try:
            while pending or live:
                while pending and len(live) < limit:
                    rc = pending.pop(0)
                    rd = claim(rc)
                    ref = remote.remote(rc.config, threads, str(rd) if checkpoint else None, device)
                    live[ref] = (rc, rd, time.time())
                done, _ = ray.wait(list(live), num_returns=1, timeout=0.5)
                now = time.time()
                for ref in list(live):
                    rc, rd, start = live[ref]
                    if ref in done:
                        del live[ref]
                        try:
                            result = ray.get(ref)
                        except Exception as e:  # worker died (exceptions in runs are returned, not raised)
                            fail(rc, f"WorkerCrashed: {type(e).__name__}: {e}", None, now - start)
                            continue
                        # the result file beside the run's config is what `results rebuild` reads
                        write_result(rd, {**result, "run_id": rc.id} if isinstance(result, dict) else result)
                        ingest(rc, rd, now - start)
                    elif timeout_s is not None and now - start > timeout_s:
                        ray.cancel(ref, force=True)
                        del live[ref]
                        fail(rc, f"TimeoutError: the run exceeded its {timeout_s:g} s limit and was cancelled",
                             None, now - start)
        except BaseException as exc:
            why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            for ref, (rc, _rd, start) in list(live.items()):
                ray.cancel(ref, force=True)
                fail(rc, f"interrupted: the sweep was stopped ({why}) while this run was in flight", None,
                     time.time() - start)
            raise
    finally:
        if started_here:
            ray.shutdown()
