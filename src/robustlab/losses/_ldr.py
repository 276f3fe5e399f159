"""Label-distributionally robust losses: LDR-KL and the adaptive ALDR-KL (Zhu, Ying & Yang, ICML 2023)."""

from __future__ import annotations

from typing import Any

import torch

from . import _fn_margin as M
from ._base import HALF_DTYPES, IndexedLoss, Loss, as_long_target, register_loss
from ._robust import NUM_SAMPLES

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
        self._init_hparams(lam=lam, margin=margin, normalize=normalize)


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
    module_constraints = NUM_SAMPLES
    lam: torch.Tensor
    lam0: float
    alpha: float
    margin: float
    normalize: str | None

    def __init__(self, lam0: float = 1.0, alpha: float = 2.0, *, num_samples: int, margin: float = 0.1,
                 normalize: str | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(lam0=lam0, alpha=alpha, num_samples=num_samples, margin=margin,
                         normalize=normalize)
        self.register_buffer("lam", torch.full((self.num_samples,), float(self.lam0)))

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        if index is None:
            self._rows(index, 0)
        return {"lam0": self.lam0, "alpha": self.alpha, "margin": self.margin, "normalize": self.normalize,
                "lam": self.lam[index.to(self.lam.device)].clone()}  # type: ignore[union-attr]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None, reduction: str
              ) -> torch.Tensor:
        target = as_long_target(target)
        lam = self.lam
        # On CPU the index and gather kernels bound-check the indices and labels themselves: the ranges are read
        # (for the clear error) only when one of them fails, which saves a sync per call; elsewhere an
        # out-of-range index is a device-side assert, so they are read first.
        lazy = isinstance(logits, torch.Tensor) and logits.device.type == "cpu" and lam.device.type == "cpu"
        idx = self._rows_and_target(logits, target, index, "aldr_kl", check_ranges=not lazy)
        M._min_classes(logits, 2, "aldr_kl")
        if idx.dtype != torch.long or idx.device != lam.device:
            idx = idx.to(device=lam.device, dtype=torch.long)
        f = logits.float() if logits.dtype in HALF_DTYPES else logits  # as every functional: half -> float32
        try:
            v, new = M._aldr(f, target, lam.index_select(0, idx), self.lam0, self.alpha, self.margin,
                             self.normalize, reduction)
        except (IndexError, RuntimeError):
            if lazy:
                try:
                    self._check_ranges(logits, target, idx, "aldr_kl")
                except ValueError as bad:
                    raise bad from None  # the clear error alone, not the kernel's
            raise
        if self.training:
            lam.index_copy_(0, idx, new if new.dtype == lam.dtype and new.device == lam.device else new.to(lam))
        return v if v.dtype == logits.dtype else v.to(logits.dtype)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self._loss(logits, target, index, "none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self._loss(logits, target, index, self.reduction)  # reduced inside the autograd node
