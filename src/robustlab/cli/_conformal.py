"""``robustlab conformal``: split conformal (or RSCP+ robust) prediction sets for a trained model.

Examples::

    robustlab conformal --checkpoint runs/x --data digits --score aps --alpha 0.1
    robustlab conformal --checkpoint runs/g --data digits --robust --sigma 0.25 --eps 0.125 --score thr

The test split is divided (seeded) into calibration and evaluation halves; prints coverage and the
average set size, and writes ``--out`` JSON atomically when given.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conformal", help="conformal prediction sets with coverage guarantees (split or RSCP+)")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.pt file or run directory)")
    p.add_argument("--data", default=None, help="data set name (its test split is used); default: the one recorded with the checkpoint")
    p.add_argument("--data-root", default=None)
    p.add_argument("--score", default="aps", help="conformal score (robustlab list scores)")
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage level")
    p.add_argument("--cal-fraction", type=float, default=0.5, help="share of the test split used for calibration")
    p.add_argument("--robust", action="store_true", help="RSCP+ sets robust to L2 perturbations of size --eps")
    p.add_argument("--sigma", type=float, default=0.25, help="RSCP+ smoothing σ")
    p.add_argument("--eps", type=float, default=0.125, help="RSCP+ L2 radius")
    p.add_argument("--beta", type=float, default=0.001, help="RSCP+ Monte-Carlo failure probability")
    p.add_argument("--n-mc", type=int, default=256, help="RSCP+ Gaussian draws per input")
    p.add_argument("--no-ptt", action="store_true", help="disable the post-training transformation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..conformal import (
        RobustConformal,
        SplitConformal,
        average_set_size,
        coverage,
        size_stratified_coverage,
    )
    from ..training import atomic_write_text, load_checkpoint, predict_logits
    from ._attack import load_recorded_data

    if not 0 < args.cal_fraction < 1:
        raise ValueError(f"--cal-fraction must be in (0, 1). Got {args.cal_fraction}.")
    model = load_checkpoint(args.checkpoint).eval()
    data = load_recorded_data(args.checkpoint, model, args.data, args.data_root)
    args.data = data.name
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(data.x_test.shape[0], generator=g)
    k = int(round(args.cal_fraction * perm.numel()))
    cal, test = perm[:k], perm[k:]
    t0 = time.perf_counter()
    cp: Any
    if args.robust:
        cp = RobustConformal(model, sigma=args.sigma, eps=args.eps, score=args.score, alpha=args.alpha, beta=args.beta,
                             n_mc=args.n_mc, ptt=not args.no_ptt)
        cp.calibrate(data.x_test[cal], data.y_test[cal], generator=g)
        sets = cp.predict_sets(data.x_test[test], generator=g)
    else:
        probs = predict_logits(model, data.x_test).softmax(1)
        cp = SplitConformal(args.score, args.alpha).calibrate(probs[cal], data.y_test[cal], generator=g)
        sets = cp.predict_sets(probs[test], generator=g)
    y = data.y_test[test]
    result = {
        "data": args.data, "score": args.score, "alpha": args.alpha, "robust": bool(args.robust),
        "n_calibration": int(cal.numel()), "n_test": int(test.numel()),
        "coverage": coverage(sets, y), "average_set_size": average_set_size(sets),
        "size_stratified_coverage": {str(s): list(v) for s, v in size_stratified_coverage(sets, y).items()},
        "time_s": time.perf_counter() - t0,
    }
    if args.robust:
        result.update(sigma=args.sigma, eps=args.eps, beta=args.beta, n_mc=args.n_mc, ptt=not args.no_ptt)
    kind = f"RSCP+ (σ={args.sigma:g}, ε={args.eps:g})" if args.robust else "split conformal"
    print(f"{kind} {args.score} α={args.alpha:g}: coverage {100 * result['coverage']:.2f}% "
          f"(target ≥ {100 * (1 - args.alpha):.0f}%), average set size {result['average_set_size']:.3f} "
          f"on {test.numel()} points")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return 0
