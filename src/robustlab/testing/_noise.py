"""Conformance checks for every registered noise kind (``robustlab.noise.NOISES``).

The empirical transition matrix must match the declared one within sampling error (5 binomial standard
deviations per entry), rate 0 must be the identity and the same generator must give the same labels.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._registry import Spec
from . import check

N_SAMPLES = 40_000


def _make(spec: Spec[Any], **override: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **override})


def _inputs(model: Any, n: int = N_SAMPLES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    c = model.num_classes
    y = torch.arange(n) % c
    y = y[torch.randperm(n, generator=g)]
    x = torch.rand(n, 6, generator=g) if getattr(model, "needs_x", False) else None
    return y, x


@check()
def check_example_kwargs_build(spec: Spec[Any]) -> None:
    model = _make(spec)
    assert model.num_classes >= 2
    assert spec.reference, f"noise kind '{spec.name}' declares no paper reference"
    assert spec.doc, f"noise kind '{spec.name}' has no docstring"


@check()
def check_output_types(spec: Spec[Any]) -> None:
    model = _make(spec)
    y, x = _inputs(model, 500)
    out = model(y, x=x, generator=torch.Generator().manual_seed(1))
    c = model.num_classes
    assert out.labels.dtype == torch.int64 and out.labels.shape == y.shape
    assert out.is_noisy.dtype == torch.bool and torch.equal(out.is_noisy, out.labels != y)
    assert int(out.labels.min()) >= 0 and int(out.labels.max()) < c
    assert out.transition.shape == (c, c) and bool((out.transition >= 0).all())
    assert torch.allclose(out.transition.sum(1), torch.ones(c, dtype=out.transition.dtype), atol=1e-9)
    assert math.isclose(out.realized_rate, float((out.labels != y).double().mean()), abs_tol=1e-12)
    assert torch.equal(y, _inputs(model, 500)[0]), "the clean labels were modified in place"


@check()
def check_empirical_transition_matches(spec: Spec[Any]) -> None:
    model = _make(spec)
    y, x = _inputs(model)
    out = model(y, x=x, generator=torch.Generator().manual_seed(2))
    c = model.num_classes
    counts = torch.zeros(c, c, dtype=torch.float64)
    counts.index_put_((y, out.labels), torch.ones(y.shape[0], dtype=torch.float64), accumulate=True)
    n_c = counts.sum(1, keepdim=True)
    emp = counts / n_c
    t = out.transition
    tol = 5 * torch.sqrt(t * (1 - t) / n_c) + 2e-3
    worst = float(((emp - t).abs() - tol).max())
    assert worst <= 0, f"empirical transition deviates from the declared one beyond 5 sigma:\n{emp}\nvs\n{t}"
    # the realized rate matches the expected off-diagonal mass under the class priors
    expected = float(((1 - t.diagonal()) * n_c.squeeze(1)).sum() / y.shape[0])
    assert abs(out.realized_rate - expected) < 5 * math.sqrt(max(expected * (1 - expected), 1e-6) / y.shape[0]) + 1e-3


@check()
def check_rate_zero_is_identity(spec: Spec[Any]) -> None:
    if "needs_transition" in spec.tags:
        c = spec.example_kwargs["num_classes"]
        model = _make(spec, transition=torch.eye(c))
    else:
        model = _make(spec, rate=0.0)
    y, x = _inputs(model, 1000)
    out = model(y, x=x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.labels, y) and out.realized_rate == 0.0 and not bool(out.is_noisy.any())
    assert torch.equal(out.transition, torch.eye(model.num_classes, dtype=out.transition.dtype))


@check()
def check_same_generator_same_labels(spec: Spec[Any]) -> None:
    model = _make(spec)
    y, x = _inputs(model, 2000)
    a = model(y, x=x, generator=torch.Generator().manual_seed(7)).labels
    b = model(y, x=x, generator=torch.Generator().manual_seed(7)).labels
    c = model(y, x=x, generator=torch.Generator().manual_seed(8)).labels
    assert torch.equal(a, b), "the same generator state gave different labels"
    assert not torch.equal(a, c), "different seeds gave identical noisy labels"


@check()
def check_bad_inputs_raise(spec: Spec[Any]) -> None:
    import pytest

    from .._validation import InvalidParameterError

    model = _make(spec)
    y, x = _inputs(model, 100)
    if "needs_transition" not in spec.tags:
        with pytest.raises(InvalidParameterError, match=r"The 'rate' parameter of inject must be a float in \[0, 1\)\. Got 1.5 instead\."):
            _make(spec, rate=1.5)
    with pytest.raises(InvalidParameterError, match="num_classes"):
        _make(spec, num_classes=1)
    from ..noise._base import MAX_CLASSES

    with pytest.raises(InvalidParameterError, match="num_classes"):  # bounded: no dense 10**9 x 10**9 matrix
        _make(spec, num_classes=MAX_CLASSES + 1)
    with pytest.raises(ValueError, match="outside"):
        model(torch.full((5,), model.num_classes), x=None if x is None else x[:5])
    with pytest.raises(TypeError, match="integer"):
        model(y.double(), x=x)
    if getattr(model, "needs_x", False):
        assert x is not None
        with pytest.raises(ValueError, match="x"):
            model(y, x=None)
        with pytest.raises(ValueError, match="row"):
            model(y, x=x[:-1])
