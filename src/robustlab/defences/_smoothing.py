"""Adaptive smoothing: mix a standard and a robust classifier's probabilities per example.

Reference: Bai, Anderson, Kim, Sojoudi, "Improving the Accuracy-Robustness Trade-Off of Classifiers via
Adaptive Smoothing" (arXiv:2301.12554, SIMODS 2024); fixed-alpha theory in Bai, Anderson, Sojoudi,
"Mixing Classifiers to Alleviate the Accuracy-Robustness Trade-Off" (L4DC 2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (
    InvalidParameterError,
    check_finite,
    check_in_range,
    check_int,
    check_labels,
    check_option,
)

__all__ = [
    "AdaptiveSmoothing",
    "MixingNetwork",
    "lipschitz_certified_radius",
    "smoothing_certified_radius",
    "train_mixing_network",
]


class MixingNetwork(nn.Module):
    r"""A small MLP giving the per-example mixing weight :math:`\alpha(x) = a + (b-a)\,\sigma(\gamma(x))`.

    ``alpha_range = (a, b)``; :meth:`logit` returns :math:`\gamma(x)` (trained with BCE: 0 on clean, 1 on
    adversarial inputs). The paper's network reads the base models' features; this one reads the input,
    which keeps it model-agnostic (documented deviation).
    """

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (32,),
                 alpha_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        lo, hi = alpha_range
        check_in_range(lo, "alpha_range[0]", 0.0, 1.0, owner="MixingNetwork")
        check_in_range(hi, "alpha_range[1]", lo, 1.0, owner="MixingNetwork")
        d = math.prod(int(s) for s in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for i, h in enumerate(hidden):
            check_int(h, f"hidden[{i}]", 1, None, owner="MixingNetwork")
            layers += [nn.Linear(d, int(h)), nn.ReLU()]
            d = int(h)
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        self.alpha_range = (float(lo), float(hi))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid score gamma(x), shape (N,)."""
        return self.net(x).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.alpha_range
        return lo + (hi - lo) * torch.sigmoid(self.logit(x))


class AdaptiveSmoothing(nn.Module):
    r"""Mix a standard and a robust model: log of :math:`(1-\alpha)\,\mathrm{softmax}(s_1 g(x)) + \alpha\,\mathrm{softmax}(s_2 h(x))`.

    ``alpha`` is a float in [0, 1] or a module mapping x to (N,) values in [0, 1] (e.g.
    :class:`MixingNetwork`). ``forward`` returns log-probabilities (so CE and attacks apply unchanged),
    computed stably with ``logsumexp``. Attacks against this module go through the mixing network.

    Args:
        standard_model: the accurate, non-robust classifier g.
        robust_model: the robust classifier h.
        alpha: weight of the robust model, fixed or per example.
        std_scale, rob_scale: logit temperatures s_1, s_2 > 0 (1.0 each by default).

    Reference: Bai, Anderson, Kim, Sojoudi, "Improving the Accuracy-Robustness Trade-Off of Classifiers
    via Adaptive Smoothing", arXiv:2301.12554.
    """

    def __init__(self, standard_model: nn.Module, robust_model: nn.Module, alpha: float | nn.Module = 0.5, *,
                 std_scale: float = 1.0, rob_scale: float = 1.0) -> None:
        super().__init__()
        owner = "AdaptiveSmoothing"
        for name, m in (("standard_model", standard_model), ("robust_model", robust_model)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"The '{name}' parameter of {owner} must be an nn.Module. Got {type(m).__name__} instead.")
        self.standard_model = standard_model
        self.robust_model = robust_model
        if isinstance(alpha, nn.Module):
            self.mixer: nn.Module | None = alpha
            self.alpha: float | None = None
        else:
            self.mixer = None
            self.alpha = float(check_in_range(alpha, "alpha", 0.0, 1.0, owner=owner))
        self.std_scale = float(check_in_range(std_scale, "std_scale", 0.0, None, closed="neither", owner=owner))
        self.rob_scale = float(check_in_range(rob_scale, "rob_scale", 0.0, None, closed="neither", owner=owner))

    def alpha_of(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example mixing weight, shape (N,)."""
        if self.mixer is None:
            return torch.full((x.shape[0],), float(self.alpha), device=x.device, dtype=x.dtype)  # type: ignore[arg-type]
        return self.mixer(x).reshape(x.shape[0])

    def mix(self, std_logits: torch.Tensor, rob_logits: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the mixture from the two models' logits and (N,) weights."""
        a = alpha.to(std_logits.dtype)[:, None]
        # log(1 - a) and log(a) with the "double where": a weight of exactly 0 or 1 (a saturated sigmoid
        # in a mixing network) gives -inf for that part in the forward pass and a zero, not NaN, gradient
        # (torch.log(0) would back-propagate 0 * inf = NaN into the input gradient of an adaptive attack)
        neg_inf = torch.full_like(a, -math.inf)
        log_1ma = torch.where(a < 1, torch.log1p(-torch.where(a < 1, a, torch.zeros_like(a))), neg_inf)
        log_a = torch.where(a > 0, torch.log(torch.where(a > 0, a, torch.ones_like(a))), neg_inf)
        parts = torch.stack([log_1ma + F.log_softmax(std_logits * self.std_scale, 1),
                             log_a + F.log_softmax(rob_logits * self.rob_scale, 1)])
        return torch.logsumexp(parts, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, C) of the mixture at finite inputs ``x`` (NaN/Inf raise ValueError)."""
        _check_inputs(x, "AdaptiveSmoothing")
        return self.mix(self.standard_model(x), self.robust_model(x), self.alpha_of(x))

    def extra_repr(self) -> str:
        a = "mixing network" if self.mixer is not None else f"{self.alpha:g}"
        return f"alpha={a}, std_scale={self.std_scale:g}, rob_scale={self.rob_scale:g}"


def train_mixing_network(
    model: AdaptiveSmoothing, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float | None = None,
    steps: int = 10, norm: str = "linf", epochs: int = 5, lr: float = 1e-3, batch_size: int = 128,
    ce_weight: float = 0.0, generator: torch.Generator | None = None,
) -> list[float]:
    r"""Train ``model``'s mixing network with BCE(gamma(x), 0) + BCE(gamma(x'), 1) (+ ``ce_weight`` * CE).

    ``x'`` is PGD (eps, ``steps``) against the whole composite model, mixing network included
    (an adaptive attack). The base models are frozen (parameters and eval mode, so their BatchNorm
    statistics never change); only the mixer is in train mode. AdamW with ``lr``. Returns the mean
    loss per epoch.
    """
    from ..attacks import threat

    owner = "train_mixing_network"
    if model.mixer is None or not hasattr(model.mixer, "logit"):
        raise TypeError(f"{owner} needs an AdaptiveSmoothing whose alpha is a MixingNetwork.")
    check_option(norm, "norm", threat.NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, None, owner=owner)
    steps = check_int(steps, "steps", 1, None, owner=owner)
    check_int(epochs, "epochs", 1, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner)
    check_in_range(ce_weight, "ce_weight", 0.0, None, owner=owner)
    _check_inputs(x, owner)
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"'y' of {owner} must have shape ({x.shape[0]},). Got {getattr(y, 'shape', y)}.")
    if x.shape[0]:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                num_classes = model.standard_model(x[:1]).shape[-1]
        finally:
            for m, mode in modes:
                m.training = mode
        check_labels(y, num_classes, owner=owner)
    y = y.long()
    step = float(step_size) if step_size is not None else 2.5 * float(eps) / steps
    gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
    frozen = [p for m in (model.standard_model, model.robust_model) for p in m.parameters()]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    mixer: Any = model.mixer
    opt = torch.optim.AdamW(mixer.parameters(), lr=lr, weight_decay=1e-5)
    history = []
    modes = [(m, m.training) for m in model.modules()]  # restored module by module afterwards
    try:
        for _ in range(epochs):
            perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
            total = 0.0
            for s in range(0, x.shape[0], batch_size):
                idx = perm[s:s + batch_size]
                xb, yb = x[idx], y[idx]
                x_adv = threat.pgd(model, xb, _nll_sum(yb), eps=float(eps), step_size=step, steps=steps, norm=norm,
                                   start="uniform", generator=gen)
                model.eval()  # the base models are frozen: no BatchNorm-statistics updates, no dropout
                mixer.train()
                xs = torch.cat([xb, x_adv])
                z = torch.cat([torch.zeros(len(xb)), torch.ones(len(xb))]).to(xs)
                loss = F.binary_cross_entropy_with_logits(mixer.logit(xs), z)
                if ce_weight > 0:
                    loss = loss + ce_weight * F.nll_loss(model(xs), torch.cat([yb, yb]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / x.shape[0])
    finally:
        for p, f in zip(frozen, flags):
            p.requires_grad_(f)
        for m, mode in modes:
            m.training = mode
    return history


def _check_inputs(x: object, owner: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise TypeError(f"'x' of {owner} must be a floating-point batch (N, ...). Got {getattr(x, 'shape', type(x))}.")
    check_finite(x, "x", owner=owner)


def _nll_sum(y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda log_probs: F.nll_loss(log_probs, y, reduction="sum")


def _check_alpha(alpha: float | torch.Tensor, owner: str) -> None:
    """``alpha`` (a float or a tensor of per-example weights) must lie in [0, 1]."""
    if isinstance(alpha, torch.Tensor):
        bad = alpha.detach().reshape(-1)
        bad = bad[~((bad >= 0) & (bad <= 1))]  # NaN fails both comparisons
        if bad.numel():
            raise InvalidParameterError(f"The 'alpha' parameter of {owner} must hold floats in [0, 1]. "
                                        f"Got {float(bad[0])!r} instead.")
        return
    check_in_range(alpha, "alpha", 0.0, 1.0, owner=owner)


def lipschitz_certified_radius(robust_probs: torch.Tensor, pred: torch.Tensor, alpha: float | torch.Tensor,
                               lipschitz: float) -> torch.Tensor:
    r"""Certified radius of the mixture when the robust model's probabilities are L-Lipschitz.

    .. math:: r = \frac{\max(0,\ \alpha\,\mu_h + \alpha - 1)}{2\,\alpha\,L},\quad
              \mu_h = h_{y}(x) - \max_{i\ne y} h_i(x)

    with ``y = pred`` the mixture's predicted class (the standard model may put all its mass on a wrong
    class). Positive only when ``alpha > 1/2``. Shapes: ``robust_probs`` (N, C), ``pred`` (N,) -> (N,).
    """
    owner = "lipschitz_certified_radius"
    check_in_range(lipschitz, "lipschitz", 0.0, None, closed="neither", owner=owner)
    _check_alpha(alpha, owner)
    if not isinstance(robust_probs, torch.Tensor) or robust_probs.dim() != 2:
        raise ValueError(f"'robust_probs' of {owner} must be an (N, C) tensor. Got {getattr(robust_probs, 'shape', robust_probs)}.")
    check_finite(robust_probs, "robust_probs", owner=owner)
    if not isinstance(pred, torch.Tensor) or pred.shape != robust_probs.shape[:1]:
        raise ValueError(f"'pred' of {owner} must have shape ({robust_probs.shape[0]},). Got {getattr(pred, 'shape', pred)}.")
    check_labels(pred, robust_probs.shape[1], "pred", owner=owner)
    pred = pred.long()
    a = torch.as_tensor(alpha, dtype=robust_probs.dtype, device=robust_probs.device).expand(robust_probs.shape[0])
    top = robust_probs.gather(1, pred[:, None]).squeeze(1)
    other = robust_probs.scatter(1, pred[:, None], -math.inf).amax(1)
    num = (a * (top - other) + a - 1).clamp_min(0)
    return torch.where(a > 0, num / (2 * a.clamp_min(1e-12) * lipschitz), torch.zeros_like(num))


def smoothing_certified_radius(p_a: torch.Tensor, p_b: torch.Tensor, alpha: float | torch.Tensor,
                               sigma: float) -> torch.Tensor:
    r"""Certified l2 radius of the mixture when the robust model is Gaussian-smoothed with noise ``sigma``.

    .. math:: \mu' = \frac{1-\alpha}{\alpha},\quad
              r = \frac{\sigma}{2}\max\Big(0,\ \Phi^{-1}\big(\tfrac{p_A}{1+\mu'}\big)
              - \Phi^{-1}\big(\tfrac{p_B+\mu'}{1+\mu'}\big)\Big)

    ``p_a`` a lower bound of the top smoothed probability, ``p_b`` an upper bound of the runner-up
    (Clopper-Pearson). With alpha = 1 this is Cohen et al.'s two-sided radius.
    """
    owner = "smoothing_certified_radius"
    check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner=owner)
    _check_alpha(alpha, owner)
    for name, p in (("p_a", p_a), ("p_b", p_b)):
        if not isinstance(p, torch.Tensor) or not p.dtype.is_floating_point:
            raise TypeError(f"'{name}' of {owner} must be a floating-point tensor. Got {getattr(p, 'dtype', type(p))}.")
        check_finite(p, name, owner=owner)
        if p.numel() and (float(p.min()) < 0 or float(p.max()) > 1):
            raise ValueError(f"'{name}' of {owner} must hold probabilities in [0, 1]. "
                             f"Got min {float(p.min()):.4g}, max {float(p.max()):.4g}.")
    a = torch.as_tensor(alpha, dtype=p_a.dtype, device=p_a.device)
    mu = (1 - a) / a.clamp_min(1e-12)
    lo = torch.special.ndtri((p_a / (1 + mu)).clamp(1e-12, 1 - 1e-12))
    hi = torch.special.ndtri(((p_b + mu) / (1 + mu)).clamp(1e-12, 1 - 1e-12))
    r = 0.5 * sigma * (lo - hi).clamp_min(0)
    return torch.where(a > 0, r, torch.zeros_like(r))
