r"""Contrastive losses on two views' embeddings: ``infonce`` (SimCLR), ``sogclr`` and ``isogclr``.

Every loss is called as ``loss(z1, z2, index=None)`` with ``z1, z2`` of shape (N, D), row ``i`` of both
being two augmented views of sample ``i``. Embeddings are L2-normalised, so similarities are cosines in
[-1, 1]. With :math:`2N` embeddings, the anchor :math:`a` has one positive :math:`p(a)` (its other view)
and :math:`2N-2` negatives :math:`S_a^-`; :math:`h_a(k) = s_{ak} - s_{a p(a)}`. The per-sample loss of
sample ``i`` is the mean over its two anchors (``i`` in view 1, ``i`` in view 2), so ``reduction="mean"``
is the mean over the :math:`2N` anchors. Everything runs in log space (log-sum-exp), so the losses stay
finite at any temperature and any similarity; half-precision embeddings are computed in float32.

They live in their own registry (``CONTRASTIVE_LOSSES``, tag ``contrastive``, battery
:mod:`robustlab.testing._contrastive`) because their inputs are embeddings, not logits and labels: they
are not a run's ``loss`` axis but :func:`robustlab.training.pretrain`'s ``loss``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import Registry
from .._validation import check_in_range, check_int, check_reduction
from ._base import HALF_DTYPES, reduce_loss

__all__ = ["CONTRASTIVE_LOSSES", "ContrastiveLoss", "ISogCLRLoss", "InfoNCELoss", "SogCLRLoss", "contrastive",
           "infonce", "register_contrastive"]

CONTRASTIVE_LOSSES: Registry[nn.Module] = Registry("contrastive loss", checks="robustlab.testing._contrastive")
register_contrastive = CONTRASTIVE_LOSSES.register


def contrastive(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered contrastive loss ``name`` (``infonce``, ``sogclr``, ``isogclr``)."""
    return CONTRASTIVE_LOSSES.get(name, **kwargs)


def _check_views(z1: Any, z2: Any, owner: str) -> None:
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point:
            raise TypeError(f"'{name}' of {owner} must be a floating-point tensor of embeddings (N, D). "
                            f"Got {getattr(z, 'dtype', type(z).__name__)}.")
        if z.dim() != 2:
            raise ValueError(f"'{name}' of {owner} must have shape (N, D). Got shape {tuple(z.shape)}.")
    if z1.shape != z2.shape:
        raise ValueError(f"The two views of {owner} must have the same shape. Got z1 {tuple(z1.shape)} and "
                         f"z2 {tuple(z2.shape)}.")
    if z1.shape[0] < 2:
        raise ValueError(f"{owner} needs at least 2 samples per batch (negatives come from the batch). "
                         f"Got {z1.shape[0]}.")


def _pair_scores(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities of the 2N anchors: ``(sim (2N, 2N), pos (2N,), negative mask (2N, 2N))``."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1, eps=1e-12)
    sim = z @ z.T
    ar = torch.arange(2 * n, device=z.device)
    partner = torch.cat([ar[n:], ar[:n]])
    pos = sim[ar, partner]
    neg = torch.ones(2 * n, 2 * n, dtype=torch.bool, device=z.device)
    neg[ar, ar] = False
    neg[ar, partner] = False
    return sim, pos, neg


def _per_sample(anchor: torch.Tensor, n: int) -> torch.Tensor:
    """(2N,) per-anchor values -> (N,) per-sample means of the two views."""
    return 0.5 * (anchor[:n] + anchor[n:])


def infonce(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    r"""SimCLR's NT-Xent (Chen et al., ICML 2020): per anchor
    :math:`-\log \frac{e^{s_{ap}/\tau}}{\sum_{k \ne a} e^{s_{ak}/\tau}}` (the positive is in the denominator).

    Shape: ``z1, z2`` (N, D) -> (N,) for ``reduction="none"``, else a scalar.
    """
    owner = "infonce"
    _check_views(z1, z2, owner)
    tau = float(check_in_range(temperature, "temperature", 0.0, None, closed="neither", owner=owner))
    check_reduction(reduction, owner=owner)
    dtype = z1.dtype
    if dtype in HALF_DTYPES:
        z1, z2 = z1.float(), z2.float()
    n = z1.shape[0]
    sim, pos, _ = _pair_scores(z1, z2)
    eye = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    denom = torch.logsumexp((sim / tau).masked_fill(eye, float("-inf")), dim=1)
    return reduce_loss(_per_sample(denom - pos / tau, n), reduction).to(dtype)


class ContrastiveLoss(nn.Module):
    """Base: ``forward(z1, z2, index=None)``; ``per_sample`` gives (N,). Stateful losses set ``needs_index``."""

    needs_index: bool = False

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=type(self).__name__)

    def per_sample(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return reduce_loss(self.per_sample(z1, z2, index), self.reduction)

    def hparams(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in {**self.hparams(), "reduction": self.reduction}.items())


@register_contrastive("infonce", tags={"contrastive"}, reference="Chen et al., ICML 2020 (SimCLR, arXiv:2002.05709)",
                      example_kwargs={"temperature": 0.5})
class InfoNCELoss(ContrastiveLoss):
    """SimCLR's NT-Xent loss with temperature ``temperature`` > 0 (default 0.1); see :func:`infonce`."""

    def __init__(self, temperature: float = 0.1, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = float(check_in_range(temperature, "temperature", 0.0, None, closed="neither",
                                                owner="infonce"))

    def per_sample(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return infonce(z1, z2, temperature=self.temperature, reduction="none")

    def hparams(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class _GlobalContrastive(ContrastiveLoss):
    """Shared state handling of SogCLR / iSogCLR: ``log_u`` (num_samples, 2), one entry per (sample, view)."""

    needs_index = True
    log_u: torch.Tensor
    seen: torch.Tensor
    _owner = ""

    def _init_state(self, num_samples: int, gamma: float) -> None:
        self.num_samples = check_int(num_samples, "num_samples", 1, None, owner=self._owner)
        self.gamma = float(check_in_range(gamma, "gamma", 0.0, 1.0, closed="right", owner=self._owner))
        self.register_buffer("log_u", torch.zeros(self.num_samples, 2))
        self.register_buffer("seen", torch.zeros(self.num_samples, 2, dtype=torch.bool))

    def _rows(self, index: Any, n: int) -> torch.Tensor:
        owner = self._owner
        if index is None:
            raise ValueError(f"{owner} keeps a moving average per sample and needs the batch's data-set indices: "
                             "call loss(z1, z2, index=idx) (robustlab.training.pretrain passes them).")
        if not isinstance(index, torch.Tensor) or index.dtype.is_floating_point or index.dtype == torch.bool:
            raise TypeError(f"index of {owner} must be an integer tensor. Got {getattr(index, 'dtype', type(index))}.")
        if index.shape != (n,):
            raise ValueError(f"index of {owner} must have shape ({n},) for a batch of {n}. Got {tuple(index.shape)}.")
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= self.num_samples:
            raise ValueError(f"index of {owner} holds data-set indices outside [0, {self.num_samples}) "
                             f"(num_samples): min {lo}, max {hi}.")
        return index.to(self.log_u.device)

    def _moving_average(self, log_g: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r""":math:`u \leftarrow (1-\gamma)u + \gamma g` in log space for the (2N,) anchors; first visit: :math:`u = g`.

        Written to the buffer in training mode only; returns the new log u (no gradient).
        """
        n = idx.shape[0]
        rows, cols = torch.cat([idx, idx]), torch.cat([idx.new_zeros(n), idx.new_ones(n)])
        old = self.log_u[rows, cols].to(log_g)
        seen = self.seen[rows, cols].to(log_g.device)
        g = log_g.detach()
        if self.gamma < 1.0:
            mixed = torch.logaddexp(old + math.log1p(-self.gamma), g + math.log(self.gamma))
            new = torch.where(seen, mixed, g)
        else:
            new = g
        if self.training:
            self.log_u[rows, cols] = new.to(self.log_u)
            self.seen[rows, cols] = True
        return new


@register_contrastive("sogclr", tags={"contrastive", "stateful"},
                      reference="Yuan et al., ICML 2022 (SogCLR, arXiv:2202.12387)",
                      example_kwargs={"num_samples": 16, "temperature": 0.5, "gamma": 0.9})
class SogCLRLoss(_GlobalContrastive):
    r"""The global contrastive loss with a moving-average estimator per sample (SogCLR).

    Per anchor :math:`a`: :math:`g_a = \frac{1}{|S_a^-|}\sum_{k\in S_a^-} e^{h_a(k)/\tau}` on the batch,
    :math:`u_a \leftarrow (1-\gamma)u_a + \gamma g_a` (kept per sample and view in ``log_u``; the first visit
    sets :math:`u_a = g_a`), and the gradient :math:`\tau \nabla g_a / u_a` -- SogCLR's estimator, whose
    error does not depend on the batch size. The value is :math:`\tau \log u_a`, the estimate of the global
    loss. ``gamma`` = 1 is the mini-batch loss (then the gradient is exact). Args: ``num_samples``
    (training-set size), ``temperature`` > 0 (default 0.1), ``gamma`` in (0, 1] (default 0.9, the paper's).
    """

    _owner = "sogclr"

    def __init__(self, *, num_samples: int, temperature: float = 0.1, gamma: float = 0.9,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = float(check_in_range(temperature, "temperature", 0.0, None, closed="neither",
                                                owner=self._owner))
        self._init_state(num_samples, gamma)

    def per_sample(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        _check_views(z1, z2, self._owner)
        idx = self._rows(index, z1.shape[0])
        dtype = z1.dtype
        if dtype in HALF_DTYPES:
            z1, z2 = z1.float(), z2.float()
        n, tau = z1.shape[0], self.temperature
        sim, pos, neg = _pair_scores(z1, z2)
        h = (sim - pos[:, None]) / tau
        log_g = torch.logsumexp(h.masked_fill(~neg, float("-inf")), dim=1) - math.log(2 * n - 2)
        log_u = self._moving_average(log_g, idx)
        ratio = torch.exp(log_g - log_u)  # g / u, differentiable in g
        anchor = tau * log_u + tau * (ratio - ratio.detach())
        return _per_sample(anchor, n).to(dtype)

    def hparams(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "temperature": self.temperature, "gamma": self.gamma}


@register_contrastive("isogclr", tags={"contrastive", "stateful"},
                      reference="Qiu et al., ICML 2023 (iSogCLR, arXiv:2305.11965)",
                      example_kwargs={"num_samples": 16, "gamma": 0.9, "rho": 0.3, "tau_init": 0.7})
class ISogCLRLoss(_GlobalContrastive):
    r"""SogCLR with an individual temperature per anchor, chosen by the paper's DRO objective (iSogCLR).

    Per anchor: :math:`F_a(w, \tau_a) = \tau_a \log g_a(w; \tau_a) + \tau_a\rho`, minimised in :math:`w` and
    :math:`\tau_a \in [\tau_{min}, \tau_{max}]` (the dual of a KL-constrained DRO over the negatives: a
    larger :math:`\rho` = a smaller KL ball = a larger temperature). :math:`u_a` is SogCLR's moving
    average of :math:`g_a`; the gradient in :math:`w` is :math:`\tau_a \nabla g_a / u_a` (SogCLR's estimator
    at :math:`\tau_a`; the temperatures get no autograd gradient). In training mode each call updates the
    temperatures of the batch's anchors (buffers ``tau`` and ``tau_grad``, per sample and view) by Algorithm 1
    of the paper (steps 7-9): the stochastic gradient
    :math:`G_a = \log u_a + \rho - \frac{1}{\tau_a u_a |S_a^-|}\sum_k e^{h_a(k)/\tau_a} h_a(k)`, its moving
    average (momentum) :math:`m_a \leftarrow (1-\beta)\,m_a + \beta\,G_a` (``tau_grad``, from 0), and the
    projected step :math:`\tau_a \leftarrow \Pi_{[\tau_{min}, \tau_{max}]}(\tau_a - \eta\, m_a)`.
    ``beta=1`` is the plain projected gradient step. As the authors' code (LibAUC ``GCLoss_v1``), the
    :math:`1/n` of the paper's :math:`G` is absorbed into :math:`\eta`; it keeps one temperature per sample
    (the two views' gradients averaged), this one per sample *and view*.

    The value is :math:`F_a` at the current :math:`\tau_a`. Args: ``num_samples``, ``rho`` (default 0.3),
    ``tau_init`` (0.7), ``tau_min`` (0.05), ``tau_max`` (1.0), ``eta`` (temperature step, 0.01), ``beta``
    (momentum weight of the new gradient, 0.9 as the paper and LibAUC) and ``gamma`` (0.9).
    """

    _owner = "isogclr"
    tau: torch.Tensor

    def __init__(self, *, num_samples: int, rho: float = 0.3, tau_init: float = 0.7, tau_min: float = 0.05,
                 tau_max: float = 1.0, eta: float = 0.01, beta: float = 0.9, gamma: float = 0.9,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        o = self._owner
        self.rho = float(check_in_range(rho, "rho", 0.0, None, owner=o))
        self.tau_min = float(check_in_range(tau_min, "tau_min", 0.0, None, closed="neither", owner=o))
        self.tau_max = float(check_in_range(tau_max, "tau_max", self.tau_min, None, owner=o))
        self.tau_init = float(check_in_range(tau_init, "tau_init", self.tau_min, self.tau_max, owner=o))
        self.eta = float(check_in_range(eta, "eta", 0.0, None, owner=o))
        self.beta = float(check_in_range(beta, "beta", 0.0, 1.0, closed="right", owner=o))
        self._init_state(num_samples, gamma)
        self.register_buffer("tau", torch.full((self.num_samples, 2), self.tau_init))
        self.register_buffer("tau_grad", torch.zeros(self.num_samples, 2))

    def per_sample(self, z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        _check_views(z1, z2, self._owner)
        idx = self._rows(index, z1.shape[0])
        dtype = z1.dtype
        if dtype in HALF_DTYPES:
            z1, z2 = z1.float(), z2.float()
        n = z1.shape[0]
        rows, cols = torch.cat([idx, idx]), torch.cat([idx.new_zeros(n), idx.new_ones(n)])
        tau = self.tau[rows, cols].to(z1)
        sim, pos, neg = _pair_scores(z1, z2)
        diff = sim - pos[:, None]
        h = (diff / tau[:, None]).masked_fill(~neg, float("-inf"))
        log_g = torch.logsumexp(h, dim=1) - math.log(2 * n - 2)
        log_u = self._moving_average(log_g, idx)
        ratio = torch.exp(log_g - log_u)
        anchor = tau * (log_u + self.rho + (ratio - ratio.detach()))
        if self.training and self.eta > 0:
            with torch.no_grad():
                w = torch.exp(h - log_u[:, None]) / (2 * n - 2)  # e^{h/tau} / (u |S^-|); 0 off the negatives
                grad = log_u + self.rho - (w * diff.detach().masked_fill(~neg, 0.0)).sum(1) / tau
                m = (1.0 - self.beta) * self.tau_grad[rows, cols].to(grad) + self.beta * grad
                self.tau_grad[rows, cols] = m.to(self.tau_grad)
                new_tau = (tau - self.eta * m).clamp(self.tau_min, self.tau_max)
                self.tau[rows, cols] = new_tau.to(self.tau)
        return _per_sample(anchor, n).to(dtype)

    def hparams(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "rho": self.rho, "tau_init": self.tau_init, "tau_min": self.tau_min,
                "tau_max": self.tau_max, "eta": self.eta, "beta": self.beta, "gamma": self.gamma}

