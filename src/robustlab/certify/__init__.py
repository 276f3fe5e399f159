"""Certified robustness: interval bound propagation / CROWN-IBP and randomized smoothing.

``interval_bounds(model, x, eps=...)`` bounds the logits over an ε-ball, ``certified_accuracy``
counts points whose margin lower bounds are positive; :class:`SmoothedClassifier` certifies L2
radii with Cohen et al.'s CERTIFY; ``lipschitz`` certifies L2 radii margin/(√2·L) from a Lipschitz bound.
Certified training objectives (``ibp``, ``crown_ibp``, ``gaussian_aug``, ``lipschitz_margin``) live in
:mod:`robustlab.training.objectives`.
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
from .lipschitz import LipschitzCertificate, lipschitz, lipschitz_bound, orthogonality
from .smoothing import ABSTAIN, SmoothedClassifier, certified_accuracy_curve, clopper_pearson_lower

__all__ = [
    "ABSTAIN",
    "IBP_RULES",
    "LipschitzCertificate",
    "SmoothedClassifier",
    "certified_accuracy",
    "certified_accuracy_curve",
    "clopper_pearson_lower",
    "ibp",
    "interval_bounds",
    "lipschitz",
    "lipschitz_bound",
    "margin_bounds",
    "orthogonality",
    "register_ibp_rule",
    "smoothing",
    "supported_layers",
    "tightness",
    "verified",
]
from ._regression_bounds import certified_deviation, certified_worst_mse, regression_output_bounds  # noqa: E402  (regression)

__all__ += ["certified_deviation", "certified_worst_mse", "regression_output_bounds"]
from .lipschitz import orthogonality_penalty  # noqa: E402  (OCNN regulariser, issue 14)

__all__ += ["orthogonality_penalty"]
