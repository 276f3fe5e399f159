"""Conformance checks for every robust aggregator (``robustlab.collab.AGGREGATORS``).

Permutation invariance, the mean at f = 0 (rules tagged ``mean_at_f0``), the (f, κ)-robustness inequality
‖F(x) − x̄_S‖² ≤ κ / |S| Σ_{i∈S} ‖x_i − x̄_S‖² (plus the rule's declared additive slack) for the honest set S
under random and adversarial outliers, finite results at extreme inputs (1e30, ties, identical vectors),
determinism, and clear errors for f ≥ n / 2 and bad stacks.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from .._registry import Spec
from .._validation import InvalidParameterError
from . import check

N, D = 11, 6


def _make(spec: Spec[Any], **override: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **override})


def _honest(n: int, d: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d, generator=g, dtype=torch.float64) * 3 + spread * torch.randn(n, d, generator=g,
                                                                                     dtype=torch.float64))


def _outliers(honest: torch.Tensor, f: int, kind: str, seed: int) -> torch.Tensor:
    """f Byzantine vectors: random far points, one huge point, a colluding cluster, ALIE-like, sign flip."""
    g = torch.Generator().manual_seed(seed + 1000)
    mu, sd = honest.mean(0), honest.std(0)
    d = honest.shape[1]
    if kind == "random":
        return mu + 50 * torch.randn(f, d, generator=g, dtype=honest.dtype)
    if kind == "huge":
        return mu + 1e6 * torch.ones(f, d, dtype=honest.dtype)
    if kind == "cluster":  # all f at one point just outside the honest cloud
        return (mu + 3 * sd).expand(f, d).clone()
    if kind == "alie":
        return (mu - 1.0 * sd).expand(f, d).clone()
    if kind == "sign_flip":
        return (-mu).expand(f, d).clone()
    raise AssertionError(kind)


def _call(agg: Any, x: torch.Tensor, f: int, pivot: int = 0) -> torch.Tensor:
    return agg(x, f, pivot=pivot)


@check()
def check_declares_reference_and_doc(spec: Spec[Any]) -> None:
    agg = _make(spec)
    assert spec.reference, f"aggregator '{spec.name}' declares no paper reference"
    assert spec.doc, f"aggregator '{spec.name}' has no docstring"
    assert callable(agg) and agg.name == spec.name


@check()
def check_output_shape_dtype_and_determinism(spec: Spec[Any]) -> None:
    agg = _make(spec)
    for dtype in (torch.float32, torch.float64):
        x = _honest(N, D, 0).to(dtype)
        out = _call(agg, x, 2)
        assert out.shape == (D,) and out.dtype == dtype
        assert torch.equal(out, _call(agg, x.clone(), 2)), "same input, different output"
        assert torch.equal(x, _honest(N, D, 0).to(dtype)), "the input stack was modified in place"


@check()
def check_permutation_invariant(spec: Spec[Any]) -> None:
    agg = _make(spec)
    x = _honest(N, D, 1).float()
    g = torch.Generator().manual_seed(3)
    for f in (0, 2, 4):
        if f >= N / 2 or ("needs_2f+3" in spec.tags and N < 2 * f + 3):
            continue
        out = _call(agg, x, f, pivot=0)
        for _ in range(3):
            perm = torch.randperm(N, generator=g)
            pivot = int((perm == 0).nonzero())  # the pivot worker keeps its vector under the permutation
            torch.testing.assert_close(_call(agg, x[perm], f, pivot=pivot), out, rtol=1e-5, atol=1e-6,
                                       msg=f"{spec.name} is not permutation invariant (f={f})")


@check(requires=("mean_at_f0",))
def check_mean_at_f0(spec: Spec[Any]) -> None:
    agg = _make(spec)
    x = _honest(N, D, 2)
    torch.testing.assert_close(_call(agg, x, 0), x.mean(0), rtol=1e-9, atol=1e-9)


@check(excludes=("not_robust",))
def check_f_kappa_robust(spec: Spec[Any]) -> None:
    """‖F(x) − x̄_S‖ ≤ √(κ var_S) + slack for the honest set S, under random and adversarial outliers."""
    agg = _make(spec)
    for n, f in ((11, 1), (11, 2), (11, 3), (9, 3), (7, 2)):
        if "needs_2f+3" in spec.tags and n < 2 * f + 3:
            continue
        kappa, slack = agg.kappa(n, f), agg.slack(n, f)
        assert math.isfinite(kappa) and kappa >= 0
        for seed in range(3):
            honest = _honest(n - f, D, 10 + seed)
            var = float(((honest - honest.mean(0)) ** 2).sum(1).mean())
            for kind in ("random", "huge", "cluster", "alie", "sign_flip"):
                byz = _outliers(honest, f, kind, seed)
                for where in ("last", "first"):
                    x = torch.cat([honest, byz]) if where == "last" else torch.cat([byz, honest])
                    pivot = 0 if where == "last" else f
                    err = float((_call(agg, x, f, pivot=pivot) - honest.mean(0)).norm())
                    bound = math.sqrt(kappa * var) + slack
                    assert err <= bound * (1 + 1e-6) + 1e-9, (
                        f"{spec.name}: ‖F − x̄_S‖ = {err:.4g} > √(κ var) + slack = {bound:.4g} "
                        f"(n={n}, f={f}, κ={kappa:.3g}, outliers={kind}, seed={seed})")


@check(requires=("not_robust",))
def check_not_robust_is_declared_so(spec: Spec[Any]) -> None:
    """A rule declared not robust really is moved arbitrarily far by one outlier (so the tag is not a shortcut)."""
    agg = _make(spec)
    honest = _honest(N - 1, D, 4)
    x = torch.cat([honest, _outliers(honest, 1, "huge", 0)])
    assert float((_call(agg, x, 1) - honest.mean(0)).norm()) > 1e4
    assert agg.kappa(N, 1) == math.inf


@check()
def check_finite_at_extreme_inputs(spec: Spec[Any]) -> None:
    agg = _make(spec)
    f = 2
    x = _honest(N, D, 5).float()
    big = x * 1e30
    out = _call(agg, big, f)
    assert bool(torch.isfinite(out).all()), f"{spec.name} overflows at 1e30-sized vectors: {out}"
    tiny = _call(agg, x * 1e-30, f)
    assert bool(torch.isfinite(tiny).all())
    same = torch.full((N, D), 1e30)
    torch.testing.assert_close(_call(agg, same, f), same[0], msg=lambda m: f"identical 1e30 vectors: {m}")
    v = torch.tensor([1.0, -2.0, 3.0, 0.5, 0.0, 7.0])
    ident = v.expand(N, D).clone()
    torch.testing.assert_close(_call(agg, ident, f), v, msg=lambda m: f"identical vectors must give that vector: {m}")
    ties = torch.cat([x[:4].repeat(2, 1), x[:3]])  # duplicated rows: tied distances and scores
    assert bool(torch.isfinite(_call(agg, ties, f)).all())
    mixed = x.clone()
    mixed[-1] = 3e38  # one vector near the float32 limit among ordinary ones
    assert bool(torch.isfinite(_call(agg, mixed, f)).all())
    zeros = torch.zeros(N, D)
    assert torch.equal(_call(agg, zeros, f), zeros[0])


@check()
def check_clear_errors(spec: Spec[Any]) -> None:
    agg = _make(spec)
    x = _honest(N, D, 6).float()
    if "not_robust" not in spec.tags:
        for f in (N // 2 + 1, N):
            with pytest.raises(InvalidParameterError, match="'f'.*n / 2"):
                _call(agg, x, f)
    with pytest.raises(InvalidParameterError, match="'f'"):
        _call(agg, x, -1)
    with pytest.raises(InvalidParameterError, match="'x'.*shape"):
        _call(agg, x[0], 0)
    with pytest.raises(InvalidParameterError, match="'x'.*shape"):
        _call(agg, x.long(), 0)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(InvalidParameterError, match="'x'.*NaN"):
        _call(agg, bad, 1)


@check()
def check_for_workers_matches_single_calls(spec: Spec[Any]) -> None:
    """The simulation's all-workers path gives each worker exactly what a single call (one rank) gives."""
    agg = _make(spec)
    x = _honest(N, D, 7).float()
    rows = agg.for_workers(x, 2, 8)
    assert rows.shape == (8, D)
    for i in range(8):
        assert torch.equal(rows[i], _call(agg, x, 2, pivot=i)), f"{spec.name}: worker {i} differs"
