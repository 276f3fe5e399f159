"""Loss registry, the ``Loss`` module base and the reduction helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from .._registry import Registry
from .._validation import check_labels, check_reduction

__all__ = ["LOSSES", "IndexedLoss", "Loss", "reduce_loss", "register_loss"]

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
    #: the functional form in ``robustlab.losses.functional`` this module wraps (``None``: override per_sample)
    functional: ClassVar[Callable[..., torch.Tensor] | None] = None

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=type(self).__name__)

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        """Keyword arguments of :attr:`functional` equivalent to this module (state included) for ``index``."""
        return self.hparams()

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss, shape (N,)."""
        fn = type(self).functional
        if fn is None:
            raise NotImplementedError(f"{type(self).__name__} must define 'functional' or override per_sample.")
        return fn(logits, target, **self.functional_kwargs(index), reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return reduce_loss(self.per_sample(logits, target, index), self.reduction)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (used by ``repr`` and results records)."""
        return {}

    def extra_repr(self) -> str:
        items = {**self.hparams(), "reduction": self.reduction}
        return ", ".join(f"{k}={v!r}" for k, v in items.items())


class IndexedLoss(Loss):
    """Base of losses with per-sample state (buffers of length ``num_samples``) read and written by ``index``."""

    needs_index = True
    num_samples: int

    def _rows(self, index: torch.Tensor | None, n: int) -> torch.Tensor:
        """Validate the data-set indices of a batch of ``n`` samples and return them on the state's device."""
        owner = type(self).__name__
        if index is None:
            raise ValueError(
                f"{owner} keeps per-sample state and needs the batch's data-set indices: call "
                "loss(logits, target, index=idx) (robustlab.training.fit passes them)."
            )
        check_labels(index, self.num_samples, name="index", owner=owner)
        if index.shape[0] != n:
            raise ValueError(f"index of {owner} has {index.shape[0]} entries for a batch of {n} samples.")
        return index
