"""``robustlab certify``: certified accuracy of a model (IBP / CROWN-IBP / CROWN or randomized smoothing).

Examples::

    robustlab certify --checkpoint runs/ibp --method ibp --eps 0.05 8/255
    robustlab certify --checkpoint runs/gauss --method smoothing --sigma 0.25 --radii 0 0.25 0.5 --n 10000
    robustlab certify --checkpoint runs/lip --method lipschitz --eps 36/255 0.5 1.0
    robustlab certify --checkpoint runs/base --denoiser runs/den --method smoothing   # denoised smoothing

Prints one line per ε (or radius) with the settings used, and writes ``--out`` JSON atomically when given.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ._certify_lipschitz import add_arguments as add_lipschitz_arguments
from ._certify_lipschitz import certify_lipschitz
from ._inputs import add_inputs, call, emit, in_memory, load_inputs
from ._options import add_options

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("certify", help="certified accuracy: interval bounds (IBP, CROWN-IBP, CROWN) or randomized smoothing")
    add_inputs(p)
    p.add_argument("--method", default="ibp", choices=["ibp", "crown_ibp", "crown", "smoothing", "lipschitz"],
                   help="bound method, randomized smoothing or a Lipschitz-margin certificate (L2; default ibp)")
    add_options(p, "eps", eps={"nargs": "+", "default": [0.1],
                               "help": "radii of the bound methods (L-inf, or --norm l2/l1); 8/255 accepted (default 0.1)"})
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"],  # = certify.ibp.NORMS (tested)
                   help="threat model of the bound methods: L-inf box, L2 or L1 ball")
    p.add_argument("--sigma", type=float, default=None, help="smoothing noise level σ (default 0.25, or the --denoiser's)")
    p.add_argument("--denoiser", default=None, metavar="DIR",
                   help="smoothing: a denoiser from 'robustlab denoise' placed in front of the model (denoised smoothing); "
                        "--sigma defaults to the σ it was trained for")
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5], help="L2 radii reported for smoothing")
    p.add_argument("--n0", type=int, default=100, help="selection draws (Cohen et al.: 100)")
    p.add_argument("--n", type=int, default=100_000, help="estimation draws (Cohen et al.: 100000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (Cohen et al.: 0.001)")
    add_lipschitz_arguments(p)
    add_options(p, "n_test", "batch_size", "seed", "device", "json", "out", "quiet", defaults={"batch_size": 1000})
    p.set_defaults(func=run)


def _clean_accuracy(model: Any, x: Any, y: Any, batch_size: int) -> float:
    from ..training import predict_logits

    if not x.shape[0]:
        return float("nan")
    return float((predict_logits(model, x, batch_size=batch_size).argmax(1).cpu() == y).float().mean())


def _with_denoiser(args: argparse.Namespace, model: Any) -> tuple[Any, dict[str, Any] | None]:
    """``model``, or ``DenoisedSmoothing(model, denoiser)`` with ``--denoiser`` (and ``args.sigma`` filled in)."""
    from .._validation import InvalidParameterError

    if args.denoiser is None:
        args.sigma = 0.25 if args.sigma is None else args.sigma
        return model, None
    if args.method != "smoothing":
        raise InvalidParameterError(f"--denoiser applies to --method smoothing (denoised smoothing), not {args.method}.")
    from ..defences import load_denoised

    first = next(iter(model.parameters()), None)
    ds = load_denoised(model, args.denoiser, sigma=args.sigma, map_location=str(first.device) if first is not None else "cpu")
    args.sigma = ds.sigma
    info = {"path": args.denoiser, "trained_sigma": ds.robustlab_denoiser["sigma"],
            "trained_method": ds.robustlab_denoiser.get("method"), "autoencoder": ds.autoencoder is not None}
    return ds, info


def run(args: argparse.Namespace) -> int:
    import torch

    from ..certify import SmoothedClassifier, certified_accuracy, certified_accuracy_curve

    model, data, ref, label = load_inputs(args)
    if getattr(data, "task", None) == "regression":  # certified output intervals (cli._evaluate_regression)
        from ._evaluate_regression import evaluate_regression

        if args.method not in ("ibp", "crown_ibp", "crown"):
            raise ValueError(f"--method {args.method} certifies classifiers; a regression model takes ibp, crown_ibp "
                             "or crown (certified output intervals).")
        return evaluate_regression(args, model, data, ref, label, method=args.method, attack=False)
    model, denoiser = _with_denoiser(args, model)
    data = in_memory(data)  # an imagefolder: set's test split as tensors
    x, y = data.x_test, data.y_test
    t0 = time.perf_counter()
    result: dict[str, Any] = {"command": "certify", "model": label, "checkpoint": args.checkpoint, "data": data.name,
                              "data_ref": ref.to_config(), "method": args.method, "num_points": int(x.shape[0]),
                              "seed": args.seed, "batch_size": args.batch_size}
    if args.method == "smoothing":
        if denoiser is not None:
            result["denoiser"] = denoiser
            label = f"{label} + denoiser {args.denoiser}"
        smooth = SmoothedClassifier(model, sigma=args.sigma, num_classes=data.num_classes)
        classes, radii = call(smooth.certify, x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                              generator=torch.Generator().manual_seed(args.seed), args=args)
        curve = certified_accuracy_curve(classes, radii, y, args.radii)
        result.update(sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, radii=list(args.radii),
                      abstain=float((classes == -1).float().mean()),
                      certified_accuracy={f"{r:g}": float(a) for r, a in zip(args.radii, curve)})
        lines = [f"{data.name}, model {label}: smoothing σ={args.sigma:g} n0={args.n0} n={args.n} α={args.alpha:g} "
                 f"on {x.shape[0]} points (abstain {100 * result['abstain']:.1f}%)"]
        lines += [f"  radius {r:<8g} certified accuracy {100 * float(a):6.2f}%" for r, a in zip(args.radii, curve)]
    elif args.method == "lipschitz":
        fields, lines = certify_lipschitz(args, model, x, y)
        result.update(fields)
        lines[0] = f"{data.name}, model {label}: lipschitz on {x.shape[0]} points: {lines[0]}"
    else:
        clean = _clean_accuracy(model, x, y, args.batch_size)
        accs = {f"{e:g}": call(certified_accuracy, model, (x, y), eps=e, norm=args.norm, method=args.method,
                               batch_size=args.batch_size, args=args) for e in args.eps}
        result.update(norm=args.norm, eps=list(args.eps), clean_accuracy=clean, certified_accuracy=accs)
        lines = [f"{data.name}, model {label}: {args.method} ({args.norm}) on {x.shape[0]} points: "
                 f"clean accuracy {100 * clean:.2f}%"]
        lines += [f"  eps {e:<8} certified accuracy {100 * a:6.2f}%" for e, a in accs.items()]
    result["time_s"] = time.perf_counter() - t0
    emit(args, result, lines)
    return 0
