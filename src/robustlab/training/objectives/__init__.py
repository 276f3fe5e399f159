"""Objective registry: ``objectives.get(name, **kw)``, ``objectives.available()``.

Each objective module registers itself on import; the list below is the single place they are loaded.
"""

from __future__ import annotations

from typing import Any

from .._objectives import OBJECTIVES, Batch, Objective, compute_loss, register_objective

__all__ = ["OBJECTIVES", "Batch", "Objective", "available", "compute_loss", "get", "register_objective"]

# Modules registering objectives (defences, certified training, noise augmentation).
from . import (  # noqa: E402,F401
    _adversarial,
    _advmoe,  # noqa: E402,F401  (advmoe)
    _certified,
    _distillation,
    _lipschitz,  # noqa: E402,F401  (lipschitz_margin)
    _quant,  # noqa: E402,F401  (elastic_quant)
    _selftrain,  # noqa: E402,F401  (robust_self_training)
    _twostage,  # noqa: E402,F401  (pretrain, rcal: two-stage objectives with a prepare hook)
)
from ._selftrain import gaussian_mixture_diagnostic  # noqa: E402

__all__ += ["gaussian_mixture_diagnostic"]


def get(name: str, **kwargs: Any) -> Objective:
    """Build the registered objective ``name``."""
    return OBJECTIVES.get(name, **kwargs)


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered objective names."""
    return OBJECTIVES.available(pattern, tags=tags)
