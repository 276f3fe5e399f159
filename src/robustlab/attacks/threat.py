"""The threat model, written once: norms, projection onto the ε-ball ∩ [0, 1], random starts and the PGD loop.

Attacks (:class:`~robustlab.attacks.PGD`), adversarial training objectives (their inner maximisation),
robustness curves (per-example ε bisection) and defences all perturb inputs through this module, so one
threat model means one piece of arithmetic. ``eps`` and ``step_size`` are a float or a per-example (N,) tensor
everywhere; inputs live in ``[0, 1]``.

Projection (:func:`project`): L∞ is an exact box clip to ``[max(x−ε, 0), min(x+ε, 1)]``; L2 is a radial
rescale onto the ball followed by the [0, 1] clip (which, since ``x ∈ [0, 1]``, only moves coordinates toward
``x`` and so stays in the ball). PGD (Madry et al. 2018, arXiv:1706.06083)::

    x ← Π_{B_ε(x₀) ∩ [0,1]}(x + α·sign(∇ₓ c))        (L∞)
    x ← Π_{B_ε(x₀) ∩ [0,1]}(x + α·∇ₓ c / ‖∇ₓ c‖₂)    (L2)

Example::

    x_adv = threat.pgd(model, x, threat.ce_sum(y), eps=8 / 255, step_size=2 / 255, steps=10)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import InvalidParameterError, check_in_range, check_int, check_option

__all__ = [
    "BOUND_NORMS", "NORMS", "STARTS", "Criterion", "Radius", "ascent_step_", "batch_view", "ce_sum", "eval_mode", "l2_norm", "pgd",
    "project", "random_start", "rand",
]

#: The supported norms of the perturbation ball.
NORMS = ("linf", "l2")
#: The norms the certificates bound (``certify.ibp``): the attacks' norms plus the L1 ball.
BOUND_NORMS = (*NORMS, "l1")
#: Random starts: uniform in the ball (Madry et al.), ``x + 0.001·N(0, I)`` (TRADES / MART), or none.
STARTS = ("uniform", "normal", "none")

#: A float or a per-example (N,) tensor.
Radius = float | torch.Tensor
#: Maps logits (N, C) to a scalar that is a *sum* of per-example terms (each example's gradient is its own).
Criterion = Callable[[torch.Tensor], torch.Tensor]


def batch_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example (N,) tensor to broadcast against ``x`` (N, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _b(r: Radius, x: torch.Tensor) -> Radius:
    """A radius as it broadcasts against ``x``: floats unchanged, (N,) tensors viewed as (N, 1, ...)."""
    return batch_view(r, x) if isinstance(r, torch.Tensor) else r


def l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of a batch, shape (N,)."""
    return v.flatten(1).norm(p=2, dim=1)


def ce_sum(y: torch.Tensor) -> Criterion:
    """The criterion ``logits -> Σᵢ CE(logitsᵢ, yᵢ)`` (untargeted cross-entropy ascent)."""
    return lambda logits: F.cross_entropy(logits, y, reduction="sum")


def rand(shape: Any, generator: torch.Generator | None, like: torch.Tensor, *, normal: bool = False) -> torch.Tensor:
    """``torch.rand``/``randn`` drawn on the generator's device, returned on ``like``'s device and dtype."""
    dev = generator.device if generator is not None else like.device
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def _check_radius(r: Radius, name: str, x: torch.Tensor, owner: str) -> None:
    """A float ≥ 0, or an (N,) tensor matching ``x``'s batch (values are not read: no host sync)."""
    if isinstance(r, torch.Tensor):
        if r.shape != (x.shape[0],):
            raise InvalidParameterError(f"The '{name}' parameter of {owner} must be a float or a per-example tensor "
                                        f"of shape ({x.shape[0]},). Got a tensor of shape {tuple(r.shape)}.")
    else:
        check_in_range(r, name, 0.0, None, owner=owner)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Radius, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto ``{‖x_adv − x‖_p ≤ eps} ∩ [0, 1]^d`` (out of place); ``eps`` float or (N,)."""
    check_option(norm, "norm", NORMS, owner="threat.project")
    eb = _b(eps, x)
    if norm == "linf":
        return torch.min(torch.max(x_adv, x - eb), x + eb).clamp_(0.0, 1.0)
    if not isinstance(eps, torch.Tensor) and math.isinf(eps):
        return x_adv.clamp(0.0, 1.0)
    delta = x_adv - x
    n = l2_norm(delta)
    factor = torch.where(n > eps, eps / (n + 1e-12), torch.ones_like(n))
    return (x + delta * batch_view(factor, x)).clamp_(0.0, 1.0)


def random_start(x: torch.Tensor, eps: Radius, norm: str, generator: torch.Generator | None,
                 kind: str = "uniform") -> torch.Tensor:
    """A start point around ``x`` inside the ball ∩ [0, 1] (a new tensor).

    ``kind="uniform"``: uniform in the L∞ box, or uniform in the L2 ball (Gaussian direction, radius
    ``ε·U^(1/d)``); ``"normal"``: ``x + 0.001·N(0, I)`` projected (TRADES, MART); ``"none"``: ``x``.
    """
    check_option(kind, "kind", STARTS, owner="threat.random_start")
    check_option(norm, "norm", NORMS, owner="threat.random_start")
    if kind == "none":
        return x.clone()
    if kind == "normal":
        return project(x + 0.001 * rand(x.shape, generator, x, normal=True), x, eps, norm)
    eb = _b(eps, x)
    if norm == "linf":
        u = rand(x.shape, generator, x)
        return (x + eb * (2 * u - 1)).clamp_(0.0, 1.0)
    d = x[0].numel()
    g = rand(x.shape, generator, x, normal=True)
    r = rand(x.shape[0], generator, x).pow(1.0 / d) * eps
    g = g * batch_view(r / (l2_norm(g) + 1e-12), x)
    return (x + g).clamp_(0.0, 1.0)


def ascent_step_(x_adv: torch.Tensor, g: torch.Tensor, step_size: Radius, norm: str) -> None:
    """In place: ``x_adv += α·sign(g)`` (L∞) or ``x_adv += α·g/‖g‖₂`` (L2); ``g`` is overwritten."""
    if norm == "linf":
        if isinstance(step_size, torch.Tensor):
            x_adv.add_(g.sign_().mul_(batch_view(step_size, g)))
        else:
            x_adv.add_(g.sign_(), alpha=step_size)
    else:
        g.mul_(batch_view(step_size / (l2_norm(g) + 1e-12), g))
        x_adv.add_(g)


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode (BatchNorm statistics neither used from the batch nor updated); restore after."""
    if not isinstance(model, nn.Module):
        yield
        return
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def pgd(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, criterion: Criterion, *, eps: Radius,
        step_size: Radius, steps: int, norm: str = "linf", start: str = "uniform",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``criterion(model(x'))`` over ``x' ∈ B_ε(x) ∩ [0, 1]`` by ``steps`` projected ascent steps.

    ``eps``/``step_size``: floats or per-example (N,) tensors; ``start`` in :data:`STARTS` (random draws
    from ``generator``). The model runs in eval mode (its mode is restored) and only the input is
    differentiated (``torch.autograd.grad``; parameter ``.grad`` is never touched). The L∞ box is computed
    once; each step is one in-place add and clip on one buffer, with no host syncs. Returns the last
    iterate, detached; ``eps == 0`` returns ``x`` without a forward pass or a random draw. Bad options (norm,
    start, steps, a negative or mis-shaped radius) are an :class:`~robustlab._validation.InvalidParameterError`.
    """
    owner = "threat.pgd"
    check_option(norm, "norm", NORMS, owner=owner)
    check_option(start, "start", STARTS, owner=owner)
    check_int(steps, "steps", 0, None, owner=owner)
    _check_radius(eps, "eps", x, owner)
    _check_radius(step_size, "step_size", x, owner)
    x = x.detach()
    if not isinstance(eps, torch.Tensor) and eps == 0:
        return x.clone()
    with eval_mode(model), torch.enable_grad():
        x_adv = random_start(x, eps, norm, generator, start)
        if norm == "linf":
            eb = _b(eps, x)
            lo = (x - eb).clamp_(min=0.0)
            hi = (x + eb).clamp_(max=1.0)
        x_adv.requires_grad_(True)
        for _ in range(steps):
            (g,) = torch.autograd.grad(criterion(model(x_adv)), x_adv)
            with torch.no_grad():
                ascent_step_(x_adv, g, step_size, norm)
                if norm == "linf":
                    x_adv.clamp_(min=lo, max=hi)
                else:
                    delta = x_adv - x
                    n = l2_norm(delta)
                    delta.mul_(batch_view(torch.clamp(eps / (n + 1e-12), max=1.0), delta))
                    x_adv.copy_(delta.add_(x)).clamp_(0.0, 1.0)
    return x_adv.detach()
