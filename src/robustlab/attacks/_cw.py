"""Carlini–Wagner L2 attack with a binary search on the trade-off constant ``c``.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017, arXiv:1608.04644.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_in_range, check_int
from ._base import Attack, margin, register_attack

__all__ = ["CWL2"]


@register_attack("cw_l2", tags={"l2", "white_box", "gradient", "targeted", "minimal_norm"},
                 reference="Carlini & Wagner 2017, arXiv:1608.04644",
                 example_kwargs={"eps": 1.0, "steps": 20, "binary_search_steps": 3, "c": 1.0, "lr": 0.05})
class CWL2(Attack):
    """Carlini–Wagner L2: minimise ``‖x' − x‖²₂ + c·max(z_y − max_{j≠y} z_j + κ, 0)`` over ``x' = (tanh w + 1)/2``.

    Adam (``lr``) for ``steps`` per constant; ``binary_search_steps`` rounds of bisection on ``c`` per example
    (×10 until the first success). Returns the smallest-norm adversarial example found (``x`` where none),
    projected onto the L2 ball of radius ``eps`` (``eps=None``: unbounded, a minimal-norm attack).
    With ``targets`` the margin is ``max_{j≠t} z_j − z_t``. Carlini & Wagner, S&P 2017, arXiv:1608.04644.
    """

    name = "cw_l2"
    budget_param = "steps"

    def __init__(self, *, eps: float | None = None, norm: str = "l2", c: float = 1.0, kappa: float = 0.0,
                 steps: int = 100, binary_search_steps: int = 5, lr: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        if norm != "l2":
            raise ValueError(f"The 'norm' parameter of cw_l2 must be a str among {{'l2'}}. Got {norm!r} instead.")
        super().__init__(eps=1.0 if eps is None else eps, norm="l2", generator=generator)
        if eps is None:
            self.eps = math.inf
        self.c = float(check_in_range(c, "c", 0.0, None, closed="neither", owner=self.name))
        self.kappa = float(check_in_range(kappa, "kappa", 0.0, None, owner=self.name))
        self.steps = check_int(steps, "steps", 1, None, owner=self.name)
        self.binary_search_steps = check_int(binary_search_steps, "binary_search_steps", 1, None, owner=self.name)
        self.lr = float(check_in_range(lr, "lr", 0.0, None, closed="neither", owner=self.name))

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        b = x.shape[0]
        bshape = (b, *([1] * (x.dim() - 1)))
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        lower = torch.zeros(b, dtype=x.dtype, device=x.device)
        upper = torch.full((b,), 1e10, dtype=x.dtype, device=x.device)
        const = torch.full((b,), self.c, dtype=x.dtype, device=x.device)
        best_l2 = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        best_adv = x.clone()
        for _ in self._progress(range(self.binary_search_steps), "binary search"):
            w = w0.clone()
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            succeeded = torch.zeros(b, dtype=torch.bool, device=x.device)
            for t in range(1, self.steps + 1):
                w.requires_grad_(True)
                xa = (torch.tanh(w) + 1) / 2
                logits = model(xa)
                l2sq = (xa - x).flatten(1).square().sum(1)
                gap = margin(logits, y) if targets is None else -margin(logits, targets)
                loss = (l2sq + const * (gap + self.kappa).clamp(min=0)).sum()
                (g,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    w = w.detach()
                    m.mul_(0.9).add_(g, alpha=0.1)
                    v.mul_(0.999).addcmul_(g, g, value=0.001)
                    mh = m / (1 - 0.9 ** t)
                    vh = v / (1 - 0.999 ** t)
                    w.addcdiv_(mh, vh.sqrt().add_(1e-8), value=-self.lr)
                    success = gap.detach() < 0
                    l2 = l2sq.detach().sqrt()
                    better = success & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_adv = torch.where(better.view(bshape), xa.detach(), best_adv)
                    succeeded |= success
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(succeeded | (upper < 1e9), (lower + upper) / 2, const * 10)
        return best_adv
