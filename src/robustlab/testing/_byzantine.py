"""Conformance checks for every Byzantine behaviour (``robustlab.collab.byzantine.BYZANTINE``).

Vector behaviours: shape (f, d) and the honest dtype, f = 0 gives no vector, deterministic given the
generator's seed, finite, the honest stack untouched. Data behaviours: labels stay in range and the
transform is deterministic.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from .._registry import Spec
from .._validation import InvalidParameterError
from . import check


def _honest(h: int = 7, d: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g) + 0.5 * torch.randn(h, d, generator=g)


@check()
def check_declares_reference_and_doc(spec: Spec[Any]) -> None:
    b = spec.create(**spec.example_kwargs)
    assert spec.reference and spec.doc, f"behaviour '{spec.name}' needs a reference and a docstring"
    assert b.name == spec.name and b.kind in ("vector", "data")


@check(requires=("vector",))
def check_shape_dtype_and_determinism(spec: Spec[Any]) -> None:
    b = spec.create(**spec.example_kwargs)
    for dtype in (torch.float32, torch.float64):
        hon = _honest().to(dtype)
        keep = hon.clone()
        for f in (0, 1, 3):
            out = b(hon, f, torch.Generator().manual_seed(5))
            assert out.shape == (f, hon.shape[1]) and out.dtype == dtype
            assert bool(torch.isfinite(out).all())
            again = b(hon, f, torch.Generator().manual_seed(5))
            assert torch.equal(out, again), f"{spec.name}: same seed, different Byzantine vectors"
        assert torch.equal(hon, keep), f"{spec.name} modified the honest stack in place"
    out = b(_honest(h=1), 2, torch.Generator().manual_seed(0))  # one honest worker: still defined
    assert out.shape == (2, 5) and bool(torch.isfinite(out).all())


@check(requires=("vector",))
def check_vector_errors(spec: Spec[Any]) -> None:
    b = spec.create(**spec.example_kwargs)
    with pytest.raises(InvalidParameterError, match="'honest'"):
        b(torch.zeros(5), 1, None)
    with pytest.raises(InvalidParameterError, match="'f'"):
        b(_honest(), -1, None)


@check(requires=("data",))
def check_label_transform(spec: Spec[Any]) -> None:
    b = spec.create(**spec.example_kwargs)
    y = torch.arange(30) % 10
    out = b.transform_labels(y, 10)
    assert out.dtype == torch.int64 and out.shape == y.shape
    assert int(out.min()) >= 0 and int(out.max()) < 10 and bool((out != y).any())
    assert torch.equal(out, b.transform_labels(y, 10)) and torch.equal(y, torch.arange(30) % 10)
    with pytest.raises(InvalidParameterError):
        b(_honest(), 1, None)  # a data behaviour has no vector form
