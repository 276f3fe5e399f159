"""Lipschitz-certificate soundness for every registered model (``models.MODELS``).

Every model either gets a Lipschitz bound from :func:`robustlab.certify.lipschitz_bound` or is refused with a
TypeError naming the layer. When it gets one, sampled pairs never violate ``‖f(x) − f(x')‖ ≤ L‖x − x'‖`` and
no point found inside a certified radius (random directions on the sphere, and a PGD-L2 search for a
label flip) changes the prediction. Models tagged ``lipschitz`` must declare ``lipschitz_constant()``, be
certified "by_construction", and have measured singular values ≤ 1 (orthogonality diagnostic).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._registry import Spec
from . import check

__all__ = ["pgd_l2_flip", "sampled_lipschitz_ratio"]


def _model(spec: Spec[Any]) -> nn.Module:
    torch.manual_seed(0)
    model = spec.create(**spec.example_kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial eval-mode BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)  # type: ignore[union-attr]
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def sampled_lipschitz_ratio(model: nn.Module, x: torch.Tensor, k: int = 8, scales: tuple[float, ...] = (1e-2, 0.1, 1.0),
                            generator: torch.Generator | None = None) -> float:
    """Largest ``‖f(x) − f(x')‖ / ‖x − x'‖`` over ``k`` random directions per point at each distance in ``scales``."""
    worst = 0.0
    with torch.no_grad():
        fx = model(x).double()
        for s in scales:
            for _ in range(k):
                d = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                d = d * (s / d.flatten(1).norm(dim=1)).view(-1, *[1] * (x.dim() - 1))
                ratio = (model(x + d).double() - fx).flatten(1).norm(dim=1) / d.flatten(1).double().norm(dim=1)
                worst = max(worst, float(ratio.max()))
    return worst


def pgd_l2_flip(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """PGD-L2 inside the per-point ball ``radius`` maximising ``max_{j≠y} f_j − f_y``; returns that margin (N,)."""
    r = radius.to(x.dtype).clamp_min(0).view(-1, *[1] * (x.dim() - 1))
    delta = torch.zeros_like(x, requires_grad=True)
    best = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    for _ in range(steps):
        z = model(x + delta)
        other = z.scatter(1, y[:, None], float("-inf")).amax(1)
        gap = other - z.gather(1, y[:, None]).squeeze(1)
        best = torch.maximum(best, gap.detach().double())
        (g,) = torch.autograd.grad(gap.sum(), delta)
        with torch.no_grad():
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(r)
            delta += 0.25 * r * g
            n = delta.flatten(1).norm(dim=1).view_as(r)
            delta *= torch.where(n > r, r / n.clamp_min(1e-12), torch.ones_like(n))
    return best


@check()
def check_lipschitz_certificate_sound(spec: Spec[Any]) -> None:
    """A Lipschitz bound is an upper bound on sampled ratios and certified radii hold against random + PGD-L2."""
    from ..certify import lipschitz, lipschitz_bound

    model = _model(spec)
    shape = tuple(spec.example_kwargs["input_shape"])
    try:
        bound = lipschitz_bound(model, shape)
    except TypeError as e:
        assert "layer" in str(e) and "Supported" in str(e), f"{spec.name}: unclear refusal {e}"
        return
    g = torch.Generator().manual_seed(3)
    x = torch.rand((6, *shape), generator=g)
    ratio = sampled_lipschitz_ratio(model, x, generator=g)
    assert ratio <= bound.value * (1 + 1e-4), f"{spec.name}: sampled ratio {ratio:.6g} > bound {bound.value:.6g}"
    with torch.no_grad():
        out = model(x)
    if out.dim() != 2:
        return
    y = out.argmax(1)  # every point correctly classified: its radius is the distance to the decision boundary
    cert = lipschitz(model, x, y, bound=bound)
    radius = cert.radius.clamp_min(0).to(x.dtype) * 0.999
    for _ in range(4):
        d = torch.randn(x.shape, generator=g)
        d = d * (radius / d.flatten(1).norm(dim=1)).view(-1, *[1] * (x.dim() - 1))
        with torch.no_grad():
            assert torch.equal(model(x + d).argmax(1), y), f"{spec.name}: a random point inside the radius flips"
    gap = pgd_l2_flip(model, x, y, radius)
    assert bool((gap <= 1e-6 * (1 + out.abs().amax(1).double())).all()), f"{spec.name}: PGD-L2 flips inside the radius"


@check(requires={"lipschitz"})
def check_lipschitz_by_construction(spec: Spec[Any]) -> None:
    """``lipschitz_constant()`` exists, the certificate uses it, and every layer's measured σ_max is ≤ it."""
    from ..certify import lipschitz_bound, orthogonality

    model = _model(spec)
    shape = tuple(spec.example_kwargs["input_shape"])
    declared = getattr(model, "lipschitz_constant", None)
    assert callable(declared), f"{spec.name} has no lipschitz_constant()"
    bound = lipschitz_bound(model, shape)
    assert bound.method == "by_construction" and bound.value == float(declared())
    spectra = orthogonality(model, shape)
    assert spectra, f"{spec.name}: no Linear/Conv2d layer measured"
    for s in spectra:
        assert s.sigma_max <= 1 + 1e-5, f"{spec.name}: layer {s.name} has σ_max {s.sigma_max}"
        assert s.deviation <= 1e-4, f"{spec.name}: layer {s.name} is not orthogonal (‖WᵀW − I‖ = {s.deviation:.2e})"
