"""``robustlab evaluate``: AutoAttack-style robust accuracy of a checkpoint, optional curve and sanity checks.

Example::

    robustlab evaluate --checkpoint runs/x --suite standard --eps 0.1 [--curve 0.01,0.02,0.05,0.1] [--sanity] [--json]
"""

from __future__ import annotations

import argparse
from typing import Any

from ._attack import add_common, load_model_and_data, print_result, summary_lines

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="robust accuracy of a checkpoint under an attack ensemble (default: the standard suite)",
        description="Evaluate a checkpoint with APGD-CE -> APGD-T -> Square (each on the points still correct). "
                    "Example: robustlab evaluate --checkpoint runs/x --suite standard --eps 0.1",
    )
    p.add_argument("--checkpoint", required=True, help="run directory (with model.pt) or a .pt checkpoint")
    p.add_argument("--suite", default="standard",
                   help="'standard' or comma-separated attack names run in sequence (default standard)")
    add_common(p)
    p.add_argument("--n-queries", type=int, default=5000, help="Square query budget in the standard suite (5000)")
    p.add_argument("--curve", default=None,
                   help="comma-separated eps grid: also report robust error vs eps and the power-law exponent")
    p.add_argument("--sanity", action="store_true", help="also run the gradient-masking sanity checks")
    p.set_defaults(func=run)


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers. Got {text!r}.") from None
    if not vals:
        raise ValueError(f"{flag} must hold at least one number.")
    return vals


def run(args: argparse.Namespace) -> int:
    from .. import evaluate

    steps = args.steps if args.steps is not None else 100
    if args.suite == "standard":
        attacks: Any = "standard"
        suite_kw: dict[str, Any] | None = {"steps": steps, "n_queries": args.n_queries}
    else:
        names = [s.strip() for s in args.suite.split(",") if s.strip()]
        attacks = [(n, {"steps": args.steps} if args.steps is not None else {}) for n in names]
        suite_kw = None
    curve_grid = _floats(args.curve, "--curve") if args.curve else None
    model, ds, name = load_model_and_data(args)
    res = evaluate.robust_accuracy(model, ds, attacks, eps=args.eps, norm=args.norm, batch_size=args.batch_size,
                                   seed=args.seed, suite_kw=suite_kw)
    doc: dict[str, Any] = {"checkpoint": str(args.checkpoint), "data": name, "suite": args.suite, **res.to_dict()}
    lines = [f"{name}: suite {args.suite} ({args.norm}, eps={args.eps:g})", *summary_lines(res)]
    if curve_grid:
        curve = evaluate.robustness_curve(model, ds, eps_grid=curve_grid, norm=args.norm, batch_size=args.batch_size,
                                          seed=args.seed)
        doc["curve"] = curve.to_dict()
        lines.append("robust error vs eps: " + ", ".join(f"{e:g}: {100 * r:.1f}%"
                                                         for e, r in zip(curve.eps, curve.robust_error)))
        if curve.fit is not None:
            lo, hi = curve.fit.ci
            lines.append(f"power law err ~ {curve.fit.a:.3g} * eps^{curve.fit.k:.3f}  (95% CI for k {lo:.3f}-{hi:.3f}, "
                         f"R^2 {curve.fit.r2:.3f}, {curve.fit.n_points} points)")
        else:
            lines.append("power law: " + curve.notes[-1])
    if args.sanity:
        rep = evaluate.sanity_checks(model, ds, eps=args.eps, norm=args.norm, batch_size=args.batch_size,
                                     seed=args.seed)
        doc["sanity"] = rep.to_dict()
        lines.append(str(rep))
    print_result(args, doc, lines)
    return 0
