"""Evaluation ``quantization``: test accuracy of the run's model after post-training fake quantization."""

from __future__ import annotations

from numbers import Integral

from .._constraints import Boolean, Interval, ListOf, Options
from ..shift._quantize import BITS_RANGE, QUANT_SCHEMES
from ._evalbase import EvalContext, EvalOutput, Evaluation
from ._metrics import Metric
from .evaluations import N_TEST, register_evaluation

__all__ = ["Quantization"]


@register_evaluation("quantization", tags={"shift"},
                     reference="post-training symmetric uniform fake quantization (robustlab.shift.quantize)",
                     example_kwargs={"bits": [8, 4, 2], "n_test": 100})
class Quantization(Evaluation):
    """Accuracy after ``shift.quantize(model, bits=b, scheme=..., activations=...)`` for each ``b`` in ``bits``
    and the worst of them; activation grids are calibrated on the first 256 training inputs."""

    requires = ("robustlab.shift",)
    defaults = {"bits": [8, 6, 4, 3, 2], "scheme": "per_channel", "activations": False, "n_test": 300}
    constraints = {"bits": ListOf(Interval(Integral, BITS_RANGE[0], BITS_RANGE[1])), "scheme": Options(QUANT_SCHEMES),
                   "activations": Boolean(), "n_test": N_TEST}
    metrics = (
        Metric("quant_acc/bits={bits}", "{bits}-bit acc"),
        Metric("quant_acc/worst", "worst bit-width acc", leaderboard=True, doc="minimum over the bit-widths"),
    )

    def run(self, ctx: EvalContext, bits: list[int], scheme: str, activations: bool, n_test: int | None) -> EvalOutput:
        from .. import shift

        res = shift.quantization_error(ctx.model, ctx.data, bits=bits, scheme=scheme, activations=activations,
                                       n_test=n_test, progress=False)
        out = EvalOutput()
        for b, acc in res.clean.items():
            out.add(f"quant_acc/bits={b}", acc)
        out.add("quant_acc/worst", min(res.clean.values()))
        out.curves["quantization_acc"] = {"bits": list(res.clean), "acc": list(res.clean.values()),
                                          "float": res.float_clean}
        return out
