"""Classification losses for label noise: ``get(name, **kw)``, ``available()``, ``functional``.

Every loss is a :class:`Loss` module (hyper-parameters validated in ``__init__``) wrapping a function of
:mod:`robustlab.losses.functional` ``(logits, target, *, ..., reduction="mean")``. Losses with per-sample
state (``tgce``, ``aldr_kl``) set ``needs_index = True`` and are called as ``loss(logits, target, index=idx)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import functional
from ._base import LOSSES, IndexedLoss, Loss, reduce_loss, register_loss
from ._classic import CrossEntropyLoss, FocalLoss, LabelSmoothingLoss, MAELoss, MSELoss
from ._contrastive import CONTRASTIVE_LOSSES, InfoNCELoss, ISogCLRLoss, SogCLRLoss, contrastive, infonce
from ._ldr import AdaptiveLDRKLLoss, LDRKLLoss
from ._margin import CompSumLoss, CrammerSingerLoss, EnsLoss, WestonWatkinsLoss, ZLoss
from ._robust import (
    GCELoss,
    JSLoss,
    NCEAGCELoss,
    NCEAULLoss,
    NCELoss,
    NCERCELoss,
    RCELoss,
    RLLLoss,
    SCELoss,
    TruncatedGCELoss,
)

__all__ = [
    "LOSSES", "AdaptiveLDRKLLoss", "CompSumLoss", "CrammerSingerLoss", "CrossEntropyLoss", "EnsLoss", "FocalLoss",
    "GCELoss", "IndexedLoss", "JSLoss", "LDRKLLoss", "LabelSmoothingLoss", "Loss", "MAELoss", "MSELoss",
    "NCEAGCELoss", "NCEAULLoss", "NCELoss", "NCERCELoss", "RCELoss", "RLLLoss", "SCELoss", "TruncatedGCELoss",
    "WestonWatkinsLoss", "ZLoss", "available", "functional", "get", "reduce_loss", "register_loss",
]
__all__ += ["CONTRASTIVE_LOSSES", "ISogCLRLoss", "InfoNCELoss", "SogCLRLoss", "contrastive", "infonce"]
from ._regression import REGRESSION_LOSSES, cs_divergence, regression  # noqa: E402  (regression losses, own registry)

__all__ += ["REGRESSION_LOSSES", "cs_divergence", "regression"]
from ._dice import SEGMENTATION_LOSSES, DiceLoss, SoftDiceLoss, segmentation  # noqa: E402  (dense prediction)

__all__ += ["SEGMENTATION_LOSSES", "DiceLoss", "SoftDiceLoss", "segmentation"]


def get(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered loss ``name`` with its hyper-parameters (unknown names suggest the closest)."""
    return LOSSES.get(name, **kwargs)


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered loss names matching the fnmatch ``pattern`` and carrying all ``tags``."""
    return LOSSES.available(pattern, tags=tags)
