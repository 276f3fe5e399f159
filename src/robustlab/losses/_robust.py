"""Noise-robust losses: GCE, truncated GCE, SCE/RCE, NCE and the active-passive combinations, JS, RLL."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_int
from . import _fn_prob as P
from ._base import IndexedLoss, Loss, register_loss

__all__ = [
    "GCELoss", "JSLoss", "NCEAGCELoss", "NCEAULLoss", "NCELoss", "NCERCELoss", "RCELoss", "RLLLoss", "SCELoss",
    "TruncatedGCELoss",
]


class _Params(Loss):
    """A stateless loss whose hyper-parameters are validated by one ``_check`` function."""

    _check: Any = None

    def __init__(self, *, reduction: str = "mean", **kwargs: Any) -> None:
        super().__init__(reduction)
        self._hp = dict(type(self)._check(**kwargs))

    def hparams(self) -> dict[str, Any]:
        return dict(self._hp)


@register_loss("gce", tags={"bounded"}, reference="Zhang & Sabuncu, NeurIPS 2018 (arXiv:1805.07836)",
               example_kwargs={"q": 0.7})
class GCELoss(_Params):
    """Generalized cross-entropy :math:`(1-p_y^q)/q`.

    Args: ``q`` in (0, 1], default 0.7. Bounded by 1/q. Zhang & Sabuncu, NeurIPS 2018.
    """

    functional = staticmethod(P.gce)
    _check = staticmethod(P.check_gce)

    def __init__(self, q: float = 0.7, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, q=q)


@register_loss("tgce", tags={"bounded", "stateful"}, reference="Zhang & Sabuncu, NeurIPS 2018 (arXiv:1805.07836)",
               example_kwargs={"q": 0.7, "k": 0.5, "num_samples": 16})
class TruncatedGCELoss(IndexedLoss):
    """Truncated GCE with per-sample pruning: :math:`w_i L_q(p_y) + (1-w_i) L_q(k)`, :math:`L_q(p)=(1-p^q)/q`.

    The weights :math:`w_i \\in \\{0,1\\}` (buffer ``weight``, initialised to 1) are set by
    :meth:`prune` to :math:`1[p_y(x_i) > k]` with the current model; a pruned sample contributes the
    constant :math:`L_q(k)` (no gradient), as in the paper (the LDR code gives it 0). Call ``prune`` on
    the training set on the paper's schedule (every 10 epochs in the second half of training).
    Args: ``q`` in (0, 1] (default 0.7), ``k`` in [0, 1) (default 0.5), ``num_samples`` (training-set size).
    Zhang & Sabuncu, NeurIPS 2018.
    """

    functional = staticmethod(P.tgce)
    weight: torch.Tensor

    def __init__(self, q: float = 0.7, k: float = 0.5, *, num_samples: int, reduction: str = "mean") -> None:
        super().__init__(reduction)
        hp = P.check_tgce(q, k)
        self.q, self.k = hp["q"], hp["k"]
        self.num_samples = check_int(num_samples, "num_samples", 1, None, owner="TruncatedGCELoss")
        self.register_buffer("weight", torch.ones(self.num_samples))

    def hparams(self) -> dict[str, Any]:
        return {"q": self.q, "k": self.k, "num_samples": self.num_samples}

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        if index is None:
            self._rows(index, 0)
        return {"q": self.q, "k": self.k, "weight": self.weight[index.to(self.weight.device)]}  # type: ignore[union-attr]

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        self._rows(index, logits.shape[0])
        return super().per_sample(logits, target, index)

    @torch.no_grad()
    def prune(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Set ``weight[index] = 1[p_y > k]`` from ``logits`` of those samples; return the kept fraction."""
        idx = self._rows(index, logits.shape[0]).to(self.weight.device)
        keep = (P._log_py(logits, target.to(logits.device)).exp() > self.k).to(self.weight)
        self.weight[idx] = keep.to(self.weight.device)
        return keep.mean()


@register_loss("rce", tags={"bounded", "symmetric"}, reference="Wang et al., ICCV 2019 (arXiv:1908.06112)",
               example_kwargs={})
class RCELoss(Loss):
    """Reverse cross-entropy with log 0 := -4: :math:`4(1-p_y)`; bounded, symmetric. Wang et al., ICCV 2019."""

    functional = staticmethod(P.rce)


@register_loss("sce", tags=set(), reference="Wang et al., ICCV 2019 (arXiv:1908.06112)",
               example_kwargs={"alpha": 0.1, "beta": 1.0})
class SCELoss(_Params):
    """Symmetric cross-entropy :math:`\\alpha\\,\\mathrm{CE} + \\beta\\cdot 4(1-p_y)` (RCE with log 0 := -4).

    Args: ``alpha`` >= 0 (default 0.1), ``beta`` >= 0 (default 1.0). Wang et al., ICCV 2019.
    """

    functional = staticmethod(P.sce)
    _check = staticmethod(P.check_sce)

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, alpha=alpha, beta=beta)


@register_loss("nce", tags={"bounded", "symmetric"}, reference="Ma et al., ICML 2020 (arXiv:2006.13554)",
               example_kwargs={})
class NCELoss(Loss):
    """Normalized cross-entropy :math:`\\log p_y/\\sum_k\\log p_k` in [0, 1]; symmetric. Ma et al., ICML 2020."""

    functional = staticmethod(P.nce)


@register_loss("nce_rce", tags={"bounded", "symmetric"}, reference="Ma et al., ICML 2020 (arXiv:2006.13554)",
               example_kwargs={"alpha": 1.0, "beta": 1.0})
class NCERCELoss(_Params):
    """Active-passive :math:`\\alpha\\,\\mathrm{NCE} + \\beta\\cdot 4(1-p_y)`.

    Args: ``alpha``, ``beta`` >= 0, default 1. Bounded, symmetric. Ma et al., ICML 2020.
    """

    functional = staticmethod(P.nce_rce)
    _check = staticmethod(lambda alpha, beta: P.check_nce_pair(alpha, beta, "nce_rce"))

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, alpha=alpha, beta=beta)


def _check_agce(alpha: float, beta: float, a: float, q: float) -> dict[str, float]:
    return {**P.check_nce_pair(alpha, beta, "nce_agce"), **P.check_agce(a, q)}


def _check_aul(alpha: float, beta: float, a: float, p: float) -> dict[str, float]:
    return {**P.check_nce_pair(alpha, beta, "nce_aul"), **P.check_aul(a, p)}


@register_loss("nce_agce", tags={"bounded"}, reference="Zhou et al., ICML 2021 (arXiv:2106.03110)",
               example_kwargs={"alpha": 1.0, "beta": 1.0, "a": 3.0, "q": 1.5})
class NCEAGCELoss(_Params):
    """:math:`\\alpha\\,\\mathrm{NCE} + \\beta((a+1)^q-(a+p_y)^q)/q`.

    Args: ``alpha``, ``beta`` >= 0 (default 1), ``a`` > 0 (default 3), ``q`` > 0 (default 1.5). Zhou et al., ICML 2021.
    """

    functional = staticmethod(P.nce_agce)
    _check = staticmethod(_check_agce)

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, a: float = 3.0, q: float = 1.5, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, alpha=alpha, beta=beta, a=a, q=q)


@register_loss("nce_aul", tags={"bounded"}, reference="Zhou et al., ICML 2021 (arXiv:2106.03110)",
               example_kwargs={"alpha": 1.0, "beta": 1.0, "a": 6.0, "p": 1.5})
class NCEAULLoss(_Params):
    """:math:`\\alpha\\,\\mathrm{NCE} + \\beta((a-p_y)^p-(a-1)^p)/p`.

    Args: ``alpha``, ``beta`` >= 0 (default 1), ``a`` > 1 (default 6), ``p`` > 0 (default 1.5). Zhou et al., ICML 2021.
    """

    functional = staticmethod(P.nce_aul)
    _check = staticmethod(_check_aul)

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, a: float = 6.0, p: float = 1.5, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, alpha=alpha, beta=beta, a=a, p=p)


@register_loss("js", tags={"bounded"}, reference="Englesson & Azizpour, NeurIPS 2021 (arXiv:2105.04522)",
               example_kwargs={"pi": 0.5})
class JSLoss(_Params):
    """Jensen-Shannon loss :math:`[\\pi_1KL(e_y\\|m)+\\pi_2KL(p\\|m)]/(-\\pi_2\\log\\pi_2)`, :math:`m=\\pi_1e_y+\\pi_2p`.

    Args: ``pi`` = :math:`\\pi_1` in (0, 1), default 0.5. Englesson & Azizpour, NeurIPS 2021.
    """

    functional = staticmethod(P.js)
    _check = staticmethod(P.check_js)

    def __init__(self, pi: float = 0.5, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, pi=pi)


@register_loss("rll", tags={"bounded", "symmetric"}, reference="Kumar & Sastry, IEEE SMC 2018",
               example_kwargs={"alpha": 1.0})
class RLLLoss(_Params):
    """Robust log loss :math:`\\log\\frac{\\alpha+1}{\\alpha}-\\log(\\alpha+p_y)+\\frac1{K-1}\\sum_{j\\ne y}\\log(\\alpha+p_j)`.

    Args: ``alpha`` > 0, default 1. Bounded, symmetric (published form). Kumar & Sastry, IEEE SMC 2018.
    """

    functional = staticmethod(P.rll)
    _check = staticmethod(P.check_rll)

    def __init__(self, alpha: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction, alpha=alpha)
