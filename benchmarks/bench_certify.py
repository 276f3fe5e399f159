"""Benchmark: randomized-smoothing throughput and IBP cost, against plain forward passes (same run).

    .venv/bin/python benchmarks/bench_certify.py [--device cpu|cuda] [--quick]

1. Smoothing: noise samples per second of ``SmoothedClassifier.sample_counts`` (noise + forward +
   counting) versus plain batched forward passes of the same number of inputs on pre-made data.
   Goal: ratio >= 0.9.
2. Bounds vs auto_LiRPA (``_bounds_vs_lirpa.py``): time and width of IBP, CROWN-IBP and CROWN on an MLP, a
   CNN and a residual CNN, the peer in its own interpreter (or its stored figures). Goal: time ratio <= 1.0.
3. IBP: time of ``interval_bounds`` (and CROWN-IBP margins) as a multiple of one forward pass on the
   same batch. Goal: IBP <= 3x.
Timings are the minimum of repeated runs after a warm-up (robust to load from other processes).
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab.certify import SmoothedClassifier, interval_bounds, margin_bounds
from robustlab.models import create


def _time(fn, repeat: int, sync) -> float:
    fn()
    sync()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return min(out)  # the least-disturbed run: robust to other load on a shared machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["smoothing", "ibp", "lirpa", "blocks"], default=None, help="run one part only")
    ap.add_argument("--lirpa-python", default=None, help="interpreter with auto_LiRPA (default /tmp/lirpa/bin/python)")
    ap.add_argument("--save-peer", action="store_true", help="store the live auto_LiRPA figures beside the script")
    ap.add_argument("--rounds", type=int, default=None, help="bounds vs auto_LiRPA: timed rounds per case "
                    "(interleaved; default 3, 2 with --quick; cases faster than 2 s get at least ~2 s of calls, up to 30)")
    ap.add_argument("--ops", action="store_true", help="bounds vs auto_LiRPA: also count the aten ops of one call "
                    "on each side (torch.profiler; robust to machine load)")
    ap.add_argument("--default-malloc", action="store_true", help="bounds vs auto_LiRPA: keep each process's "
                    "glibc malloc thresholds (by default both sides run with the same fixed ones)")
    ap.add_argument("--cases", default=None, help="bounds vs auto_LiRPA: only these model/norm/method cases, comma-separated "
                    "(e.g. cnn/linf/CROWN,rescnn/linf/CROWN)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    repeat = 3 if args.quick else 5
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{args.threads} CPU threads'}), torch {torch.__version__}")

    shape = (1, 28, 28)
    models = {
        "mlp(256,256) 28x28": create("mlp", input_shape=shape, num_classes=10),
        "lenet 28x28": create("lenet", input_shape=shape, num_classes=10),
    }
    if args.only in (None, "smoothing"):
        print("\n== randomized smoothing: noise samples per second (goal: ratio >= 0.9) ==")
        print(f"{'model':<22}{'draws':>9}{'certify path/s':>16}{'plain fwd/s':>14}{'ratio':>8}")
        for name, model in models.items():
            _bench_smoothing(name, model.to(dev).eval(), shape, dev, sync, repeat, args.quick)
    if args.only == "smoothing":
        return
    if args.only in (None, "lirpa") and dev.type == "cpu":
        from _bounds_vs_lirpa import run as run_lirpa

        run_lirpa(threads=args.threads, quick=args.quick, rounds=args.rounds or (2 if args.quick else 3),
                  lirpa_python=args.lirpa_python, save_peer=args.save_peer, cases=args.cases,
                  ops=args.ops, default_malloc=args.default_malloc)
    if args.only == "lirpa":
        return
    if args.only in (None, "blocks") and dev.type == "cpu":
        from _ibp_blocks import run as run_blocks

        run_blocks(rounds=args.rounds or (10 if args.quick else 40))
    if args.only == "blocks":
        return
    print("\n== interval bounds: cost as a multiple of one forward pass (goal: IBP <= 3x) ==")
    print(f"{'model':<22}{'batch':>6}{'forward ms':>12}{'IBP ms':>9}{'IBP x':>7}{'margins ms':>12}{'x':>6}{'CROWN-IBP ms':>14}{'x':>7}")
    for name, model in models.items():
        _bench_ibp(name, model.to(dev).eval(), shape, dev, sync, repeat)


def _bench_smoothing(name, model, shape, dev, sync, repeat, quick) -> None:
    n_points, num = (20, 2000) if quick else (50, 4000)
    if dev.type == "cuda":
        num *= 10
    bs = 4000 if dev.type == "cpu" else 20000
    x = torch.rand((n_points, *shape), device=dev)
    smooth = SmoothedClassifier(model, sigma=0.25, num_classes=10)
    gen = torch.Generator(device=dev).manual_seed(0)
    total = n_points * num
    data = torch.rand((bs, *shape), device=dev)

    def plain() -> None:
        with torch.no_grad():
            for start in range(0, total, bs):
                model(data[: min(bs, total - start)]).argmax(1)

    t_s, t_p = float("inf"), float("inf")
    for _ in range(repeat):  # interleaved, so both see the same background load
        t_s = min(t_s, _time(lambda: smooth.sample_counts(x, num, batch_size=bs, generator=gen), 1, sync))
        t_p = min(t_p, _time(plain, 1, sync))
    print(f"{name:<22}{total:>9}{total / t_s:>16.3g}{total / t_p:>14.3g}{t_p / t_s:>8.2f}")


def _bench_ibp(name, model, shape, dev, sync, repeat) -> None:
    b = 256
    x = torch.rand((b, *shape), device=dev)
    y = torch.randint(0, 10, (b,), device=dev)
    fns = {"f": lambda: model(x), "i": lambda: interval_bounds(model, x, eps=0.1),
           "m": lambda: margin_bounds(model, x, y, eps=0.1)}
    try:
        with torch.no_grad():
            margin_bounds(model, x[:2], y[:2], eps=0.1, method="crown_ibp")
        fns["c"] = lambda: margin_bounds(model, x, y, eps=0.1, method="crown_ibp")
    except TypeError:
        pass
    best = {k: float("inf") for k in ("f", "i", "m", "c")}
    with torch.no_grad():
        for _ in range(repeat * 2):  # interleaved rounds: every method sees the same background load
            for k, fn in fns.items():
                best[k] = min(best[k], _time(fn, 1, sync))
    t_f, t_i, t_m, t_c = best["f"], best["i"], best["m"], best["c"] if "c" in fns else float("nan")
    print(f"{name:<22}{b:>6}{1e3 * t_f:>12.2f}{1e3 * t_i:>9.2f}{t_i / t_f:>7.2f}{1e3 * t_m:>12.2f}{t_m / t_f:>6.2f}"
          f"{1e3 * t_c:>14.2f}{t_c / t_f:>7.2f}")


if __name__ == "__main__":
    main()
