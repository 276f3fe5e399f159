"""``robustlab evaluate``: AutoAttack-style robust accuracy of a model, optional curve and sanity checks.

Example::

    robustlab evaluate --checkpoint runs/x --suite standard --eps 8/255 [--curve 0.01,0.02,0.05,0.1] [--sanity] [--json]
"""

from __future__ import annotations

import argparse
import difflib
import inspect
from typing import Any

from .._validation import InvalidParameterError
from ._attack import add_threat_options, attack_params, summary_lines
from ._inputs import add_inputs, call, emit, load_inputs
from ._options import add_options, parse_number

__all__ = ["add_parser", "run"]

_STANDARD_STEPS = 100


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="robust accuracy of a model under an attack ensemble (default: the standard suite)",
        description="Evaluate a model with an attack cascade (each attack on the points still correct). "
                    "Example: robustlab evaluate --checkpoint runs/x --suite standard --eps 8/255",
    )
    add_inputs(p)
    p.add_argument("--suite", default="standard",
                   help="a suite name (standard, ...) or comma-separated attack names run in sequence "
                        "(default standard)")
    add_threat_options(p)
    p.add_argument("--n-queries", type=int, default=5000, help="Square query budget in a named suite (default 5000)")
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


def _suite_names() -> list[str]:
    from .. import evaluate

    suites = getattr(evaluate, "SUITES", None)
    return sorted(suites) if suites is not None else ["standard"]


def _suite_factory() -> Any:
    from .. import evaluate

    return getattr(evaluate, "standard_ensemble", None)


def resolve_suite(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """``(attacks, suite_kw)`` for :func:`robustlab.evaluate.robust_accuracy` from ``--suite``/``--steps``/``--n-queries``.

    An unknown name is an error that suggests the closest suite or attack (``standrd`` -> ``standard``).
    """
    from ..attacks import ATTACKS

    suites = _suite_names()
    text = args.suite.strip()
    if text in suites:
        want = {"steps": args.steps if args.steps is not None else _STANDARD_STEPS, "n_queries": args.n_queries}
        factory = _suite_factory()
        try:
            params = inspect.signature(factory).parameters if factory is not None else {}
        except (TypeError, ValueError):
            params = {}
        return text, {k: v for k, v in want.items() if k in params}
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if not names or unknown:
        bad = unknown[0] if unknown else text
        choices = suites + ATTACKS.available()
        close = difflib.get_close_matches(bad, choices, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidParameterError(
            f"--suite {args.suite!r}: unknown suite or attack '{bad}'.{hint} Suites: {', '.join(suites)}; "
            "or comma-separated attack names (robustlab list attacks)."
        )
    return [(n, {"steps": args.steps} if args.steps is not None else {}) for n in names], None


def _members(attacks: Any, args: argparse.Namespace, num_classes: int, suite_kw: dict[str, Any] | None) -> list[Any]:
    from ..evaluate import _robust

    resolve = getattr(_robust, "resolve_attacks", None)
    if resolve is None:
        return []
    return resolve(attacks, eps=args.eps, norm=args.norm, num_classes=num_classes, suite_kw=suite_kw)


def run(args: argparse.Namespace) -> int:
    from .. import evaluate

    attacks, suite_kw = resolve_suite(args)
    curve_grid = _floats(args.curve, "--curve") if args.curve else None
    model, ds, ref, label = load_inputs(args)
    members = _members(attacks, args, ds.num_classes, suite_kw)
    res = call(evaluate.robust_accuracy, model, ds, members or attacks, eps=args.eps, norm=args.norm,
               batch_size=args.batch_size, seed=args.seed, suite_kw=None if members else suite_kw, args=args)
    doc: dict[str, Any] = {"command": "evaluate", "model": label, "data": ds.name, "data_ref": ref.to_config(),
                           "suite": args.suite, "suite_kw": suite_kw or {}, "seed": args.seed,
                           "suite_members": [attack_params(a) for a in members], **res.to_dict()}
    lines = [f"{ds.name}, model {label}: suite {args.suite} ({args.norm}, eps={args.eps:g}, n={res.n})",
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
