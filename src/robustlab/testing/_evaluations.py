"""Conformance checks for every evaluation in ``bench.evaluations.EVALUATIONS``.

Each evaluation runs (with its ``example_kwargs``) on one tiny trained run — digits, 600 training
points with 20% symmetric label noise, a linear model, ten epochs: under a second to train — and
must write exactly the metrics it declares (``Evaluation.metrics``), with the declared type and
range and one name per parameter value. A semantic check then recomputes its key numbers
independently of the plug-in (e.g. worst-class accuracy from the predictions, IBP bounds of the
linear model in closed form), so a renamed metric or a wrong value fails here, not in a report.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from .._registry import Spec
from . import check

__all__: list[str] = []

TOL = 1e-6


class TinyRun:
    """The trained run every evaluation is checked on (built once per process)."""

    def __init__(self) -> None:
        from .. import data, models, noise
        from ..bench.evaluations import EvalContext
        from ..training import fit

        d = data.load("digits").subset(n_train=600, n_test=300)
        nl = noise.inject(d.y_train, kind="symmetric", rate=0.2, num_classes=d.num_classes,
                          generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        model = models.create("linear", input_shape=d.input_shape, num_classes=d.num_classes)
        res = fit(model, d.with_train_labels(nl.labels), epochs=10, lr=0.1, seed=0, progress=False, eval_every=0)
        self.data = d
        self.model = res.model.eval()
        self.ctx = EvalContext(model=self.model, data=d, train_labels=nl.labels, is_noisy=nl.is_noisy, seed=0)
        with torch.no_grad():
            self.pred = self.model(d.x_test).argmax(1)

    def subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x_test, self.data.y_test
        return (x, y) if n is None else (x[:n], y[:n])


@functools.lru_cache(maxsize=1)
def tiny_run() -> TinyRun:
    return TinyRun()


class TinyRegressionRun:
    """The run regression evaluations (``Evaluation.task == "regression"``) are checked on: Friedman #1
    (300 samples), a linear one-output model (its IBP bounds are exact), ten epochs."""

    def __init__(self) -> None:
        from .. import data
        from ..bench.evaluations import EvalContext
        from ..training import fit_regression, regression_model

        d = data.load("friedman", n_samples=300, seed=0)
        torch.manual_seed(0)
        model = regression_model("linear", input_shape=d.input_shape)
        res = fit_regression(model, d, loss="mse", epochs=10, lr=0.05, seed=0, eval_every=0)
        self.data = d
        self.model = res.model.eval()
        self.ctx = EvalContext(model=self.model, data=d, train_labels=d.y_train, is_noisy=None, seed=0)

    def subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x_test, self.data.y_test
        return (x, y) if n is None else (x[:n], y[:n])


@functools.lru_cache(maxsize=1)
def tiny_regression_run() -> TinyRegressionRun:
    return TinyRegressionRun()


class _SpecCtx:
    """The error factory ``normalize_evaluation`` expects (the spec loader's is private)."""

    def err(self, where: str, msg: str) -> ValueError:
        from .._validation import InvalidParameterError

        return InvalidParameterError(f"{where}: {msg}")


@functools.cache
def _run(name: str) -> tuple[dict[str, Any], tuple[tuple[str, float, int], ...]]:
    """Normalized parameters and the metrics written by evaluation ``name`` on the tiny run (cached)."""
    from ..bench.evaluations import EVALUATIONS, normalize_evaluation, run_evaluation

    spec = EVALUATIONS.spec(name)
    params = normalize_evaluation(name, dict(spec.example_kwargs), _SpecCtx(), f"evaluation {name}")
    run = tiny_regression_run() if getattr(spec.factory, "task", "classification") == "regression" else tiny_run()
    out = run_evaluation(params, run.ctx)
    return params, tuple(out.metrics)


def _written(name: str) -> dict[str, float]:
    return {n: v for n, v, _ in _run(name)[1]}


def _params(name: str) -> dict[str, Any]:
    return _run(name)[0]


def _plural(p: str) -> tuple[str, ...]:
    return (p, p + "s", p[:-1] + "ies" if p.endswith("y") else p + "es", p[:-2] + "i" if p.endswith("us") else p)


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


# -- declarations vs what is written ------------------------------------------------------------
@check()
def check_parameter_constraints_declared_once(spec: Spec[Any]) -> None:
    """Every parameter (``defaults``, ``run``'s keywords) has a declared constraint; defaults satisfy it, and
    each constraint's invalid examples are refused by the spec with an error naming the parameter."""
    import inspect

    from ..bench.spec import SpecError, load_spec

    def spec_with(params: dict[str, Any]) -> Any:
        return load_spec({"name": "battery", "data": ["digits"], "models": ["linear"], "losses": ["ce"], "seeds": [0],
                          "evaluations": [{"name": spec.name, **params}]})

    cls = spec.factory
    run_params = [p for p in inspect.signature(cls.run).parameters if p not in ("self", "ctx")]
    assert set(cls.constraints) == set(cls.defaults) == set(run_params), (
        f"evaluation '{spec.name}': constraints {sorted(cls.constraints)}, defaults {sorted(cls.defaults)} and "
        f"run() keywords {sorted(run_params)} must name the same parameters")
    for k, d in cls.defaults.items():
        assert cls.constraints[k].is_satisfied_by(d), f"default {k}={d!r} violates {cls.constraints[k]!r}"
    spec_with(dict(spec.example_kwargs))
    for k, c in cls.constraints.items():
        for bad in c.invalid_examples():
            try:
                spec_with({k: bad})
            except SpecError as e:
                assert f"'{k}'" in str(e) or f".{k}:" in str(e), f"the error for {k}={bad!r} does not name {k!r}: {e}"
            else:
                raise AssertionError(f"evaluation '{spec.name}' accepted {k}={bad!r}")


@check()
def check_declares_its_metrics(spec: Spec[Any]) -> None:
    """The evaluation declares at least one metric, each pattern once, with a label."""
    metrics = spec.factory.metrics
    assert metrics, f"evaluation '{spec.name}' declares no metrics (set `metrics = (Metric(...), ...)`)"
    patterns = [m.pattern for m in metrics]
    assert len(set(patterns)) == len(patterns), f"duplicate metric patterns: {patterns}"
    assert all(m.label.strip() for m in metrics)


@check()
def check_writes_exactly_the_declared_metrics(spec: Spec[Any]) -> None:
    """Every written name resolves to one of this evaluation's declarations; every declaration is written."""
    from ..bench.evaluations import resolve_metric

    written = _written(spec.name)
    steps = {s for _, _, s in _run(spec.name)[1]}
    assert steps <= {-1}, f"evaluation metrics are final values (step -1); got steps {sorted(steps)}"
    undeclared = []
    used: set[str] = set()
    for name in written:
        m = resolve_metric(name)
        if m is None or m.evaluation != spec.name:
            undeclared.append(f"{name} (resolves to {m.evaluation + ':' + m.metric.pattern if m else 'nothing'})")
        else:
            used.add(m.metric.pattern)
    assert not undeclared, f"'{spec.name}' writes metrics it does not declare: {undeclared}"
    missing = [m.pattern for m in spec.factory.metrics if m.pattern not in used]
    assert not missing, f"'{spec.name}' declares metrics it did not write: {missing}; written: {sorted(written)}"


@check()
def check_values_have_the_declared_type_and_range(spec: Spec[Any]) -> None:
    """Each value is a finite float inside its declared range (whole numbers where declared integer)."""
    from ..bench.evaluations import resolve_metric

    bad = []
    for name, v in _written(spec.name).items():
        m = resolve_metric(name)
        assert m is not None
        if not m.metric.in_range(v):
            bad.append(f"{name}={v!r} (declared {m.metric.describe_range()})")
    assert not bad, f"'{spec.name}': values outside their declaration: {bad}"


@check()
def check_placeholders_follow_the_parameters(spec: Spec[Any]) -> None:
    """A placeholder named after a list parameter (``eps``, ``attack`` for ``attacks``, ...) takes
    exactly that list's values: one metric per grid point, none lost to formatting."""
    from ..bench.evaluations import resolve_metric

    params = _params(spec.name)
    seen: dict[tuple[str, str], set[str]] = {}
    for name in _written(spec.name):
        m = resolve_metric(name)
        assert m is not None
        for ph, val in m.values.items():
            seen.setdefault((m.metric.pattern, ph), set()).add(val)
    for (pattern, ph), vals in seen.items():
        param = next((p for p in _plural(ph) if isinstance(params.get(p), list)), None)
        if param is not None:
            want = {_num(v) for v in params[param]}
            assert vals == want, f"'{pattern}': {{{ph}}} took {sorted(vals)}; parameter '{param}' is {sorted(want)}"


# -- independent recomputation ------------------------------------------------------------------
def _close(got: float, want: float, what: str, tol: float = TOL) -> None:
    assert abs(got - want) <= tol, f"{what}: the evaluation wrote {got!r}; recomputed independently: {want!r}"


def _ref_clean(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    y, pred, c = run.data.y_test, run.pred, run.data.num_classes
    _close(w["acc/clean"], float((pred == y).double().mean()), "acc/clean")
    per = [float((pred[y == k] == k).double().mean()) for k in range(c) if bool((y == k).any())]
    for k in range(c):
        if bool((y == k).any()):
            _close(w[f"acc/class/{k}"], float((pred[y == k] == k).double().mean()), f"acc/class/{k}")
    _close(w["acc/worst_class"], min(per), "acc/worst_class (the minimum per-class accuracy)")
    assert w["acc/worst_class"] <= sum(per) / len(per) + TOL
    missing = sum(1 for k in range(c) if bool((y == k).any()) and not bool((pred == k).any()))
    _close(w["pred/missing_classes"], missing, "pred/missing_classes")
    _close(w["acc/chance"], max(int((y == k).sum()) for k in range(c)) / len(y), "acc/chance")
    conf, hit = run.model(run.data.x_test).detach().softmax(1).max(1)
    edges = torch.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (conf > lo) & (conf <= hi)
        if bool(inb.any()):
            ece += float(inb.double().mean()) * abs(float((hit[inb] == y[inb]).double().mean() - conf[inb].double().mean()))
    _close(w["ece/clean"], ece, "ece/clean", 1e-4)


def _ref_topk(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    logits = run.model(run.data.x_test).detach()
    for k in p["k"]:
        top = logits.argsort(1, descending=True)[:, :k]
        _close(w[f"acc/top{k}"], float((top == run.data.y_test[:, None]).any(1).double().mean()), f"acc/top{k}")


def _ref_memorization(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    with torch.no_grad():
        pred = run.model(run.data.x_train).argmax(1)
    noisy, given, true = run.ctx.is_noisy, run.ctx.train_labels, run.data.y_train
    assert noisy is not None
    _close(w["noise/train_fraction"], float(noisy.double().mean()), "noise/train_fraction")
    _close(w["mem/memorized"], float((pred[noisy] == given[noisy]).double().mean()), "mem/memorized")
    _close(w["mem/corrected"], float((pred[noisy] == true[noisy]).double().mean()), "mem/corrected")
    _close(w["acc/train_clean_labels"], float((pred[~noisy] == true[~noisy]).double().mean()), "acc/train_clean_labels")


def _ref_attacks(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    from .. import evaluate
    from ..bench.evaluations import Attacks

    x, y = run.subset(p["n_test"])
    clean = float((run.pred[: len(y)] == y).double().mean())
    seed = int(run.ctx.generator("attacks").initial_seed() % (2**31))
    suite = Attacks.suite(p["attacks"], p["steps"])
    for e in p["eps"]:
        res = evaluate.robust_accuracy(run.model, (x, y), suite, eps=e, norm=p["norm"], batch_size=p["batch_size"],
                                       seed=seed)
        per_class = [v for v in res.per_class if v == v]
        anyv, worst = w[f"robust_acc/any/eps={e:g}"], w[f"robust_acc/worst_class/eps={e:g}"]
        assert anyv <= clean + TOL, f"robust accuracy {anyv} above clean accuracy {clean} at eps={e:g}"
        assert all(anyv <= w[f"robust_acc/{a}/eps={e:g}"] + TOL for a in p["attacks"])
        _close(anyv, float(res.robust.double().mean()), f"robust_acc/any/eps={e:g}")
        cascade = [w[f"robust_acc/{a}/eps={e:g}"] for a in p["attacks"]]  # cumulative along the suite
        assert all(a >= b - TOL for a, b in zip(cascade, cascade[1:])), f"cascade increases at eps={e:g}: {cascade}"
        _close(cascade[-1], anyv, f"robust_acc/{p['attacks'][-1]}/eps={e:g} (the end of the cascade)")
        _close(worst, min(per_class), f"robust_acc/worst_class/eps={e:g} (minimum per-class robust accuracy)")
    if p["powerlaw"]:
        assert w["powerlaw/k_lo"] <= w["powerlaw/k_hi"] and w["powerlaw/a"] > 0


def _ref_corruptions(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    from .. import shift

    x, y = run.subset(p["n_test"])
    vals = []
    for c in p["corruptions"]:
        for s in p["severities"]:
            xc = shift.corrupt(x, c, severity=s, generator=run.ctx.generator(f"corrupt:{c}:{s}"))
            with torch.no_grad():
                _close(w[f"corr_acc/{c}/{s}"], float((run.model(xc).argmax(1) == y).double().mean()), f"corr_acc/{c}/{s}")
            vals.append(w[f"corr_acc/{c}/{s}"])
    _close(w["corr_acc/mean"], sum(vals) / len(vals), "corr_acc/mean")


def _ref_certify_ibp(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    # for a linear model the interval bound on each margin is exact: min over the clipped box, in closed form
    lin = run.model[-1]
    x, y = run.subset(p["n_test"])
    xf = x.flatten(1).double()
    wt, b = lin.weight.detach().double(), lin.bias.detach().double()
    for e in p["eps"]:
        lo, hi = (xf - e).clamp(0, 1), (xf + e).clamp(0, 1)
        d = wt[y][:, None, :] - wt[None]  # (N, C, D): w_y - w_j
        low = torch.minimum(d * lo[:, None], d * hi[:, None]).sum(2) + (b[y][:, None] - b[None])
        low[torch.arange(len(y)), y] = math.inf
        _close(w[f"cert_acc/ibp/eps={e:g}"], float((low > 0).all(1).double().mean()), f"cert_acc/ibp/eps={e:g}")


def _ref_certify_smoothing(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    from scipy.stats import beta, norm

    from ..certify.smoothing import SmoothedClassifier

    x, y = run.subset(p["n_test"])
    sc = SmoothedClassifier(run.model, sigma=p["sigma"], num_classes=run.data.num_classes)
    cls, rad = sc.certify(x, n0=p["n0"], n=p["n"], alpha=p["alpha"], batch_size=p["batch_size"],
                          generator=run.ctx.generator("smoothing"))
    cls, rad = torch.as_tensor(cls), torch.as_tensor(rad, dtype=torch.float64)
    for r in p["radii"]:  # certified at radius r: CERTIFY's class is right and its radius is at least r
        _close(w[f"cert_acc/rs/r={r:g}"], float(((cls == y) & (rad >= r)).double().mean()), f"cert_acc/rs/r={r:g}")
    _close(w["cert/rs/abstain"], float((cls < 0).double().mean()), "cert/rs/abstain")
    rmax = p["sigma"] * norm.ppf(beta.ppf(p["alpha"], p["n"], 1))  # Clopper–Pearson bound when all n draws agree
    _close(w["cert/rs/radius_max"], max(0.0, float(rmax)), "cert/rs/radius_max", 1e-9)
    vals = [w[f"cert_acc/rs/r={r:g}"] for r in sorted(p["radii"])]
    assert all(a >= b - TOL for a, b in zip(vals, vals[1:])), f"certified accuracy increases with the radius: {vals}"
    for r in p["radii"]:
        if r > rmax:
            assert w[f"cert_acc/rs/r={r:g}"] == 0.0, f"certified above the largest certifiable radius {rmax:.3f}"


def _ref_conformal(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    from .. import conformal

    probs = run.ctx.test_logits().double().softmax(1)
    y = run.data.y_test
    n_cal = int(round(p["cal_fraction"] * y.shape[0]))
    for s in p["scores"]:
        gen = run.ctx.generator(f"conformal:{s}")
        cp = conformal.SplitConformal(score=s, alpha=p["alpha"]).calibrate(probs[:n_cal], y[:n_cal], generator=gen)
        sets = cp.predict_sets(probs[n_cal:], generator=gen).bool()
        yt = y[n_cal:]
        hit = sets[torch.arange(len(yt)), yt]
        _close(w[f"conformal/{s}/coverage"], float(hit.double().mean()), f"conformal/{s}/coverage")
        _close(w[f"conformal/{s}/set_size"], float(sets.sum(1).double().mean()), f"conformal/{s}/set_size")
        per = [float(hit[yt == k].double().mean()) for k in range(run.data.num_classes) if bool((yt == k).any())]
        _close(w[f"conformal/{s}/worst_class_coverage"], min(per), f"conformal/{s}/worst_class_coverage")
        _close(w[f"conformal/{s}/target"], 1 - p["alpha"], f"conformal/{s}/target")


def _ref_quantization(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    # the weights rounded here by hand (symmetric grid, one scale per output row of the linear model)
    x, y = run.subset(p["n_test"])
    lin = run.model[-1]
    assert not p["activations"], "the reference covers weight-only quantization"
    for b in p["bits"]:
        levels = 2 ** (b - 1) - 1
        wt = lin.weight.detach()
        amax = wt.abs().amax(1, keepdim=True) if p["scheme"] == "per_channel" else wt.abs().amax()
        s = amax / levels
        wq = (wt / s).round().clamp(-levels, levels) * s
        pred = (x.flatten(1) @ wq.T + lin.bias.detach()).argmax(1)
        _close(w[f"quant_acc/bits={b}"], float((pred == y).double().mean()), f"quant_acc/bits={b}")
    _close(w["quant_acc/worst"], min(w[f"quant_acc/bits={b}"] for b in p["bits"]), "quant_acc/worst")


def _ref_certify_lipschitz(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    # the linear model's Lipschitz constant is its weight's largest singular value (closed form)
    x, y = run.subset(p["n_test"])
    wt = run.model[-1].weight.detach().double()
    lip = float(torch.linalg.svdvals(wt)[0]) * (1 + p["tol"])
    z = x.flatten(1).double() @ wt.T + run.model[-1].bias.detach().double()
    margin = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], -math.inf).amax(1)
    radius = margin / (math.sqrt(2) * lip)
    for e in p["eps"]:
        _close(w[f"cert_acc/lip/eps={e:g}"], float((radius > e).double().mean()), f"cert_acc/lip/eps={e:g}")
    _close(w["cert/lip/constant"], lip, "cert/lip/constant", 1e-9 * lip)
    gram = wt @ wt.T if wt.shape[0] <= wt.shape[1] else wt.T @ wt
    dev = float(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype)))
    _close(w["cert/lip/orth_deviation"], dev, "cert/lip/orth_deviation", 1e-9 * (1 + dev))


def _ref_longtail(w: dict[str, float], p: dict[str, Any], run: TinyRun) -> None:
    y, pred, c = run.data.y_test.tolist(), run.pred.tolist(), run.data.num_classes
    first = (c + 1) // 2 if p["tail_from"] is None else p["tail_from"]
    for name, group in (("acc/head", range(first)), ("acc/tail", range(first, c))):
        hits = [yi == pi for yi, pi in zip(y, pred) if yi in group]
        _close(w[name], sum(hits) / len(hits), name)


REFERENCES: dict[str, Callable[[dict[str, float], dict[str, Any], TinyRun], None]] = {
    "clean": _ref_clean, "topk": _ref_topk, "memorization": _ref_memorization, "attacks": _ref_attacks,
    "corruptions": _ref_corruptions, "certify_ibp": _ref_certify_ibp, "certify_smoothing": _ref_certify_smoothing,
    "conformal": _ref_conformal,
    "quantization": _ref_quantization,
    "certify_lipschitz": _ref_certify_lipschitz,
    "longtail": _ref_longtail,
    "regression_robust": lambda w, p, run: _ref_regression_robust(w, p, tiny_regression_run()),
}


def _ref_regression_robust(w: dict[str, float], p: dict[str, Any], run: TinyRegressionRun) -> None:
    # a linear model: the output range over the clipped box is exact in closed form; PGD lies inside it
    lin = run.model[-1] if isinstance(run.model, torch.nn.Sequential) else run.model
    x, y = run.subset(p["n_test"])
    xf, yd = x.flatten(1).double(), y.double()
    wt, b = lin.weight.detach().double()[0], lin.bias.detach().double()[0]
    f = xf @ wt + b
    for e in p["eps"]:
        assert p["norm"] == "linf", "the reference covers linf"
        lo, hi = (xf - e).clamp(0, 1), (xf + e).clamp(0, 1)
        up = torch.maximum(wt * lo, wt * hi).sum(1) + b
        low = torch.minimum(wt * lo, wt * hi).sum(1) + b
        cert = float(torch.maximum((up - yd) ** 2, (low - yd) ** 2).mean())
        _close(w[f"reg_cert_mse/eps={e:g}"], cert, f"reg_cert_mse/eps={e:g}", tol=1e-4 * max(1.0, cert))
        dev = float(torch.maximum(up - f, f - low).mean())
        _close(w[f"reg_cert_dev/eps={e:g}"], dev, f"reg_cert_dev/eps={e:g}", tol=1e-4 * max(1.0, dev))
        clean = float(((f - yd) ** 2).mean())
        assert clean - 1e-4 <= w[f"reg_adv_mse/eps={e:g}"] <= cert + 1e-4 * max(1.0, cert)


@check()
def check_values_match_an_independent_computation(spec: Spec[Any]) -> None:
    """The key numbers equal a recomputation that does not go through the plug-in."""
    ref = REFERENCES.get(spec.name)
    assert ref is not None, (f"evaluation '{spec.name}' has no independent reference; add one to "
                             "robustlab.testing._evaluations.REFERENCES")
    ref(_written(spec.name), _params(spec.name), tiny_run())
