"""Conformal prediction: split conformal (thr/aps/raps scores) and robust conformal (RSCP+ with PTT).

``SplitConformal(score="thr", alpha=0.1).calibrate(probs, y).predict_sets(probs)`` -> boolean (N, C)
sets with coverage ≥ 1 − α; :class:`RobustConformal` keeps that guarantee under L2 perturbations of
the test input. Scores are in the registry :data:`SCORES`. ``calibrate_data`` / ``evaluate`` take a model's
data in any form (in memory, or a torch Dataset / DataLoader / StreamingData read batch by batch).
"""

from __future__ import annotations

from . import metrics
from ._data import SetEvaluation, evaluate_sets, model_probs
from ._robust import RobustConformal
from ._scores import SCORES, APSScore, RAPSScore, Score, THRScore, check_probs, get_score, register_score
from ._split import SplitConformal, conformal_quantile, quantile_rank
from .metrics import average_set_size, class_conditional_coverage, coverage, size_stratified_coverage

__all__ = [
    "APSScore",
    "RAPSScore",
    "RobustConformal",
    "SCORES",
    "Score",
    "SetEvaluation",
    "SplitConformal",
    "THRScore",
    "available",
    "average_set_size",
    "check_probs",
    "class_conditional_coverage",
    "conformal_quantile",
    "coverage",
    "evaluate_sets",
    "get_score",
    "metrics",
    "model_probs",
    "quantile_rank",
    "register_score",
    "size_stratified_coverage",
]


def available() -> list[str]:
    """Registered score names."""
    return SCORES.available()
