"""FGSM and PGD (L∞ and L2) with random start and restarts.

FGSM: Goodfellow et al. 2015, arXiv:1412.6572. PGD: Madry et al. 2018, arXiv:1706.06083.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_bool, check_in_range, check_int, check_option
from ._base import Attack, _view_b, dlr_loss, margin, register_attack, targeted_dlr_loss
from .threat import ascent_step_, pgd

__all__ = ["FGSM", "PGD", "LOSSES"]

LOSSES = ("ce", "dlr", "margin")


def _objective(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-example quantity the attack *maximises*."""
    if targets is None:
        if loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        if loss == "dlr":
            return dlr_loss(logits, y)
        return -margin(logits, y)
    if loss == "ce":
        return -F.cross_entropy(logits, targets, reduction="none")
    if loss == "dlr":
        return targeted_dlr_loss(logits, y, targets)
    return margin(logits, targets)


def _summed_objective(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Scalar whose input gradient is the per-example ascent direction (no per-sample tensor for CE)."""
    if loss == "ce":
        if targets is None:
            return F.cross_entropy(logits, y, reduction="sum")
        return -F.cross_entropy(logits, targets, reduction="sum")
    return _objective(logits, y, targets, loss).sum()


def fgsm_impl(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
              eps: float, norm: str, loss: str) -> torch.Tensor:
    """One gradient step of size ``eps`` (sign for L∞, normalised gradient for L2); no projection."""
    x_adv = x.clone().requires_grad_(True)
    obj = _summed_objective(model(x_adv), y, targets, loss)
    (g,) = torch.autograd.grad(obj, x_adv)
    x_adv = x_adv.detach()
    ascent_step_(x_adv, g, eps, norm)
    return x_adv


def pgd_impl(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, *,
             eps: float, norm: str, step_size: float, steps: int, random_start_: bool, loss: str,
             generator: torch.Generator | None) -> torch.Tensor:
    """One PGD run (:func:`.threat.pgd`): ``steps`` forward+backward passes w.r.t. the input, projection after each."""
    return pgd(model, x, lambda logits: _summed_objective(logits, y, targets, loss), eps=eps, step_size=step_size,
               steps=steps, norm=norm, start="uniform" if random_start_ else "none", generator=generator)


def _success_and_score(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
                       loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(x_adv)
        pred = logits.argmax(1)
        success = pred != y if targets is None else pred == targets
        return success, _objective(logits, y, targets, loss)


def keep_strongest(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, loss: str,
                   runs: Any) -> torch.Tensor:
    """Per example, keep the run that succeeds, breaking ties by the larger objective."""
    best: torch.Tensor | None = None
    for x_adv in runs:
        success, score = _success_and_score(model, x_adv, y, targets, loss)
        if best is None:
            best, best_success, best_score = x_adv, success, score
            continue
        better = (success & ~best_success) | ((success == best_success) & (score > best_score))
        best = torch.where(_view_b(better, x_adv), x_adv, best)
        best_success = best_success | success
        best_score = torch.where(better, score, best_score)
    assert best is not None
    return best


@register_attack("fgsm", tags={"linf", "l2", "white_box", "gradient", "targeted"},
                 reference="Goodfellow et al. 2015, arXiv:1412.6572",
                 example_kwargs={"eps": 0.1})
class FGSM(Attack):
    """Fast Gradient Sign Method: ``x' = clip(x + ε·sign(∇ₓ L(f(x), y)))`` (L∞); L2 uses ``ε·∇/‖∇‖₂``.

    ``loss`` in {"ce", "dlr", "margin"}; with ``targets`` the step descends the loss of the target class.
    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
    """

    name = "fgsm"
    budget_param = None  # one step

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", loss: str = "ce",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.loss = check_option(loss, "loss", LOSSES, owner=self.name)
        self.needs_three_classes = loss == "dlr"

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        return fgsm_impl(model, x, y, targets, self.eps, self.norm, self.loss)


@register_attack("pgd", tags={"linf", "l2", "white_box", "gradient", "targeted"},
                 reference="Madry et al. 2018, arXiv:1706.06083",
                 example_kwargs={"eps": 0.1, "step_size": 0.025, "steps": 10})
class PGD(Attack):
    """Projected gradient descent: ``x ← Π_{B_ε(x₀) ∩ [0,1]}(x + α·sign(∇ₓ L))`` (L∞) or ``α·∇/‖∇‖₂`` (L2).

    ``random_start`` draws the start uniformly in the ε-ball; ``restarts`` runs independent starts and keeps,
    per example, the strongest one (successful first, then the larger loss). Returns the last iterate.
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    """

    name = "pgd"
    budget_param = "steps"

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", step_size: float | None = None,
                 steps: int = 10, random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.steps = check_int(steps, "steps", 1, None, owner=self.name)
        if step_size is None:
            step_size = 2.5 * self.eps / self.steps
        self.step_size = float(check_in_range(step_size, "step_size", 0.0, None, owner=self.name))
        self.random_start = check_bool(random_start, "random_start", owner=self.name)
        self.restarts = check_int(restarts, "restarts", 1, None, owner=self.name)
        self.loss = check_option(loss, "loss", LOSSES, owner=self.name)
        self.needs_three_classes = loss == "dlr"

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        def one() -> torch.Tensor:
            return pgd_impl(model, x, y, targets, eps=self.eps, norm=self.norm, step_size=self.step_size,
                            steps=self.steps, random_start_=self.random_start, loss=self.loss, generator=generator)

        if self.restarts == 1:
            return one()
        return keep_strongest(model, x, y, targets, self.loss,
                              (one() for _ in self._progress(range(self.restarts), "restarts")))
