"""Evaluation ``regression_robust``: worst-case test MSE of a regression model under an ε-ball (PGD on the
squared error) and its certified upper bound and maximum output deviation (IBP/CROWN output intervals)."""

from __future__ import annotations

from numbers import Integral, Real

from .._constraints import Interval, ListOf, Options
from .._validation import InvalidParameterError
from ._evalbase import EvalContext, EvalOutput, Evaluation
from ._metrics import Metric
from .evaluations import N_TEST, register_evaluation

__all__ = ["RegressionRobust"]


@register_evaluation("regression_robust", tags={"regression", "adversarial", "certified"},
                     reference="PGD on the squared error (Madry et al. 2018); IBP output intervals (Gowal et al. 2018)",
                     example_kwargs={"eps": [0.02, 0.05], "steps": 5, "n_test": 50})
class RegressionRobust(Evaluation):
    """For each ``eps``: the test MSE under ``evaluate.regression_pgd`` (``norm`` linf/l2, ``steps``), and with
    ``bounds`` (ibp, crown_ibp, crown) the certified upper bound on any perturbation's MSE
    (``certify.certified_worst_mse``) and the mean certified maximum output change (``certify.certified_deviation``).
    A regression run's evaluation (the model has one output)."""

    task = "regression"
    defaults = {"eps": [0.02, 0.05], "norm": "linf", "steps": 20, "bounds": "ibp", "n_test": 500}
    constraints = {"eps": ListOf(Interval(Real, 0.0, None, closed="neither")), "norm": Options(("linf", "l2")),
                   "steps": Interval(Integral, 1, None), "bounds": Options((None, "ibp", "crown_ibp", "crown")),
                   "n_test": N_TEST}
    metrics = (
        Metric("reg_adv_mse/eps={eps}", "adv MSE ε={eps}", higher_is_better=False, value_range=(0.0, None),
               leaderboard=True, doc="test MSE under PGD on the squared error"),
        Metric("reg_cert_mse/eps={eps}", "certified MSE bound ε={eps}", higher_is_better=False,
               value_range=(0.0, None), doc="upper bound on the test MSE under any perturbation in the ball"),
        Metric("reg_cert_dev/eps={eps}", "certified max change ε={eps}", higher_is_better=False,
               value_range=(0.0, None), doc="mean over test points of the certified bound on |f(x') - f(x)|"),
    )

    def run(self, ctx: EvalContext, eps: list[float], norm: str, steps: int, bounds: str | None,
            n_test: int | None) -> EvalOutput:
        from .. import certify
        from ..data import RegressionData
        from ..evaluate import regression_robustness

        if not isinstance(ctx.data, RegressionData):
            raise InvalidParameterError("evaluation 'regression_robust' needs a regression run (a RegressionData: "
                                        f"friedman, csv:PATH with target=...); got data '{ctx.data.name}'.")
        x, y = ctx.test_subset(n_test)
        x, y = x.to(ctx.device), y.to(ctx.device)
        out = EvalOutput()
        for e in eps:
            res = regression_robustness(ctx.model, x, y, eps=e, norm=norm, steps=steps, seed=ctx.seed)
            out.add(f"reg_adv_mse/eps={e:g}", res["adv_mse"])
            if bounds is not None:
                out.add(f"reg_cert_mse/eps={e:g}",
                        certify.certified_worst_mse(ctx.model, x, y, eps=e, norm=norm, method=bounds))
                out.add(f"reg_cert_dev/eps={e:g}",
                        float(certify.certified_deviation(ctx.model, x, eps=e, norm=norm, method=bounds).mean()))
        return out
