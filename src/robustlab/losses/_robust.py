"""Noise-robust losses: GCE, truncated GCE, SCE/RCE, NCE and the active-passive combinations, JS, RLL."""

from __future__ import annotations

import math
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

import torch

from .._constraints import Interval
from . import _fn_prob as P
from ._base import HALF_DTYPES, IndexedLoss, Loss, as_long_target, register_loss

__all__ = [
    "GCELoss", "JSLoss", "NCEAGCELoss", "NCEAULLoss", "NCELoss", "NCERCELoss", "RCELoss", "RLLLoss", "SCELoss",
    "TruncatedGCELoss",
]

#: the per-sample state of a stateful loss is sized to the training set
NUM_SAMPLES = MappingProxyType({"num_samples": Interval(Integral, 1, None)})


@register_loss("gce", tags={"bounded"}, reference="Zhang & Sabuncu, NeurIPS 2018 (arXiv:1805.07836)",
               example_kwargs={"q": 0.7})
class GCELoss(Loss):
    """Generalized cross-entropy :math:`(1-p_y^q)/q`.

    Args: ``q`` in (0, 1], default 0.7. Bounded by 1/q. Zhang & Sabuncu, NeurIPS 2018.
    """

    functional = staticmethod(P.gce)

    def __init__(self, q: float = 0.7, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(q=q)


@register_loss("tgce", tags={"bounded", "stateful"}, reference="Zhang & Sabuncu, NeurIPS 2018 (arXiv:1805.07836)",
               example_kwargs={"q": 0.7, "k": 0.5, "num_samples": 16})
class TruncatedGCELoss(IndexedLoss):
    """Truncated GCE with per-sample pruning: :math:`w_i L_q(p_y) + (1-w_i) L_q(k)`, :math:`L_q(p)=(1-p^q)/q`.

    The weights :math:`w_i \\in \\{0,1\\}` (buffer ``weight``, initialised to 1) are set by
    :meth:`prune` to :math:`1[p_y(x_i) > k]` with the current model; a pruned sample contributes the
    constant :math:`L_q(k)` (no gradient), as in the paper (the LDR code gives it 0). Call ``prune`` on
    the training set on the paper's schedule (from epoch 40 of 120, every 10 epochs;
    :func:`robustlab.training.fit` scales it to the run, see ``robustlab.training._fit.prune_epochs``).
    A prune never drops every sample: when fewer than ``ceil(min_kept * n)`` of the n pruned samples have
    :math:`p_y > k` (a model still far from fitting), the ``ceil(min_kept * n)`` with the largest :math:`p_y`
    are kept instead (our safeguard; the paper does not say).
    Args: ``q`` in (0, 1] (default 0.7), ``k`` in [0, 1) (default 0.5), ``num_samples`` (training-set size),
    ``min_kept`` in (0, 1] (default 0.1). Zhang & Sabuncu, NeurIPS 2018.
    """

    functional = staticmethod(P.tgce)
    module_constraints = MappingProxyType({**NUM_SAMPLES, "min_kept": Interval(Real, 0, 1, closed="right")})
    weight: torch.Tensor
    q: float
    k: float
    min_kept: float

    def __init__(self, q: float = 0.7, k: float = 0.5, *, num_samples: int, min_kept: float = 0.1,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(q=q, k=k, num_samples=num_samples, min_kept=min_kept)
        self.register_buffer("weight", torch.ones(self.num_samples))

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        if index is None:
            self._rows(index, 0)
        return {"q": self.q, "k": self.k, "weight": self.weight[index.to(self.weight.device)]}  # type: ignore[union-attr]

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        self._rows(index, self._batch_size(logits))
        return super().per_sample(logits, target, index)

    @torch.no_grad()
    def prune(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Set ``weight[index] = 1[p_y > k]`` from ``logits`` of those samples (at least ``ceil(min_kept * n)``
        kept, the largest :math:`p_y` first); return the kept fraction (a 0-dim tensor)."""
        idx = self._rows(index, self._batch_size(logits)).to(self.weight.device)
        f = logits.float() if logits.dtype in HALF_DTYPES else logits
        py = P._log_py(f, as_long_target(target).to(logits.device)).exp()
        keep = py > self.k
        need = math.ceil(self.min_kept * py.shape[0])
        if int(keep.sum()) < need:  # never prune (almost) every sample: keep the most confident instead
            keep = torch.zeros_like(keep).index_fill_(0, torch.topk(py, need).indices, True)
        keep_w = keep.to(self.weight)
        self.weight[idx] = keep_w.to(self.weight.device)
        return keep_w.mean()


@register_loss("rce", tags={"bounded", "symmetric"}, reference="Wang et al., ICCV 2019 (arXiv:1908.06112)",
               example_kwargs={"log_zero": -4.0})
class RCELoss(Loss):
    """Reverse cross-entropy with log 0 := A: :math:`-A(1-p_y)`; bounded, symmetric.

    Args: ``log_zero`` A < 0, default -4 (the paper's text); the official SCE/APL code's A = log 1e-4 is
    ``RCE_LOG_ZERO_CODE`` (see :func:`robustlab.losses.functional.rce`). Wang et al., ICCV 2019.
    """

    functional = staticmethod(P.rce)

    def __init__(self, log_zero: float = P.RCE_LOG_ZERO, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(log_zero=log_zero)


@register_loss("sce", tags=set(), reference="Wang et al., ICCV 2019 (arXiv:1908.06112)",
               example_kwargs={"alpha": 0.1, "beta": 1.0, "log_zero": -4.0})
class SCELoss(Loss):
    """Symmetric cross-entropy :math:`\\alpha\\,\\mathrm{CE} - \\beta A(1-p_y)` (RCE with log 0 := A).

    Args: ``alpha`` >= 0 (default 0.1), ``beta`` >= 0 (default 1.0), ``log_zero`` A < 0 (default -4, the
    paper's text; the published runs used the code's A = log 1e-4, ``RCE_LOG_ZERO_CODE``). Wang et al., ICCV 2019.
    """

    functional = staticmethod(P.sce)

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = P.RCE_LOG_ZERO, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(alpha=alpha, beta=beta, log_zero=log_zero)


@register_loss("nce", tags={"bounded", "symmetric"}, reference="Ma et al., ICML 2020 (arXiv:2006.13554)",
               example_kwargs={})
class NCELoss(Loss):
    """Normalized cross-entropy :math:`\\log p_y/\\sum_k\\log p_k` in [0, 1]; symmetric. Ma et al., ICML 2020."""

    functional = staticmethod(P.nce)


@register_loss("nce_rce", tags={"bounded", "symmetric"}, reference="Ma et al., ICML 2020 (arXiv:2006.13554)",
               example_kwargs={"alpha": 1.0, "beta": 1.0, "log_zero": -4.0})
class NCERCELoss(Loss):
    """Active-passive :math:`\\alpha\\,\\mathrm{NCE} - \\beta A(1-p_y)`.

    Args: ``alpha``, ``beta`` >= 0, default 1; ``log_zero`` A < 0 (default -4; the APL code's published
    runs used A = log 1e-4, ``RCE_LOG_ZERO_CODE``). Bounded, symmetric. Ma et al., ICML 2020.
    """

    functional = staticmethod(P.nce_rce)

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, log_zero: float = P.RCE_LOG_ZERO, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(alpha=alpha, beta=beta, log_zero=log_zero)


@register_loss("nce_agce", tags={"bounded"}, reference="Zhou et al., ICML 2021 (arXiv:2106.03110)",
               example_kwargs={"alpha": 1.0, "beta": 1.0, "a": 3.0, "q": 1.5})
class NCEAGCELoss(Loss):
    """:math:`\\alpha\\,\\mathrm{NCE} + \\beta((a+1)^q-(a+p_y)^q)/q`.

    Args: ``alpha``, ``beta`` >= 0 (default 1), ``a`` > 0 (default 3), ``q`` > 0 (default 1.5). Zhou et al., ICML 2021.
    """

    functional = staticmethod(P.nce_agce)

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, a: float = 3.0, q: float = 1.5, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(alpha=alpha, beta=beta, a=a, q=q)


@register_loss("nce_aul", tags={"bounded"}, reference="Zhou et al., ICML 2021 (arXiv:2106.03110)",
               example_kwargs={"alpha": 1.0, "beta": 1.0, "a": 6.0, "p": 1.5})
class NCEAULLoss(Loss):
    """:math:`\\alpha\\,\\mathrm{NCE} + \\beta((a-p_y)^p-(a-1)^p)/p`.

    Args: ``alpha``, ``beta`` >= 0 (default 1), ``a`` > 1 (default 6), ``p`` > 0 (default 1.5). Zhou et al., ICML 2021.
    """

    functional = staticmethod(P.nce_aul)

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, a: float = 6.0, p: float = 1.5, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(alpha=alpha, beta=beta, a=a, p=p)


@register_loss("js", tags={"bounded"}, reference="Englesson & Azizpour, NeurIPS 2021 (arXiv:2105.04522)",
               example_kwargs={"pi": 0.5})
class JSLoss(Loss):
    """Jensen-Shannon loss :math:`[\\pi_1KL(e_y\\|m)+\\pi_2KL(p\\|m)]/(-\\pi_2\\log\\pi_2)`, :math:`m=\\pi_1e_y+\\pi_2p`.

    Args: ``pi`` = :math:`\\pi_1` in (0, 1), default 0.5. Englesson & Azizpour, NeurIPS 2021.
    """

    functional = staticmethod(P.js)

    def __init__(self, pi: float = 0.5, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(pi=pi)


@register_loss("rll", tags={"bounded", "symmetric"}, reference="Kumar & Sastry, IEEE SMC 2018",
               example_kwargs={"alpha": 1.0})
class RLLLoss(Loss):
    """Robust log loss :math:`\\log\\frac{\\alpha+1}{\\alpha}-\\log(\\alpha+p_y)+\\frac1{K-1}\\sum_{j\\ne y}\\log(\\alpha+p_j)`.

    Args: ``alpha`` > 0, default 1. Bounded, symmetric (published form). Kumar & Sastry, IEEE SMC 2018.
    """

    functional = staticmethod(P.rll)

    def __init__(self, alpha: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(alpha=alpha)
