"""``fit``'s setup: option tables and validation, loss/objective/optimizer resolution, LR schedule, errors."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError, check_bool, check_in_range, check_int, check_option
from ._objectives import OBJECTIVES, Objective
from ._select import SELECT_METRICS

__all__ = ["NonFiniteLossError", "OPTIMIZERS", "PRECISIONS", "SCHEDULES", "prune_epochs", "resolve_loss"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(ValueError, FloatingPointError):
    """The training loss became NaN or infinite (training diverged); the message names the epoch and step."""


def resolve_loss(loss: Any, loss_kw: dict[str, Any] | None = None) -> Any:
    """A registry name becomes a loss module; a callable is used as is."""
    if isinstance(loss, str):
        from ..losses import get

        return get(loss, **(loss_kw or {}))
    if callable(loss):
        if loss_kw:
            raise ValueError("The 'loss_kw' parameter of fit is only used with a registry name for 'loss'.")
        return loss
    raise TypeError(f"The 'loss' parameter of fit must be a registry name or a callable. Got {type(loss).__name__}.")


def _takes_num_samples(name: str) -> bool:
    import inspect

    from ..losses import LOSSES

    if name not in LOSSES:
        return False
    try:
        return "num_samples" in inspect.signature(LOSSES.spec(name).factory).parameters
    except (TypeError, ValueError):
        return False


def _resolve_objective(objective: Any, objective_kw: dict[str, Any] | None) -> Objective:
    if isinstance(objective, str):
        return OBJECTIVES.get(objective, **(objective_kw or {}))
    if objective_kw:
        raise ValueError("The 'objective_kw' parameter of fit is only used with a registry name for 'objective'.")
    if not callable(objective):
        raise TypeError(f"The 'objective' parameter of fit must be a registry name or an Objective. Got {objective!r}.")
    return objective


def _make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def prune_epochs(epochs: int) -> list[int]:
    """0-based epochs at whose start a truncated loss (TGCE) re-selects its kept samples.

    Zhang & Sabuncu (NeurIPS 2018) train 120 epochs and prune from epoch 40 on, every 10 epochs; this is
    that schedule scaled to ``epochs``: start ``round(E/3)``, period ``max(1, round(E/12))``
    (E = 120: 40, 50, ..., 110; E = 20: 7, 9, ..., 19). (The LDR code prunes in the second half instead.)
    """
    start, every = max(1, round(epochs / 3)), max(1, round(epochs / 12))
    return list(range(start, epochs, every))


def _raise_non_finite(losses_seen: list[torch.Tensor], epoch: int, steps_per_epoch: int, lr: float, owner: str) -> None:
    vals = torch.stack(losses_seen).float().cpu()
    bad = int((~torch.isfinite(vals)).nonzero()[0, 0]) if not bool(torch.isfinite(vals).all()) else len(vals) - 1
    raise NonFiniteLossError(
        f"{owner}: the training loss became non-finite ({float(vals[bad])}) at epoch {epoch + 1}, step "
        f"{bad + 1} of {steps_per_epoch} (global step {epoch * steps_per_epoch + bad + 1}); training diverged. "
        f"Lower the learning rate (lr={lr:g}) or check the data and the loss for NaN/inf."
    )


def _lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "constant" or total <= 0:
        return 1.0
    frac = step / total
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    return 0.01 if frac >= 0.75 else 0.1 if frac >= 0.5 else 1.0  # "step": /10 at 50% and 75%



def _check_new_options(owner: str, precision: str, checkpoint_dir: Any,
                       checkpoint_every: int, resume: bool, val_fraction: float | None, select: str | None,
                       select_every: int, patience: int | None, ema: float | None, has_val_data: bool = False) -> float:
    """Validate fit's augmentation/precision/resume/selection options; return the held-out fraction."""
    check_option(precision, "precision", PRECISIONS, owner=owner)
    check_int(checkpoint_every, "checkpoint_every", 1, None, owner=owner)
    check_bool(resume, "resume", owner=owner)
    if resume and checkpoint_dir is None:
        raise InvalidParameterError("The 'resume' parameter of fit needs checkpoint_dir (the folder to resume from).")
    check_option(select, "select", (None, *SELECT_METRICS), owner=owner)
    if has_val_data:
        if select is None:
            raise InvalidParameterError("The 'val_data' parameter of fit is only used with select='clean' or 'pgd'.")
        if val_fraction:
            raise InvalidParameterError(
                f"fit got both val_data and val_fraction={val_fraction!r}: select on one held-out set (drop one).")
        return 0.0
    if val_fraction is None:
        val_fraction = 0.1 if select is not None else 0.0
    check_in_range(val_fraction, "val_fraction", 0.0, 1.0, closed="left", owner=owner)
    if select is not None and val_fraction == 0:
        raise InvalidParameterError(f"select={select!r} needs a held-out split: val_fraction > 0 (default 0.1). Got 0.")
    check_int(select_every, "select_every", 1, None, owner=owner)
    if patience is not None:
        check_int(patience, "patience", 1, None, owner=owner)
        if select is None:
            raise InvalidParameterError("The 'patience' parameter of fit needs select='clean' or 'pgd'.")
    if ema is not None:
        check_in_range(ema, "ema", 0.0, 1.0, closed="neither", owner=owner)
    return float(val_fraction)
