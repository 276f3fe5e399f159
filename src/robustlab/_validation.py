"""Parameter validation helpers with one message style (scikit-learn's).

"The 'rate' parameter of inject must be a float in [0, 1). Got 1.5 instead."
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "InvalidParameterError",
    "NotCalibratedError",
    "check_bool",
    "check_classification_inputs",
    "check_finite",
    "check_image_batch",
    "check_in_range",
    "check_int",
    "check_labels",
    "check_option",
    "check_reduction",
    "check_unit_interval",
    "REDUCTIONS",
]

REDUCTIONS = ("none", "mean", "sum")


class InvalidParameterError(ValueError, TypeError):
    """A parameter has a bad type or value (both ValueError and TypeError, as in scikit-learn)."""


class NotCalibratedError(ValueError, AttributeError):
    """An object that needs fitting/calibration was used before it."""


def _where(owner: str | None) -> str:
    return f" of {owner}" if owner else ""


def _interval(low: float | None, high: float | None, closed: str) -> str:
    left = "[" if closed in ("both", "left") and low is not None else "("
    right = "]" if closed in ("both", "right") and high is not None else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def check_in_range(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    closed: str = "both",
    owner: str | None = None,
    integer: bool = False,
) -> Any:
    """Check ``value`` is a real number (an int if ``integer``) in the interval; return it.

    ``closed`` is one of ``"both"``, ``"left"``, ``"right"``, ``"neither"``.
    """
    kind = "an int" if integer else "a float"
    msg = f"The '{name}' parameter{_where(owner)} must be {kind} in {_interval(low, high, closed)}. Got {value!r} instead."
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(msg)
    if integer and not isinstance(value, numbers.Integral):
        raise InvalidParameterError(msg)
    v = float(value)
    if math.isnan(v):
        raise InvalidParameterError(msg)
    if low is not None and (v < low or (v == low and closed in ("right", "neither"))):
        raise InvalidParameterError(msg)
    if high is not None and (v > high or (v == high and closed in ("left", "neither"))):
        raise InvalidParameterError(msg)
    return value


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None, *, owner: str | None = None) -> int:
    """Check ``value`` is an int in ``[low, high]``."""
    return int(check_in_range(value, name, low, high, closed="both", owner=owner, integer=True))


def check_unit_interval(value: Any, name: str, *, closed: str = "both", owner: str | None = None) -> float:
    return float(check_in_range(value, name, 0.0, 1.0, closed=closed, owner=owner))


def check_bool(value: Any, name: str, *, owner: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(f"The '{name}' parameter{_where(owner)} must be a bool. Got {value!r} instead.")
    return value


def check_option(value: Any, name: str, options: Iterable[Any], *, owner: str | None = None) -> Any:
    """Check ``value`` is one of ``options``."""
    opts = list(options)
    if value not in opts:
        shown = ", ".join(repr(o) for o in opts)
        kind = "a str" if all(isinstance(o, str) for o in opts if o is not None) else "a value"
        raise InvalidParameterError(
            f"The '{name}' parameter{_where(owner)} must be {kind} among {{{shown}}}. Got {value!r} instead."
        )
    return value


def check_reduction(reduction: Any, owner: str | None = None) -> str:
    return check_option(reduction, "reduction", REDUCTIONS, owner=owner)


def check_finite(x: torch.Tensor, name: str, *, owner: str | None = None) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"'{name}'{_where(owner)} contains {bad} NaN or infinite value(s); clean the input first.")


def check_labels(y: torch.Tensor, num_classes: int, name: str = "y", *, owner: str | None = None) -> None:
    """Check ``y`` is a 1-D integer tensor of class indices in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"'{name}'{_where(owner)} must be a torch.Tensor of class indices. Got {type(y).__name__}.")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"'{name}'{_where(owner)} must hold integer class indices. Got dtype {y.dtype}.")
    if y.dim() != 1:
        raise ValueError(f"'{name}'{_where(owner)} must have shape (N,). Got shape {tuple(y.shape)}.")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"'{name}'{_where(owner)} holds labels outside [0, {num_classes}): "
            f"min {int(y.min())}, max {int(y.max())}."
        )


def check_classification_inputs(logits: torch.Tensor, target: torch.Tensor, *, owner: str | None = None,
                                check_range: bool = True) -> None:
    """Check ``logits`` is (N, C) floating and ``target`` is (N,) integer class indices.

    Range checks on ``target`` need a device sync, which is cheap on CPU and acceptable at this boundary;
    ``check_range=False`` leaves them to the caller (:func:`check_target_range`, e.g. in a sync it shares).
    """
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(f"logits{_where(owner)} must be a floating-point tensor. Got {getattr(logits, 'dtype', type(logits))}.")
    if logits.dim() != 2:
        raise ValueError(f"logits{_where(owner)} must have shape (N, C). Got shape {tuple(logits.shape)}.")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target{_where(owner)} must be a tensor of class indices. Got {type(target).__name__}.")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        fix = " — use target.squeeze(1)" if target.dim() == 2 and target.shape[1] == 1 else ""
        raise ValueError(
            f"logits has shape {tuple(logits.shape)} but target has shape {tuple(target.shape)}; "
            f"target must be (N,) class indices{fix}."
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target{_where(owner)} must hold integer class indices. Got dtype {target.dtype}.")
    if check_range and target.numel():
        lo, hi = torch.stack(torch.aminmax(target)).tolist()  # one pass, one sync
        check_target_range(lo, hi, logits.shape[1], owner=owner)


def check_image_batch(x: torch.Tensor, name: str = "x", *, owner: str | None = None, unit_range: bool = True) -> None:
    """Check ``x`` is a float batch (N, ...) with values in [0, 1] (normalization belongs inside the model)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"'{name}'{_where(owner)} must be a floating-point tensor. Got {getattr(x, 'dtype', type(x))}.")
    if x.dim() < 2:
        raise ValueError(f"'{name}'{_where(owner)} must be a batch of shape (N, ...). Got shape {tuple(x.shape)}.")
    if unit_range and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(
                f"'{name}'{_where(owner)} must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}); "
                "put input normalization inside the model (robustlab.models.Normalize)."
            )


def check_target_range(lo: int, hi: int, num_classes: int, *, owner: str | None = None) -> None:
    """The class-index range check of :func:`check_classification_inputs`, from the target's min ``lo`` and
    max ``hi`` already read (so a caller can read them in the same device sync as other checks)."""
    if lo < 0 or hi >= num_classes:
        c = num_classes
        raise ValueError(
            f"target{_where(owner)} holds class indices outside [0, {c}) for logits with {c} classes: "
            f"min {lo}, max {hi}."
        )
