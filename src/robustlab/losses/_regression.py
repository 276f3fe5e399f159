r"""Regression losses on predictions and float targets: ``regression(name, **kw)``.

Every loss is called as ``loss(pred, target)`` with ``pred`` of shape (N,) or (N, 1) and ``target`` (N,)
float; :math:`r = y - \hat y` is the residual. Per-sample values:

- ``mse``: :math:`r^2`; ``mae``: :math:`|r|`.
- ``huber(delta)``: :math:`r^2/2` for :math:`|r| \le \delta`, else :math:`\delta(|r| - \delta/2)` (Huber 1964;
  RIQL's Q-target loss).
- ``pseudo_huber(delta)``: :math:`\delta^2(\sqrt{1 + (r/\delta)^2} - 1)`, computed as
  :math:`\delta(\mathrm{hypot}(\delta, r) - \delta)` so it never overflows.
- ``quantile(tau)`` (pinball): :math:`\max(\tau r, (\tau - 1) r)` (Koenker & Bassett 1978; RIQL).
- ``log_cosh``: :math:`\log\cosh r = |r| + \mathrm{softplus}(-2|r|) - \log 2` (stable at any residual).
- ``cauchy(scale)``: :math:`\frac{c^2}{2}\log(1 + (r/c)^2)` (Black & Anandan 1996).
- ``cs_divergence(sigma)``: the CS-IB prediction term (Yu et al., 2024), the Cauchy–Schwarz divergence
  between :math:`p(y|x)` and :math:`q(\hat y|x)` with Gaussian kernels of bandwidth :math:`\sigma` on the
  targets. Given input features ``x`` it is the conditional estimator with input Gram matrix :math:`K`:
  :math:`D = \log\sum_i\frac{(K\circ L_{yy})_i}{k_i^2} + \log\sum_i\frac{(K\circ L_{\hat y\hat y})_i}{k_i^2}
  - 2\log\sum_i\frac{(K\circ L_{y\hat y})_i}{k_i^2}` (row sums, :math:`k_i = \sum_j K_{ij}`); without ``x``
  the input kernel is the identity (every input distinct), which reduces to
  :math:`-2\log\frac1N\sum_i e^{-r_i^2/2\sigma^2}` (a correntropy loss). It is a batch quantity: it has
  no per-sample form, ``reduction`` is ``"mean"`` only.

They live in their own registry (``REGRESSION_LOSSES``, tag ``regression``, battery
:mod:`robustlab.testing._regression_losses`): the classification registry already has ``mse``/``mae``
on softmax probabilities (Ghosh et al.), so the regression names do not clash, and a run chooses the
registry from its task. Half-precision predictions are computed in float32 and the result cast back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import Registry
from .._validation import InvalidParameterError, check_in_range, check_reduction
from ._base import HALF_DTYPES, reduce_loss

__all__ = ["REGRESSION_LOSSES", "RegressionLoss", "cs_divergence", "regression", "regression_residual_fns",
           "register_regression_loss"]

REGRESSION_LOSSES: Registry[nn.Module] = Registry("regression loss", checks="robustlab.testing._regression_losses")
register_regression_loss = REGRESSION_LOSSES.register


def regression(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered regression loss ``name`` (``mse``, ``huber``, ``quantile``, ...)."""
    return REGRESSION_LOSSES.get(name, **kwargs)


def check_regression_inputs(pred: Any, target: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred`` (N,) or (N, 1) and ``target`` (N,) floating tensors; returns both flattened to (N,)."""
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise TypeError(f"'{name}' of {owner} must be a floating-point tensor. "
                            f"Got {getattr(t, 'dtype', type(t).__name__)}.")
    if pred.dim() == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.dim() != 1:
        raise ValueError(f"'pred' of {owner} must have shape (N,) or (N, 1). Got shape {tuple(pred.shape)}.")
    if target.dim() != 1 or target.shape[0] != pred.shape[0]:
        raise ValueError(f"'target' of {owner} must have shape ({pred.shape[0]},) to match pred. "
                         f"Got shape {tuple(target.shape)}.")
    return pred, target


# -- per-sample residual functions r -> loss(r) -------------------------------------------------------
def _mse(r: torch.Tensor) -> torch.Tensor:
    return r * r


def _mae(r: torch.Tensor) -> torch.Tensor:
    return r.abs()


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _pseudo_huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    return delta * (torch.hypot(torch.full_like(r, delta), r) - delta)


def _quantile(r: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.maximum(tau * r, (tau - 1.0) * r)


def _log_cosh(r: torch.Tensor) -> torch.Tensor:
    a = r.abs()
    return a + F.softplus(-2.0 * a) - math.log(2.0)


def _cauchy(r: torch.Tensor, scale: float) -> torch.Tensor:
    a = r.abs() / scale  # log1p(a^2) = 2 log a + log1p(a^-2) for a > 1: no overflow of a^2
    lo, hi = a.clamp(max=1.0), a.clamp(min=1.0)
    return 0.5 * scale * scale * torch.where(a <= 1.0, torch.log1p(lo * lo), 2.0 * torch.log(hi) + torch.log1p(hi ** -2))


def regression_residual_fns() -> dict[str, Any]:
    """``{name: f(r, **hparams)}`` of the per-sample losses (the battery compares against closed forms)."""
    return {"mse": _mse, "mae": _mae, "huber": _huber, "pseudo_huber": _pseudo_huber, "quantile": _quantile,
            "log_cosh": _log_cosh, "cauchy": _cauchy}


class RegressionLoss(nn.Module):
    """Base of the per-sample regression losses: ``forward(pred, target)``, ``per_sample`` (N,)."""

    residual_fn: Any = None
    #: hyper-parameter name -> (low, high, closed) accepted interval
    hparam_ranges: dict[str, tuple[float | None, float | None, str]] = {}

    def __init__(self, reduction: str = "mean", **hparams: float) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=type(self).__name__)
        for k, v in hparams.items():
            lo, hi, closed = self.hparam_ranges[k]
            setattr(self, k, check_in_range(v, k, lo, hi, closed=closed, owner=type(self).__name__))
        self._hparam_names = tuple(hparams)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (``repr`` and results records)."""
        return {k: getattr(self, k) for k in self._hparam_names}

    def per_sample(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss, shape (N,), in the predictions' dtype."""
        pred, target = check_regression_inputs(pred, target, type(self).__name__)
        dtype = pred.dtype
        if dtype in HALF_DTYPES:
            pred = pred.float()
        r = target.to(pred.dtype) - pred
        return type(self).residual_fn(r, **self.hparams()).to(dtype)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reduce_loss(self.per_sample(pred, target), self.reduction)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in {**self.hparams(), "reduction": self.reduction}.items())


_POS = (0.0, None, "neither")


@register_regression_loss("mse", tags={"regression"}, reference="least squares (Gauss)")
class MSERegressionLoss(RegressionLoss):
    """Squared error :math:`(y - \\hat y)^2`; not robust (one outlier dominates)."""

    residual_fn = staticmethod(_mse)


@register_regression_loss("mae", tags={"regression"}, reference="least absolute deviations (Laplace)")
class MAERegressionLoss(RegressionLoss):
    """Absolute error :math:`|y - \\hat y|` (the median regressor); bounded gradient."""

    residual_fn = staticmethod(_mae)


@register_regression_loss("huber", tags={"regression"}, reference="Huber, Ann. Math. Stat. 1964; RIQL (arXiv:2310.12955)",
                          example_kwargs={"delta": 1.0})
class HuberRegressionLoss(RegressionLoss):
    """Huber: quadratic for :math:`|r| \\le \\delta`, linear beyond. ``delta`` > 0 (default 1)."""

    residual_fn = staticmethod(_huber)
    hparam_ranges = {"delta": _POS}

    def __init__(self, delta: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction, delta=delta)


@register_regression_loss("pseudo_huber", tags={"regression"}, reference="Charbonnier et al., ICIP 1994",
                          example_kwargs={"delta": 1.0})
class PseudoHuberRegressionLoss(RegressionLoss):
    """Smooth Huber :math:`\\delta^2(\\sqrt{1 + (r/\\delta)^2} - 1)`. ``delta`` > 0 (default 1)."""

    residual_fn = staticmethod(_pseudo_huber)
    hparam_ranges = {"delta": _POS}

    def __init__(self, delta: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction, delta=delta)


@register_regression_loss("quantile", tags={"regression"},
                          reference="Koenker & Bassett, Econometrica 1978; RIQL (arXiv:2310.12955)",
                          example_kwargs={"tau": 0.7})
class QuantileRegressionLoss(RegressionLoss):
    """Pinball loss :math:`\\max(\\tau r, (\\tau - 1) r)`; its minimiser is the tau-quantile. ``tau`` in (0, 1)."""

    residual_fn = staticmethod(_quantile)
    hparam_ranges = {"tau": (0.0, 1.0, "neither")}

    def __init__(self, tau: float = 0.5, *, reduction: str = "mean") -> None:
        super().__init__(reduction, tau=tau)


@register_regression_loss("log_cosh", tags={"regression"}, reference="log-cosh loss (smooth MAE)")
class LogCoshRegressionLoss(RegressionLoss):
    """:math:`\\log\\cosh r`, quadratic near 0 and linear in the tails; stable at any residual."""

    residual_fn = staticmethod(_log_cosh)


@register_regression_loss("cauchy", tags={"regression"}, reference="Black & Anandan, CVIU 1996 (Lorentzian)",
                          example_kwargs={"scale": 1.0})
class CauchyRegressionLoss(RegressionLoss):
    """Cauchy/Lorentzian :math:`\\frac{c^2}{2}\\log(1 + (r/c)^2)`; gradient decays to 0 for outliers. ``scale`` > 0."""

    residual_fn = staticmethod(_cauchy)
    hparam_ranges = {"scale": _POS}

    def __init__(self, scale: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction, scale=scale)


def _gauss(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian Gram matrix exp(-|a_i - b_j|^2 / 2 sigma^2) of row sets a (N, D), b (N, D)."""
    return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * sigma * sigma))


def cs_divergence(pred: torch.Tensor, target: torch.Tensor, *, sigma: float = 1.0, x: torch.Tensor | None = None,
                  x_sigma: float | None = None) -> torch.Tensor:
    r"""CS-IB prediction term: conditional Cauchy–Schwarz divergence :math:`D_{CS}(p(y|x)\,\|\,q(\hat y|x))`.

    Gaussian kernels of bandwidth ``sigma`` on targets; input kernel of bandwidth ``x_sigma`` (default
    ``sigma``) on ``x`` (N, ...) when given, else the identity. Returns a scalar (>= 0 up to rounding; 0 when
    ``pred == target``). O(N^2) memory. Yu, Yu, Løkse, Jenssen & Príncipe, "Cauchy–Schwarz Divergence
    Information Bottleneck for Regression", ICLR 2024.
    """
    owner = "cs_divergence"
    pred, target = check_regression_inputs(pred, target, owner)
    sigma = check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner=owner)
    dtype = pred.dtype
    p = (pred.float() if dtype in HALF_DTYPES else pred)[:, None]
    t = target.to(p.dtype)[:, None]
    if x is None:
        # identity input kernel: self terms are N (L_ii = 1), cross term sum_i exp(-r_i^2 / 2 sigma^2)
        r = (t - p)[:, 0]
        log_cross = torch.logsumexp(-r * r / (2.0 * sigma * sigma), 0) - math.log(r.shape[0])
        return (-2.0 * log_cross).to(dtype)
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.shape[0] != p.shape[0]:
        raise InvalidParameterError(f"The 'x' parameter of {owner} must be a floating-point tensor with "
                                    f"{p.shape[0]} rows. Got {getattr(x, 'shape', type(x).__name__)}.")
    xs = sigma if x_sigma is None else check_in_range(x_sigma, "x_sigma", 0.0, None, closed="neither", owner=owner)
    xf = x.reshape(x.shape[0], -1).to(p.dtype)
    k = _gauss(xf, xf, xs)
    k2 = k.sum(1) ** 2

    def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.log(((k * _gauss(a, b, sigma)).sum(1) / k2).sum())

    return (term(t, t) + term(p, p) - 2.0 * term(t, p)).to(dtype)


@register_regression_loss("cs_divergence", tags={"regression", "batch"},
                          reference="Yu et al., CS-IB, ICLR 2024 (arXiv:2404.17951)", example_kwargs={"sigma": 1.0})
class CSDivergenceLoss(nn.Module):
    """CS-IB prediction term (:func:`cs_divergence`): a batch quantity, ``reduction="mean"`` only."""

    def __init__(self, sigma: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__()
        self.sigma = check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner="CSDivergenceLoss")
        if reduction != "mean":
            raise InvalidParameterError(
                f"The 'reduction' parameter of CSDivergenceLoss must be 'mean' (the divergence is a batch quantity, "
                f"not a sum over samples). Got {reduction!r} instead.")
        self.reduction = reduction

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a dict."""
        return {"sigma": self.sigma}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cs_divergence(pred, target, sigma=self.sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma!r}, reduction='mean'"
