"""Training: ``fit(model, data, *, loss, objective, augment, precision, ...)``, the objective and augmentation registries."""

from __future__ import annotations

from . import augment, objectives  # noqa: F401  (registers the defence objectives)
from ._checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint
from ._collapse import CollapseWarning
from ._distributed import is_main_process
from ._fit import FitResult, NonFiniteLossError, fit, predict_logits, prune_epochs, resolve_loss
from ._heads import HEADS, GaussianNBHead, Head, LDAHead, LogisticHead, learning_curve, register_head
from ._objectives import OBJECTIVES, Batch, Objective, StandardObjective, compute_loss, register_objective
from ._pretrain import PretrainResult, ProbeResult, encode, linear_probe, pretrain, projection_head

__all__ = [
    "Batch", "CollapseWarning", "FitResult", "NonFiniteLossError", "OBJECTIVES", "Objective", "StandardObjective", "atomic_write_bytes", "augment",
    "atomic_write_text", "compute_loss", "fit", "load_checkpoint", "objectives", "predict_logits",
    "prune_epochs", "register_objective", "resolve_loss", "save_checkpoint",
]
__all__ += ["HEADS", "GaussianNBHead", "Head", "LDAHead", "LogisticHead", "PretrainResult", "ProbeResult", "encode",
            "learning_curve", "linear_probe", "pretrain", "projection_head", "register_head"]

__all__ += ["is_main_process"]
from ._fit_regression import (  # noqa: E402  (regression)
    fit_regression,
    predict_regression,
    regression_metrics,
    regression_model,
)

__all__ += ["fit_regression", "predict_regression", "regression_metrics", "regression_model"]

# Registers the view augmentation resized_crop (contrastive pre-training).
from . import _views  # noqa: E402,F401
