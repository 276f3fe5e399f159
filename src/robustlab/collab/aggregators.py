"""Robust aggregation rules: pure functions on an ``(n, d)`` stack of worker vectors with ``f`` Byzantine.

Every rule is ``rule(x, f, **options) -> (d,)`` and registered in :data:`AGGREGATORS`
(``get(name, **options)`` gives an :class:`Aggregator`, called as ``agg(x, f)``). Each declares its
(f, κ)-robustness coefficient (Allouah et al., *Fixing by Mixing*, AISTATS 2023, Def. 1):

    ‖F(x_1..x_n) − x̄_S‖² ≤ κ / |S| · Σ_{i∈S} ‖x_i − x̄_S‖²   for every S ⊆ [n] with |S| = n − f,

which the battery (``robustlab.testing._aggregators``) checks numerically under random and adversarial
outliers. Distances and means are computed in float64 on the stack divided by its largest magnitude, so
inputs up to the float32 range stay finite; the result has the input's dtype.

>>> import torch
>>> x = torch.tensor([[0.0], [1.0], [2.0], [100.0]])
>>> float(trimmed_mean(x, 1)), float(coordinate_median(x, 1))
(1.5, 1.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._registry import Registry
from .._validation import InvalidParameterError, check_in_range, check_int

__all__ = [
    "AGGREGATORS", "Aggregator", "available", "centered_clipping", "coordinate_median", "geometric_median", "get",
    "krum", "mean", "monna", "multi_krum", "nnm", "trimmed_mean",
]

AGGREGATORS: Registry[Aggregator] = Registry("aggregator", checks="robustlab.testing._aggregators")


# -- input checks and numerics -----------------------------------------------------------------
def _check(x: Any, f: Any, rule: str, *, majority: bool = True, min_n: Callable[[int], int] | None = None) -> int:
    """Validate the stack and ``f``; robust rules need an honest majority (``f < n / 2``)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidParameterError(f"The 'x' parameter of {rule} must be a float tensor of shape (n, d) "
                                    f"(one row per worker). Got {shape} instead.")
    n = int(x.shape[0])
    if n < 1:
        raise InvalidParameterError(f"The 'x' parameter of {rule} needs at least one worker vector. Got shape {tuple(x.shape)}.")
    f = check_int(f, "f", 0, None, owner=rule)
    if majority and 2 * f >= n:
        raise InvalidParameterError(f"The 'f' parameter of {rule} must be < n / 2 = {n / 2:g} (an honest majority "
                                    f"of the n = {n} workers). Got {f} instead.")
    if min_n is not None and n < min_n(f):
        raise InvalidParameterError(f"{rule} needs n >= {min_n(f)} workers for f = {f}. Got n = {n}.")
    if not bool(torch.isfinite(x).all()):
        raise InvalidParameterError(f"The 'x' parameter of {rule} holds NaN or infinite values; a worker vector must "
                                    "be finite (drop or replace non-finite updates before aggregating).")
    return f


def _scaled(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``x / s`` in float64 with ``s`` the largest magnitude (1 for an all-zero stack)."""
    s = float(x.detach().abs().max()) if x.numel() else 0.0
    s = s if s > 0 else 1.0
    return x.detach().to(torch.float64) / s, s


def _back(z: torch.Tensor, s: float, like: torch.Tensor) -> torch.Tensor:
    return (z * s).to(like.dtype)


def _sqdist(z: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances (n, n), exact differences (no Gram-matrix cancellation), O(n d) memory."""
    return torch.stack([((z - z[i]) ** 2).sum(1) for i in range(z.shape[0])])


def _nearest_mean(z: torch.Tensor, d2_row: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` rows of ``z`` nearest to a pivot (ties broken by row content, not row order)."""
    order = _stable_order(d2_row, z)
    return z[order[:k]].mean(0)


def _stable_order(key: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Indices sorting ``key`` ascending; equal keys are ordered by the rows' contents (permutation invariant)."""
    idx = list(range(int(key.shape[0])))
    rows = z.tolist() if z.shape[1] <= 64 else z[:, :64].tolist()
    keys = key.tolist()
    idx.sort(key=lambda i: (keys[i], rows[i]))
    return torch.tensor(idx, dtype=torch.long)


def _r(f: int, n: int) -> float:
    return f / (n - 2 * f)


# -- the rules -----------------------------------------------------------------------------------
def mean(x: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Plain average (D-SGD); not robust: one Byzantine vector moves it arbitrarily (κ = ∞ for f > 0)."""
    _check(x, f, "mean", majority=False)
    z, s = _scaled(x)
    return _back(z.mean(0), s, x)


def coordinate_median(x: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Coordinate-wise median (Yin et al., ICML 2018); the two middle values are averaged for even n.

    κ = 4 (1 + f / (n − 2f))² (Allouah et al. 2023, Table 1).
    """
    _check(x, f, "coordinate_median")
    z, s = _scaled(x)
    v, n = z.sort(0).values, z.shape[0]
    return _back((v[(n - 1) // 2] + v[n // 2]) / 2, s, x)


def trimmed_mean(x: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Coordinate-wise trimmed mean: drop the f largest and f smallest values per coordinate, average the rest.

    Yin et al., ICML 2018. κ = 6f / (n − 2f) · (1 + f / (n − 2f)) (Allouah et al. 2023). Equals the mean at f = 0.
    """
    f = _check(x, f, "trimmed_mean")
    z, s = _scaled(x)
    n = z.shape[0]
    return _back(z.sort(0).values[f:n - f].mean(0), s, x)


def _krum_scores(z: torch.Tensor, f: int) -> torch.Tensor:
    d2 = _sqdist(z)
    n = z.shape[0]
    k = n - f - 2  # neighbours counted by Krum (self excluded)
    return d2.sort(1).values[:, 1:k + 1].sum(1)


def krum(x: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Krum (Blanchard et al., NeurIPS 2017): the vector with the least sum of squared distances to its n − f − 2
    nearest neighbours. Needs n > 2f + 2. κ = 6 (1 + f / (n − 2f)) (Allouah et al. 2023)."""
    f = _check(x, f, "krum", min_n=lambda f: 2 * f + 3)
    z, s = _scaled(x)
    order = _stable_order(_krum_scores(z, f), z)
    return _back(z[order[0]], s, x)


def multi_krum(x: torch.Tensor, f: int = 0, m: int | None = None) -> torch.Tensor:
    """Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018): mean of the ``m`` vectors with the lowest Krum
    scores (``m = n − f`` by default, so f = 0 gives the mean). Needs n > 2f + 2."""
    f = _check(x, f, "multi_krum", min_n=lambda f: 2 * f + 3)
    n = int(x.shape[0])
    m = n - f if m is None else check_int(m, "m", 1, n - f, owner="multi_krum")
    z, s = _scaled(x)
    order = _stable_order(_krum_scores(z, f), z)
    return _back(z[order[:m]].mean(0), s, x)


def geometric_median(x: torch.Tensor, f: int = 0, eps: float = 1e-8, max_iter: int = 100,
                     tol: float = 1e-10) -> torch.Tensor:
    """Geometric median argmin_z Σ ‖z − x_i‖ by smoothed Weiszfeld iterations (Pillutla et al., RFA, 2022).

    Weights 1 / max(eps, ‖z − x_i‖) with distances relative to the stack's scale; starts at the coordinate-wise
    median, stops after ``max_iter`` iterations or when a step moves less than ``tol`` (relative).
    κ = 4 (1 + f / (n − 2f))² for the exact median (Allouah et al. 2023).
    """
    _check(x, f, "geometric_median")
    check_in_range(eps, "eps", 0.0, None, closed="neither", owner="geometric_median")
    max_iter = check_int(max_iter, "max_iter", 1, None, owner="geometric_median")
    check_in_range(tol, "tol", 0.0, None, closed="left", owner="geometric_median")
    z, s = _scaled(x)
    n = z.shape[0]
    v = z.sort(0).values
    g = (v[(n - 1) // 2] + v[n // 2]) / 2
    for _ in range(max_iter):
        w = 1.0 / (z - g).norm(dim=1).clamp_min(eps)
        new = (w[:, None] * z).sum(0) / w.sum()
        done = float((new - g).norm()) <= tol
        g = new
        if done:
            break
    return _back(g, s, x)


def centered_clipping(x: torch.Tensor, f: int = 0, tau: float = 1.0, iters: int = 3,
                      center: torch.Tensor | None = None) -> torch.Tensor:
    """Centered clipping (Karimireddy, He & Jaggi, ICML 2021): ``v ← v + mean_i clip_τ(x_i − v)``, ``iters`` times.

    ``center`` is the start (the previous aggregate in training); the coordinate-wise median when None.
    Not (f, κ)-robust for a fixed ``tau`` (f clipped vectors move it by up to f τ / n per iteration even when the
    honest vectors agree): the battery checks ‖F − x̄_S‖ ≤ √(κ_med var_S) + iters · τ.
    """
    _check(x, f, "centered_clipping")
    check_in_range(tau, "tau", 0.0, None, closed="neither", owner="centered_clipping")
    iters = check_int(iters, "iters", 1, None, owner="centered_clipping")
    if center is None:
        v = coordinate_median(x, f).detach().to(torch.float64)
    else:
        if not isinstance(center, torch.Tensor) or tuple(center.shape) != (x.shape[1],):
            raise InvalidParameterError(f"The 'center' parameter of centered_clipping must be a tensor of shape "
                                        f"({x.shape[1]},). Got {getattr(center, 'shape', center)!r} instead.")
        v = center.detach().to(torch.float64)
    z = x.detach().to(torch.float64)
    for _ in range(iters):
        diff = z - v
        norm = diff.norm(dim=1, keepdim=True)
        scale = torch.where(norm > tau, tau / norm.clamp_min(1e-300), torch.ones_like(norm))
        v = v + (diff * scale).mean(0)
    return v.to(x.dtype)


def nnm(x: torch.Tensor, f: int = 0, rule: str = "trimmed_mean", **rule_options: Any) -> torch.Tensor:
    """Nearest-neighbour mixing, then ``rule`` (Allouah et al., *Fixing by Mixing*, AISTATS 2023, Alg. 1).

    Each x_i is replaced by the mean of its n − f nearest vectors (itself included), then ``rule`` aggregates the
    mixed stack. κ_{rule∘NNM} ≤ 8f / (n − f) · (κ_rule + 1) (their Lemma 1). At f = 0 every mixed vector is the mean.
    """
    f = _check(x, f, "nnm")
    if rule in ("nnm", "monna"):
        raise InvalidParameterError(f"The 'rule' parameter of nnm must be a plain aggregator, not {rule!r}.")
    inner = AGGREGATORS.get(rule, **rule_options)
    z, s = _scaled(x)
    n = z.shape[0]
    d2 = _sqdist(z)
    mixed = torch.stack([_nearest_mean(z, d2[i], n - f) for i in range(n)])
    return _back(inner(mixed, f), s, x)


def monna(x: torch.Tensor, f: int = 0, pivot: int = 0) -> torch.Tensor:
    """MoNNA's nearest-neighbour averaging for the honest worker ``pivot``: the mean of the n − f vectors nearest
    to x_pivot (itself included).

    Farhadkhani et al., *Robust Collaborative Learning with Linear Gradient Overhead*, ICML 2023 (Alg. 1, NNA;
    reference code ``aggregators/cva.py``). Workers average models after a local Polyak-momentum step
    (:func:`robustlab.collab.fit`, ``exchange="params"``). Bound used by the battery: the selection differs from
    the honest set by at most f swaps, each within r = max_{j∈S} ‖x_j − x_pivot‖ of the pivot, so
    ‖F − x̄_S‖ ≤ 2 f r / (n − f) and κ = 16 f² / (n − f).
    """
    f = _check(x, f, "monna")
    n = int(x.shape[0])
    pivot = check_int(pivot, "pivot", 0, n - 1, owner="monna")
    z, s = _scaled(x)
    d2 = ((z - z[pivot]) ** 2).sum(1)
    return _back(_nearest_mean(z, d2, n - f), s, x)


def _monna_all(x: torch.Tensor, f: int, workers: int) -> torch.Tensor:
    """:func:`monna` for pivots 0..workers-1 with one distance computation (same numbers)."""
    f = _check(x, f, "monna")
    n = int(x.shape[0])
    z, s = _scaled(x)
    out = []
    for i in range(workers):
        d2 = ((z - z[i]) ** 2).sum(1)
        out.append(_nearest_mean(z, d2, n - f))
    return _back(torch.stack(out), s, x)


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aggregator:
    """A registered rule with its options bound: ``agg(x, f)`` (``agg(x, f, pivot=i)`` for pivoted rules).

    ``kappa(n, f)`` is the (f, κ)-robustness coefficient the battery checks (``math.inf`` when the rule is not
    robust) and ``slack(n, f)`` an additive distance for rules robust only up to one (centered clipping):
    ‖F − x̄_S‖ ≤ √(κ var_S) + slack.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    kappa: Callable[[int, int], float] = lambda n, f: math.inf
    slack: Callable[[int, int], float] = lambda n, f: 0.0
    pivoted: bool = False

    def __call__(self, x: torch.Tensor, f: int, *, pivot: int = 0) -> torch.Tensor:
        if self.pivoted:
            return self.fn(x, f, pivot=pivot, **self.options)
        return self.fn(x, f, **self.options)

    def for_workers(self, x: torch.Tensor, f: int, workers: int) -> torch.Tensor:
        """``(workers, d)``: row i is the aggregate seen by worker i (its pivot), rows 0..workers-1 of ``x``.

        Non-pivoted rules give every worker the same aggregate (computed once); MoNNA computes its distances once.
        """
        if not self.pivoted:
            return self(x, f).expand(workers, -1)
        if self.fn is monna:
            return _monna_all(x, f, workers)
        return torch.stack([self(x, f, pivot=i) for i in range(workers)])


def _register(name: str, fn: Callable[..., torch.Tensor], kappa: Callable[..., float], *, tags: tuple[str, ...] = (),
              reference: str, example_kwargs: dict[str, Any] | None = None,
              slack: Callable[..., float] | None = None) -> None:
    """Register ``fn``; ``kappa(n, f, **options)`` and ``slack(n, f, **options)`` get the bound options."""
    import inspect

    params = inspect.signature(fn).parameters
    accepted = [p for p in list(params)[2:] if p != "pivot" and params[p].kind is not params[p].VAR_KEYWORD]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())

    def factory(**options: Any) -> Aggregator:
        bad = [k for k in options if k not in accepted and not open_ended]
        if bad:
            raise InvalidParameterError(f"Unknown option(s) {bad} for aggregator '{name}'. "
                                        f"Accepted: {', '.join(accepted) or '(none)'}.")
        return Aggregator(name, fn, dict(options), lambda n, f: kappa(n, f, **options),
                          lambda n, f: (slack or (lambda n, f, **_: 0.0))(n, f, **options), pivoted="pivoted" in tags)

    factory.__doc__ = fn.__doc__
    factory.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # spec checks read the options
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=params[k].default) for k in accepted]
        + ([inspect.Parameter("rule_options", inspect.Parameter.VAR_KEYWORD)] if open_ended else []))
    AGGREGATORS.register(name, tags=tags, reference=reference, example_kwargs=example_kwargs)(factory)


def _nnm_kappa(n: int, f: int, rule: str = "trimmed_mean", **opts: Any) -> float:
    inner = AGGREGATORS.get(rule, **opts).kappa(n, f)
    return 0.0 if f == 0 else 8 * f / (n - f) * (inner + 1)


_FBM = "Allouah et al., Fixing by Mixing, AISTATS 2023 (arXiv:2302.01772), Table 1"
_register("mean", mean, lambda n, f: 0.0 if f == 0 else math.inf, tags=("mean_at_f0", "not_robust"),
          reference="McMahan et al., FedAvg, AISTATS 2017 (arXiv:1602.05629)")
_register("coordinate_median", coordinate_median, lambda n, f: 4 * (1 + _r(f, n)) ** 2,
          reference=f"Yin et al., ICML 2018 (arXiv:1803.01498); κ: {_FBM}")
_register("trimmed_mean", trimmed_mean, lambda n, f: 6 * _r(f, n) * (1 + _r(f, n)), tags=("mean_at_f0",),
          reference=f"Yin et al., ICML 2018 (arXiv:1803.01498); κ: {_FBM}")
_register("krum", krum, lambda n, f: 6 * (1 + _r(f, n)), tags=("needs_2f+3",),
          reference=f"Blanchard et al., NeurIPS 2017; κ: {_FBM}")
# Multi-Krum: each selected vector's score is at most the largest honest score, which doubles Krum's constant.
_register("multi_krum", multi_krum, lambda n, f, m=None: 12 * (1 + _r(f, n)), tags=("mean_at_f0", "needs_2f+3"),
          reference=f"Blanchard et al., NeurIPS 2017; El Mhamdi et al., ICML 2018; κ: generous (2x Krum's), {_FBM}")
# Weiszfeld stops at an approximation: twice the exact median's κ.
_register("geometric_median", geometric_median, lambda n, f, **_: 8 * (1 + _r(f, n)) ** 2,
          reference=f"Pillutla et al., RFA, IEEE TSP 2022 (arXiv:1912.13445); κ: 2x {_FBM}")
# Started at the coordinate-wise median, each iteration moves by at most tau: ‖F − x̄_S‖ ≤ √(κ_med var) + iters·tau.
_register("centered_clipping", centered_clipping, lambda n, f, **_: 4 * (1 + _r(f, n)) ** 2,
          slack=lambda n, f, tau=1.0, iters=3, center=None: iters * tau,
          reference="Karimireddy, He & Jaggi, ICML 2021 (arXiv:2012.10333)", example_kwargs={"tau": 1.0, "iters": 3})
_register("nnm", nnm, _nnm_kappa, tags=("mean_at_f0",), reference=f"{_FBM}, Algorithm 1",
          example_kwargs={"rule": "trimmed_mean"})
_register("monna", monna, lambda n, f: 16 * f * f / (n - f), tags=("mean_at_f0", "pivoted"),
          reference="Farhadkhani et al., Robust Collaborative Learning with Linear Gradient Overhead, ICML 2023 "
                    "(arXiv:2209.10931), Algorithm 1 (NNA)")


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered aggregator names."""
    return AGGREGATORS.available(pattern, tags=tags)


def get(name: str, **options: Any) -> Aggregator:
    """The aggregator ``name`` with ``options`` bound; call it as ``agg(x, f)``."""
    return AGGREGATORS.get(name, **options)
