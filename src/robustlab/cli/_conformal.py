"""``robustlab conformal``: split conformal (or RSCP+ robust) prediction sets for a trained model.

Examples::

    robustlab conformal --checkpoint runs/x --data digits --score aps --alpha 0.1
    robustlab conformal --checkpoint runs/g --data digits --robust --sigma 0.25 --eps 0.125 --score thr

The test split is divided (seeded) into calibration and evaluation halves; prints coverage and the
average set size, and writes ``--out`` JSON atomically when given.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ._inputs import add_inputs, call, emit, in_memory, load_inputs
from ._options import add_options

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conformal", help="conformal prediction sets with coverage guarantees (split or RSCP+)")
    add_inputs(p)
    p.add_argument("--score", default="aps", help="conformal score (robustlab list scores; default aps)")
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage level (default 0.1)")
    p.add_argument("--cal-fraction", type=float, default=0.5,
                   help="share of the test split used for calibration (default 0.5)")
    p.add_argument("--robust", action="store_true", help="RSCP+ sets robust to L2 perturbations of size --eps")
    p.add_argument("--sigma", type=float, default=0.25, help="RSCP+ smoothing σ (default 0.25)")
    add_options(p, "eps", eps={"default": 0.125, "help": "RSCP+ L2 radius; fractions accepted (default 0.125)"})
    p.add_argument("--beta", type=float, default=0.001, help="RSCP+ Monte-Carlo failure probability (default 0.001)")
    p.add_argument("--n-mc", type=int, default=256, help="RSCP+ Gaussian draws per input (default 256)")
    p.add_argument("--no-ptt", action="store_true", help="disable the post-training transformation")
    add_options(p, "n_test", "seed", "device", "json", "out", "quiet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .._validation import InvalidParameterError
    from ..conformal import (
        RobustConformal,
        SplitConformal,
        average_set_size,
        coverage,
        size_stratified_coverage,
    )
    from ..training import predict_logits

    if not 0 < args.cal_fraction < 1:
        raise InvalidParameterError(f"--cal-fraction must be in (0, 1). Got {args.cal_fraction}.")
    model, data, ref, label = load_inputs(args)
    data = in_memory(data)  # an imagefolder: set's test split as tensors
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(data.x_test.shape[0], generator=g)
    k = int(round(args.cal_fraction * perm.numel()))
    cal, test = perm[:k], perm[k:]
    t0 = time.perf_counter()
    cp: Any
    if args.robust:
        cp = RobustConformal(model, sigma=args.sigma, eps=args.eps, score=args.score, alpha=args.alpha, beta=args.beta,
                             n_mc=args.n_mc, ptt=not args.no_ptt)
        call(cp.calibrate, data.x_test[cal], data.y_test[cal], generator=g, args=args)
        sets = call(cp.predict_sets, data.x_test[test], generator=g, args=args)
    else:
        probs = predict_logits(model, data.x_test).softmax(1).cpu()
        cp = SplitConformal(args.score, args.alpha).calibrate(probs[cal], data.y_test[cal], generator=g)
        sets = cp.predict_sets(probs[test], generator=g)
    y = data.y_test[test]
    result = {
        "command": "conformal", "model": label, "data": data.name, "data_ref": ref.to_config(), "score": args.score,
        "alpha": args.alpha, "cal_fraction": args.cal_fraction, "seed": args.seed, "robust": bool(args.robust),
        "n_calibration": int(cal.numel()), "n_test": int(test.numel()),
        "coverage": coverage(sets, y), "average_set_size": average_set_size(sets),
        "size_stratified_coverage": {str(s): list(v) for s, v in size_stratified_coverage(sets, y).items()},
        "time_s": time.perf_counter() - t0,
    }
    if args.robust:
        result.update(sigma=args.sigma, eps=args.eps, beta=args.beta, n_mc=args.n_mc, ptt=not args.no_ptt)
    kind = (f"RSCP+ (σ={args.sigma:g}, ε={args.eps:g}, β={args.beta:g}, n_mc={args.n_mc}, "
            f"ptt={'off' if args.no_ptt else 'on'})") if args.robust else "split conformal"
    lines = [f"{data.name}, model {label}: {kind} {args.score} α={args.alpha:g}, calibration "
             f"{cal.numel()} / test {test.numel()} points (seed {args.seed})",
             f"  coverage {100 * result['coverage']:.2f}% (target ≥ {100 * (1 - args.alpha):.0f}%), "
             f"average set size {result['average_set_size']:.3f}"]
    emit(args, result, lines)
    return 0
