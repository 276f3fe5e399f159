"""Classification losses for label noise: ``get(name, **kw)``, ``available()``, ``functional``."""

from __future__ import annotations

from typing import Any

from torch import nn

from . import functional
from ._base import LOSSES, Loss, reduce_loss, register_loss
from . import _classic  # noqa: F401  (registers)

__all__ = ["LOSSES", "Loss", "available", "functional", "get", "reduce_loss", "register_loss"]


def get(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered loss ``name`` with its hyper-parameters."""
    return LOSSES.get(name, **kwargs)


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered loss names."""
    return LOSSES.available(pattern, tags=tags)
