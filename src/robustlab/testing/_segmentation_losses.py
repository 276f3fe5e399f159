"""Conformance checks run on every registered segmentation loss (``robustlab.losses.SEGMENTATION_LOSSES``).

Tiny seeded inputs: logits (N=3, C, 6, 5) with C = 3 (labels) and C = 1 (binary masks).
"""

from __future__ import annotations

from typing import Any

import torch

from .._registry import Spec
from . import check

__all__ = ["check_bad_inputs", "check_finite_extreme_logits", "check_gradcheck", "check_half_precision_gradient",
           "check_perfect_is_zero_and_range", "check_reductions_agree"]


def _inputs(c: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 2.0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(3, c, 6, 5, generator=g, dtype=dtype)
    target = torch.randint(0, max(c, 2), (3, 6, 5), generator=g)
    return logits, target


def _make(spec: Spec[Any], **kw: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **kw})


@check()
def check_reductions_agree(spec: Spec[Any]) -> None:
    """'none' is (N,); 'mean'/'sum' are its mean/sum; binary masks (N, H, W) and (N, 1, H, W) agree."""
    for c in (3, 1):
        x, t = _inputs(c)
        per = _make(spec, reduction="none")(x, t)
        assert per.shape == (3,) and per.dtype == x.dtype
        assert torch.allclose(_make(spec, reduction="mean")(x, t), per.mean())
        assert torch.allclose(_make(spec, reduction="sum")(x, t), per.sum())
    x, t = _inputs(1)
    assert torch.allclose(_make(spec)(x, t.float()), _make(spec)(x, t[:, None].float()))


@check()
def check_perfect_is_zero_and_range(spec: Spec[Any]) -> None:
    """Values lie in [0, 1]; confident correct logits give ~0, confident wrong ones a large loss."""
    x, t = _inputs(3)
    v = _make(spec, reduction="none")(x, t)
    assert bool(((v >= 0) & (v <= 1)).all()), v.tolist()
    perfect = 50.0 * torch.nn.functional.one_hot(t, 3).permute(0, 3, 1, 2).double()
    assert float(_make(spec)(perfect, t)) < 1e-6
    assert float(_make(spec)(perfect, (t + 1) % 3)) > 0.9


@check()
def check_finite_extreme_logits(spec: Spec[Any]) -> None:
    """Finite value and gradient at logits of +-1e4 and +-1e30 in float32."""
    for c in (3, 1):
        for s in (1e4, 1e30):
            x, t = _inputs(c, seed=1, dtype=torch.float32, scale=1.0)
            x = (x.sign() * s).requires_grad_(True)
            v = _make(spec)(x, t)
            v.backward()
            assert torch.isfinite(v.detach()) and bool(torch.isfinite(x.grad).all()), f"C={c}, scale {s}"


@check()
def check_gradcheck(spec: Spec[Any]) -> None:
    """torch.autograd.gradcheck in float64, multi-class and binary."""
    for c in (3, 1):
        x, t = _inputs(c, seed=2, scale=1.0)
        x.requires_grad_(True)
        loss = _make(spec)
        assert torch.autograd.gradcheck(lambda a, f=loss, y=t: f(a, y), (x,), eps=1e-6, atol=1e-6)


@check()
def check_half_precision_gradient(spec: Spec[Any]) -> None:
    """bf16/fp16 logits: a loss of their dtype, finite non-zero gradient, close to float32."""
    x32, t = _inputs(3, seed=3, dtype=torch.float32, scale=1.0)
    ref = float(_make(spec)(x32, t))
    for dt in (torch.bfloat16, torch.float16):
        x = x32.to(dt).requires_grad_(True)
        v = _make(spec)(x, t)
        assert v.dtype == dt
        v.backward()
        assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
        assert abs(float(v.detach()) - ref) < 0.02


@check()
def check_bad_inputs(spec: Spec[Any]) -> None:
    """Wrong shapes, float labels with C > 1, labels out of range, non-0/1 masks and bad smooth raise."""
    import pytest

    loss = _make(spec)
    x, t = _inputs(3)
    for bad, exc in (((x[:, :, :5], t), ValueError), ((x, t.float()), TypeError), ((x, t + 3), ValueError),
                     ((x[:, 0], t), ValueError), ((x[:, :1], t.float() * 2), ValueError)):
        with pytest.raises(exc):
            loss(*bad)
    with pytest.raises(ValueError, match="smooth"):
        _make(spec, smooth=0.0)
