"""Conformance checks for every conformal score in ``conformal.SCORES``.

Data are exchangeable by construction: random logits, labels drawn from their softmax, fresh draws
for every repetition, so split-conformal coverage has the known law ``Beta(k, n + 1 − k)`` with
``k = ⌈(n + 1)(1 − α)⌉`` and tolerances come from it, not from a loose constant.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._registry import Spec
from . import check

__all__: list[str] = []


def _data(n: int, c: int, g: torch.Generator, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    probs = (torch.randn(n, c, generator=g) * scale).softmax(1)
    y = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return probs, y


@check()
def check_shapes_range_and_label_form(spec: Spec[Any]) -> None:
    """Scores are finite, (N, C), in [0, upper(C)]; ``score(p, y)`` equals the gathered full scores for one seed."""
    score = spec.create(**spec.example_kwargs)
    g = torch.Generator().manual_seed(0)
    probs, y = _data(64, 6, g)
    full = score(probs, generator=torch.Generator().manual_seed(5))
    assert full.shape == probs.shape and bool(torch.isfinite(full).all())
    assert float(full.min()) >= -1e-6 and float(full.max()) <= score.upper(6) + 1e-6
    one = score(probs, y, generator=torch.Generator().manual_seed(5))
    assert one.shape == (64,)
    torch.testing.assert_close(one, full.gather(1, y[:, None]).squeeze(1))


@check()
def check_equivariant_to_class_order(spec: Spec[Any]) -> None:
    """Relabelling the classes relabels the scores (same random draws)."""
    score = spec.create(**spec.example_kwargs)
    g = torch.Generator().manual_seed(1)
    probs, _ = _data(32, 5, g)
    perm = torch.randperm(5, generator=g)
    a = score(probs, generator=torch.Generator().manual_seed(3))[:, perm]
    b = score(probs[:, perm], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@check()
def check_rejects_logits_and_uncalibrated_use(spec: Spec[Any]) -> None:
    """Logits instead of probabilities raise ValueError; ``predict_sets`` before ``calibrate`` raises."""
    from ..conformal import SplitConformal

    score = spec.create(**spec.example_kwargs)
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)) * 3
    try:
        score(logits)
    except ValueError as e:
        assert "softmax" in str(e)
    else:
        raise AssertionError("scoring logits did not raise")
    cp = SplitConformal(score, 0.1)
    try:
        cp.predict_sets(logits.softmax(1))
    except ValueError as e:
        assert "calibrate" in str(e)
    else:
        raise AssertionError("predict_sets before calibrate did not raise")


@check()
def check_split_coverage_matches_beta_law(spec: Spec[Any]) -> None:
    """Mean coverage over fresh exchangeable splits is ``k/(n+1)`` within 4.5 standard errors of its law."""
    from ..conformal import SplitConformal, coverage, quantile_rank

    n_cal, n_test, reps, alpha, c = 150, 150, 150, 0.1, 5
    g = torch.Generator().manual_seed(11)
    covs = []
    for _ in range(reps):
        probs, y = _data(n_cal + n_test, c, g)
        cp = SplitConformal(spec.create(**spec.example_kwargs), alpha).calibrate(probs[:n_cal], y[:n_cal], generator=g)
        covs.append(coverage(cp.predict_sets(probs[n_cal:], generator=g), y[n_cal:]))
    k = quantile_rank(n_cal, alpha)
    a, b = k, n_cal + 1 - k
    mean = a / (a + b)
    var_beta = a * b / ((a + b) ** 2 * (a + b + 1))
    var_split = var_beta + (mean * (1 - mean) - var_beta) / n_test  # E[C(1-C)]/m + Var(C)
    se = math.sqrt(var_split / reps)
    got = sum(covs) / reps
    assert abs(got - mean) <= 4.5 * se, f"mean coverage {got:.4f}, expected {mean:.4f} ± {4.5 * se:.4f}"
    assert got >= 1 - alpha - 4.5 * se


@check()
def check_sets_shrink_as_alpha_grows(spec: Spec[Any]) -> None:
    """With the same draws, the sets at α = 0.05 contain the sets at α = 0.2."""
    from ..conformal import SplitConformal

    g = torch.Generator().manual_seed(4)
    probs, y = _data(200, 6, g)
    sets = []
    for alpha in (0.05, 0.2):
        cp = SplitConformal(spec.create(**spec.example_kwargs), alpha)
        cp.calibrate(probs[:100], y[:100], generator=torch.Generator().manual_seed(1))
        sets.append(cp.predict_sets(probs[100:], generator=torch.Generator().manual_seed(2)))
    assert bool((sets[1] <= sets[0]).all())
    assert int(sets[1].sum()) < int(sets[0].sum())


@check()
def check_rejects_nan_probabilities(spec: Spec[Any]) -> None:
    """NaN or infinite probabilities raise ValueError in the score, ``calibrate`` and ``predict_sets``."""
    from ..conformal import SplitConformal

    score = spec.create(**spec.example_kwargs)
    probs, y = _data(20, 4, torch.Generator().manual_seed(6))
    cp = SplitConformal(score, 0.1).calibrate(probs, y, generator=torch.Generator().manual_seed(0))
    for bad in (float("nan"), float("inf")):
        p = probs.clone()
        p[3, 1] = bad
        for fn in (lambda p=p: score(p), lambda p=p: score(p, y),
                   lambda p=p: SplitConformal(score, 0.1).calibrate(p, y), lambda p=p: cp.predict_sets(p)):
            try:
                fn()
            except ValueError as e:
                assert "NaN" in str(e), str(e)
            else:
                raise AssertionError(f"{spec.name}: probabilities with {bad} were accepted")


@check()
def check_rejects_bad_labels(spec: Spec[Any]) -> None:
    """Labels out of range, of a float dtype or the wrong shape raise; every integer dtype is accepted."""
    from ..conformal import SplitConformal

    score = spec.create(**spec.example_kwargs)
    probs, y = _data(20, 4, torch.Generator().manual_seed(7))
    bad_labels = (y.clone().index_fill_(0, torch.tensor([2]), 4), y.clone().index_fill_(0, torch.tensor([2]), -1),
                  y.double(), y[:5], y[:, None])
    for bad in bad_labels:
        for fn in (lambda b=bad: score(probs, b), lambda b=bad: SplitConformal(score, 0.1).calibrate(probs, b)):
            try:
                fn()
            except (ValueError, TypeError) as e:
                assert any(w in str(e) for w in ("label", "shape", "class indices")), str(e)
            else:
                raise AssertionError(f"{spec.name}: labels {bad.tolist()} were accepted")
    for dtype in (torch.int32, torch.int16, torch.uint8):
        a = score(probs, y.to(dtype), generator=torch.Generator().manual_seed(1))
        b = score(probs, y, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b), f"{spec.name}: {dtype} labels give other scores"
        t1 = SplitConformal(score, 0.2).calibrate(probs, y.to(dtype), generator=torch.Generator().manual_seed(2)).threshold_
        t2 = SplitConformal(score, 0.2).calibrate(probs, y, generator=torch.Generator().manual_seed(2)).threshold_
        assert t1 is not None and t2 is not None and torch.equal(t1, t2)
