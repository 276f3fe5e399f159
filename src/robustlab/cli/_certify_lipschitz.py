"""``robustlab certify --method lipschitz``: certified L2 accuracy from a Lipschitz bound, with the per-layer
spectral norms and orthogonality deviations (the diagnostic of :func:`robustlab.certify.orthogonality`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_arguments", "certify_lipschitz"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the lipschitz method."""
    p.add_argument("--spectral", default="svd", choices=["svd", "power"],
                   help="lipschitz: how Linear/Conv2d norms are bounded: exact SVD / FFT upper bound (sound, default) "
                        "or power iteration (a converging lower estimate)")
    p.add_argument("--power-iters", type=int, default=100, help="lipschitz: power-iteration steps at most (default 100)")


def certify_lipschitz(args: argparse.Namespace, model: Any, x: Any, y: Any) -> tuple[dict[str, Any], list[str]]:
    """``(JSON fields, summary lines)`` of the Lipschitz certificate at each ``--eps`` (L2 radii)."""
    from ..certify import lipschitz, orthogonality

    cert = lipschitz(model, x, y, method=args.spectral, n_iter=args.power_iters, batch_size=args.batch_size)
    accs = {f"{e:g}": cert.certified_accuracy(float(e)) for e in args.eps}
    spectra = [s.as_dict() for s in orthogonality(model, tuple(x.shape[1:]))]
    fields = {"norm": "l2", "eps": list(args.eps), "spectral": args.spectral, "power_iters": args.power_iters,
              "lipschitz_constant": cert.lipschitz, "bound_method": cert.bound.method,
              "clean_accuracy": cert.certified_accuracy(0.0), "certified_accuracy": accs,
              "layers": [{"name": n, "type": t, "factor": f} for n, t, f in cert.bound.layers], "orthogonality": spectra}
    lines = [f"Lipschitz bound L = {cert.lipschitz:.6g} ({cert.bound.method}); radius = margin/(√2·L); "
             f"clean accuracy {100 * fields['clean_accuracy']:.2f}%"]
    lines += [f"  eps {e:<8} certified accuracy {100 * a:6.2f}% (l2)" for e, a in accs.items()]
    lines += [f"  layer {s['name']:<10} {s['kind']:<14} σ_max {s['sigma_max']:.4g}  σ_min {s['sigma_min']:.4g}  "
              f"‖WᵀW − I‖ {s['deviation']:.2e}" for s in spectra]
    return fields, lines
