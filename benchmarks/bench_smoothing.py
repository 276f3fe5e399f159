"""Benchmark: randomized-smoothing counting throughput per noise layout, against plain forward passes.

    .venv/bin/python benchmarks/bench_smoothing.py [--device cpu|cuda] [--quick] [--threads 2] [--models mlp lenet]

For an MLP (256, 256) on 28×28 inputs (``--models mlp lenet`` adds LeNet): noisy inputs per second of
``SmoothedClassifier.sample_counts`` (noise + forward + counting) with ``noise="shared"`` (the
default: one block of draws for all the points of a call) and ``noise="independent"`` (a fresh draw
per point and draw, the layout before), each as a ratio to plain batched forward passes over the
same number of pre-made inputs, timed interleaved in the same run. Goal: ratio >= 0.9.
A third line per model times ``torch.Tensor.normal_`` alone for one batch, as a share of one forward.
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab.certify import SmoothedClassifier
from robustlab.models import create


def _once(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", choices=["mlp", "lenet"], default=["mlp"],
                    help="mlp (the goal's model) and/or lenet (slow on CPU: its forward dominates anyway)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n_points, num, repeat = (20, 2000, 3) if args.quick else (50, 4000, 5)
    if dev.type == "cuda":
        num *= 10
    bs = 4000 if dev.type == "cpu" else 20000
    shape = (1, 28, 28)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{args.threads} CPU threads"
    print(f"device {dev} ({where}), torch {torch.__version__}; {n_points} points x {num} draws, batch {bs}")
    print(f"{'model':<22}{'plain fwd/s':>13}{'shared/s':>11}{'ratio':>7}{'independent/s':>15}{'ratio':>7}{'randn/fwd':>11}")
    names = {"mlp": "mlp(256,256) 28x28", "lenet": "lenet 28x28"}
    for arch in args.models:
        name = names[arch]
        model = create(arch, input_shape=shape, num_classes=10).to(dev).eval()
        x = torch.rand((n_points, *shape), device=dev)
        data = torch.rand((bs, *shape), device=dev)
        total = n_points * num

        def plain(model=model, data=data, total=total) -> None:
            with torch.no_grad():
                for start in range(0, total, bs):
                    model(data[: min(bs, total - start)]).argmax(1)

        runs = {"plain": plain}
        for mode in ("shared", "independent"):
            smooth = SmoothedClassifier(model, sigma=0.25, num_classes=10, noise=mode)
            gen = torch.Generator(device=dev).manual_seed(0)
            runs[mode] = lambda smooth=smooth, gen=gen, x=x: smooth.sample_counts(x, num, batch_size=bs, generator=gen)
        buf = torch.empty_like(data)
        runs["randn"] = lambda buf=buf: buf.normal_()
        runs["fwd"] = torch.no_grad()(lambda model=model, data=data: model(data))
        best = dict.fromkeys(runs, float("inf"))
        for fn in runs.values():  # warm-up
            fn()
        sync()
        for _ in range(repeat):  # interleaved rounds: every variant sees the same background load
            for key, fn in runs.items():
                best[key] = min(best[key], _once(fn, sync))
        t_p, t_s, t_i = best["plain"], best["shared"], best["independent"]
        print(f"{name:<22}{total / t_p:>13.3g}{total / t_s:>11.3g}{t_p / t_s:>7.2f}{total / t_i:>15.3g}{t_p / t_i:>7.2f}"
              f"{best['randn'] / best['fwd']:>11.2f}")


if __name__ == "__main__":
    main()
