"""Certified robustness: interval bound propagation / CROWN-IBP and randomized smoothing.

``interval_bounds(model, x, eps=...)`` bounds the logits over an ε-ball, ``certified_accuracy``
counts points whose margin lower bounds are positive; :class:`SmoothedClassifier` certifies L2
radii with Cohen et al.'s CERTIFY. Certified training objectives (``ibp``, ``crown_ibp``,
``gaussian_aug``) live in :mod:`robustlab.training.objectives`.
"""

from __future__ import annotations

from . import ibp, smoothing
from .ibp import (
    IBP_RULES,
    certified_accuracy,
    interval_bounds,
    margin_bounds,
    register_ibp_rule,
    supported_layers,
    tightness,
    verified,
)
from .smoothing import ABSTAIN, SmoothedClassifier, certified_accuracy_curve, clopper_pearson_lower

__all__ = [
    "ABSTAIN",
    "IBP_RULES",
    "SmoothedClassifier",
    "certified_accuracy",
    "certified_accuracy_curve",
    "clopper_pearson_lower",
    "ibp",
    "interval_bounds",
    "margin_bounds",
    "register_ibp_rule",
    "smoothing",
    "supported_layers",
    "tightness",
    "verified",
]
