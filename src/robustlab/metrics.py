"""Classification metrics on logits/probabilities and labels (tensors in, floats/tensors out)."""

from __future__ import annotations

import torch

from ._validation import check_int, check_labels

__all__ = [
    "accuracy", "confusion_matrix", "expected_calibration_error", "per_class_accuracy", "top_k_accuracy",
    "worst_class_accuracy",
]


def _pred(scores: torch.Tensor) -> torch.Tensor:
    return scores if scores.dim() == 1 else scores.argmax(dim=1)


def _check(scores: torch.Tensor, y: torch.Tensor, owner: str) -> None:
    if scores.shape[0] != y.shape[0]:
        raise ValueError(f"{owner}: scores have {scores.shape[0]} rows but y has {y.shape[0]} labels.")


def accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose argmax (or given prediction, if 1-D) equals ``y``."""
    _check(scores, y, "accuracy")
    return float((_pred(scores) == y).float().mean()) if y.numel() else float("nan")


def top_k_accuracy(scores: torch.Tensor, y: torch.Tensor, k: int = 5) -> float:
    """Fraction of rows whose ``k`` highest scores include ``y`` (ties broken by ``torch.topk``)."""
    _check(scores, y, "top_k_accuracy")
    check_int(k, "k", 1, scores.shape[1], owner="top_k_accuracy")
    top = scores.topk(k, dim=1).indices
    return float((top == y[:, None]).any(dim=1).float().mean()) if y.numel() else float("nan")


def confusion_matrix(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    _check(scores, y, "confusion_matrix")
    check_labels(y, num_classes, owner="confusion_matrix")
    pred = _pred(scores)
    return torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall per class, shape (C,); NaN for classes absent from ``y``."""
    cm = confusion_matrix(scores, y, num_classes).double()
    support = cm.sum(1)
    return torch.where(support > 0, cm.diag() / support.clamp_min(1), torch.full_like(support, float("nan")))


def worst_class_accuracy(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Minimum per-class accuracy over classes present in ``y``."""
    pc = per_class_accuracy(scores, y, num_classes)
    pc = pc[~torch.isnan(pc)]
    return float(pc.min()) if pc.numel() else float("nan")


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    r"""ECE with ``n_bins`` equal-width confidence bins: :math:`\sum_b \frac{|B_b|}{N}|acc(B_b)-conf(B_b)|`.

    ``probs`` are probabilities (rows sum to 1); pass ``logits.softmax(1)`` for logits (Guo et al., 2017).
    """
    _check(probs, y, "expected_calibration_error")
    check_int(n_bins, "n_bins", 1, None, owner="expected_calibration_error")
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()
    bins = torch.clamp((conf.double() * n_bins).ceil().long() - 1, 0, n_bins - 1)
    n = y.shape[0]
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(bins, weights=conf.double(), minlength=n_bins)
    return float((acc_sum - conf_sum).abs().sum() / n) if n else float("nan")


# -- regression metrics (predictions (N,) or (N, 1), float targets (N,)) ------------------------------------
__all__ += ["interval_coverage", "interval_width", "mean_absolute_error", "mean_squared_error", "r2_score"]


def _reg(pred: torch.Tensor, y: torch.Tensor, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    from .losses._regression import check_regression_inputs

    p, t = check_regression_inputs(pred, y, owner)
    return p.double(), t.double()


def mean_squared_error(pred: torch.Tensor, y: torch.Tensor) -> float:
    """:math:`\\frac1N\\sum(y - \\hat y)^2` (NaN for no samples)."""
    p, t = _reg(pred, y, "mean_squared_error")
    return float(((t - p) ** 2).mean()) if t.numel() else float("nan")


def mean_absolute_error(pred: torch.Tensor, y: torch.Tensor) -> float:
    """:math:`\\frac1N\\sum|y - \\hat y|` (NaN for no samples)."""
    p, t = _reg(pred, y, "mean_absolute_error")
    return float((t - p).abs().mean()) if t.numel() else float("nan")


def r2_score(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Coefficient of determination :math:`1 - \\sum(y - \\hat y)^2 / \\sum(y - \\bar y)^2` (scikit-learn's
    ``r2_score``; NaN when the targets are constant or absent)."""
    p, t = _reg(pred, y, "r2_score")
    ss_tot = float(((t - t.mean()) ** 2).sum()) if t.numel() else 0.0
    return 1.0 - float(((t - p) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


def interval_coverage(lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of targets inside their interval ``[lower, upper]`` (e.g. two quantile regressors)."""
    lo, t = _reg(lower, y, "interval_coverage")
    hi, _ = _reg(upper, y, "interval_coverage")
    return float(((t >= lo) & (t <= hi)).double().mean()) if t.numel() else float("nan")


def interval_width(lower: torch.Tensor, upper: torch.Tensor) -> float:
    """Mean width ``upper - lower`` of prediction intervals."""
    lo, hi = _reg(lower, upper, "interval_width")
    return float((hi - lo).mean()) if hi.numel() else float("nan")
