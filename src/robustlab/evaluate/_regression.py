r"""Adversarial robustness of regression models: PGD on the squared error, worst-case MSE under an ε-ball.

The attack maximises each sample's squared error :math:`(f(x') - y)^2` over :math:`\|x' - x\|_p \le \varepsilon`
(p = ∞ or 2) by projected gradient ascent (Madry et al. 2018, arXiv:1706.06083) with a random start; the inputs
stay in ``clip``. :func:`regression_robustness` reports the clean and adversarial MSE/MAE and the mean output
change; ``robustlab.certify.certified_worst_mse`` is the matching certified upper bound (IBP/CROWN).

Example::

    res = regression_robustness(model, d.x_test, d.y_test, eps=0.05)   # {"mse", "adv_mse", "adv_mae", ...}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError, check_in_range, check_int, check_option

__all__ = ["REGRESSION_ATTACK_NORMS", "regression_pgd", "regression_robustness"]

REGRESSION_ATTACK_NORMS = ("linf", "l2")


def _pred(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.dim() not in (1, 2) or out.reshape(out.shape[0], -1).shape[1] != 1:
        raise InvalidParameterError(f"regression_pgd needs a model with one output per sample; it gave shape "
                                    f"{tuple(out.shape)}.")
    return out.reshape(-1).float()


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1)
    scale = (eps / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return (flat * scale[:, None]).view_as(delta)


def regression_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   steps: int = 20, step_size: float | None = None, random_start: bool = True,
                   clip: tuple[float, float] | None = (0.0, 1.0),
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``x_adv`` maximising ``(f(x_adv) - y)^2`` per sample within the ``norm`` ε-ball around ``x`` (PGD).

    ``step_size`` defaults to ``2.5 * eps / steps``; ``random_start`` draws a uniform start in the box (linf) or
    a uniform direction at a uniform radius (l2) from ``generator``. The model runs in eval mode, float32.
    """
    owner = "regression_pgd"
    check_option(norm, "norm", REGRESSION_ATTACK_NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, None, owner=owner)
    check_int(steps, "steps", 1, None, owner=owner)
    if step_size is not None:
        check_in_range(step_size, "step_size", 0.0, None, closed="neither", owner=owner)
    if x.shape[0] != y.reshape(-1).shape[0]:
        raise InvalidParameterError(f"{owner}: x has {x.shape[0]} samples and y {y.reshape(-1).shape[0]} targets.")
    eps = float(eps)
    if eps == 0:
        return x.detach().clone()
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    x = x.detach().float()
    y = y.detach().reshape(-1).float().to(x.device)
    was = model.training
    model.eval()
    try:
        delta = torch.zeros_like(x)
        if random_start:
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            if norm == "linf":
                delta = (2 * u - 1) * eps
            else:
                d = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device).flatten(1)
                r = torch.rand(x.shape[0], generator=generator, dtype=x.dtype).to(x.device)
                delta = (d / d.norm(dim=1, keepdim=True).clamp_min(1e-12) * (eps * r)[:, None]).view_as(x)
        for _ in range(steps):
            xa = x + delta
            if clip is not None:
                xa = xa.clamp(*clip)
            xa.requires_grad_(True)
            loss = (_pred(model, xa) - y).pow(2).sum()
            (g,) = torch.autograd.grad(loss, xa)
            if norm == "linf":
                step = g.sign()
            else:
                gf = g.flatten(1)
                step = (gf / gf.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(g)
            delta = _project((xa.detach() - x) + alpha * step, eps, norm)
        xa = x + delta
        return (xa.clamp(*clip) if clip is not None else xa).detach()
    finally:
        model.train(was)


def regression_robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                          steps: int = 20, batch_size: int = 512, seed: int = 0, **pgd_kw: Any) -> dict[str, float]:
    """Clean and worst-case (PGD, :func:`regression_pgd`) errors of a one-output ``model`` on ``(x, y)``.

    Returns ``mse``, ``mae`` (clean), ``adv_mse``, ``adv_mae`` (attacked) and ``mean_change``, the mean
    ``|f(x_adv) - f(x)|``. Batched; the random starts come from a generator seeded with ``seed``.
    """
    check_int(batch_size, "batch_size", 1, None, owner="regression_robustness")
    gen = torch.Generator().manual_seed(int(seed))
    y = y.reshape(-1).float()
    dev = next((p.device for p in model.parameters()), x.device)
    clean, adv = [], []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        xa = regression_pgd(model, xb, yb, eps=eps, norm=norm, steps=steps, generator=gen, **pgd_kw)
        was = model.training
        model.eval()
        with torch.no_grad():
            clean.append(_pred(model, xb).cpu())
            adv.append(_pred(model, xa).cpu())
        model.train(was)
    p, pa = torch.cat(clean), torch.cat(adv)
    return {"mse": float((p - y).pow(2).mean()), "mae": float((p - y).abs().mean()),
            "adv_mse": float((pa - y).pow(2).mean()), "adv_mae": float((pa - y).abs().mean()),
            "mean_change": float((pa - p).abs().mean())}
