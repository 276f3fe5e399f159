"""Loss registry, the ``Loss`` module base and the reduction helper."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._registry import Registry
from .._validation import check_reduction

__all__ = ["LOSSES", "Loss", "reduce_loss", "register_loss"]

LOSSES: Registry[nn.Module] = Registry("loss", checks="robustlab.testing._losses")
register_loss = LOSSES.register


def reduce_loss(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` in {"none", "mean", "sum"} to a per-sample loss vector."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    check_reduction(reduction)
    raise AssertionError("unreachable")


class Loss(nn.Module):
    """Base of every registered loss: hyper-parameters validated in ``__init__``, one-line forward.

    Subclasses implement :meth:`per_sample` returning shape (N,). Losses with per-sample state set
    ``needs_index = True`` and receive the data-set indices of the batch as ``index``.
    """

    needs_index: bool = False

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=type(self).__name__)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return reduce_loss(self.per_sample(logits, target, index), self.reduction)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (used by ``repr`` and results records)."""
        return {}

    def extra_repr(self) -> str:
        items = {**self.hparams(), "reduction": self.reduction}
        return ", ".join(f"{k}={v!r}" for k, v in items.items())
