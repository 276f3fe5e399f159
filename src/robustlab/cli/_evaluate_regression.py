"""``robustlab evaluate`` / ``robustlab certify`` on a regression model (a checkpoint of a regression run):
worst-case test MSE under PGD on the squared error and the certified IBP/CROWN bound on it."""

from __future__ import annotations

import argparse
from typing import Any

from ._inputs import call, emit

__all__ = ["evaluate_regression"]


def evaluate_regression(args: argparse.Namespace, model: Any, ds: Any, ref: Any, label: str, *,
                        method: str | None = "ibp", attack: bool = True) -> int:
    """Clean MSE, PGD MSE (``attack``) and the ``method`` bounds (certified MSE bound, mean max output change)
    at each ``--eps`` (one float or a list), printed and written by :func:`emit`."""
    from .. import certify
    from ..evaluate import regression_robustness

    eps_list = args.eps if isinstance(args.eps, (list, tuple)) else [args.eps]
    steps = getattr(args, "steps", None) or 20
    x, y = ds.x_test, ds.y_test
    rows = []
    for e in eps_list:
        row: dict[str, Any] = {"eps": float(e)}
        if attack:
            res = call(regression_robustness, model, x, y, eps=float(e), norm=args.norm, steps=steps,
                       seed=getattr(args, "seed", 0), args=args)
            row.update(res)
        if method is not None:
            row["certified_mse_bound"] = call(certify.certified_worst_mse, model, x, y, eps=float(e), norm=args.norm,
                                              method=method, args=args)
            row["certified_mean_deviation"] = float(call(certify.certified_deviation, model, x, eps=float(e),
                                                         norm=args.norm, method=method, args=args).mean())
        rows.append(row)
    doc = {"command": args.command if hasattr(args, "command") else "evaluate", "task": "regression", "model": label,
           "data": ds.name, "data_ref": ref.to_config(), "norm": args.norm, "n": int(y.shape[0]), "results": rows}
    lines = [f"{ds.name}, model {label}: regression robustness ({args.norm}, n={int(y.shape[0])})"]
    for r in rows:
        parts = [f"eps={r['eps']:g}"]
        if "adv_mse" in r:
            parts += [f"clean MSE {r['mse']:.4g}", f"PGD MSE {r['adv_mse']:.4g}", f"mean |change| {r['mean_change']:.4g}"]
        if "certified_mse_bound" in r:
            parts += [f"certified MSE <= {r['certified_mse_bound']:.4g} ({method})",
                      f"certified mean max change {r['certified_mean_deviation']:.4g}"]
        lines.append("  " + ", ".join(parts))
    emit(args, doc, lines)
    return 0
