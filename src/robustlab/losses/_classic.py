"""Classic losses: cross-entropy."""

from __future__ import annotations

import torch

from . import functional as LF
from ._base import Loss, register_loss


@register_loss("ce", tags={"classic"}, reference="cross-entropy", example_kwargs={})
class CrossEntropyLoss(Loss):
    """Cross-entropy, :math:`\\log\\sum_k e^{f_k} - f_y`."""

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return LF.ce(logits, target, reduction="none")
