"""ZOO-style zeroth-order PGD: PGD driven by a random-direction gradient estimate (black box).

Chen et al., "ZOO: Zeroth Order Optimization based Black-box Attacks", AISec 2017, arXiv:1708.03999;
the random gradient estimator (RGE) as in Liu et al. 2018 and Zhang et al. ICLR 2022 (ZO-AE-DS).
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_in_range, check_int
from ._base import Attack, _view_b, l2_norm, margin, rand, register_attack

__all__ = ["ZOO", "rge"]


def rge(loss_fn, z: torch.Tensor, *, q: int, mu: float, generator: torch.Generator | None,  # type: ignore[no-untyped-def]
        f0: torch.Tensor | None = None) -> torch.Tensor:
    """Random gradient estimate ``ĝ = (d/q) Σ_k [ℓ(z + μ u_k) − ℓ(z)] / μ · u_k``, ``u_k`` uniform on the sphere.

    ``loss_fn`` maps a batch (M, ...) to per-example losses (M,); costs ``q`` (+1 without ``f0``) queries
    per example, all in one batched call.
    """
    b = z.shape[0]
    d = z[0].numel()
    u = rand((b, q, *z.shape[1:]), generator, z, normal=True)
    u = u / u.flatten(2).norm(dim=2).view(b, q, *([1] * (z.dim() - 1))).clamp_min(1e-12)
    if f0 is None:
        f0 = loss_fn(z)
    zq = (z.unsqueeze(1) + mu * u).flatten(0, 1)
    fq = loss_fn(zq).view(b, q)
    coef = (fq - f0[:, None]) * (d / (q * mu))
    return (coef.view(b, q, *([1] * (z.dim() - 1))) * u).sum(1)


@register_attack("zoo", tags={"linf", "l2", "black_box", "targeted"},
                 reference="Chen et al. 2017, arXiv:1708.03999",
                 example_kwargs={"eps": 0.1, "n_queries": 105, "n_samples": 20})
class ZOO(Attack):
    """Zeroth-order PGD: ``x ← Π(x + α·sign(ĝ))`` (L∞) or ``α·ĝ/‖ĝ‖₂`` (L2), ĝ a random gradient estimate.

    ĝ estimates the gradient of the margin loss ``max_{j≠y} z_j − z_y`` (or ``z_t − max_{j≠t} z_j`` with
    ``targets``) from ``n_samples`` random unit directions at smoothing ``mu``; each step costs
    ``n_samples + 1`` queries, so ``steps = n_queries // (n_samples + 1)``. Stops per example on success.
    Uses only model outputs. Chen et al. 2017, arXiv:1708.03999.
    """

    name = "zoo"
    uses_gradients = False
    budget_param = "n_queries"

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", n_queries: int = 2000, n_samples: int = 20,
                 mu: float = 5e-3, step_size: float | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.n_samples = check_int(n_samples, "n_samples", 1, None, owner=self.name)
        self.n_queries = check_int(n_queries, "n_queries", self.n_samples + 1, None, owner=self.name)
        self.mu = float(check_in_range(mu, "mu", 0.0, None, closed="neither", owner=self.name))
        if step_size is None:
            step_size = self.eps / 5
        self.step_size = float(check_in_range(step_size, "step_size", 0.0, None, owner=self.name))

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        steps = self.n_queries // (self.n_samples + 1)
        out = x.clone()
        with torch.no_grad():
            alive = torch.arange(x.shape[0], device=x.device)
            for _ in self._progress(range(steps), "steps"):
                xa, xo, ya = out[alive], x[alive], y[alive]
                ta = None if targets is None else targets[alive]

                def loss_fn(z: torch.Tensor, ya: torch.Tensor = ya, ta: torch.Tensor | None = ta) -> torch.Tensor:
                    reps = z.shape[0] // ya.shape[0]
                    logits = model(z)
                    yy = ya.repeat_interleave(reps)
                    if ta is None:
                        return -margin(logits, yy)
                    return margin(logits, ta.repeat_interleave(reps))

                f0 = loss_fn(xa)
                done = f0 > 0 if ta is None else f0 >= 0  # already adversarial (or at the target)
                g = rge(loss_fn, xa, q=self.n_samples, mu=self.mu, generator=generator, f0=f0)
                if self.norm == "linf":
                    xn = torch.min(torch.max(xa + self.step_size * g.sign(), xo - self.eps), xo + self.eps)
                else:
                    xn = xa + g * _view_b(self.step_size / (l2_norm(g) + 1e-12), g)
                    dl = xn - xo
                    xn = xo + dl * _view_b(torch.clamp(self.eps / (l2_norm(dl) + 1e-12), max=1.0), dl)
                xn = xn.clamp_(0.0, 1.0)
                out[alive] = torch.where(_view_b(done, xa), xa, xn)
                alive = alive[~done]
                if alive.numel() == 0:
                    break
        return out
