"""Evaluation plug-ins run after training: each returns named metrics (and optional curves).

A plug-in is a subclass of :class:`Evaluation` registered in :data:`EVALUATIONS` with its default
parameters (``defaults``), the robustlab modules it needs (``requires``) and ``run(ctx, **params)``.
A spec naming a plug-in whose module is not importable fails validation with a clear message;
nothing is skipped silently. Metric names are hierarchical, e.g. ``acc/clean``, ``acc/top5``,
``robust_acc/pgd/eps=0.1``, ``cert_acc/ibp/eps=0.1``, ``cert_acc/rs/r=0.25``, ``conformal/aps/coverage``.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._registry import Registry

__all__ = ["EVALUATIONS", "EvalContext", "EvalOutput", "Evaluation", "normalize_evaluation", "register_evaluation"]

EVALUATIONS: Registry[Any] = Registry("evaluation")


def register_evaluation(name: str, **kw: Any) -> Any:
    """Class decorator registering an :class:`Evaluation` subclass under ``name``."""
    return EVALUATIONS.register(name, **kw)


@dataclass
class EvalContext:
    """What an evaluation sees: the trained model (eval mode), the clean data, the labels it trained on."""

    model: nn.Module
    data: Any  # ClassificationData with clean labels
    train_labels: torch.Tensor
    is_noisy: torch.Tensor | None
    seed: int
    device: torch.device = torch.device("cpu")
    _cache: dict[str, Any] = field(default_factory=dict)

    def generator(self, salt: str) -> torch.Generator:
        """A generator seeded from the run seed and ``salt`` (independent streams per evaluation)."""
        h = int(hashlib.sha256(f"{self.seed}:{salt}".encode()).hexdigest()[:12], 16)
        return torch.Generator().manual_seed(h)

    def test_logits(self) -> torch.Tensor:
        if "test_logits" not in self._cache:
            from ..training import predict_logits

            self._cache["test_logits"] = predict_logits(self.model, self.data.x_test).cpu()
        return self._cache["test_logits"]

    def test_subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x_test, self.data.y_test
        return (x, y) if n is None else (x[:n], y[:n])


@dataclass
class EvalOutput:
    """Metrics as ``(name, value, step)`` (step -1 when none) and JSON-able ``curves`` for artifacts."""

    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float, step: int = -1) -> None:
        self.metrics.append((name, float(value), int(step)))


class Evaluation:
    """Base class: ``defaults`` (all accepted params), ``requires`` (modules), ``validate``, ``run``."""

    requires: tuple[str, ...] = ()
    defaults: dict[str, Any] = {}

    def validate(self, params: dict[str, Any]) -> str | None:
        """Return an error message for bad parameter values, or None."""
        return None

    # ``run(self, ctx, **params) -> EvalOutput``, with the parameters of ``defaults`` as keywords
    # (declared as an attribute so each plug-in spells out its own keyword arguments).
    run: Callable[..., EvalOutput]


def _missing(requires: tuple[str, ...]) -> str | None:
    for mod in requires:
        try:
            importlib.import_module(mod)
        except ImportError:
            return mod
    return None


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
    out = {**cls.defaults, **params}
    for k, d in cls.defaults.items():  # type checks against the defaults' types
        v = out[k]
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            out[k] = v = float(v)
        if d is not None and not isinstance(d, list) and v is not None and type(v) is not type(d):
            raise ctx.err(f"{where}.{k}", f"must be a {type(d).__name__}. Got {v!r} instead.")
        if isinstance(d, list):
            if not isinstance(v, list):
                v = out[k] = [v]
            if d and all(isinstance(e, float) for e in d):
                if not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
                    raise ctx.err(f"{where}.{k}", f"must be a list of numbers. Got {v!r} instead.")
                out[k] = [float(e) for e in v]
    msg = cls().validate(out)
    if msg:
        raise ctx.err(where, f"evaluation '{name}': {msg}")
    return {"name": name, **out}


def run_evaluation(spec: dict[str, Any], ctx: EvalContext) -> EvalOutput:
    params = {k: v for k, v in spec.items() if k != "name"}
    return EVALUATIONS.spec(spec["name"]).factory().run(ctx, **params)


def _num(v: float) -> str:
    return f"{v:g}"


# -- built-in plug-ins --------------------------------------------------------------------------
@register_evaluation("clean", tags={"accuracy"}, reference="top-1, per-class and worst-class accuracy, ECE")
class Clean(Evaluation):
    """Test accuracy, per-class accuracy, worst-class accuracy and expected calibration error."""

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
        return out


@register_evaluation("topk", tags={"accuracy"}, reference="top-k accuracy (the LDR paper reports top-1..top-5)")
class TopK(Evaluation):
    """Top-k test accuracy for each ``k`` (k larger than the number of classes is an error)."""

    defaults = {"k": [1, 5]}

    def validate(self, params: dict[str, Any]) -> str | None:
        if not params["k"] or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in params["k"]):
            return f"'k' must be a list of positive ints. Got {params['k']!r}."
        return None

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
                     "power law of robust error vs eps")
class Attacks(Evaluation):
    """Robust accuracy under each attack at every eps of the grid (and under the worst of them),
    worst-class robust accuracy, and the power-law fit of robust error vs eps."""

    requires = ("robustlab.attacks", "robustlab.evaluate")
    defaults = {"attacks": ["pgd"], "norm": "linf", "eps": [0.05, 0.1, 0.2], "steps": 10, "n_test": 200,
                "batch_size": 256, "powerlaw": True}

    def validate(self, params: dict[str, Any]) -> str | None:
        from ..attacks import ATTACKS

        for a in params["attacks"]:
            if a not in ATTACKS:
                return ATTACKS._unknown_message(a)
        if not params["eps"] or any(e <= 0 for e in params["eps"]):
            return f"'eps' must be a non-empty list of positive numbers. Got {params['eps']!r}."
        if params["norm"] not in ("linf", "l2"):
            return f"'norm' must be 'linf' or 'l2'. Got {params['norm']!r}."
        return None

    def run(self, ctx: EvalContext, attacks: list[str], norm: str, eps: list[float], steps: int, n_test: int,
            batch_size: int, powerlaw: bool) -> EvalOutput:
        import inspect

        from .. import evaluate
        from ..attacks import ATTACKS

        sub = ctx.data.subset(n_test=n_test)
        suite = []
        for a in attacks:
            accepted = inspect.signature(ATTACKS.spec(a).factory).parameters
            suite.append((a, {"steps": steps} if "steps" in accepted else {}))
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


def _attack_results(res: Any, names: list[str]) -> dict[str, float]:
    per = _get(res, "per_attack", "attacks")
    out: dict[str, float] = {}
    if isinstance(per, dict):
        for k, v in per.items():
            out[str(k)] = float(v if not isinstance(v, dict) else _get(v, "overall", "accuracy"))
    elif isinstance(per, (list, tuple)) and len(per) == len(names):
        out = {n: float(v) for n, v in zip(names, per)}
    return out


@register_evaluation("corruptions", tags={"shift"}, reference="common corruptions (Hendrycks & Dietterich, ICLR 2019)")
class Corruptions(Evaluation):
    """Accuracy under each corruption and severity (computed in memory; not comparable to CIFAR-10-C files)."""

    requires = ("robustlab.shift",)
    defaults = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3, 5], "n_test": 300}

    def validate(self, params: dict[str, Any]) -> str | None:
        from .. import shift

        reg = getattr(shift, "CORRUPTIONS", None)
        for c in params["corruptions"]:
            if reg is not None and c not in reg:
                return reg._unknown_message(c)
        if not all(isinstance(s, int) and 1 <= s <= 5 for s in params["severities"]):
            return f"'severities' must be ints in [1, 5]. Got {params['severities']!r}."
        return None

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
                accs.append(a)
            curve[c] = row
        out.add("corr_acc/mean", sum(accs) / len(accs))
        out.curves["corruption_acc"] = curve
        return out


@register_evaluation("certify_ibp", tags={"certified"}, reference="interval bound propagation (Gowal et al., 2018)")
class CertifyIBP(Evaluation):
    """IBP-certified accuracy at each l-inf eps on a test subset."""

    requires = ("robustlab.certify.ibp",)
    defaults = {"eps": [0.01, 0.05, 0.1], "n_test": 300}

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


@register_evaluation("certify_smoothing", tags={"certified"}, reference="randomized smoothing (Cohen et al., ICML 2019)")
class CertifySmoothing(Evaluation):
    """Certified l2 accuracy of the Gaussian-smoothed classifier at each radius (CERTIFY with n0, n, alpha)."""

    requires = ("robustlab.certify.smoothing",)
    defaults = {"sigma": 0.25, "n0": 50, "n": 500, "alpha": 0.001, "n_test": 50, "radii": [0.0, 0.25, 0.5, 0.75],
                "batch_size": 500}

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
        out.curves["cert_rs"] = {"radius": list(radii), "cert_acc": vals, "sigma": sigma}
        return out


@register_evaluation("conformal", tags={"conformal"}, reference="split conformal prediction (APS: Romano et al., 2020)")
class Conformal(Evaluation):
    """Split conformal sets on the test split (first ``cal_fraction`` calibrates): coverage, mean set
    size and worst-class coverage per score."""

    requires = ("robustlab.conformal",)
    defaults = {"scores": ["aps"], "alpha": 0.1, "cal_fraction": 0.5}

    def validate(self, params: dict[str, Any]) -> str | None:
        from ..conformal import SCORES

        for sc in params["scores"]:
            if sc not in SCORES:
                return SCORES._unknown_message(sc)
        if not 0.0 < params["alpha"] < 1.0 or not 0.0 < params["cal_fraction"] < 1.0:
            return "'alpha' and 'cal_fraction' must lie in (0, 1)."
        return None

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
