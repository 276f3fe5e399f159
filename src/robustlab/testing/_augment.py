"""Conformance checks for every registered training augmentation (``robustlab.training.augment``).

Shape, dtype and device kept; values stay in [0, 1]; the same generator state gives the same batch and a
different one a different batch; the input is never modified in place; ``none`` is the identity; no
per-sample Python (a batch of 512 costs about as many tensor calls as a batch of 2).
"""

from __future__ import annotations

from typing import Any

import torch

from .._registry import Spec
from . import check


def _make(spec: Spec[Any], **override: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **override})


def _batch(spec: Spec[Any], n: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 5) if "any_shape" in spec.tags and seed % 2 else (n, 3, 8, 8)
    return torch.rand(shape, generator=g).to(dtype)


@check()
def check_documented(spec: Spec[Any]) -> None:
    assert spec.doc, f"augmentation '{spec.name}' has no docstring"
    assert spec.reference, f"augmentation '{spec.name}' declares no reference"
    _make(spec)


@check()
def check_shape_dtype_device_range_kept(spec: Spec[Any]) -> None:
    aug = _make(spec)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for seed in (0, 1):
            x = _batch(spec, seed=seed, dtype=dtype)
            before = x.clone()
            out = aug(x, torch.Generator().manual_seed(3))
            assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
            assert bool((out >= 0).all() and (out <= 1).all()), f"{spec.name} left [0, 1]"
            assert torch.equal(x, before), f"{spec.name} modified its input in place"


@check()
def check_deterministic_given_generator(spec: Spec[Any]) -> None:
    aug = _make(spec)
    x = _batch(spec, n=64)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b), "the same generator state gave different batches"
    if "identity" in spec.tags:
        assert torch.equal(a, x), "'none' must be the identity"
        return
    c = aug(x, torch.Generator().manual_seed(8))
    assert not torch.equal(a, c), "different generator seeds gave identical batches"
    g = torch.Generator().manual_seed(7)
    aug(x, g)
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(7).get_state()), \
        "the augmentation did not draw from the given generator"


@check(excludes={"identity"})
def check_changes_some_samples_not_all_the_same_way(spec: Spec[Any]) -> None:
    aug = _make(spec)
    x = _batch(spec, n=64)
    out = aug(x, torch.Generator().manual_seed(11))
    changed = (out != x).flatten(1).any(1)
    assert bool(changed.any()), f"{spec.name} changed no sample"
    delta = (out - x).flatten(1)
    assert not bool((delta == delta[:1]).all()), f"{spec.name} applied one transform to the whole batch"


@check()
def check_vectorised(spec: Spec[Any]) -> None:
    """Cost in torch calls does not grow with the batch (no per-sample Python loop)."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    aug = _make(spec)
    counts = []
    for n in (2, 512):
        x = _batch(spec, n=n)
        Count.calls = 0
        with Count():
            aug(x, torch.Generator().manual_seed(0))
        counts.append(Count.calls)
    assert counts[1] <= counts[0] + 2, f"{spec.name}: {counts[0]} torch calls for 2 samples, {counts[1]} for 512"
