"""``robustlab certify``: certified accuracy of a trained model (IBP / CROWN-IBP / CROWN or randomized smoothing).

Examples::

    robustlab certify --checkpoint runs/ibp --data digits --method ibp --eps 0.05 0.1
    robustlab certify --checkpoint runs/gauss --data digits --method smoothing --sigma 0.25 --radii 0 0.25 0.5 --n 10000

Prints one line per ε (or radius) and writes ``--out`` JSON atomically when given.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("certify", help="certified accuracy: interval bounds (IBP, CROWN-IBP) or randomized smoothing")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.pt file or run directory from 'robustlab train')")
    p.add_argument("--data", default=None, help="data set name (its test split is certified); default: the one recorded with the checkpoint")
    p.add_argument("--data-root", default=None, help="folder with the data files (mnist, cifar10, ...)")
    p.add_argument("--method", default="ibp", choices=["ibp", "crown_ibp", "crown", "smoothing"])
    p.add_argument("--eps", type=float, nargs="+", default=[0.1], help="L-inf (or --norm l2) radii for bound methods")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="threat model of the bound methods")
    p.add_argument("--sigma", type=float, default=0.25, help="smoothing noise level σ")
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5], help="L2 radii for smoothing")
    p.add_argument("--n0", type=int, default=100, help="selection draws (Cohen et al.: 100)")
    p.add_argument("--n", type=int, default=100_000, help="estimation draws (Cohen et al.: 100000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (Cohen et al.: 0.001)")
    p.add_argument("--max-samples", type=int, default=None, help="certify only the first N test points")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..certify import SmoothedClassifier, certified_accuracy, certified_accuracy_curve
    from ..training import atomic_write_text, load_checkpoint
    from ._attack import load_recorded_data

    model = load_checkpoint(args.checkpoint).eval()
    data = load_recorded_data(args.checkpoint, model, args.data, args.data_root)
    args.data = data.name
    x, y = data.x_test, data.y_test
    if args.max_samples is not None:
        if args.max_samples < 1:
            raise ValueError(f"--max-samples must be >= 1. Got {args.max_samples}.")
        x, y = x[: args.max_samples], y[: args.max_samples]
    t0 = time.perf_counter()
    result: dict[str, Any] = {"data": args.data, "checkpoint": str(args.checkpoint), "method": args.method,
                              "num_points": int(x.shape[0])}
    if args.method == "smoothing":
        smooth = SmoothedClassifier(model, sigma=args.sigma, num_classes=data.num_classes)
        classes, radii = smooth.certify(x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                                        generator=torch.Generator().manual_seed(args.seed))
        curve = certified_accuracy_curve(classes, radii, y, args.radii)
        result.update(sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                      abstain=float((classes == -1).float().mean()),
                      certified_accuracy={f"{r:g}": float(a) for r, a in zip(args.radii, curve)})
        print(f"smoothing σ={args.sigma:g} n={args.n} α={args.alpha:g} on {x.shape[0]} points "
              f"(abstain {100 * result['abstain']:.1f}%)")
        for r, a in zip(args.radii, curve):
            print(f"  radius {r:<8g} certified accuracy {100 * float(a):6.2f}%")
    else:
        clean = float((model(x).argmax(1) == y).float().mean()) if x.shape[0] else float("nan")
        accs = {f"{e:g}": certified_accuracy(model, (x, y), eps=e, norm=args.norm, method=args.method,
                                             batch_size=args.batch_size) for e in args.eps}
        result.update(norm=args.norm, clean_accuracy=clean, certified_accuracy=accs)
        print(f"{args.method} ({args.norm}) on {x.shape[0]} points: clean accuracy {100 * clean:.2f}%")
        for e, a in accs.items():
            print(f"  eps {e:<8} certified accuracy {100 * a:6.2f}%")
    result["time_s"] = time.perf_counter() - t0
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return 0
