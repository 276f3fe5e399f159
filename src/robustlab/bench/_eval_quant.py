"""Evaluation ``quantization``: clean and robust test accuracy of the run's model after post-training fake
quantization, per bit-width (``shift.quantization_error``)."""

from __future__ import annotations

from numbers import Integral, Real

from .._constraints import AnyOf, Boolean, Interval, ListOf, Name, Options
from ..shift._quantize import BITS_RANGE, QUANT_SCHEMES, QUANT_SYMMETRIES
from ._evalbase import EvalContext, EvalOutput, Evaluation
from ._metrics import Metric
from .evaluations import N_TEST, register_evaluation

__all__ = ["Quantization"]

ROBUST = "quant_robust_acc/{attack}/eps={eps}"  # the robust metrics' prefix (declared once, filled in run)


@register_evaluation("quantization", tags={"shift", "adversarial"},
                     reference="post-training uniform fake quantization, symmetric or affine (robustlab.shift.quantize)",
                     example_kwargs={"bits": [8, 4, 2], "n_test": 100, "attack": "fgsm", "eps": 0.1})
class Quantization(Evaluation):
    """Clean and robust accuracy after ``shift.quantize(model, bits=b, scheme=..., symmetry=..., activations=...)``
    for each ``b`` in ``bits``, and the worst of them; activation grids are calibrated on the first 256 training
    inputs. ``symmetry``: the symmetric grid or the affine one with a zero point (EQ-Net's elastic symmetry).

    Robust accuracy: ``attack`` (a registered attack name; ``None`` for clean accuracy only) at ``eps``/``norm``
    run against each quantized model itself (gradients pass straight through the rounding), and against the
    float model (``.../float``).
    """

    requires = ("robustlab.shift", "robustlab.evaluate")
    defaults = {"bits": [8, 6, 4, 3, 2], "scheme": "per_channel", "symmetry": "symmetric", "activations": False,
                "attack": "pgd", "eps": 0.1, "norm": "linf", "n_test": 300}
    constraints = {"bits": ListOf(Interval(Integral, BITS_RANGE[0], BITS_RANGE[1])), "scheme": Options(QUANT_SCHEMES),
                   "symmetry": Options(QUANT_SYMMETRIES),
                   "activations": Boolean(), "attack": AnyOf(Name("robustlab.attacks", "ATTACKS"), Options((None,))),
                   "eps": Interval(Real, 0, None, closed="neither"), "norm": Options(("linf", "l2")), "n_test": N_TEST}
    metrics = (
        Metric("quant_acc/bits={bits}", "{bits}-bit acc"),
        Metric("quant_acc/worst", "worst bit-width acc", leaderboard=True, doc="minimum over the bit-widths"),
        Metric(ROBUST + "/bits={bits}", "{bits}-bit {attack} acc ε={eps}"),
        Metric(ROBUST + "/float", "float {attack} acc ε={eps}", doc="the unquantized model"),
        Metric(ROBUST + "/worst", "worst bit-width {attack} acc ε={eps}", leaderboard=True,
               doc="minimum over the quantized bit-widths"),
    )

    def run(self, ctx: EvalContext, bits: list[int], scheme: str, symmetry: str, activations: bool,
            attack: str | None, eps: float, norm: str, n_test: int | None) -> EvalOutput:
        from .. import shift

        seed = int(ctx.generator("quantization").initial_seed() % (2**31))
        res = shift.quantization_error(ctx.model, ctx.data, bits=bits, scheme=scheme, symmetry=symmetry,
                                       activations=activations, attack=attack, eps=eps if attack is not None else None, norm=norm,
                                       n_test=n_test, seed=seed, progress=False)
        out = EvalOutput()
        for b, acc in res.clean.items():
            out.add(f"quant_acc/bits={b}", acc)
        out.add("quant_acc/worst", min(res.clean.values()))
        curve: dict[str, object] = {"bits": list(res.clean), "acc": list(res.clean.values()), "float": res.float_clean}
        if attack is not None and res.robust is not None:
            prefix = ROBUST.format(attack=attack, eps=f"{eps:g}")
            for b, acc in res.robust.items():
                out.add(f"{prefix}/bits={b}", acc)
            out.add(f"{prefix}/float", res.float_robust)
            out.add(f"{prefix}/worst", min(res.robust.values()))
            curve.update(robust=list(res.robust.values()), float_robust=res.float_robust, attack=attack, eps=eps, norm=norm)
        out.curves["quantization_acc"] = curve
        return out
