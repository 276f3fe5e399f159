"""Conformance checks run on every registered regression loss (``robustlab.losses.REGRESSION_LOSSES``).

Each check builds the loss from ``spec.example_kwargs`` on tiny seeded predictions/targets (N=8). Per-sample
checks skip losses tagged ``batch`` (``cs_divergence``: no per-sample form).
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from .._registry import Spec
from . import check

__all__ = ["check_bad_inputs", "check_closed_form", "check_finite_extreme_residuals", "check_gradcheck",
           "check_half_precision_gradient", "check_pickle", "check_reductions_agree", "check_zero_at_target"]

N = 8


def _data(seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(N, generator=g, dtype=dtype), scale * torch.randn(N, generator=g, dtype=dtype)


def _make(spec: Spec[Any], **kw: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **kw})


@check(excludes=("batch",))
def check_reductions_agree(spec: Spec[Any]) -> None:
    """'none' is (N,) in the predictions' dtype; 'mean'/'sum' are its mean/sum; the default is 'mean'; (N, 1) = (N,)."""
    p, y = _data()
    per = _make(spec, reduction="none")(p, y)
    assert per.shape == (N,) and per.dtype == p.dtype, f"reduction='none' gave {tuple(per.shape)} {per.dtype}"
    assert torch.allclose(_make(spec, reduction="mean")(p, y), per.mean())
    assert torch.allclose(_make(spec, reduction="sum")(p, y), per.sum())
    assert torch.allclose(_make(spec)(p, y), per.mean())
    assert torch.allclose(_make(spec)(p[:, None], y), per.mean()), "pred (N, 1) differs from (N,)"


@check(excludes=("batch",))
def check_closed_form(spec: Spec[Any]) -> None:
    """The per-sample value equals the closed form of the residual, written independently in float64."""
    import math

    p, y = _data(seed=1, scale=3.0)
    r = (y - p).tolist()
    kw = {**spec.example_kwargs}
    forms = {
        "mse": lambda v: v * v,
        "mae": lambda v: abs(v),
        "huber": lambda v: 0.5 * v * v if abs(v) <= kw["delta"] else kw["delta"] * (abs(v) - 0.5 * kw["delta"]),
        "pseudo_huber": lambda v: kw["delta"] ** 2 * (math.sqrt(1 + (v / kw["delta"]) ** 2) - 1),
        "quantile": lambda v: max(kw["tau"] * v, (kw["tau"] - 1) * v),
        "log_cosh": lambda v: math.log(math.cosh(v)),
        "cauchy": lambda v: 0.5 * kw["scale"] ** 2 * math.log(1 + (v / kw["scale"]) ** 2),
    }
    assert spec.name in forms, f"no closed form declared for the regression loss '{spec.name}'; add it here"
    got = _make(spec, reduction="none")(p, y)
    want = torch.tensor([forms[spec.name](v) for v in r], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), f"{got.tolist()} != {want.tolist()}"


@check()
def check_zero_at_target(spec: Spec[Any]) -> None:
    """A perfect prediction has loss 0 (within rounding)."""
    _, y = _data(seed=2)
    v = _make(spec)(y.clone(), y)
    assert abs(float(v)) < 1e-12, f"loss at pred == target is {float(v)}"


@check()
def check_finite_extreme_residuals(spec: Spec[Any]) -> None:
    """Finite value and gradient at residuals of +-1e4, +-1e8 and +-1e30 in float32 (log_cosh/pseudo_huber stable)."""
    for scale in (1e4, 1e8, 1e30):
        p = torch.tensor([scale, -scale, 0.5, -0.25, scale, 0.0, 1.0, -scale], dtype=torch.float32,
                         requires_grad=True)
        y = torch.tensor([-scale, scale, 0.0, 0.0, 0.0, scale, 1.0, 0.0])
        loss = _make(spec)(p, y)
        if spec.name == "mse" and scale > 1e18:
            continue  # a squared 1e30 residual overflows float32: squared error is unbounded by definition
        assert torch.isfinite(loss), f"loss not finite at residual scale {scale}: {float(loss.detach())}"
        loss.backward()
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), f"non-finite gradient at scale {scale}"


@check()
def check_gradcheck(spec: Spec[Any]) -> None:
    """torch.autograd.gradcheck in float64 (residuals kept away from the kinks of mae/huber/quantile)."""
    p, y = _data(seed=3)
    p = (p + 0.05 * torch.sign(p - y)).detach().requires_grad_(True)  # no residual exactly at a kink
    loss = _make(spec)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (p,), eps=1e-6, atol=1e-5)


@check()
def check_half_precision_gradient(spec: Spec[Any]) -> None:
    """bf16 and fp16 predictions give a loss of their dtype and a non-zero finite gradient, close to float32's."""
    p32, y = _data(seed=4, dtype=torch.float32, scale=1.0)
    ref = _make(spec)(p32, y)
    for dt in (torch.bfloat16, torch.float16):
        p = p32.to(dt).requires_grad_(True)
        v = _make(spec)(p, y)
        assert v.dtype == dt, f"{dt} predictions gave a {v.dtype} loss"
        v.backward()
        g = p.grad
        assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0, f"{dt} gradient lost"
        assert abs(float(v.detach()) - float(ref)) <= 0.05 * abs(float(ref)) + 1e-2, f"{dt} value {float(v.detach())} vs fp32 {float(ref)}"


@check()
def check_bad_inputs(spec: Spec[Any]) -> None:
    """Integer targets, mismatched lengths and (N, 2) predictions raise a TypeError/ValueError naming them."""
    import pytest

    p, y = _data()
    loss = _make(spec)
    with pytest.raises(TypeError, match="target"):
        loss(p, y.long())
    with pytest.raises(ValueError, match="target"):
        loss(p, y[:-1])
    with pytest.raises(ValueError, match="pred"):
        loss(torch.stack([p, p], 1), y)
    with pytest.raises(ValueError, match="reduction"):
        _make(spec, reduction="median")


@check()
def check_pickle(spec: Spec[Any]) -> None:
    """The module pickles and the copy computes the same value; repr shows the hyper-parameters."""
    p, y = _data(seed=5)
    loss = _make(spec)
    copy = pickle.loads(pickle.dumps(loss))
    assert torch.equal(loss(p, y), copy(p, y))
    for k, v in spec.example_kwargs.items():
        assert f"{k}={v!r}" in repr(loss), f"repr {loss!r} does not show {k}={v!r}"
