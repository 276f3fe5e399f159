"""Functional forms of every registered loss: ``f(logits, target, *, ..., reduction="mean")``.

Each computes a per-sample vector first, then applies ``reduction``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validation import check_classification_inputs, check_reduction
from ._base import reduce_loss

__all__ = ["ce"]


def ce(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Cross-entropy :math:`\ell = -\log \mathrm{softmax}(f)_y = \log\sum_k e^{f_k} - f_y`."""
    check_reduction(reduction, owner="ce")
    check_classification_inputs(logits, target, owner="ce")
    return reduce_loss(F.cross_entropy(logits, target, reduction="none"), reduction)
