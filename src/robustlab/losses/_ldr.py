"""Label-distributionally robust losses: LDR-KL and the adaptive ALDR-KL (Zhu, Ying & Yang, ICML 2023)."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_classification_inputs, check_int
from . import _fn_margin as M
from ._base import IndexedLoss, Loss, register_loss

__all__ = ["AdaptiveLDRKLLoss", "LDRKLLoss"]

_REF = "Zhu, Ying & Yang, ICML 2023 (arXiv:2112.14869)"


@register_loss("ldr_kl", tags={"ldr"}, reference=_REF,
               example_kwargs={"lam": 1.0, "margin": 0.1, "normalize": None})
class LDRKLLoss(Loss):
    """LDR-KL :math:`\\lambda\\log(\\frac1K\\sum_k\\exp((c\\,1[k\\ne y]+\\tilde f_k-\\tilde f_y)/\\lambda))`.

    Args: ``lam`` > 0 (default 1), ``margin`` c >= 0 (default 0.1), ``normalize`` in {None, "softplus",
    "mean_abs"} for :math:`\\tilde f` (default None = raw logits). lam -> 0 is Crammer-Singer, lam -> inf
    the average margin; c = 0, lam = 1, None is CE - log K. Zhu, Ying & Yang, ICML 2023.
    """

    functional = staticmethod(M.ldr_kl)

    def __init__(self, lam: float = 1.0, margin: float = 0.1, normalize: str | None = None, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        hp = M.check_ldr_kl(lam, margin, normalize)
        self.lam, self.margin, self.normalize = hp["lam"], hp["margin"], hp["normalize"]

    def hparams(self) -> dict[str, Any]:
        return {"lam": self.lam, "margin": self.margin, "normalize": self.normalize}


@register_loss("aldr_kl", tags={"ldr", "stateful"}, reference=_REF,
               example_kwargs={"lam0": 1.0, "alpha": 2.0, "num_samples": 16, "margin": 0.1, "normalize": None},
               known_failures={"check_gradcheck":
                               "lambda_i is updated from the logits and then held constant (block-coordinate "
                               "ascent, as in the paper), so finite differences also see dloss/dlambda * "
                               "dlambda/dlogits, which the loss deliberately does not differentiate."})
class AdaptiveLDRKLLoss(IndexedLoss):
    """ALDR-KL: LDR-KL with a per-sample temperature :math:`\\lambda_i` kept in the buffer ``lam``.

    At each call in training mode, for the batch's samples:
    :math:`\\lambda_i \\leftarrow \\lambda_0 - \\lambda_0 KL(\\mathrm{softmax}(\\tilde f_i/\\lambda_i)\\|u)/(\\alpha\\log K)`
    (in :math:`[\\lambda_0(1-1/\\alpha), \\lambda_0]`, stored without gradient), and the loss is
    LDR-KL at :math:`\\lambda_i` minus :math:`\\frac{\\alpha\\log K}{2\\lambda_0}(\\lambda_i-\\lambda_0)^2`.
    In eval mode the same value is returned but the buffer is not written.
    Args: ``lam0`` > 0 (default 1), ``alpha`` > 1 (default 2), ``num_samples`` (training-set size),
    ``margin`` >= 0 (default 0.1), ``normalize`` in {None, "softplus", "mean_abs"} (default None).
    Zhu, Ying & Yang, ICML 2023.
    """

    functional = staticmethod(M.aldr_kl)
    lam: torch.Tensor

    def __init__(self, lam0: float = 1.0, alpha: float = 2.0, *, num_samples: int, margin: float = 0.1,
                 normalize: str | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        hp = M.check_aldr_kl(lam0, alpha, margin, normalize)
        self.lam0, self.alpha, self.margin, self.normalize = hp["lam0"], hp["alpha"], hp["margin"], hp["normalize"]
        self.num_samples = check_int(num_samples, "num_samples", 1, None, owner="AdaptiveLDRKLLoss")
        self.register_buffer("lam", torch.full((self.num_samples,), float(self.lam0)))

    def hparams(self) -> dict[str, Any]:
        return {"lam0": self.lam0, "alpha": self.alpha, "num_samples": self.num_samples, "margin": self.margin,
                "normalize": self.normalize}

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        if index is None:
            self._rows(index, 0)
        return {"lam0": self.lam0, "alpha": self.alpha, "margin": self.margin, "normalize": self.normalize,
                "lam": self.lam[index.to(self.lam.device)].clone()}  # type: ignore[union-attr]

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        idx = self._rows(index, logits.shape[0]).to(self.lam.device)
        check_classification_inputs(logits, target, owner="aldr_kl")
        M._min_classes(logits, 2, "aldr_kl")
        v, new = M._aldr(logits, target, self.lam[idx].to(logits.device), self.lam0, self.alpha, self.margin,
                         self.normalize)
        if self.training:
            self.lam[idx] = new.to(self.lam)
        return v
