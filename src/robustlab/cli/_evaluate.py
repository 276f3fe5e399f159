"""``robustlab evaluate``: AutoAttack-style robust accuracy of a model, optional curve and sanity checks.

Example::

    robustlab evaluate --checkpoint runs/x --suite standard --eps 8/255 [--curve 0.01,0.02,0.05,0.1] [--sanity] [--json]
"""

from __future__ import annotations

import argparse
from typing import Any

from .._validation import InvalidParameterError
from ._attack import add_threat_options, attack_params, summary_lines
from ._inputs import add_inputs, call, emit, load_inputs
from ._options import add_options, parse_number

__all__ = ["add_parser", "run"]

def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="robust accuracy of a model under an attack ensemble (default: the standard suite)",
        description="Evaluate a model with an attack cascade (each attack on the points still correct). "
                    "Example: robustlab evaluate --checkpoint runs/x --suite standard --eps 8/255",
    )
    add_inputs(p)
    p.add_argument("--suite", default="standard",
                   help="standard (AutoAttack's: APGD-CE, APGD-T, FAB-T, Square-5000), fast (standard without "
                        "FAB-T; 'robustlab list suites') or comma-separated attack names run in sequence "
                        "(default standard)")
    add_threat_options(p)
    p.add_argument("--n-queries", type=int, default=None,
                   help="query budget of the query-based attacks (Square; default: the suite's, 5000)")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations of the iteration-based attacks (default: the suite's, 100)")
    p.add_argument("--curve", default=None,
                   help="comma-separated eps grid (8/255 accepted): also report robust error vs eps and the "
                        "power-law exponent")
    p.add_argument("--sanity", action="store_true", help="also run the gradient-masking sanity checks")
    add_options(p, "n_test", "batch_size", "seed", "device", "json", "out", "quiet")
    p.set_defaults(func=run)


def _floats(text: str, flag: str) -> list[float]:
    vals = [parse_number(t, flag) for t in text.split(",") if t.strip()]
    if not vals:
        raise InvalidParameterError(f"{flag} must hold at least one number. Got {text!r}.")
    return vals


def resolve_suite(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """``(attacks, suite_kw)`` for :func:`robustlab.evaluate.robust_accuracy` from ``--suite``/``--steps``/``--n-queries``.

    Checked before any loading: an unknown name suggests the closest suite or attack (``standrd`` ->
    ``standard``), a budget no attack takes is an error naming which attacks take which.
    """
    from .. import evaluate

    text = args.suite.strip()
    attacks: Any = text if text in evaluate.SUITES else [s.strip() for s in text.split(",") if s.strip()]
    if not attacks:
        raise InvalidParameterError(f"--suite must be a suite ({', '.join(evaluate.suite_names())}) or "
                                    f"comma-separated attack names. Got {args.suite!r}.")
    suite_kw = {k: v for k, v in (("steps", args.steps), ("n_queries", args.n_queries)) if v is not None}
    try:
        evaluate.resolve_attacks(attacks, eps=args.eps, norm=args.norm, suite_kw=suite_kw)
    except InvalidParameterError as e:
        raise InvalidParameterError(f"--suite {args.suite!r}: {e}") from None
    return attacks, suite_kw


def run(args: argparse.Namespace) -> int:
    from .. import evaluate

    attacks, suite_kw = resolve_suite(args)
    curve_grid = _floats(args.curve, "--curve") if args.curve else None
    model, ds, ref, label = load_inputs(args)
    if getattr(ds, "task", None) == "regression":  # PGD on the squared error + IBP bound (cli._evaluate_regression)
        from ._evaluate_regression import evaluate_regression

        return evaluate_regression(args, model, ds, ref, label)
    members = evaluate.resolve_attacks(attacks, eps=args.eps, norm=args.norm, num_classes=ds.num_classes,
                                       suite_kw=suite_kw)
    res = call(evaluate.robust_accuracy, model, ds, attacks, eps=args.eps, norm=args.norm,
               batch_size=args.batch_size, seed=args.seed, suite_kw=suite_kw, args=args)
    doc: dict[str, Any] = {"command": "evaluate", "model": label, "data": ds.name, "data_ref": ref.to_config(),
                           "suite": args.suite, "suite_kw": suite_kw, "seed": args.seed,
                           "suite_members": [attack_params(a) for a in members], **res.to_dict()}
    lines = [f"{ds.name}, model {label}: suite {args.suite} ({args.norm}, eps={args.eps:g}, n={res.n}, seed {args.seed})",
             *[f"  member {a!r}" for a in members], *summary_lines(res)]
    if curve_grid:
        curve = call(evaluate.robustness_curve, model, ds, eps_grid=curve_grid, norm=args.norm,
                     batch_size=args.batch_size, seed=args.seed, args=args)
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
        rep = call(evaluate.sanity_checks, model, ds, eps=args.eps, norm=args.norm, batch_size=args.batch_size,
                   seed=args.seed, args=args)
        doc["sanity"] = rep.to_dict()
        lines.append(str(rep))
    emit(args, doc, lines)
    return 0
