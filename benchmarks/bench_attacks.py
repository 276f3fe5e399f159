"""Speed of robustlab's PGD-L∞ against torchattacks' PGD and against the forward+backward floor.

For an MLP and a small CNN on MNIST-shaped inputs (random pixels: the timing does not depend on them),
times, in one run and interleaved:
  floor        K plain forward+backward passes w.r.t. the input (torch.autograd.grad, nothing else);
  robustlab    attacks.get("pgd", eps, step_size, steps=K)(model, x, y);
  torchattacks torchattacks.PGD(model, eps, alpha, steps=K)(x, y)  (if installed);
  APGD-CE      robustlab's APGD with K steps (it does K+1 passes), against PGD with K steps.
Prints the best-of-R wall times and the ratios. Goal: robustlab ≤ 1.03× the floor.

    .venv/bin/python benchmarks/bench_attacks.py [--batch 256] [--repeats 7] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from robustlab import attacks


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def floor(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    xa = x.clone().requires_grad_(True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", default="10,50")
    ap.add_argument("--clock", choices=("thread", "wall"), default=None,
                    help="thread CPU time (default on CPU with 1 thread: robust to other processes on a shared "
                         "machine) or wall time (default otherwise)")
    args = ap.parse_args()
    clock_name = args.clock or ("thread" if args.device == "cpu" and args.threads == 1 else "wall")
    clock = time.thread_time if clock_name == "thread" else time.perf_counter
    torch.set_num_threads(args.threads)
    dev = args.device
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        print("torchattacks not installed: peer column skipped")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    eps, alpha = 0.3, 0.01
    print(f"device {dev}, threads {args.threads}, batch {args.batch}, best of {args.repeats}; {clock_name} clock, ms")
    print(f"{'model':<6} {'K':>3} {'floor':>8} {'robustlab':>10} {'torchatt':>9} {'rl/floor':>9} {'ta/floor':>9} "
          f"{'ta/rl':>6} {'apgd':>8} {'apgd/pgd':>9}")
    for name, make in (("mlp", mlp), ("cnn", small_cnn)):
        torch.manual_seed(0)
        model = make().to(dev).eval()
        for k in (int(s) for s in args.steps.split(",")):
            pgd = attacks.get("pgd", eps=eps, step_size=alpha, steps=k)
            apgd = attacks.get("apgd_ce", eps=eps, steps=k)
            fns = {
                "floor": lambda model=model, k=k: floor(model, x, y, k),
                "rl": lambda model=model, pgd=pgd: pgd(model, x, y, generator=torch.Generator(device=dev).manual_seed(0)),
                "apgd": lambda model=model, apgd=apgd: apgd(model, x, y, generator=torch.Generator(device=dev).manual_seed(0)),
            }
            if ta is not None:
                tpgd = ta.PGD(model, eps=eps, alpha=alpha, steps=k, random_start=True)
                fns["ta"] = lambda tpgd=tpgd: tpgd(x, y)
            # interleave the repeats so that load changes on the shared machine hit all columns alike
            t = {n: float("inf") for n in fns}
            for f in fns.values():
                f()
            for _ in range(args.repeats):
                for n, f in fns.items():
                    sync(dev)
                    s = clock()
                    f()
                    sync(dev)
                    t[n] = min(t[n], clock() - s)
            ms = {n: 1000 * v for n, v in t.items()}
            ta_ms = ms.get("ta", float("nan"))
            print(f"{name:<6} {k:>3} {ms['floor']:>8.2f} {ms['rl']:>10.2f} {ta_ms:>9.2f} {ms['rl'] / ms['floor']:>9.3f} "
                  f"{ta_ms / ms['floor']:>9.3f} {ta_ms / ms['rl']:>6.3f} {ms['apgd']:>8.2f} {ms['apgd'] / ms['rl']:>9.3f}")


if __name__ == "__main__":
    main()
