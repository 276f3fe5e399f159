"""Training throughput of ``fit(distributed=True)``: 1 process vs 2 processes (torchrun, gloo, CPU).

Same run both ways: an MLP 784-2048-2048-10 (compute dominates the gradient all-reduce of its 5.8M
parameters), 8192 synthetic samples, global batch 512, SGD, 1 thread per process, ``--epochs`` epochs of
which the first is warm-up; samples/s is measured from ``fit``'s per-epoch ``time_s`` of the others. The
1- and 2-process launches are interleaved and repeated; medians are printed with the ratio
(2-process samples/s over 1-process samples/s; ideal 2.0 on 2 free cores, lower when other processes
share them).

Run: ``.venv/bin/python benchmarks/bench_distributed.py [--repeats 3] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

N, BATCH, WIDTH = 8192, 512, 2048


def worker(out: str, epochs: int) -> None:
    """One process of a launch: train, and (rank 0) write the samples/s of the timed epochs to ``out``."""
    from robustlab import data
    from robustlab.training import fit

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(N, 1, 28, 28, generator=g), torch.randint(0, 10, (N,), generator=g)
    d = data.ClassificationData(x, y, x[:16], y[:16], num_classes=10, input_shape=(1, 28, 28),
                                class_names=[str(c) for c in range(10)], name="synthetic")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, WIDTH), torch.nn.ReLU(),
                                torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 10))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    res = fit(model, d, epochs=epochs, batch_size=BATCH, lr=0.01, schedule="constant", seed=0, progress=False,
              distributed=distributed)
    if int(os.environ.get("RANK", "0")) == 0:
        times = res.history["time_s"][1:]
        with open(out, "w") as fh:
            json.dump({"samples_per_s": N * len(times) / sum(times)}, fh)


def launch(nproc: int, epochs: int) -> float:
    """Samples/s of one torchrun launch with ``nproc`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               os.path.abspath(__file__), "--worker", out, "--epochs", str(epochs)]
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, timeout=600)
        with open(out) as fh:
            return float(json.load(fh)["samples_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per launch; the first is warm-up")
    ap.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.epochs)
        return
    runs: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.repeats):
        for nproc in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[nproc].append(launch(nproc, args.epochs))
    print(f"bench_distributed: MLP 784-{WIDTH}-{WIDTH}-10, {N} samples, global batch {BATCH}, gloo on CPU, "
          f"1 thread/process, {args.epochs - 1} timed epochs, {args.repeats} interleaved repeats, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    for nproc, vals in runs.items():
        print(f"{nproc} process{'es' if nproc > 1 else '  '}  samples/s median {statistics.median(vals):9.1f}  "
              f"(runs: {', '.join(f'{v:.0f}' for v in vals)})")
    ratio = statistics.median(runs[2]) / statistics.median(runs[1])
    print(f"throughput ratio 2 processes / 1 process: {ratio:.2f}x (ideal 2.00x on 2 free cores)")


if __name__ == "__main__":
    main()
