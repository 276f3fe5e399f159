"""Targeted Fast Adaptive Boundary attack (FAB-T), L∞ and L2.

Croce & Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack",
ICML 2020, arXiv:1907.02044.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_in_range, check_int
from ._base import Attack, _view_b, rand, register_attack

__all__ = ["FABT", "box_projection"]


def box_projection(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str, iters: int = 30) -> torch.Tensor:
    """Minimal-norm ``d`` (rows of (M, D)) with ``w·d = c`` and ``p + d ∈ [0, 1]``, by bisection.

    L2: ``d = clip(λw, −p, 1 − p)`` (the KKT form) with λ solving the monotone equation ``w·d(λ) = c``.
    L∞: the smallest ``t`` such that ``c`` is reachable with ``|d_i| ≤ t`` inside the box; ``d`` is the
    extreme point at that ``t`` (``w·d`` ≈ ``c``). When ``c`` cannot be reached inside the box, the extreme
    point of the whole box is returned (best effort, as the linearisation is only local anyway).
    """
    lo, hi = -p, 1 - p
    s = torch.sign(c)[:, None]
    target = c.abs()
    if norm == "l2":
        # d(μ) = clip(s·μ·w, lo, hi); s·w·d(μ) is non-decreasing in μ ≥ 0 and must reach |c|
        def reach(mu: torch.Tensor) -> torch.Tensor:
            return torch.clamp(s * mu[:, None] * w, lo, hi)

        mu_lo = torch.zeros_like(c)
        mu_hi = torch.ones_like(c) / (w.square().sum(1) + 1e-12) * target  # exact without the box
        for _ in range(60):  # grow the bracket until reachable (or the box saturates)
            grow = (s.squeeze(1) * (w * reach(mu_hi)).sum(1) < target) & (mu_hi < 1e12)
            if not bool(grow.any()):
                break
            mu_hi = torch.where(grow, mu_hi * 4, mu_hi)
        for _ in range(iters):
            mid = (mu_lo + mu_hi) / 2
            up = s.squeeze(1) * (w * reach(mid)).sum(1) < target
            mu_lo = torch.where(up, mid, mu_lo)
            mu_hi = torch.where(up, mu_hi, mid)
        return reach(mu_hi)
    # L∞: at radius t coordinate i moves min(room_i, t) in the direction sign(s·w_i)
    ws = w * s
    room = torch.where(ws >= 0, hi, -lo)
    direction = torch.sign(ws)
    t_lo = torch.zeros_like(c)
    t_hi = torch.ones_like(c)
    for _ in range(iters):
        mid = (t_lo + t_hi) / 2
        up = (ws.abs() * torch.minimum(room, mid[:, None])).sum(1) < target
        t_lo = torch.where(up, mid, t_lo)
        t_hi = torch.where(up, t_hi, mid)
    return direction * torch.minimum(room, t_hi[:, None])


def _dual_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    return v.abs().sum(1) if norm == "linf" else v.norm(dim=1)


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    return v.abs().amax(1) if norm == "linf" else v.norm(dim=1)


def fab_targeted_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, norm: str, steps: int,
                     alpha_max: float, eta: float, beta: float, start: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run toward targets ``t``; returns (smallest adversarial point found, its norm; ``inf`` if none).

    Each step linearises ``z_t − z_y`` at ``x1``, projects ``x1`` and ``x`` onto the linearised boundary
    (inside [0, 1]), moves to the convex combination ``(1−α)(x1 + η d1) + α(x + η d2)`` with
    ``α = min(‖d1‖/(‖d1‖ + ‖d2‖), α_max)``, and after a success backs off toward ``x`` by ``β``.
    """
    b = x.shape[0]
    x_flat = x.flatten(1)
    x1 = x_flat.clone() if start is None else start.flatten(1).clone()
    best = x_flat.clone()
    best_norm = torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)
    shape = x.shape
    for _ in range(steps):
        xr = x1.view(shape).requires_grad_(True)
        logits = model(xr)
        df = logits.gather(1, t[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
        (dg,) = torch.autograd.grad(df.sum(), xr)
        with torch.no_grad():
            w = dg.flatten(1)
            x1 = x1.detach()
            c1 = -df.detach()  # w·d1 = −df(x1): reach the linearised boundary from x1
            c0 = -df.detach() + (w * (x1 - x_flat)).sum(1)  # from x: w·(x + d2 − x1) = −df(x1)
            d = box_projection(torch.cat([x1, x_flat]), torch.cat([w, w]), torch.cat([c1, c0]), norm)
            d1, d2 = d[:b], d[b:]
            a = _norm(d, norm).clamp(min=1e-8)
            a1, a2 = a[:b], a[b:]
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x_flat + d2 * eta) * alpha).clamp(0.0, 1.0)
            adv = model(x1.view(shape)).argmax(1) != y
            dist = _norm(x1 - x_flat, norm)
            better = adv & (dist < best_norm)
            best = torch.where(better[:, None], x1, best)
            best_norm = torch.where(better, dist, best_norm)
            x1 = torch.where(adv[:, None], x_flat + (x1 - x_flat) * beta, x1)
    return best.view(shape), best_norm


@register_attack("fab_t", tags={"linf", "l2", "white_box", "gradient", "minimal_norm"},
                 reference="Croce & Hein 2020, arXiv:1907.02044",
                 example_kwargs={"eps": 0.1, "steps": 10, "n_target_classes": 3})
class FABT(Attack):
    """Targeted FAB: minimal-norm boundary search toward each of the ``n_target_classes`` runner-up classes.

    Each target run (``steps`` iterations, ``alpha_max`` 0.1, ``eta`` 1.05, ``beta`` 0.9) works on the points
    still correctly classified within ε; a point counts as broken only when the adversarial example found
    lies within ε (otherwise ``x`` is returned for it). ``restarts`` > 1 adds random starts at half the
    radius. Croce & Hein, ICML 2020, arXiv:1907.02044.
    """

    name = "fab_t"
    budget_param = "steps"
    supports_targets = False

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, n_target_classes: int = 9,
                 restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.steps = check_int(steps, "steps", 1, None, owner=self.name)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", 1, None, owner=self.name)
        self.restarts = check_int(restarts, "restarts", 1, None, owner=self.name)
        self.alpha_max = float(check_in_range(alpha_max, "alpha_max", 0.0, 1.0, owner=self.name))
        self.eta = float(check_in_range(eta, "eta", 1.0, None, owner=self.name))
        self.beta = float(check_in_range(beta, "beta", 0.0, 1.0, owner=self.name))

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        with torch.no_grad():
            logits = model(x)
        ranked = logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
        out = x.clone()
        alive = logits.argmax(1) == y
        for r in self._progress(range(min(self.n_target_classes, logits.shape[1] - 1)), "target classes"):
            for k in range(self.restarts):
                idx = alive.nonzero().squeeze(1)
                if idx.numel() == 0:
                    return out
                xs = x[idx]
                start = None
                if k > 0:
                    u = 2 * rand(xs.shape, generator, xs) - 1
                    scale = self.eps / (_norm(u.flatten(1), self.norm) + 1e-12) * 0.5
                    start = (xs + u * _view_b(scale, xs)).clamp(0.0, 1.0)
                adv, dist = fab_targeted_run(model, xs, y[idx], ranked[idx, r], norm=self.norm, steps=self.steps,
                                             alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, start=start)
                ok = dist <= self.eps * (1 + 1e-6)
                out[idx] = torch.where(_view_b(ok, adv), adv, out[idx])
                alive[idx] = ~ok
        return out
