"""Evaluation plug-ins run after training: each returns named metrics (and optional curves).

A plug-in is a subclass of :class:`Evaluation` registered in :data:`EVALUATIONS` with its default
parameters (``defaults``), the robustlab modules it needs (``requires``), the metrics it writes
(``metrics``: :class:`~robustlab.bench._metrics.Metric` declarations, read by the report and checked by
the battery ``robustlab.testing._evaluations``) and ``run(ctx, **params)``.
A spec naming a plug-in whose module is not importable fails validation with a clear message;
nothing is skipped silently. Metric names are hierarchical, e.g. ``acc/clean``, ``acc/top5``,
``robust_acc/pgd/eps=0.1``, ``cert_acc/ibp/eps=0.1``, ``cert_acc/rs/r=0.25``, ``conformal/aps/coverage``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

from .._constraints import AnyOf, Boolean, Interval, ListOf, Name, Options, validate_params
from .._registry import Registry
from .._validation import InvalidParameterError
from ._evalbase import EvalContext, EvalOutput, Evaluation, _missing
from ._metrics import Metric, MetricMatch, match_metric

__all__ = ["EVALUATIONS", "PIPELINE_METRICS", "REGRESSION_METRICS", "EvalContext", "EvalOutput", "Evaluation", "Metric",
           "collapse_reason", "declared_metrics", "normalize_evaluation", "register_evaluation", "resolve_metric"]

EVALUATIONS: Registry[Any] = Registry("evaluation", checks="robustlab.testing._evaluations")

# written by the run pipeline itself (training history, realized noise), not by an evaluation
PIPELINE_METRICS: tuple[Metric, ...] = (
    Metric("train/{key}", "train {key}", higher_is_better=None, value_range=(None, None),
           doc="training history, one value per epoch (step = epoch)"),
    Metric("noise/realized_rate", "realized noise rate", higher_is_better=None),
    Metric("acc/final_epoch_test", "test acc (last epoch)"),
)
# written by a regression run (robustlab._regression_run): clean test metrics of the trained model
REGRESSION_METRICS: tuple[Metric, ...] = (
    Metric("test/mse", "test MSE", higher_is_better=False, value_range=(0.0, None), leaderboard=True),
    Metric("test/mae", "test MAE", higher_is_better=False, value_range=(0.0, None), leaderboard=True),
    Metric("test/r2", "test R²", value_range=(None, 1.0), leaderboard=True),
)


N_TEST = AnyOf(Interval(Integral, 1, None), Options((None,)))  # a test subset size, None = the whole test set


def register_evaluation(name: str, **kw: Any) -> Any:
    """Class decorator registering an :class:`Evaluation` subclass under ``name``."""
    return EVALUATIONS.register(name, **kw)


def normalize_evaluation(name: Any, params: dict[str, Any], ctx: Any, where: str) -> dict[str, Any]:
    """Validate one spec entry and return ``{"name": name, **all params with defaults}``."""
    from .spec import _suggest

    if not isinstance(name, str) or name not in EVALUATIONS:
        raise ctx.err(where, EVALUATIONS._unknown_message(str(name)))
    cls: Any = EVALUATIONS.spec(name).factory
    missing = _missing(cls.requires)
    if missing:
        raise ctx.err(where, f"evaluation '{name}' needs {missing}, which is not available in this installation.")
    allowed = list(cls.defaults)
    for k in params:
        if k not in allowed:
            raise ctx.err(where, f"unknown parameter '{k}' for evaluation '{name}'.{_suggest(k, allowed)} "
                                 f"Accepted: {', '.join(allowed) or '(none)'}.")
    try:  # the evaluation's declared constraints: types, ranges, registered names (one message style)
        out = validate_params(cls.constraints, {**cls.defaults, **params}, owner=f"evaluation '{name}'")
    except InvalidParameterError as e:
        raise ctx.err(where, str(e)) from None
    msg = cls().validate(out)
    if msg:
        raise ctx.err(where, f"evaluation '{name}': {msg}")
    return {"name": name, **out}


def declared_metrics() -> list[tuple[str, Metric]]:
    """``(evaluation name, Metric)`` for every registered evaluation, then the pipeline's own metrics."""
    specs = EVALUATIONS._specs.values()  # registration order: the report's column order
    out = [(sp.name, m) for sp in specs for m in sp.factory.metrics]
    return out + [("pipeline", m) for m in PIPELINE_METRICS] + [("regression", m) for m in REGRESSION_METRICS]


def resolve_metric(name: str) -> MetricMatch | None:
    """The declaration ``name`` is an instance of (None for an undeclared name)."""
    return match_metric(name, declared_metrics())


def collapse_reason(final: dict[str, float]) -> str | None:
    """Why a run's model collapsed (a class never predicted, accuracy at chance), from its final metrics.

    Written next to :class:`Clean`, whose metrics it reads; None for a healthy (or unevaluated) run.
    """
    missing, acc, chance = final.get("pred/missing_classes"), final.get("acc/clean"), final.get("acc/chance")
    per_class = [v for n, v in final.items() if n.startswith("acc/class/")]  # Clean's acc/class/{cls}
    if missing is None and per_class:  # results written before pred/missing_classes existed
        zero = sum(1 for v in per_class if v == 0.0)
        if zero:
            return f"{zero} class(es) never correctly predicted on the test set"
    if missing is not None and missing >= 1:
        return f"{int(missing)} class(es) never predicted on the test set"
    if chance is None and per_class:
        chance = 1.0 / len(per_class)
    if acc is not None and chance is not None and acc <= chance + 1e-9:
        return f"clean accuracy {acc:.3f} is at chance (constant predictor: {chance:.3f})"
    return None


def run_evaluation(spec: dict[str, Any], ctx: EvalContext) -> EvalOutput:
    """Run ``{"name": ..., **params}`` on ``ctx``; parameters left out take the evaluation's defaults."""
    cls = EVALUATIONS.spec(spec["name"]).factory
    params = {**cls.defaults, **{k: v for k, v in spec.items() if k != "name"}}
    return cls().run(ctx, **params)


def _num(v: float) -> str:
    return f"{v:g}"


# -- built-in plug-ins --------------------------------------------------------------------------
@register_evaluation("clean", tags={"accuracy"}, reference="top-1, per-class and worst-class accuracy, ECE")
class Clean(Evaluation):
    """Test accuracy, per-class accuracy, worst-class accuracy, expected calibration error, and the
    collapse symptoms: classes never predicted and the accuracy of a constant predictor (chance)."""

    metrics = (
        Metric("acc/clean", "clean acc", leaderboard=True,
               plots=(("noise_rate", "y"), ("robust_eps", "origin"), ("disparity", "bar"))),
        Metric("acc/class/{cls}", "class {cls} acc"),
        Metric("acc/worst_class", "worst-class acc", leaderboard=True, plots=(("disparity", "bar"),)),
        Metric("ece/clean", "ECE", higher_is_better=False),
        Metric("pred/missing_classes", "classes never predicted", higher_is_better=False, value_range=(0, None),
               integer=True),
        Metric("acc/chance", "chance acc (majority class)", higher_is_better=None),
    )

    def run(self, ctx: EvalContext) -> EvalOutput:
        from .. import metrics

        logits, y = ctx.test_logits(), ctx.data.y_test
        c = ctx.data.num_classes
        out = EvalOutput()
        out.add("acc/clean", metrics.accuracy(logits, y))
        pc = metrics.per_class_accuracy(logits, y, c)
        for i, v in enumerate(pc.tolist()):
            if not math.isnan(v):
                out.add(f"acc/class/{i}", v)
        out.add("acc/worst_class", metrics.worst_class_accuracy(logits, y, c))
        out.add("ece/clean", metrics.expected_calibration_error(logits.softmax(1), y))
        present = torch.bincount(y, minlength=c) > 0
        predicted = torch.bincount(logits.argmax(1), minlength=c) > 0
        out.add("pred/missing_classes", int((present & ~predicted).sum()))
        out.add("acc/chance", float(torch.bincount(y, minlength=c).max()) / max(int(y.numel()), 1))
        return out


@register_evaluation("topk", tags={"accuracy"}, reference="top-k accuracy (the LDR paper reports top-1..top-5)",
                     example_kwargs={"k": [1, 3]})
class TopK(Evaluation):
    """Top-k test accuracy for each ``k`` (k larger than the number of classes is an error)."""

    defaults = {"k": [1, 5]}
    constraints = {"k": ListOf(Interval(Integral, 1, None))}
    metrics = (Metric("acc/top{k}", "top-{k} acc", leaderboard=True, hide=("acc/top1",)),)  # top-1 = clean acc

    def run(self, ctx: EvalContext, k: list[int]) -> EvalOutput:
        from .. import metrics

        logits, y = ctx.test_logits(), ctx.data.y_test
        out = EvalOutput()
        for kk in k:
            if kk > ctx.data.num_classes:
                raise ValueError(f"topk: k={kk} exceeds the {ctx.data.num_classes} classes of '{ctx.data.name}'.")
            out.add(f"acc/top{kk}", metrics.top_k_accuracy(logits, y, kk))
        return out


@register_evaluation("memorization", tags={"noise"}, reference="fit to noisy labels (Arpit et al., 2017; Zhang et al., 2017)")
class Memorization(Evaluation):
    """On the training set: share of noisy-labelled examples predicted as their noisy label
    (``mem/memorized``) or as their true label (``mem/corrected``), and accuracy on the clean-labelled ones."""

    metrics = (
        Metric("noise/train_fraction", "noisy fraction (train)", higher_is_better=None),
        Metric("mem/memorized", "memorized (noisy) ↓", higher_is_better=False, leaderboard=True),
        Metric("mem/corrected", "corrected (noisy)"),
        Metric("acc/train_clean_labels", "train acc (clean labels)"),
    )

    def run(self, ctx: EvalContext) -> EvalOutput:
        from ..training import predict_logits

        pred = predict_logits(ctx.model, ctx.data.x_train).argmax(1).cpu()
        y_true, y_given = ctx.data.y_train, ctx.train_labels
        noisy = ctx.is_noisy if ctx.is_noisy is not None else torch.zeros_like(y_true, dtype=torch.bool)
        out = EvalOutput()
        out.add("noise/train_fraction", float(noisy.float().mean()))
        if bool(noisy.any()):
            out.add("mem/memorized", float((pred[noisy] == y_given[noisy]).float().mean()))
            out.add("mem/corrected", float((pred[noisy] == y_true[noisy]).float().mean()))
        clean = ~noisy
        if bool(clean.any()):
            out.add("acc/train_clean_labels", float((pred[clean] == y_true[clean]).float().mean()))
        return out


@register_evaluation("attacks", tags={"adversarial"}, reference="PGD (Madry et al., 2018), APGD (Croce & Hein, 2020); "
                     "power law of robust error vs eps",
                     example_kwargs={"attacks": ["fgsm", "pgd"], "eps": [0.01, 0.02, 0.04, 0.08], "steps": 5,
                                     "n_test": 100})
class Attacks(Evaluation):
    """Robust accuracy under each attack at every eps of the grid (and under the worst of them),
    worst-class robust accuracy, and the power-law fit of robust error vs eps."""

    requires = ("robustlab.attacks", "robustlab.evaluate")
    defaults = {"attacks": ["pgd"], "norm": "linf", "eps": [0.05, 0.1, 0.2], "steps": 10, "n_test": 200,
                "batch_size": 256, "powerlaw": True}
    constraints = {"attacks": ListOf(Name("robustlab.attacks", "ATTACKS")), "norm": Options(("linf", "l2")),
                   "eps": ListOf(Interval(Real, 0, None, closed="neither")), "steps": Interval(Integral, 1, None),
                   "n_test": N_TEST, "batch_size": Interval(Integral, 1, None), "powerlaw": Boolean()}
    metrics = (
        Metric("robust_acc/{attack}/eps={eps}", "{attack} acc ε={eps}", doc="cumulative along the cascade"),
        Metric("robust_acc/any/eps={eps}", "robust acc ε={eps}", leaderboard=True, plots=(("robust_eps", "y"),)),
        Metric("robust_acc/worst_class/eps={eps}", "worst-class robust acc ε={eps}",
               plots=(("disparity", "bar_first"),)),
        Metric("powerlaw/k", "power-law k", higher_is_better=None, value_range=(None, None), leaderboard=True,
               plots=(("robust_eps", "k"),), doc="adv. error ≈ A·ε^k on the clean-correct points"),
        Metric("powerlaw/k_lo", "power-law k (CI low)", higher_is_better=None, value_range=(None, None),
               plots=(("robust_eps", "k_lo"),)),
        Metric("powerlaw/k_hi", "power-law k (CI high)", higher_is_better=None, value_range=(None, None),
               plots=(("robust_eps", "k_hi"),)),
        Metric("powerlaw/a", "power-law A", higher_is_better=None, value_range=(0, None),
               plots=(("robust_eps", "a"),)),
        Metric("powerlaw/r2", "power-law R²", higher_is_better=None, value_range=(None, 1)),
    )

    @staticmethod
    def suite(attacks: list[str], steps: int) -> list[tuple[str, dict[str, Any]]]:
        """The attack suite: ``steps`` goes to the attacks that take it."""
        import inspect

        from ..attacks import ATTACKS

        return [(a, {"steps": steps} if "steps" in inspect.signature(ATTACKS.spec(a).factory).parameters else {})
                for a in attacks]

    def run(self, ctx: EvalContext, attacks: list[str], norm: str, eps: list[float], steps: int, n_test: int,
            batch_size: int, powerlaw: bool) -> EvalOutput:
        from .. import evaluate

        sub = ctx.data.subset(n_test=n_test)
        suite = self.suite(attacks, steps)
        out = EvalOutput()
        seed = int(ctx.generator("attacks").initial_seed() % (2**31))
        curve: dict[str, list[float]] = {"eps": list(eps)}
        for e in eps:
            res = evaluate.robust_accuracy(ctx.model, sub, suite, eps=e, norm=norm, batch_size=batch_size, seed=seed)
            # per_attack is cumulative along the cascade: robust accuracy after that attack and the ones before
            for a, v in res.per_attack.items():
                out.add(f"robust_acc/{a}/eps={_num(e)}", v)
                curve.setdefault(a, []).append(v)
            out.add(f"robust_acc/any/eps={_num(e)}", res.robust_accuracy)
            out.add(f"robust_acc/worst_class/eps={_num(e)}", res.worst_class)
            curve.setdefault("any", []).append(res.robust_accuracy)
        if powerlaw:
            rc = evaluate.robustness_curve(ctx.model, sub, eps_grid=list(eps), attack=attacks[0], norm=norm,
                                           attack_kw=suite[0][1], batch_size=batch_size, seed=seed, bootstrap=200)
            if rc.fit is not None and math.isfinite(rc.fit.k):
                out.add("powerlaw/k", rc.fit.k)
                out.add("powerlaw/k_lo", rc.fit.ci[0])
                out.add("powerlaw/k_hi", rc.fit.ci[1])
                out.add("powerlaw/a", rc.fit.a)
                out.add("powerlaw/r2", rc.fit.r2)
            curve["pgd_robust_error"] = [float(v) for v in rc.robust_error]
        out.curves["robust_vs_eps"] = curve
        return out


def _get(obj: Any, *names: str) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


@register_evaluation("corruptions", tags={"shift"}, reference="common corruptions (Hendrycks & Dietterich, ICLR 2019)",
                     example_kwargs={"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3], "n_test": 100})
class Corruptions(Evaluation):
    """Accuracy under each corruption and severity (computed in memory; not comparable to CIFAR-10-C files)."""

    note = ("corruptions are computed in memory by robustlab.shift; the numbers are not comparable to published "
            "CIFAR-10-C / MNIST-C figures computed from the released files.")

    requires = ("robustlab.shift",)
    defaults = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3, 5], "n_test": 300}
    # severity 0 is the unchanged input (as shift.corrupt), left out of corr_acc/mean
    constraints = {"corruptions": ListOf(Name("robustlab.shift", "CORRUPTIONS")),
                   "severities": ListOf(Interval(Integral, 0, 5)), "n_test": N_TEST}
    metrics = (
        Metric("corr_acc/{corruption}/{severity}", "{corruption} acc (severity {severity})",
               plots=(("corruptions", "y"),)),
        Metric("corr_acc/mean", "corruption acc", leaderboard=True),
    )

    def run(self, ctx: EvalContext, corruptions: list[str], severities: list[int], n_test: int) -> EvalOutput:
        from .. import metrics, shift
        from ..training import predict_logits

        x, y = ctx.test_subset(n_test)
        out = EvalOutput()
        accs = []
        curve: dict[str, Any] = {"severities": list(severities)}
        for c in corruptions:
            row = []
            for s in severities:
                xc = shift.corrupt(x, c, severity=s, generator=ctx.generator(f"corrupt:{c}:{s}"))
                a = metrics.accuracy(predict_logits(ctx.model, xc).cpu(), y)
                out.add(f"corr_acc/{c}/{s}", a)
                row.append(a)
                if s > 0 or not any(severities):  # severity 0 is the clean input: in the curve, not the mean
                    accs.append(a)
            curve[c] = row
        out.add("corr_acc/mean", sum(accs) / len(accs))
        out.curves["corruption_acc"] = curve
        return out


@register_evaluation("certify_ibp", tags={"certified"}, reference="interval bound propagation (Gowal et al., 2018)",
                     example_kwargs={"eps": [0.002, 0.01, 0.03], "n_test": 100})
class CertifyIBP(Evaluation):
    """IBP-certified accuracy at each l-inf eps on a test subset."""

    requires = ("robustlab.certify.ibp",)
    defaults = {"eps": [0.01, 0.05, 0.1], "n_test": 300}
    constraints = {"eps": ListOf(Interval(Real, 0, None)), "n_test": N_TEST}
    metrics = (Metric("cert_acc/ibp/eps={eps}", "IBP cert ε={eps}", leaderboard=True, plots=(("cert_ibp", "y"),)),)

    def run(self, ctx: EvalContext, eps: list[float], n_test: int) -> EvalOutput:
        from ..certify import ibp

        sub = ctx.data.subset(n_test=n_test)
        out = EvalOutput()
        vals = []
        for e in eps:
            r = ibp.certified_accuracy(ctx.model, sub, eps=e)
            v = float(_get(r, "certified_accuracy", "certified", "overall") if not isinstance(r, (int, float)) else r)
            out.add(f"cert_acc/ibp/eps={_num(e)}", v)
            vals.append(v)
        out.curves["cert_ibp"] = {"radius": list(eps), "cert_acc": vals}
        return out


@register_evaluation("certify_smoothing", tags={"certified"}, reference="randomized smoothing (Cohen et al., ICML 2019)",
                     example_kwargs={"n0": 20, "n": 100, "alpha": 0.01, "n_test": 30, "radii": [0.0, 0.1, 0.25, 0.6]})
class CertifySmoothing(Evaluation):
    """Certified l2 accuracy of the Gaussian-smoothed classifier at each radius (CERTIFY with n0, n, alpha),
    and the largest radius those settings can certify at all, ``σ·Φ⁻¹(α^(1/n))`` (all n draws agreeing):
    certified accuracy above it is 0 by construction, not a measurement."""

    requires = ("robustlab.certify.smoothing",)
    defaults = {"sigma": 0.25, "n0": 50, "n": 500, "alpha": 0.001, "n_test": 50, "radii": [0.0, 0.25, 0.5, 0.75],
                "batch_size": 500}
    constraints = {"sigma": Interval(Real, 0, None, closed="neither"), "n0": Interval(Integral, 1, None),
                   "n": Interval(Integral, 1, None), "alpha": Interval(Real, 0, 1, closed="neither"), "n_test": N_TEST,
                   "radii": ListOf(Interval(Real, 0, None)), "batch_size": Interval(Integral, 1, None)}
    metrics = (
        Metric("cert_acc/rs/r={r}", "RS cert r={r}", leaderboard=True, hide=("cert_acc/rs/r=0",),
               plots=(("cert_rs", "y"),), limit=("r", "cert/rs/radius_max")),
        Metric("cert/rs/abstain", "RS abstain rate", higher_is_better=False),
        Metric("cert/rs/radius_max", "largest certifiable radius", unit="l2", higher_is_better=None,
               value_range=(0, None), plots=(("cert_rs", "limit"),)),
    )

    def run(self, ctx: EvalContext, sigma: float, n0: int, n: int, alpha: float, n_test: int, radii: list[float],
            batch_size: int) -> EvalOutput:
        from ..certify.smoothing import SmoothedClassifier

        x, y = ctx.test_subset(n_test)
        sc = SmoothedClassifier(ctx.model, sigma=sigma, num_classes=ctx.data.num_classes)
        classes, rad = sc.certify(x, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                                  generator=ctx.generator("smoothing"))
        classes, rad = torch.as_tensor(classes), torch.as_tensor(rad, dtype=torch.float64)
        correct = classes == y
        out = EvalOutput()
        vals = []
        for r in radii:
            v = float((correct & (rad >= r)).float().mean())
            out.add(f"cert_acc/rs/r={_num(r)}", v)
            vals.append(v)
        out.add("cert/rs/abstain", float((classes < 0).float().mean()))
        out.add("cert/rs/radius_max", max_certifiable_radius(sigma, n, alpha))
        out.curves["cert_rs"] = {"radius": list(radii), "cert_acc": vals, "sigma": sigma}
        return out


@register_evaluation("conformal", tags={"conformal"}, reference="split conformal prediction (APS: Romano et al., 2020)",
                     example_kwargs={"scores": ["thr", "aps"]})
class Conformal(Evaluation):
    """Split conformal sets on the test split (first ``cal_fraction`` calibrates): coverage, mean set
    size and worst-class coverage per score."""

    requires = ("robustlab.conformal",)
    defaults = {"scores": ["aps"], "alpha": 0.1, "cal_fraction": 0.5}
    constraints = {"scores": ListOf(Name("robustlab.conformal", "SCORES")),
                   "alpha": Interval(Real, 0, 1, closed="neither"), "cal_fraction": Interval(Real, 0, 1, closed="neither")}
    metrics = (
        Metric("conformal/{score}/coverage", "{score} coverage", higher_is_better=None, leaderboard=True,
               plots=(("conformal", "y"),)),
        Metric("conformal/{score}/set_size", "{score} set size ↓", unit="classes", higher_is_better=False,
               value_range=(0, None), leaderboard=True, plots=(("conformal", "x"),)),
        Metric("conformal/{score}/worst_class_coverage", "{score} worst-class coverage", higher_is_better=None),
        Metric("conformal/{score}/target", "{score} target coverage", higher_is_better=None,
               plots=(("conformal", "target"),)),
    )

    def run(self, ctx: EvalContext, scores: list[str], alpha: float, cal_fraction: float) -> EvalOutput:
        from .. import conformal

        probs = ctx.test_logits().double().softmax(1)
        y = ctx.data.y_test
        n_cal = int(round(cal_fraction * y.shape[0]))
        out = EvalOutput()
        for s in scores:
            gen = ctx.generator(f"conformal:{s}")
            cp = conformal.SplitConformal(score=s, alpha=alpha).calibrate(probs[:n_cal], y[:n_cal], generator=gen)
            sets = cp.predict_sets(probs[n_cal:], generator=gen)
            yt = y[n_cal:]
            out.add(f"conformal/{s}/coverage", conformal.coverage(sets, yt))
            out.add(f"conformal/{s}/set_size", conformal.average_set_size(sets))
            per = [v for v in conformal.class_conditional_coverage(sets, yt).values() if v == v]
            if per:
                out.add(f"conformal/{s}/worst_class_coverage", min(per))
            out.add(f"conformal/{s}/target", 1.0 - alpha)
        return out


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """``σ·Φ⁻¹(α^(1/n))``: the radius CERTIFY gives when all ``n`` noise draws vote for one class
    (its Clopper–Pearson lower bound is then ``α^(1/n)``); no larger radius can be certified."""
    from scipy.stats import norm

    return max(0.0, float(sigma * norm.ppf(alpha ** (1.0 / n))))


from . import (  # noqa: E402
    _eval_lipschitz,  # noqa: F401  (registers "certify_lipschitz")
    _eval_quant,  # noqa: F401  (registers "quantization")
    _eval_regression,  # noqa: F401  (registers "regression_robust")
    _eval_repr,  # noqa: F401  (registers "longtail")
)
