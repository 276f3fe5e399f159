"""Sweep runner benchmark: per-run overhead of the local executor and its scaling from 1 to 2 workers.

Peers measured in the same process: a plain in-process loop over ``execute_run`` (no runner: no
processes, no database) and ``concurrent.futures.ProcessPoolExecutor`` (the shared pool the runner
deliberately does not use). Figures are wall-clock seconds on this machine; the goal is a per-run
overhead below 5% of run time for runs of >= 10 s.

    .venv/bin/python benchmarks/bench_sweep.py [--tiny 20] [--scale 8] [--ray]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from robustlab.bench import ResultStore, expand, run_sweep
from robustlab.bench._worker import execute_run


def spec(n_runs: int, epochs: int, n_train: int, name: str) -> dict:
    return {
        "name": name,
        "data": [{"name": "gaussians", "n_train": n_train, "n_test": 200, "num_classes": 5, "dim": 20}],
        "models": [{"name": "mlp", "hidden": [64]}],
        "losses": ["ce"],
        "seeds": list(range(n_runs)),
        "train": {"epochs": epochs, "batch_size": 32},
        "evaluations": ["clean", {"name": "topk", "k": [1, 2]}],
    }


def _pool_task(config: dict) -> float:
    return execute_run(config, threads=1)["timings"]["total_s"]


def cpu_times(out: Path) -> list[float]:
    with ResultStore(out, readonly=True) as st:
        return [r["env"]["timings"].get("cpu_s", float("nan")) for r in st.runs()]


def sweep(s: dict, workers: int, root: Path) -> tuple[float, list[float]]:
    out = root / f"{s['name']}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = run_sweep(s, out, workers=workers, threads=1, progress=False)
    wall = time.perf_counter() - t0
    assert res.failed == 0, res.failures
    with ResultStore(out, readonly=True) as st:
        durations = [r["duration_s"] for r in st.runs()]
    return wall, durations


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", type=int, default=20, help="runs in the overhead sweep")
    ap.add_argument("--scale", type=int, default=8, help="runs in the scaling sweep")
    ap.add_argument("--ray", action="store_true", help="also time a Ray sweep (needs robustlab[ray])")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"machine: {cpus} usable cores, load average {os.getloadavg()[0]:.1f} at start")
    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        # warm the fork server once (its imports are a one-off cost per driver, reported separately)
        t0 = time.perf_counter()
        run_sweep(spec(1, 1, 100, "warm"), root / "warm", workers=1, progress=False)
        print(f"first sweep in a fresh driver (fork-server start + imports): {time.perf_counter() - t0:.2f} s")

        # 1. per-run overhead: tiny runs, one worker
        tiny = spec(args.tiny, 2, 300, "tiny")
        configs = [r.config for r in expand(tiny)]
        execute_run(configs[0], threads=1)  # the in-process peer pays its imports outside the timing too
        t0 = time.perf_counter()
        loop = [execute_run(c, threads=1)["timings"]["total_s"] for c in configs]
        loop_wall = time.perf_counter() - t0
        wall, durations = sweep(tiny, 1, root)
        overhead = (wall - sum(durations)) / len(durations)
        print(f"\n[overhead] {len(durations)} tiny runs, 1 worker")
        print(f"  runner sweep wall        {wall:7.2f} s   sum of in-run times {sum(durations):6.2f} s "
              f"(median run {statistics.median(durations) * 1000:.0f} ms)")
        print(f"  peer: in-process loop    {loop_wall:7.2f} s   (no processes, no database; sum of run times {sum(loop):.2f} s)")
        print(f"  per-run overhead         {overhead * 1000:7.0f} ms  = {100 * overhead / 10:.2f}% of a 10 s run "
              f"(goal < 5%); {100 * overhead / 60:.2f}% of a 1 min run")
        print(f"  ratio runner / in-process loop: {wall / loop_wall:.2f}x on these tiny runs")

        # 2. scaling 1 -> 2 workers on runs of ~1-2 s
        big = spec(args.scale, 15, 3000, "scale")
        w1, d1 = sweep(big, 1, root)
        load1 = os.getloadavg()[0]
        w2, d2 = sweep(big, 2, root)
        load2 = os.getloadavg()[0]
        c1, c2 = cpu_times(root / "scale-w1"), cpu_times(root / "scale-w2")
        ctx = mp.get_context("forkserver")
        cfgs = [r.config for r in expand(big)]
        t0 = time.perf_counter()
        with cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
            list(pool.map(_pool_task, cfgs))
        pool_wall = time.perf_counter() - t0
        print(f"\n[scaling] {args.scale} runs of ~{statistics.median(d1):.2f} s (1 torch thread each)")
        print(f"  1 worker  {w1:7.2f} s   (load average {load1:.1f}; median run {statistics.median(d1):.2f} s wall, "
              f"{statistics.median(c1):.2f} s CPU)")
        print(f"  2 workers {w2:7.2f} s   (load average {load2:.1f}; median run {statistics.median(d2):.2f} s wall, "
              f"{statistics.median(c2):.2f} s CPU)")
        print(f"  speed-up {w1 / w2:.2f}x (ideal {min(2, cpus)}.00x on an idle machine; a run's CPU/wall ratio "
              f"{statistics.median(c1) / statistics.median(d1):.2f} alone shows how much of a core it got)")
        print(f"  peer: ProcessPoolExecutor(2) {pool_wall:7.2f} s   runner / pool = {w2 / pool_wall:.2f}x "
              "(the pool shares workers: one crash fails every run in flight)")

        if args.ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("\n[ray] not installed (pip install 'robustlab[ray]')")
            else:
                t0 = time.perf_counter()
                out = root / "ray"
                run_sweep(big, out, workers=2, threads=1, executor="ray", progress=False)
                print(f"\n[ray] same {args.scale}-run sweep, local Ray instance, 2 CPUs: {time.perf_counter() - t0:.2f} s "
                      f"(includes ray.init and shutdown); local executor {w2:.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
