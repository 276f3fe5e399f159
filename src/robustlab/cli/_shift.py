"""``robustlab shift``: accuracy of a model under common corruptions (and mCE vs a baseline).

Example::

    robustlab shift --checkpoint runs/x --suite common --severities 1,3,5 [--baseline runs/base] [--json]
    robustlab shift --checkpoint runs/x --quantize 8,6,4,3,2 [--quant-symmetry asymmetric] [--attack pgd --eps 0.1]
    robustlab shift --checkpoint runs/x --quantize 8,6,4,3,2 --mixed-budget 3 [--n-holdout 1000]
"""

from __future__ import annotations

import argparse
from typing import Any

from .._validation import InvalidParameterError
from ..shift._quantize import QUANT_SCHEMES, QUANT_SYMMETRIES
from ._inputs import add_inputs, call, emit, load_inputs
from ._options import add_options

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "shift",
        help="evaluate a model on a corruption suite (accuracy per corruption and severity, mCE)",
        description="Evaluate a model on corrupted test images. Example: "
                    "robustlab shift --checkpoint runs/x --suite common --severities 1,3,5",
    )
    add_inputs(p)
    p.add_argument("--suite", default="common",
                   help="corruption suite: common, common_extra, mnist_c or all (default: common)")
    p.add_argument("--corruptions", default=None, help="comma-separated corruption names (overrides --suite)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities in 0..5 (0 = the unchanged input, shown but left out of the means; default 1,2,3,4,5)")
    p.add_argument("--baseline", default=None, help="model reference of the baseline for mCE / relative mCE")
    p.add_argument("--quantize", default=None, metavar="BITS",
                   help="instead of corruptions: accuracy after post-training fake quantization at these "
                        "comma-separated bit-widths in 2..16, e.g. 8,6,4,3,2")
    p.add_argument("--quant-scheme", default="per_channel", choices=list(QUANT_SCHEMES),
                   help="with --quantize: one weight scale per output channel or per layer (default: per_channel)")
    p.add_argument("--quant-symmetry", default="symmetric", choices=list(QUANT_SYMMETRIES),
                   help="with --quantize: symmetric grids, or affine ones with a zero point (default: symmetric)")
    p.add_argument("--mixed-budget", type=float, default=None, metavar="BITS",
                   help="with --quantize: search per-layer widths among the --quantize widths with an average "
                        "(weighted by layer size) of at most BITS (EQ-Net's genetic search), scored on the last "
                        "--n-holdout training examples; prints the assignment and its test accuracy next to uniform")
    p.add_argument("--n-holdout", type=int, default=1000,
                   help="with --mixed-budget: training examples (the last ones) the search scores on (default 1000)")
    p.add_argument("--quant-activations", action="store_true",
                   help="with --quantize: also quantize each layer's input (ranges from 256 training inputs)")
    p.add_argument("--attack", default=None, metavar="NAME",
                   help="with --quantize: also robust accuracy under this attack (or suite) at --eps")
    add_options(p, "eps", "n_test", "batch_size", "seed", "device", "json", "out", "quiet", defaults={"batch_size": 512})
    p.set_defaults(func=run)


def _parse_severities(text: str) -> list[int]:
    try:
        sevs = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidParameterError(f"--severities must be comma-separated integers in 0..5. Got {text!r}.") from None
    if not sevs or any(s < 0 or s > 5 for s in sevs):
        raise InvalidParameterError(f"--severities must be comma-separated integers in 0..5. Got {text!r}.")
    return sevs


def _parse_bits(text: str) -> list[int]:
    from ..shift._quantize import BITS_RANGE

    lo, hi = BITS_RANGE
    msg = f"--quantize must be comma-separated integers in {lo}..{hi} (bit-widths). Got {text!r}."
    try:
        bits = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidParameterError(msg) from None
    if not bits or any(b < lo or b > hi for b in bits):
        raise InvalidParameterError(msg)
    return bits


def _run_mixed(args: argparse.Namespace, bits: list[int], model: Any, ds: Any, ref: Any, label: str) -> int:
    import torch

    from .. import shift
    from ..training import predict_logits

    def accuracy(m: Any, x: Any, y: Any) -> float:
        with torch.no_grad():
            return float((predict_logits(m, x, batch_size=args.batch_size).argmax(1).cpu() == y).double().mean())

    if args.attack or args.quant_activations:
        raise InvalidParameterError("--mixed-budget searches weight widths on clean accuracy: it does not take "
                                    "--attack or --quant-activations.")
    res = call(shift.mixed_precision_search, model, ds, budget=args.mixed_budget, bits=bits, scheme=args.quant_scheme,
               symmetry=args.quant_symmetry, n_holdout=args.n_holdout, seed=args.seed, batch_size=args.batch_size,
               args=args)
    x, y = (ds.x_test, ds.y_test) if args.n_test is None else (ds.x_test[:args.n_test], ds.y_test[:args.n_test])
    kw = {"scheme": args.quant_scheme, "symmetry": args.quant_symmetry}
    test = {"mixed": accuracy(shift.quantize(model, bits=res.bits, **kw), x, y),
            "uniform": accuracy(shift.quantize(model, bits=res.uniform_at_budget, **kw), x, y)}
    doc = {**res.to_dict(), "test_accuracy": test, "num_test": int(y.shape[0])}
    doc["meta"].update({"command": "shift --quantize --mixed-budget", "model": label, "checkpoint": args.checkpoint,
                        "data": ds.name, "data_ref": ref.to_config()})
    lines = [f"data set {ds.name}, model {label}, mixed-precision search over widths {','.join(map(str, bits))}",
             res.table(),
             f"test accuracy ({y.shape[0]} examples): mixed {100 * test['mixed']:.1f} %, uniform "
             f"{res.uniform_at_budget}-bit {100 * test['uniform']:.1f} %",
             "the search scores on the last training examples: held out only if the model was not trained on them"]
    emit(args, doc, lines)
    return 0


def _run_quantize(args: argparse.Namespace) -> int:
    from .. import shift

    bits = _parse_bits(args.quantize)
    if args.attack and args.eps is None:
        raise InvalidParameterError("--attack needs --eps (the perturbation budget), e.g. --eps 0.1.")
    model, ds, ref, label = load_inputs(args)
    if args.mixed_budget is not None:
        return _run_mixed(args, bits, model, ds, ref, label)
    result = call(shift.quantization_error, model, ds, bits=bits, scheme=args.quant_scheme, symmetry=args.quant_symmetry,
                  activations=args.quant_activations, attack=args.attack, eps=args.eps,
                  batch_size=args.batch_size, seed=args.seed, args=args)
    result.meta.update({"command": "shift --quantize", "model": label, "checkpoint": args.checkpoint, "data": ds.name,
                        "data_ref": ref.to_config()})
    lines = [f"data set {ds.name}, model {label}, post-training fake quantization", result.table()]
    emit(args, result.to_dict(), lines)
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import shift
    from ..models import resolve
    from ..models._ref import check_compatible

    if args.quantize is not None:
        return _run_quantize(args)
    if (args.attack or args.eps is not None or args.quant_activations or args.quant_scheme != "per_channel"
            or args.quant_symmetry != "symmetric" or args.mixed_budget is not None):
        raise InvalidParameterError("--attack, --eps, --quant-scheme, --quant-symmetry, --quant-activations and "
                                    "--mixed-budget go with --quantize BITS.")
    sevs = _parse_severities(args.severities)
    corruptions: Any = [c.strip() for c in args.corruptions.split(",") if c.strip()] if args.corruptions else args.suite
    names = shift.suite(corruptions) if isinstance(corruptions, str) else corruptions  # validate early
    model, ds, ref, label = load_inputs(args)
    baseline = None
    if args.baseline:
        baseline = resolve(args.baseline, input_shape=ds.input_shape, num_classes=ds.num_classes)
        check_compatible(baseline, ds.input_shape, ds.num_classes, data=f"data set '{ds.name}'",
                         model_name=f"baseline '{args.baseline}'")
        baseline = baseline.to(next(iter(model.parameters()), torch.zeros(0)).device).eval()
    result = call(shift.corruption_error, model, ds, corruptions=corruptions, severities=sevs, baseline=baseline,
                  batch_size=args.batch_size, generator=torch.Generator().manual_seed(args.seed), args=args)
    result.meta.update({"command": "shift", "model": label, "checkpoint": args.checkpoint, "data": ds.name,
                        "data_ref": ref.to_config(), "seed": args.seed, "severities": sevs,
                        "corruptions": list(names) if names is not None else None,
                        "baseline_checkpoint": args.baseline})
    doc = result.to_dict()
    lines = [f"data set {ds.name}, model {label}, severities {','.join(map(str, sevs))}, seed {args.seed}",
             result.table()]
    approx = [c for c, ok in result.meta.get("faithful", {}).items() if not ok]
    if approx:
        lines.append(f"approximations of the reference implementation: {', '.join(approx)}")
    lines.append("corruptions are computed in memory; numbers are not comparable with published -C data sets")
    emit(args, doc, lines)
    return 0
