r"""Dense-prediction (segmentation) losses: ``dice`` and ``soft_dice``, registry ``SEGMENTATION_LOSSES``.

Called as ``loss(logits, target)`` with ``logits`` (N, C, H, W) and ``target`` either (N, H, W) integer labels in
``[0, C)`` (multi-class, softmax) or, for C = 1, a (N, H, W) / (N, 1, H, W) mask of 0/1 (binary, sigmoid). With
probabilities :math:`p` and one-hot targets :math:`t`, per sample and class :math:`c` (sums over pixels):

- ``dice`` (Sørensen–Dice): :math:`1 - \frac{2\sum p t + s}{\sum p + \sum t + s}`;
- ``soft_dice`` (V-Net, Milletari et al. 2016): :math:`1 - \frac{2\sum p t + s}{\sum p^2 + \sum t^2 + s}`;

averaged over classes (the per-sample value, in [0, 1]); ``smooth`` :math:`s > 0` keeps empty classes finite
(an absent class predicted absent scores 0 loss). SeaBird (Kumar et al., CVPR 2024) shows dice is more robust than
regression losses (MSE/BCE) to the noise of large objects. Half-precision logits are computed in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import Registry
from .._validation import check_in_range, check_reduction
from ._base import HALF_DTYPES, reduce_loss

__all__ = ["SEGMENTATION_LOSSES", "DiceLoss", "SoftDiceLoss", "dice_per_sample", "segmentation"]

SEGMENTATION_LOSSES: Registry[nn.Module] = Registry("segmentation loss",
                                                    checks="robustlab.testing._segmentation_losses")


def segmentation(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered segmentation loss ``name`` (``dice``, ``soft_dice``)."""
    return SEGMENTATION_LOSSES.get(name, **kwargs)


def _probs_and_onehot(logits: Any, target: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point or logits.dim() != 4:
        raise ValueError(f"'logits' of {owner} must be a floating-point tensor (N, C, H, W). "
                         f"Got {getattr(logits, 'dtype', type(logits).__name__)} {tuple(getattr(logits, 'shape', ()))}.")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"'target' of {owner} must be a tensor (N, H, W). Got {type(target).__name__}.")
    n, c, h, w = logits.shape
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"'target' of {owner} must have shape ({n}, {h}, {w}) to match logits {tuple(logits.shape)}. "
                         f"Got {tuple(target.shape)}.")
    x = logits.float() if logits.dtype in HALF_DTYPES else logits
    if c == 1:
        t = target.to(x.dtype)
        if t.numel() and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"'target' of {owner} with one channel must be a 0/1 mask.")
        p = torch.sigmoid(x)
        return torch.cat([1 - p, p], 1), torch.stack([1 - t, t], 1)
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"'target' of {owner} with C = {c} channels must hold integer class labels. Got {target.dtype}.")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(f"'target' of {owner} holds labels outside [0, {c}).")
    return torch.softmax(x, 1), F.one_hot(target.long(), c).permute(0, 3, 1, 2).to(x.dtype)


def dice_per_sample(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0, squared: bool = False,
                    owner: str = "dice") -> torch.Tensor:
    """Per-sample dice loss (N,) in the logits' dtype (``squared``: V-Net's soft-dice denominator)."""
    p, t = _probs_and_onehot(logits, target, owner)
    inter = (p * t).sum((2, 3))
    den = ((p * p).sum((2, 3)) + (t * t).sum((2, 3))) if squared else (p.sum((2, 3)) + t.sum((2, 3)))
    return (1.0 - (2.0 * inter + smooth) / (den + smooth)).mean(1).to(logits.dtype)


class _DiceBase(nn.Module):
    squared = False

    def __init__(self, smooth: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__()
        self.smooth = check_in_range(smooth, "smooth", 0.0, None, closed="neither", owner=type(self).__name__)
        self.reduction = check_reduction(reduction, owner=type(self).__name__)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a dict."""
        return {"smooth": self.smooth}

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,)."""
        return dice_per_sample(logits, target, smooth=self.smooth, squared=self.squared, owner=type(self).__name__)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reduce_loss(self.per_sample(logits, target), self.reduction)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth!r}, reduction={self.reduction!r}"


@SEGMENTATION_LOSSES.register("dice", tags={"segmentation"}, reference="Dice 1945; SeaBird (arXiv:2403.20318)",
                              example_kwargs={"smooth": 1.0})
class DiceLoss(_DiceBase):
    """Sørensen–Dice loss :math:`1 - (2\\sum pt + s)/(\\sum p + \\sum t + s)`, mean over classes."""


@SEGMENTATION_LOSSES.register("soft_dice", tags={"segmentation"}, reference="Milletari et al., 3DV 2016 (V-Net)",
                              example_kwargs={"smooth": 1.0})
class SoftDiceLoss(_DiceBase):
    """V-Net soft dice :math:`1 - (2\\sum pt + s)/(\\sum p^2 + \\sum t^2 + s)`, mean over classes."""

    squared = True
