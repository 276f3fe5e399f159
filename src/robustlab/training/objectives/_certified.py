"""Certified training objectives: ``ibp``, ``crown_ibp`` (interval bounds) and ``gaussian_aug`` (smoothing).

IBP training (Gowal et al. 2018, arXiv:1810.12715): clean warm-up, then ε ramps linearly from 0 to
``eps_train_factor * eps`` while κ (weight of the clean loss) goes 1 -> ``kappa_end``; the loss is
``κ·L(z(x), y) + (1 − κ)·L(−m̲(x, ε), y)`` with ``m̲`` the margin lower bounds (worst-case logits).
CROWN-IBP (Zhang et al. 2020, arXiv:1906.06316) mixes ``β·m̲_CROWN-IBP + (1 − β)·m̲_IBP`` with β going
1 -> 0 during the ramp. Gaussian augmentation (Cohen et al. 2019) trains the base classifier of a
smoothed model on ``x + N(0, σ²I)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..._validation import check_in_range, check_option
from ...attacks.threat import NORMS
from .._objectives import Batch, Objective, compute_loss, register_objective
from ._schedule import EpsScheduled

__all__ = ["CROWNIBPObjective", "GaussianAugmentation", "IBPObjective"]


def _check_fraction(value: Any, name: str, owner: str) -> float:
    return float(check_in_range(value, name, 0.0, 1.0, owner=owner))


class IBPObjective(EpsScheduled, Objective):
    """Interval-bound certified training (Gowal et al. 2018) with the ε and κ ramps.

    Schedule over the training steps (``setup`` gives their number): the first ``warmup`` fraction is
    clean (ε = 0, κ = 1); over the next ``rampup`` fraction ε grows linearly to
    ``eps_train_factor * eps`` and κ to ``kappa_end``; then both stay. Loss
    ``κ·L(z, y) + (1 − κ)·L(−m̲, y)`` where ``m̲_j`` lower-bounds ``z_y − z_j`` over the ε-ball (the
    specification matrix folded into the last layer). The ramp is the shared ε schedule
    (:mod:`._schedule`): ``eps_warmup_epochs=k`` ends the ramp after ``k`` epochs (warm-up included) instead of
    the ``rampup`` fraction; ``eps_schedule="constant"`` trains at the full ε and ``kappa_end`` from the first step.
    Metrics per epoch: ``eps``, ``kappa``,
    ``robust_loss``, ``verified`` (batch share with all margin bounds > 0 at the current ε) and
    ``tightness`` (Mao et al. 2024, on ``tightness_samples`` points of each batch, for ReLU networks).
    Cost: about 2 forward + 2 backward passes per step (clean pass plus the bound pass).
    """

    passes_per_step = 2.0
    _method = "ibp"

    def __init__(
        self, *, eps: float = 0.1, norm: str = "linf", eps_train_factor: float = 1.1, kappa_end: float = 0.5,
        warmup: float = 0.1, rampup: float = 0.5, tightness_samples: int = 16, eps_schedule: str = "linear",
        eps_warmup_epochs: int | None = None,
    ) -> None:
        owner = type(self).__name__
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"The 'eps' parameter of {owner} must be a float in [0, inf). Got {eps!r} instead.")
        self.eps = float(check_in_range(eps, "eps", 0.0, None, owner=owner))
        self.norm = check_option(norm, "norm", NORMS, owner=owner)
        self.eps_train_factor = float(check_in_range(eps_train_factor, "eps_train_factor", 0.0, None, closed="neither", owner=owner))
        self.kappa_end = _check_fraction(kappa_end, "kappa_end", owner)
        self.warmup = _check_fraction(warmup, "warmup", owner)
        self.rampup = _check_fraction(rampup, "rampup", owner)
        self.tightness_samples = int(check_in_range(tightness_samples, "tightness_samples", 0, None, owner=owner, integer=True))
        self._warmup_fraction, self._rampup_fraction = self.warmup, self.rampup
        self._init_eps_schedule(eps_schedule, eps_warmup_epochs, owner)

    def schedule(self, step: int) -> tuple[float, float]:
        """``(ε_train, κ)`` at training step ``step``."""
        t = self.progress(step)
        return t * self.eps_train_factor * self.eps, 1.0 - (1.0 - self.kappa_end) * t

    def _margins(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, t: float) -> torch.Tensor:
        from ...certify.ibp import margin_bounds

        return margin_bounds(model, x, y, eps=eps, norm=self.norm, method="ibp")

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = self.progress(self._step)
        eps, kappa = self.schedule(self._step)
        self._step += 1
        logits = model(batch.x)
        clean = compute_loss(loss, logits, batch.y, batch.index)
        acc = (logits.detach().argmax(1) == batch.y).float().mean()
        metrics: dict[str, torch.Tensor] = {"acc": acc}
        if eps > 0 and kappa < 1:
            lb = self._margins(model, batch.x, batch.y, eps, t)
            robust = compute_loss(loss, -lb, batch.y, batch.index)
            value = kappa * clean + (1.0 - kappa) * robust
            other = lb.detach().masked_fill(nn.functional.one_hot(batch.y, lb.shape[1]).bool(), float("inf"))
            metrics["verified"] = (other > 0).all(1).float().mean()
            metrics["robust_loss"] = robust.detach()
        else:  # warm-up: at ε = 0 the margin bounds are the margins themselves
            value = clean
            margins = logits.detach().gather(1, batch.y[:, None]) - logits.detach()
            margins = margins.masked_fill(nn.functional.one_hot(batch.y, logits.shape[1]).bool(), float("inf"))
            metrics["verified"] = (margins > 0).all(1).float().mean()
            metrics["robust_loss"] = clean.detach()
        dev = logits.device
        metrics["eps"] = torch.tensor(eps, device=dev)
        metrics["kappa"] = torch.tensor(kappa, device=dev)
        if self.tightness_samples:
            tight = self._tightness(model, batch)
            if tight is not None:
                metrics["tightness"] = tight
        return value, metrics

    def _tightness(self, model: nn.Module, batch: Batch) -> torch.Tensor | None:
        from ...certify.ibp import tightness

        k = min(self.tightness_samples, batch.x.shape[0])
        try:
            with torch.no_grad():
                return tightness(model, batch.x[:k], batch.y[:k]).detach()
        except TypeError:  # layers without a linearisation rule: no metric for this model
            self.tightness_samples = 0
            return None


class CROWNIBPObjective(IBPObjective):
    """CROWN-IBP certified training (Zhang et al. 2020): IBP's schedule with tighter margin bounds.

    The margin lower bound is ``β·m̲_CROWN-IBP + (1 − β)·m̲_IBP`` with β = 1 − t going 1 -> 0 over the
    ε ramp (as in auto_LiRPA). Any model ``certify.margin_bounds`` bounds with CROWN (chains, and fx graphs with
    residual adds, cat, MaxPool, Tanh/Sigmoid/LeakyReLU). Cost: about 3 forward + 3 backward passes per step while β > 0, 2 after.
    """

    passes_per_step = 3.0
    _method = "crown_ibp"

    def _margins(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, t: float) -> torch.Tensor:
        from ...certify.ibp import margin_bounds

        lb_ibp = margin_bounds(model, x, y, eps=eps, norm=self.norm, method="ibp")
        beta = 1.0 - t
        if beta <= 0:
            return lb_ibp
        lb_crown = margin_bounds(model, x, y, eps=eps, norm=self.norm, method="crown_ibp")
        return beta * lb_crown + (1.0 - beta) * lb_ibp


class GaussianAugmentation(Objective):
    """Gaussian noise augmentation for randomized smoothing (Cohen et al. 2019): ``L(f(x + σ·ε), y)``.

    ``ε ~ N(0, I)`` drawn from the generator given by ``fit`` (no clipping, as in the reference
    code). Train at the σ used for certification. Cost: 1 forward + 1 backward pass per step.
    """

    passes_per_step = 1.0

    def __init__(self, *, sigma: float = 0.25) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"The 'sigma' parameter of GaussianAugmentation must be a float in (0, inf). Got {sigma!r} instead.")
        self.sigma = float(check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner="GaussianAugmentation"))
        self.generator: Any = None  # set by setup

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gen: Any = self.generator
        if gen is not None and gen.device != batch.x.device:
            gen = None
        noise = torch.randn(batch.x.shape, generator=gen, device=batch.x.device, dtype=batch.x.dtype)
        logits = model(batch.x + self.sigma * noise)
        value = compute_loss(loss, logits, batch.y, batch.index)
        acc = (logits.detach().argmax(1) == batch.y).float().mean()
        return value, {"acc": acc}


register_objective("ibp", tags={"certified", "ibp"}, reference="Gowal et al. 2018, arXiv:1810.12715",
                   example_kwargs={"eps": 0.1})(IBPObjective)
register_objective("crown_ibp", tags={"certified", "ibp", "crown"}, reference="Zhang et al. 2020, arXiv:1906.06316",
                   example_kwargs={"eps": 0.1})(CROWNIBPObjective)
register_objective("gaussian_aug", tags={"certified", "smoothing", "noise"},
                   reference="Cohen, Rosenfeld & Kolter 2019, arXiv:1902.02918",
                   example_kwargs={"sigma": 0.25})(GaussianAugmentation)
