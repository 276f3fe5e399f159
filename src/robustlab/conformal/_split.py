"""Split conformal prediction with an exact order-statistic threshold (Vovk et al.; Lei et al. 2018)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from .._validation import NotCalibratedError, check_in_range, check_labels
from ._scores import Score, check_probs, get_score

__all__ = ["SplitConformal", "conformal_quantile", "quantile_rank"]


def quantile_rank(n: int, alpha: float) -> int:
    """``k = ⌈(n + 1)(1 − α)⌉``: the rank of the calibration score used as threshold (may exceed ``n``)."""
    return int(math.ceil(round((n + 1) * (1.0 - alpha), 9)))


def conformal_quantile(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """The exact ``⌈(n+1)(1−α)⌉``-th smallest of ``scores`` (no interpolation); ``+inf`` if that rank exceeds n.

    With exchangeable calibration and test scores, ``P(S_test <= q) >= 1 − α``.
    """
    check_in_range(alpha, "alpha", 0.0, 1.0, closed="neither", owner="conformal_quantile")
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point:
        raise TypeError(f"'scores' of conformal_quantile must be a floating-point tensor. Got {getattr(scores, 'dtype', type(scores))}.")
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"'scores' of conformal_quantile contains {int(torch.isnan(scores).sum())} NaN value(s); "
                         "a NaN score would make the threshold NaN and every set empty.")
    n = scores.numel()
    k = quantile_rank(n, alpha)
    if k > n:
        warnings.warn(f"Only {n} calibration points for alpha={alpha}: the threshold is +inf (every set is full). "
                      f"Use at least {math.ceil(1 / alpha) - 1} points.", stacklevel=2)
        return torch.tensor(float("inf"), dtype=scores.dtype, device=scores.device)
    return scores.flatten().kthvalue(k).values


class SplitConformal:
    """Split conformal classifier: ``SplitConformal(score="thr", alpha=0.1).calibrate(probs, y).predict_sets(p)``.

    The threshold ``q`` is the ⌈(n+1)(1−α)⌉-th smallest calibration score; the prediction set is
    ``{y : S(x, y) <= q}`` as a boolean (N, C) mask; marginal coverage is ≥ 1 − α (and below
    1 − α + 1/(n+1) for continuous scores). Randomized scores draw from ``generator``.
    """

    def __init__(self, score: str | Score = "thr", alpha: float = 0.1, *, score_kw: dict[str, Any] | None = None) -> None:
        self.alpha = float(check_in_range(alpha, "alpha", 0.0, 1.0, closed="neither", owner="SplitConformal"))
        self.score = get_score(score, **(score_kw or {}))
        self.threshold_: torch.Tensor | None = None
        self.n_calibration_: int = 0

    def __repr__(self) -> str:
        return f"SplitConformal(score={self.score!r}, alpha={self.alpha})"

    def calibrate(self, probs: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None) -> SplitConformal:
        """Fit the threshold on calibration probabilities (N, C) and labels (N,); returns ``self``."""
        check_probs(probs, owner="SplitConformal.calibrate")
        check_labels(y, probs.shape[1], owner="SplitConformal.calibrate")
        if y.shape[0] != probs.shape[0]:
            raise ValueError(f"probs has {probs.shape[0]} rows but y has {y.shape[0]} labels.")
        scores = self.score(probs, y.to(probs.device), generator=generator)
        self.threshold_ = conformal_quantile(scores, self.alpha)
        self.n_calibration_ = int(y.shape[0])
        self.num_classes_ = int(probs.shape[1])
        return self

    def calibrate_data(self, model: Any, data: Any, *, generator: torch.Generator | None = None,
                       batch_size: int = 1024, progress: bool | None = None) -> SplitConformal:
        """:meth:`calibrate` on ``model``'s probabilities over ``data`` (ClassificationData test split, ``(x, y)``,
        torch Dataset/DataLoader or StreamingData, read ``batch_size`` at a time); returns ``self``."""
        from ._data import model_probs

        probs, y = model_probs(model, data, batch_size=batch_size, progress=progress)
        return self.calibrate(probs, y, generator=generator)

    def evaluate(self, model: Any, data: Any, *, generator: torch.Generator | None = None, batch_size: int = 1024,
                 progress: bool | None = None) -> Any:
        """Prediction sets of ``model`` on ``data`` (any form, as :meth:`calibrate_data`) and their metrics: a
        :class:`~robustlab.conformal.SetEvaluation` (coverage, average size, size-stratified, per-class)."""
        from ._data import evaluate_sets, model_probs

        probs, y = model_probs(model, data, batch_size=batch_size, progress=progress)
        return evaluate_sets(self.predict_sets(probs, generator=generator), y)

    def predict_sets(self, probs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boolean (N, C) mask of the prediction sets ``{y : S(x, y) <= threshold_}``."""
        if self.threshold_ is None:
            raise NotCalibratedError("This SplitConformal is not calibrated yet; call .calibrate(probs, y) before predict_sets.")
        check_probs(probs, owner="SplitConformal.predict_sets")
        if probs.shape[1] != self.num_classes_:
            raise ValueError(f"probs has {probs.shape[1]} classes but the calibration data had {self.num_classes_}.")
        return self.score(probs, generator=generator) <= self.threshold_
