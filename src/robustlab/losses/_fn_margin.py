"""Functional forms of the margin-based losses: hinge (CS, WW), comp-sum, Z-loss, EnsLoss, LDR-KL, ALDR-KL."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .._constraints import Interval, Options
from .._validation import InvalidParameterError, check_reduction
from ._base import loss_function, reduce_loss
from ._fn_aldr import ALDRKL, aldr_lambda, small_cpu
from ._fn_prob import NONNEG, POSITIVE, _check, _log_py, _min_classes

__all__ = ["aldr_kl", "comp_sum", "cs", "ensloss", "ldr_kl", "ww", "zloss"]

NORMALIZATIONS = (None, "softplus", "mean_abs")


MARGIN = NONNEG  # c >= 0
NORMALIZE = Options(NORMALIZATIONS)


# -- hinge losses ---------------------------------------------------------------------------------------
@loss_function(margin=MARGIN)
def cs(logits: torch.Tensor, target: torch.Tensor, *, margin: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    r"""Crammer-Singer hinge :math:`\max(0, \max_{k\ne y}(c + f_k - f_y))`.

    ``margin`` c >= 0, default 1. Unbounded. Crammer & Singer, "On the Algorithmic Implementation of
    Multiclass Kernel-based Vector Machines", JMLR 2001.
    """
    _check(logits, target, reduction, "cs")
    t = target[:, None]
    d = (logits - logits.gather(1, t) + margin).scatter(1, t, 0.0)  # the y entry supplies max(0, .)
    return reduce_loss(d.amax(1), reduction)


@loss_function(margin=MARGIN)
def ww(logits: torch.Tensor, target: torch.Tensor, *, margin: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    r"""Weston-Watkins hinge :math:`\sum_{k\ne y}\max(0, c + f_k - f_y)`.

    ``margin`` c >= 0, default 1. Unbounded. Summed over classes as published (the LDR code divides by K).
    Weston & Watkins, "Support Vector Machines for Multi-Class Pattern Recognition", ESANN 1999.
    """
    _check(logits, target, reduction, "ww")
    t = target[:, None]
    d = F.relu(logits - logits.gather(1, t) + margin).scatter(1, t, 0.0)
    return reduce_loss(d.sum(1), reduction)


# -- comp-sum and Z-loss ---------------------------------------------------------------------------------
@loss_function(tau=NONNEG)
def comp_sum(logits: torch.Tensor, target: torch.Tensor, *, tau: float = 1.5, reduction: str = "mean") -> torch.Tensor:
    r"""Comp-sum loss :math:`\Phi^\tau(\sum_{k\ne y}e^{f_k-f_y}) = (p_y^{\tau-1} - 1)/(1-\tau)`, CE at :math:`\tau=1`.

    ``tau`` >= 0, default 1.5. tau = 0 sum-exponential, 1 CE, 1.5 GCE(q=0.5), 2 MAE/2; bounded iff
    tau > 1 (by 1/(tau-1)). Computed as ``expm1((tau-1) log p_y)/(1-tau)``, exact near tau = 1. For
    tau < 1 the value grows like :math:`e^{(1-\tau)(f_k-f_y)}` and overflows for margins beyond
    about 88/(1-tau) in float32 (the loss itself is that large). Mao, Mohri & Zhong, "Cross-Entropy Loss
    Functions: Theoretical Analysis and Applications", ICML 2023 (arXiv:2304.07288).
    """
    _check(logits, target, reduction, "comp_sum")
    lp = _log_py(logits, target)
    t = tau
    v = -lp if t == 1.0 else torch.expm1((t - 1.0) * lp) / (1.0 - t)
    return reduce_loss(v, reduction)


@loss_function(a=POSITIVE, b=Interval(Real, None, None))
def zloss(logits: torch.Tensor, target: torch.Tensor, *, a: float = 1.0, b: float = 0.0,
          reduction: str = "mean") -> torch.Tensor:
    r"""Z-loss :math:`\mathrm{softplus}(a(b - z_y))/a`, :math:`z = (f - \mathrm{mean}\,f)/\mathrm{std}\,f` per row.

    ``a`` > 0 (default 1, sharpness; a -> inf is the hinge max(0, b - z_y)), ``b`` real (default 0,
    target z-score; z_y <= sqrt(K-1)). Population std, floored at the dtype's smallest normal number.
    Invariant to f -> s f + t, s > 0; bounded. de Brebisson & Vincent, "The Z-loss: a shift and scale
    invariant classification loss belonging to the Spherical Family", arXiv:1604.08859.
    """
    _check(logits, target, reduction, "zloss")
    _min_classes(logits, 2, "zloss")
    centred = logits - logits.mean(1, keepdim=True)
    std = centred.square().mean(1).clamp_min(torch.finfo(logits.dtype).tiny).sqrt()
    z_y = centred.gather(1, target[:, None]).squeeze(1) / std
    return reduce_loss(F.softplus(a * (b - z_y)) / a, reduction)


# -- EnsLoss -------------------------------------------------------------------------------------------
def _margins(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:  # binary, one score: s = (2t - 1) f
        return (2.0 * target.to(logits.dtype) - 1.0) * logits[:, 0]
    t = target[:, None]
    f_y = logits.gather(1, t).squeeze(1)
    others = logits.scatter(1, t, float("-inf"))
    return f_y - others.amax(1)


@loss_function(n_draws=Interval(Integral, 1, None), state=("generator",))
def ensloss(logits: torch.Tensor, target: torch.Tensor, *, n_draws: int = 1,
            generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""EnsLoss: a random convex calibrated loss per batch, through its derivative on the margin s.

    Margins: binary ``logits`` (N, 1) with ``target`` in {0, 1}: :math:`s = (2t-1) f` (as published);
    (N, K >= 2): :math:`s = f_y - \max_{j\ne y} f_j` (our multi-class extension, not the paper's; for
    K = 2 it equals the binary margin of f_1 - f_0). Per draw, :math:`g_j = -\exp(\varepsilon_j)`,
    :math:`\varepsilon\sim N(0,1)` (inverse Box-Cox with lambda = 0), clipped at -1, sorted and assigned
    so the k-th smallest margin gets the k-th most negative derivative (monotone, hence convex);
    ``n_draws`` >= 1 draws are averaged (default 1, as published). The derivative is :math:`g` for
    :math:`s \le 1` and :math:`g/s` beyond (the published tail), minus 1e-6 (:math:`\phi'(0) < 0`,
    calibrated). Value: the convex loss with exactly that derivative, :math:`g(s-1)` for :math:`s\le1`
    and :math:`g\log s` beyond, minus :math:`10^{-6}(s-1)` (the code returns :math:`g s`, whose
    gradient is the same), so finite differences agree with autograd. Samples are rank-coupled
    within a batch. Randomness only from ``generator``. Dai, "EnsLoss: Stochastic Calibrated Loss
    Ensembles for Preventing Overfitting in Classification", ICML 2025 (arXiv:2409.00908).
    """
    check_reduction(reduction, owner="ensloss")
    if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] == 1 and isinstance(target, torch.Tensor):
        if target.dim() != 1 or target.shape[0] != logits.shape[0]:
            raise ValueError(f"logits has shape {tuple(logits.shape)} but target has shape "
                             f"{tuple(target.shape)}; target must be (N,) labels in {{0, 1}}.")
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"target of ensloss must hold integer labels. Got dtype {target.dtype}.")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) > 1):
            raise ValueError("target of ensloss with one logit column must hold labels in {0, 1}.")
    else:
        _check(logits, target, reduction, "ensloss")
        _min_classes(logits, 2, "ensloss")
    s = _margins(logits, target)
    n = s.shape[0]
    eps = torch.randn(n_draws, n, generator=generator, dtype=s.dtype, device="cpu").to(s.device)
    g_sorted = torch.sort(-eps.exp(), dim=1).values.clamp_min(-1.0)
    order = torch.argsort(s.detach())
    g = torch.empty_like(g_sorted)
    g[:, order] = g_sorted
    g = g.mean(0)
    v = torch.where(s > 1.0, g * torch.log(s.clamp_min(1.0)), g * (s - 1.0)) - 1e-6 * (s - 1.0)
    return reduce_loss(v, reduction)


# -- LDR-KL and ALDR-KL ----------------------------------------------------------------------------
def normalize_logits(logits: torch.Tensor, normalize: str | None) -> torch.Tensor:
    """Per-row logit normalisation of the LDR code: ``softplus`` -> softplus(f)/mean(softplus(f)),
    ``mean_abs`` -> f / mean|f|; ``None`` leaves ``logits`` unchanged. Denominators floored at the
    dtype's smallest normal number (an all-zero row stays zero)."""
    if normalize is None:
        return logits
    g = F.softplus(logits) if normalize == "softplus" else logits
    den = (g if normalize == "softplus" else g.abs()).mean(1, keepdim=True)
    return g / den.clamp_min(torch.finfo(logits.dtype).tiny)


class _LDRKL(torch.autograd.Function):
    """Fused LDR-KL: one softmax of u = (f + c (1 - e_y))/lam, gradient ``p* - e_y`` with p* = softmax(u).

    The loss is lam (logsumexp(u) - u_y - log K) = -lam (log p*_y + log K), where log p*_y is computed
    exactly (u_y - max u - log sum exp(u - max u), or for large K u_y - max u + log max p*, max p* >= 1/K)
    and the gradient is p*_k for k != y and expm1(log p*_y) at y: one exp pass over the logits, like
    cross-entropy, every term in [-1, 1]. The margin is folded into ``u`` (not applied analytically after a
    softmax of f/lam), so values and gradients stay exact when p_y of the plain softmax rounds to 1 while the
    sample is still inside the margin (c/lam large). ``lam`` is a float or an (N,) tensor without gradient;
    first-order only.
    """

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor, target: torch.Tensor, lam: Any, margin: float,
                scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        t = target[:, None]
        per_row = isinstance(lam, torch.Tensor)
        scale = lam.to(f.dtype) if per_row else lam
        div = scale[:, None] if per_row else scale
        # scratch: two free (N, C) buffers of f's dtype (ALDR-KL's temperature update leaves them): u and the
        # softmax are written there instead of two fresh allocations, with the same ops and values.
        u_out, e_out = scratch if scratch is not None else (None, None)
        if margin:
            u = torch.add(f, margin, out=u_out).div_(div)  # c/lam added to every class, removed from the target
            u.scatter_(1, t, f.gather(1, t) / div)
        elif per_row or lam != 1.0:
            u = torch.div(f, div, out=u_out)
        else:
            u = f
        if small_cpu(f):
            us = u.sub_(u.amax(1, keepdim=True)) if u is not f else u - u.amax(1, keepdim=True)
            e = torch.exp(us, out=e_out)
            s = e.sum(1)
            ls_y = us.gather(1, t).squeeze(1) - s.log()
            w = s.reciprocal()
        else:
            e = torch.softmax(u, 1) if e_out is None else torch._softmax(u, 1, False, out=e_out)
            ls_y = u.gather(1, t).squeeze(1) - u.amax(1) + e.amax(1).log()
            w = None
        v = (-math.log(f.shape[1])) - ls_y
        if per_row or lam != 1.0:
            v = v * scale
        ctx.save_for_backward(e, target, w, ls_y)
        return v

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        e, target, w, ls_y = ctx.saved_tensors
        g = e * (grad if w is None else w * grad)[:, None]
        g.scatter_(1, target[:, None], (torch.expm1(ls_y) * grad)[:, None])
        return g, None, None, None, None


def _ldr(f: torch.Tensor, target: torch.Tensor, lam: torch.Tensor | float, margin: float,
         scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """lam * (logsumexp_k((c 1[k!=y] + f_k - f_y)/lam) - log K) = lam * (CE((f - c e_y)/lam, y) - log K)."""
    return _LDRKL.apply(f, target, lam, margin, scratch)


@loss_function(lam=POSITIVE, margin=MARGIN, normalize=NORMALIZE)
def ldr_kl(logits: torch.Tensor, target: torch.Tensor, *, lam: float = 1.0, margin: float = 0.1,
           normalize: str | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""LDR-KL loss :math:`\lambda\log\big(\frac1K\sum_k\exp((c\,1[k\ne y] + f_k - f_y)/\lambda)\big)`.

    The KL-regularised worst case over label distributions:
    :math:`\max_{p\in\Delta_K}\sum_k p_k(c\,1[k\ne y]+f_k-f_y) - \lambda KL(p\|u)`. Computed as
    :math:`\lambda(\mathrm{CE}((f - c e_y)/\lambda, y) - \log K)` (a stable logsumexp).
    ``lam`` > 0 (default 1; lam -> 0 gives Crammer-Singer, lam -> inf the average margin),
    ``margin`` c >= 0 (default 0.1, the paper's experiments), ``normalize`` in {None, "softplus",
    "mean_abs"} (default None: raw logits; "softplus" is the reference code's LDR-KL, "mean_abs" its
    ALDR-KL). c = 0, lam = 1, None is CE - log K. Zhu, Ying & Yang, "Label Distributionally Robust
    Losses for Multi-class Classification", ICML 2023 (arXiv:2112.14869).
    """
    _check(logits, target, reduction, "ldr_kl")
    f = normalize_logits(logits, normalize)
    return reduce_loss(_ldr(f, target, lam, margin), reduction)


def aldr_kl_lambda(f: torch.Tensor, lam: torch.Tensor, lam0: float, alpha: float) -> torch.Tensor:
    r"""ALDR-KL closed-form update :math:`\lambda_i \leftarrow \lambda_0 - \lambda_0 KL(q_i\|u)/(\alpha\log K)`,
    :math:`q_i = \mathrm{softmax}(\tilde f_i/\lambda_i)` (normalised logits ``f``, current ``lam``),
    clamped to :math:`[\lambda_0(1-1/\alpha), \lambda_0]`; no gradient."""
    with torch.no_grad():
        return aldr_lambda(f, lam.to(f.dtype).unsqueeze(1), lam0, alpha)[0].squeeze(1)


def _aldr(logits: torch.Tensor, target: torch.Tensor, lam: torch.Tensor | None, lam0: float, alpha: float,
          margin: float, normalize: str | None, reduction: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """ALDR-KL reduced by ``reduction`` and the updated temperatures (N,) (``lam`` (N,) or None: lam0)."""
    f = normalize_logits(logits, normalize)
    if lam is None:
        lam = torch.full((f.shape[0],), lam0, dtype=f.dtype, device=f.device)
    elif lam.dtype != f.dtype or lam.device != f.device:
        lam = lam.to(device=f.device, dtype=f.dtype)
    return ALDRKL.apply(f, target, lam, lam0, alpha, margin, reduction)


@loss_function(lam0=POSITIVE, alpha=Interval(Real, 1, None, closed="neither"), margin=MARGIN,
               normalize=NORMALIZE, state=("lam",))
def aldr_kl(logits: torch.Tensor, target: torch.Tensor, *, lam0: float = 1.0, alpha: float = 2.0,
            margin: float = 0.1, normalize: str | None = None, lam: torch.Tensor | None = None,
            reduction: str = "mean") -> torch.Tensor:
    r"""Adaptive LDR-KL: LDR-KL with a per-sample temperature :math:`\lambda_i` chosen by one ascent step.

    :math:`\psi = \max_{\lambda}\max_{p}\sum_k p_k(c1[k\ne y]+f_k-f_y) - \lambda KL(p\|u)
    - \frac{\alpha\log K}{2\lambda_0}(\lambda-\lambda_0)^2`, optimised as in the paper's code: first
    :math:`\lambda_i \leftarrow \lambda_0 - \lambda_0 KL(\mathrm{softmax}(\tilde f/\lambda_i)\|u)/(\alpha\log K)`
    from the current ``lam`` (``None``: :math:`\lambda_0`), kept in :math:`[\lambda_0(1-1/\alpha), \lambda_0]`
    and treated as a constant (no gradient), then the LDR-KL value at :math:`\lambda_i` minus the
    quadratic penalty. ``lam0`` > 0 (default 1), ``alpha`` > 1 (default 2), ``margin`` >= 0 (default 0.1),
    ``normalize`` as in :func:`ldr_kl` (default None). alpha -> inf gives LDR-KL(lam0). Needs K >= 2.
    Zhu, Ying & Yang, ICML 2023 (arXiv:2112.14869).
    """
    _check(logits, target, reduction, "aldr_kl")
    _min_classes(logits, 2, "aldr_kl")
    if lam is not None and (not isinstance(lam, torch.Tensor) or lam.shape != (logits.shape[0],)):
        raise ValueError(f"The 'lam' parameter of aldr_kl must be a tensor of shape ({logits.shape[0]},). "
                         f"Got {getattr(lam, 'shape', type(lam).__name__)} instead.")
    if lam is not None and (not lam.dtype.is_floating_point or not bool(((lam > 0) & torch.isfinite(lam)).all())):
        raise InvalidParameterError(
            f"The 'lam' parameter of aldr_kl must hold finite floating temperatures > 0. Got dtype {lam.dtype}, "
            f"min {float(lam.min()) if lam.numel() else None}, max {float(lam.max()) if lam.numel() else None} instead.")
    return _aldr(logits, target, lam, lam0, alpha, margin, normalize, reduction)[0]
