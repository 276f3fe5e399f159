"""Evaluation ``certify_lipschitz``: certified L2 accuracy from a Lipschitz bound (:func:`robustlab.certify.lipschitz`)."""

from __future__ import annotations

from numbers import Integral, Real

from .._constraints import Interval, ListOf, Options
from ._evalbase import EvalContext, EvalOutput, Evaluation
from ._metrics import Metric
from .evaluations import N_TEST, register_evaluation

__all__ = ["CertifyLipschitz"]


@register_evaluation("certify_lipschitz", tags={"certified"},
                     reference="Lipschitz margin certificates (Tsuzuku et al., NeurIPS 2018; Trockman & Kolter, ICLR 2021)",
                     example_kwargs={"eps": [0.0, 0.05, 0.2], "n_test": 100})
class CertifyLipschitz(Evaluation):
    """Certified L2 accuracy ``P(radius > ε)`` with radius ``margin/(√2·L)`` at each ε, the bound L itself and
    the largest orthogonality deviation ``‖WᵀW − I‖_F`` over the Linear/Conv2d layers (0 for orthogonal
    networks). L is exact for Lipschitz-by-construction models, else a per-layer spectral bound (``method``)."""

    requires = ("robustlab.certify.lipschitz",)
    defaults = {"eps": [36 / 255, 0.5, 1.0], "n_test": 300, "method": "svd", "n_iter": 100, "tol": 1e-3}
    constraints = {"eps": ListOf(Interval(Real, 0, None)), "n_test": N_TEST, "method": Options(("svd", "power")),
                   "n_iter": Interval(Integral, 1, None), "tol": Interval(Real, 0, None)}
    metrics = (
        Metric("cert_acc/lip/eps={eps}", "Lipschitz cert ε={eps}", leaderboard=True, hide=("cert_acc/lip/eps=0",)),
        Metric("cert/lip/constant", "Lipschitz bound L", higher_is_better=None, value_range=(0, None)),
        Metric("cert/lip/orth_deviation", "max ‖WᵀW − I‖", higher_is_better=None, value_range=(0, None)),
    )

    def run(self, ctx: EvalContext, eps: list[float], n_test: int | None, method: str, n_iter: int,
            tol: float) -> EvalOutput:
        from ..certify.lipschitz import lipschitz, orthogonality

        x, y = ctx.test_subset(n_test)
        cert = lipschitz(ctx.model, x, y, method=method, n_iter=n_iter, tol=tol)
        out = EvalOutput()
        vals = []
        for e in eps:
            v = cert.certified_accuracy(e)
            out.add(f"cert_acc/lip/eps={e:g}", v)
            vals.append(v)
        out.add("cert/lip/constant", cert.lipschitz)
        spectra = orthogonality(ctx.model, tuple(x.shape[1:]))
        out.add("cert/lip/orth_deviation", max((s.deviation for s in spectra), default=0.0))
        out.curves["cert_lip"] = {"radius": list(eps), "cert_acc": vals, "lipschitz": cert.lipschitz,
                                  "method": cert.bound.method, "layers": [s.as_dict() for s in spectra]}
        return out
