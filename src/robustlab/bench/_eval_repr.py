"""Evaluation ``longtail``: head- and tail-class test accuracy (runs on ``data.options.longtail`` splits)."""

from __future__ import annotations

from numbers import Integral

from .._constraints import AnyOf, Interval, Options
from ._evalbase import EvalContext, EvalOutput, Evaluation
from ._metrics import Metric
from .evaluations import register_evaluation

__all__ = ["LongTail"]


@register_evaluation("longtail", tags={"accuracy", "longtail"},
                     reference="head/tail accuracy of long-tailed training (Cao et al. 2019; RCAL, Zhang et al. 2023)",
                     example_kwargs={"tail_from": 2})
class LongTail(Evaluation):
    """Test accuracy on the head classes ``0 .. tail_from-1`` and on the tail classes ``tail_from .. C-1`` (the
    exponential profile of ``longtail`` puts class 0 at the head); ``tail_from=None``: ``ceil(C/2)``
    (``data.tail_classes``). The test split is balanced, so these are the per-group means of class accuracy
    weighted by test counts."""

    defaults = {"tail_from": None}
    constraints = {"tail_from": AnyOf(Options((None,)), Interval(Integral, 1, None))}
    metrics = (
        Metric("acc/head", "head-class acc"),
        Metric("acc/tail", "tail-class acc", leaderboard=True),
    )

    def validate(self, params: dict[str, object]) -> str | None:
        return None

    def run(self, ctx: EvalContext, tail_from: int | None) -> EvalOutput:
        import torch

        from ..data import tail_classes

        c = int(ctx.data.num_classes)
        first = tail_classes(c)[0] if tail_from is None else min(int(tail_from), c - 1)
        logits, y = ctx.test_logits(), ctx.data.y_test
        right = logits.argmax(1) == y
        out = EvalOutput()
        for name, mask in (("acc/head", y < first), ("acc/tail", y >= first)):
            if bool(mask.any()):
                out.add(name, float(right[mask].float().mean()))
        out.curves["longtail_classes"] = {"tail_from": first, "tail_count": int(torch.sum(y >= first))}
        return out
