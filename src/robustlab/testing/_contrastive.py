"""Conformance checks run on every registered contrastive loss (``robustlab.losses.CONTRASTIVE_LOSSES``).

Each check builds the loss from ``spec.example_kwargs`` on tiny seeded views (N=6, D=4). Losses with
``needs_index`` get ``index=arange(N)``; every comparison runs on fresh copies, so per-sample state
(moving averages, temperatures) is the same on both sides.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .._registry import Spec
from .._validation import InvalidParameterError
from . import check

__all__ = ["check_bad_hyperparameters", "check_finite_extreme_similarities", "check_gradcheck",
           "check_half_precision_gradient", "check_reductions_agree", "check_shapes_and_bad_views",
           "check_stateful_needs_index", "check_symmetric_in_views"]

N, D = 6, 4


def _views(seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = scale * torch.randn(N, D, generator=g, dtype=dtype)
    return z1, z1 + 0.3 * scale * torch.randn(N, D, generator=g, dtype=dtype)


def _make(spec: Spec[Any], **kw: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **kw})


def _call(loss: Any, z1: torch.Tensor, z2: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    m = copy.deepcopy(loss)
    kw = {"index": torch.arange(z1.shape[0])} if getattr(m, "needs_index", False) else {}
    return m.per_sample(z1, z2, **kw) if per_sample else m(z1, z2, **kw)


@check()
def check_reductions_agree(spec: Spec[Any]) -> None:
    """'none' is (N,) of the views' dtype; 'mean'/'sum' equal its mean/sum; the default is 'mean'."""
    z1, z2 = _views()
    per = _call(_make(spec, reduction="none"), z1, z2)
    assert per.shape == (N,) and per.dtype == z1.dtype, f"reduction='none' gave {tuple(per.shape)} {per.dtype}"
    assert torch.allclose(_call(_make(spec, reduction="mean"), z1, z2), per.mean())
    assert torch.allclose(_call(_make(spec, reduction="sum"), z1, z2), per.sum())
    assert torch.allclose(_call(_make(spec), z1, z2), per.mean())


@check()
def check_symmetric_in_views(spec: Spec[Any]) -> None:
    """Swapping the two views gives the same per-sample loss (both views are anchors)."""
    z1, z2 = _views(seed=1)
    a, b = _call(_make(spec), z1, z2, True), _call(_make(spec), z2, z1, True)
    assert torch.allclose(a, b, atol=1e-12), f"{a.tolist()} != {b.tolist()}"


@check()
def check_finite_extreme_similarities(spec: Spec[Any]) -> None:
    """Finite values and gradients for identical, opposite, zero and huge embeddings, in float32."""
    base = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(N, 1)
    cases = [(base, base.clone()), (base, -base), (torch.zeros(N, D), torch.zeros(N, D)),
             tuple(v.float() for v in _views(scale=1e4)), (1e-30 * base, base)]
    for z1, z2 in cases:
        z1 = z1.clone().requires_grad_(True)
        value = _call(_make(spec), z1, z2)
        value.backward()
        assert torch.isfinite(value), f"non-finite value {value} for views {z1[0].tolist()}, {z2[0].tolist()}"
        assert z1.grad is not None and torch.isfinite(z1.grad).all(), "non-finite gradient"


@check()
def check_gradcheck(spec: Spec[Any]) -> None:
    """The gradient matches finite differences (float64; stateful losses with gamma=1: the mini-batch loss)."""
    kw = {"gamma": 1.0} if "gamma" in spec.example_kwargs else {}
    loss = _make(spec, **kw)
    z1, z2 = _views(seed=2)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: _call(loss, a, b), (z1, z2), eps=1e-6, atol=1e-5)


@check()
def check_half_precision_gradient(spec: Spec[Any]) -> None:
    """bf16/fp16 views: value in the views' dtype, close to float32, non-zero finite gradient."""
    z1, z2 = _views(seed=3, dtype=torch.float32)
    ref = _call(_make(spec), z1, z2)
    for dt in (torch.bfloat16, torch.float16):
        a = z1.to(dt).requires_grad_(True)
        v = _call(_make(spec), a, z2.to(dt))
        assert v.dtype == dt, f"{dt}: value dtype {v.dtype}"
        val, r = float(v.detach()), float(ref)
        assert abs(val - r) < 0.05 * max(1.0, abs(r)), f"{dt}: {val} vs {r}"
        v.backward()
        assert a.grad is not None, f"{dt}: no gradient"
        assert torch.isfinite(a.grad.float()).all() and float(a.grad.float().abs().sum()) > 0, f"{dt}: gradient lost"


@check()
def check_shapes_and_bad_views(spec: Spec[Any]) -> None:
    """Mismatched shapes, 1-D views, integer views and a single-sample batch are refused by name."""
    loss = _make(spec)
    z1, z2 = _views()
    bad = [(z1, z2[:-1], "same shape"), (z1[0], z2[0], "shape \\(N, D\\)"), (z1.long(), z2, "floating-point"),
           (z1[:1], z2[:1], "at least 2")]
    import re

    for a, b, msg in bad:
        try:
            _call(loss, a, b)
        except (ValueError, TypeError) as e:
            assert re.search(msg, str(e)), f"error {e!r} does not say {msg!r}"
        else:
            raise AssertionError(f"views of shapes {tuple(a.shape)}, {tuple(b.shape)} were accepted")


@check()
def check_bad_hyperparameters(spec: Spec[Any]) -> None:
    """A non-positive temperature / out-of-range gamma is refused naming the parameter; bad reduction too."""
    probes = {"temperature": 0.0, "gamma": 0.0, "tau_init": -1.0, "rho": -1.0}
    for name, value in probes.items():
        import inspect

        if name not in inspect.signature(spec.factory).parameters:
            continue
        try:
            _make(spec, **{name: value})
        except InvalidParameterError as e:
            assert f"'{name}'" in str(e), f"error for {name}={value} does not name it: {e}"
        else:
            raise AssertionError(f"{spec.name} accepted {name}={value}")
    try:
        _make(spec, reduction="avg")
    except ValueError as e:
        assert "reduction" in str(e)
    else:
        raise AssertionError("reduction='avg' was accepted")


@check(requires={"stateful"})
def check_stateful_needs_index(spec: Spec[Any]) -> None:
    """Without ``index`` the error says to pass it; out-of-range indices are refused; eval mode writes no state."""
    loss = _make(spec)
    z1, z2 = _views()
    assert loss.needs_index
    for bad, msg in ((None, "index=idx"), (torch.arange(N) + 100, "outside")):
        try:
            loss(z1, z2, index=bad)
        except (ValueError, TypeError) as e:
            assert msg in str(e), f"{e!r} lacks {msg!r}"
        else:
            raise AssertionError(f"index={bad} was accepted")
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    loss.eval()
    loss(z1, z2, index=torch.arange(N))
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items()), "eval mode wrote the state"
    loss.train()
    loss(z1, z2, index=torch.arange(N))
    assert any(not torch.equal(before[k], v) for k, v in loss.state_dict().items()), "training mode kept no state"
