"""Functional forms of the probability-based losses (everything written in p = softmax(f)).

Shared numerics: ``log p_y = -cross_entropy(f, y)`` (one fused, stable kernel), ``p_y = exp(log p_y)``
and ``1 - p_y = -expm1(log p_y)``; no probability clamping is needed, so values and gradients stay
finite for logits of +-1e4.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from .._constraints import Interval
from .._validation import InvalidParameterError, check_classification_inputs, check_reduction
from ._base import loss_function, reduce_loss

__all__ = [
    "ce", "focal", "gce", "js", "label_smoothing", "mae", "mse", "nce", "nce_agce", "nce_aul",
    "nce_rce", "rce", "rll", "sce", "tgce",
]

#: RCE's log 0 := A. -4 is the SCE paper's text (Wang et al. 2019) and the LDR code's SCE; the official SCE,
#: APL and ALFs code clamp the one-hot label at 1e-4, i.e. A = log 1e-4 (their published runs use that).
RCE_LOG_ZERO = -4.0
RCE_LOG_ZERO_CODE = math.log(1e-4)  # -9.2103...


# -- helpers ----------------------------------------------------------------------------------
def _check(logits: torch.Tensor, target: torch.Tensor, reduction: str, owner: str) -> None:
    check_reduction(reduction, owner=owner)
    check_classification_inputs(logits, target, owner=owner)


def _min_classes(logits: torch.Tensor, k: int, owner: str) -> None:
    if logits.shape[1] < k:
        raise ValueError(f"{owner} needs at least {k} classes; logits has shape {tuple(logits.shape)}.")


def _log_py(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``log softmax(f)_y`` per sample, shape (N,)."""
    return -F.cross_entropy(logits, target, reduction="none")


def _one_minus_py(log_py: torch.Tensor) -> torch.Tensor:
    return -torch.expm1(log_py)


# -- hyper-parameter constraints (declared once; the modules read them from the functionals) ------------
NONNEG = Interval(Real, 0, None, closed="left")  # [0, inf)
POSITIVE = Interval(Real, 0, None, closed="neither")  # (0, inf)
Q_GCE = Interval(Real, 0, 1, closed="right")  # (0, 1]
LOG_ZERO = Interval(Real, None, 0, closed="neither")  # A = log 0 := A < 0


# -- classic -------------------------------------------------------------------------------------
@loss_function()
def ce(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Cross-entropy :math:`\ell = -\log \mathrm{softmax}(f)_y = \log\sum_k e^{f_k} - f_y`.

    Unbounded. No hyper-parameters.
    """
    _check(logits, target, reduction, "ce")
    return reduce_loss(F.cross_entropy(logits, target, reduction="none"), reduction)


@loss_function(smoothing=Interval(Real, 0, 1, closed="left"))
def label_smoothing(logits: torch.Tensor, target: torch.Tensor, *, smoothing: float = 0.1,
                    reduction: str = "mean") -> torch.Tensor:
    r"""Label-smoothed cross-entropy :math:`(1-s)(-\log p_y) + s\,\frac1K\sum_k(-\log p_k)`.

    ``smoothing`` s in [0, 1), default 0.1 (s = 0 is CE). Szegedy et al., "Rethinking the Inception
    Architecture for Computer Vision", CVPR 2016.
    """
    _check(logits, target, reduction, "label_smoothing")
    v = F.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    return reduce_loss(v, reduction)


@loss_function(gamma=NONNEG)
def focal(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    r"""Focal loss :math:`-(1-p_y)^\gamma \log p_y`.

    ``gamma`` >= 0, default 2 (gamma = 0 is CE). The modulating factor is differentiated (the APL
    code detaches it; the paper does not). Lin et al., "Focal Loss for Dense Object Detection",
    ICCV 2017 (arXiv:1708.02002).
    """
    _check(logits, target, reduction, "focal")
    lp = _log_py(logits, target)
    if gamma == 0.0:
        return reduce_loss(-lp, reduction)
    base = _one_minus_py(lp).clamp_min(torch.finfo(logits.dtype).tiny)
    return reduce_loss(base.pow(gamma) * (-lp), reduction)


@loss_function()
def mse(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Mean squared error on probabilities :math:`\sum_k (e_{y,k} - p_k)^2`, bounded in [0, 2].

    Ghosh, Kumar & Sastry, "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017.
    """
    _check(logits, target, reduction, "mse")
    p = torch.softmax(logits, dim=1)
    diff = p.scatter_add(1, target[:, None], -torch.ones_like(p[:, :1]))
    return reduce_loss(diff.square().sum(1), reduction)


@loss_function()
def mae(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Mean absolute error :math:`\sum_k |e_{y,k} - p_k| = 2(1 - p_y)`; bounded, symmetric.

    Symmetric: :math:`\sum_y \ell(f, y) = 2(K-1)`. (The LDR reference code sums the signed
    differences, which is identically 0; this is the published form.) Ghosh, Kumar & Sastry, AAAI 2017.
    """
    _check(logits, target, reduction, "mae")
    return reduce_loss(2.0 * _one_minus_py(_log_py(logits, target)), reduction)


# -- generalised / truncated cross-entropy --------------------------------------------------------
@loss_function(q=Q_GCE)
def gce(logits: torch.Tensor, target: torch.Tensor, *, q: float = 0.7, reduction: str = "mean") -> torch.Tensor:
    r"""Generalized cross-entropy :math:`L_q = (1 - p_y^q)/q`, bounded by 1/q.

    ``q`` in (0, 1], default 0.7 (q -> 0 is CE, q = 1 is MAE/2). Zhang & Sabuncu, "Generalized
    Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels", NeurIPS 2018 (arXiv:1805.07836).
    """
    _check(logits, target, reduction, "gce")
    return reduce_loss(-torch.expm1(q * _log_py(logits, target)) / q, reduction)


@loss_function(q=Q_GCE, k=Interval(Real, 0, 1, closed="left"), state=("weight",))
def tgce(logits: torch.Tensor, target: torch.Tensor, *, q: float = 0.7, k: float = 0.5,
         weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Truncated GCE: :math:`L_q(p_y)` if :math:`p_y > k`, else the constant :math:`L_q(k) = (1-k^q)/q`.

    With ``weight`` w in {0, 1}^N (the pruning state of :class:`TruncatedGCELoss`), the loss is
    :math:`w L_q(p_y) + (1-w) L_q(k)`; without it the truncation is decided on the current :math:`p_y`.
    ``q`` in (0, 1] (default 0.7), ``k`` in [0, 1) (default 0.5). Zhang & Sabuncu, NeurIPS 2018.
    """
    _check(logits, target, reduction, "tgce")
    q_, k_ = q, k
    lp = _log_py(logits, target)
    lq = -torch.expm1(q_ * lp) / q_
    lq_k = (1.0 - k_**q_) / q_
    if weight is None:
        keep = lp > math.log(k_) if k_ > 0 else torch.ones_like(lp, dtype=torch.bool)
        w = keep.to(lq.dtype)
    else:
        if not isinstance(weight, torch.Tensor) or weight.shape != lp.shape:
            raise ValueError(
                f"The 'weight' parameter of tgce must be a tensor of shape {tuple(lp.shape)}. "
                f"Got {getattr(weight, 'shape', type(weight).__name__)} instead."
            )
        if not bool(((weight >= 0) & (weight <= 1)).all()):  # also rejects NaN
            raise InvalidParameterError("The 'weight' parameter of tgce must hold pruning weights in [0, 1].")
        w = weight.to(device=lq.device, dtype=lq.dtype)
    return reduce_loss(w * lq + (1.0 - w) * lq_k, reduction)


# -- symmetric / active-passive -------------------------------------------------------------------
@loss_function(log_zero=LOG_ZERO)
def rce(logits: torch.Tensor, target: torch.Tensor, *, log_zero: float = RCE_LOG_ZERO,
        reduction: str = "mean") -> torch.Tensor:
    r"""Reverse cross-entropy :math:`-\sum_k p_k \log e_{y,k}` with :math:`\log 0 := A`, i.e. :math:`-A(1-p_y)`.

    ``log_zero`` A < 0 (default -4, the SCE paper's text and the LDR code). The official SCE, APL and ALFs
    code clamp the one-hot label at 1e-4, i.e. A = log 1e-4 ~ -9.21 (``RCE_LOG_ZERO_CODE``); their
    published runs and hyper-parameters use that value. Bounded and symmetric (:math:`\sum_y \ell = -A(K-1)`).
    Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019 (arXiv:1908.06112).
    """
    _check(logits, target, reduction, "rce")
    return reduce_loss(-log_zero * _one_minus_py(_log_py(logits, target)), reduction)


@loss_function(alpha=NONNEG, beta=NONNEG, log_zero=LOG_ZERO)
def sce(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.1, beta: float = 1.0,
        log_zero: float = RCE_LOG_ZERO, reduction: str = "mean") -> torch.Tensor:
    r"""Symmetric cross-entropy :math:`\alpha\,\mathrm{CE} + \beta\,\mathrm{RCE}`, RCE :math:`= -A(1-p_y)`.

    ``alpha`` >= 0 (default 0.1), ``beta`` >= 0 (default 1.0), the paper's CIFAR-10 values; ``log_zero``
    A < 0 (default -4, the paper's text). The published SCE numbers were tuned with the official code,
    A = log 1e-4: reproduce them with ``log_zero=math.log(1e-4)`` (``RCE_LOG_ZERO_CODE``). The LDR paper's
    SCE baseline uses A = -4 (its ``SCELoss(A=4)``). Wang et al., ICCV 2019 (arXiv:1908.06112).
    """
    _check(logits, target, reduction, "sce")
    lp = _log_py(logits, target)
    return reduce_loss(alpha * (-lp) + beta * (-log_zero) * _one_minus_py(lp), reduction)


def _nce(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(logits, dim=1)
    lp = logp.gather(1, target[:, None]).squeeze(1)
    return lp / logp.sum(1), lp


@loss_function()
def nce(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Normalized cross-entropy :math:`\log p_y / \sum_k \log p_k`, in [0, 1], symmetric (sums to 1 over y).

    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020 (arXiv:2006.13554).
    """
    _check(logits, target, reduction, "nce")
    _min_classes(logits, 2, "nce")
    return reduce_loss(_nce(logits, target)[0], reduction)


@loss_function(alpha=NONNEG, beta=NONNEG, log_zero=LOG_ZERO)
def nce_rce(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
            log_zero: float = RCE_LOG_ZERO, reduction: str = "mean") -> torch.Tensor:
    r"""Active-passive loss :math:`\alpha\,\mathrm{NCE} + \beta\,\mathrm{RCE}`, RCE :math:`= -A(1-p_y)`.

    ``alpha``, ``beta`` >= 0, default 1; ``log_zero`` A < 0 (default -4, the SCE paper's text). The APL
    code (whose runs give the published NCE+RCE numbers) and the LDR code's ``NCEandRCE`` clamp at 1e-4:
    reproduce them with ``log_zero=math.log(1e-4)`` (``RCE_LOG_ZERO_CODE``). Bounded and symmetric.
    Ma et al., ICML 2020 (arXiv:2006.13554).
    """
    _check(logits, target, reduction, "nce_rce")
    _min_classes(logits, 2, "nce_rce")
    n, lp = _nce(logits, target)
    return reduce_loss(alpha * n + beta * (-log_zero) * _one_minus_py(lp), reduction)


@loss_function(alpha=NONNEG, beta=NONNEG, a=POSITIVE, q=POSITIVE)
def nce_agce(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
             a: float = 3.0, q: float = 1.5, reduction: str = "mean") -> torch.Tensor:
    r""":math:`\alpha\,\mathrm{NCE} + \beta\,\mathrm{AGCE}`, :math:`\mathrm{AGCE} = ((a+1)^q - (a+p_y)^q)/q`.

    ``alpha``, ``beta`` >= 0 (default 1), ``a`` > 0 (default 3), ``q`` > 0 (default 1.5). Bounded.
    Zhou et al., "Asymmetric Loss Functions for Learning with Noisy Labels", ICML 2021 (arXiv:2106.03110).
    """
    _check(logits, target, reduction, "nce_agce")
    _min_classes(logits, 2, "nce_agce")
    n, lp = _nce(logits, target)
    a_, q_ = a, q
    agce = ((a_ + 1.0) ** q_ - (a_ + lp.exp()) ** q_) / q_
    return reduce_loss(alpha * n + beta * agce, reduction)


@loss_function(alpha=NONNEG, beta=NONNEG, a=Interval(Real, 1, None, closed="neither"), p=POSITIVE)
def nce_aul(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
            a: float = 6.0, p: float = 1.5, reduction: str = "mean") -> torch.Tensor:
    r""":math:`\alpha\,\mathrm{NCE} + \beta\,\mathrm{AUL}`, :math:`\mathrm{AUL} = ((a-p_y)^p - (a-1)^p)/p`.

    ``alpha``, ``beta`` >= 0 (default 1), ``a`` > 1 (default 6), ``p`` > 0 (default 1.5). Bounded.
    Zhou et al., ICML 2021 (arXiv:2106.03110).
    """
    _check(logits, target, reduction, "nce_aul")
    _min_classes(logits, 2, "nce_aul")
    n, lp = _nce(logits, target)
    a_, p_ = a, p
    aul = ((a_ - lp.exp()) ** p_ - (a_ - 1.0) ** p_) / p_
    return reduce_loss(alpha * n + beta * aul, reduction)


@loss_function(pi=Interval(Real, 0, 1, closed="neither"))
def js(logits: torch.Tensor, target: torch.Tensor, *, pi: float = 0.5, reduction: str = "mean") -> torch.Tensor:
    r"""Jensen-Shannon loss :math:`Z^{-1}[\pi_1 KL(e_y\|m) + \pi_2 KL(p\|m)]`, :math:`m = \pi_1 e_y + \pi_2 p`.

    ``pi`` = :math:`\pi_1` in (0, 1) (default 0.5), :math:`\pi_2 = 1-\pi_1`,
    :math:`Z = -\pi_2\log\pi_2`. Computed in closed form from :math:`p_y`:
    :math:`KL(e_y\|m) = -\log(\pi_1+\pi_2 p_y)`,
    :math:`KL(p\|m) = -(1-p_y)\log\pi_2 + p_y(\log p_y - \log(\pi_1+\pi_2 p_y))`. Bounded.
    Englesson & Azizpour, "Generalized Jensen-Shannon Divergence Loss for Learning with Noisy Labels",
    NeurIPS 2021 (arXiv:2105.04522).
    """
    _check(logits, target, reduction, "js")
    p1 = pi
    p2 = 1.0 - p1
    lp = _log_py(logits, target)
    py = lp.exp()
    log_m = torch.log(p1 + p2 * py)
    kl_label = -log_m
    kl_pred = -_one_minus_py(lp) * math.log(p2) + py * (lp - log_m)
    z = -p2 * math.log(p2)
    return reduce_loss((p1 * kl_label + p2 * kl_pred) / z, reduction)


@loss_function(alpha=POSITIVE)
def rll(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    r"""Robust log loss :math:`\log\frac{\alpha+1}{\alpha} - \log(\alpha+p_y) + \frac{1}{K-1}\sum_{j\ne y}\log(\alpha+p_j)`.

    ``alpha`` > 0 (default 1.0). Bounded and symmetric (:math:`\sum_y\ell = K\log\frac{\alpha+1}{\alpha}`).
    The published form; the LDR reference code's second term differs. Kumar & Sastry, "Robust Loss
    Functions for Learning Multi-class Classifiers", IEEE SMC 2018.
    """
    _check(logits, target, reduction, "rll")
    _min_classes(logits, 2, "rll")
    a = alpha
    la = torch.log(a + torch.softmax(logits, dim=1))
    la_y = la.gather(1, target[:, None]).squeeze(1)
    k = logits.shape[1]
    v = math.log((a + 1.0) / a) - la_y + (la.sum(1) - la_y) / (k - 1)
    return reduce_loss(v, reduction)

