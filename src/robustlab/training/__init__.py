"""Training: ``fit(model, data, *, loss, objective, augment, precision, ...)``, the objective and augmentation registries."""

from __future__ import annotations

from . import augment, objectives  # noqa: F401  (registers the defence objectives)
from ._checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint
from ._collapse import CollapseWarning
from ._fit import FitResult, NonFiniteLossError, fit, predict_logits, prune_epochs, resolve_loss
from ._objectives import OBJECTIVES, Batch, Objective, StandardObjective, compute_loss, register_objective

__all__ = [
    "Batch", "CollapseWarning", "FitResult", "NonFiniteLossError", "OBJECTIVES", "Objective", "StandardObjective", "atomic_write_bytes", "augment",
    "atomic_write_text", "compute_loss", "fit", "load_checkpoint", "objectives", "predict_logits",
    "prune_epochs", "register_objective", "resolve_loss", "save_checkpoint",
]
