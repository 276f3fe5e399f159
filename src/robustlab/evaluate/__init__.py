"""Robust evaluation: ``robust_accuracy`` (AutoAttack-style cascade), ``robustness_curve`` and sanity checks.

``robust_accuracy(model, data, "standard", eps=8/255)`` runs APGD-CE → APGD-T → Square-5000, each on the
points still correct, seeded; ``robustness_curve(model, data, eps_grid=...)`` fits ``err ≈ A·ε^k``;
``sanity_checks`` flags gradient masking.
"""

from __future__ import annotations

from ._curve import PowerLawFit, RobustnessCurve, fit_power_law, minimal_epsilon, robustness_curve
from ._robust import RobustAccuracy, clopper_pearson, robust_accuracy, standard_ensemble
from ._sanity import SanityCheck, SanityReport, sanity_checks

__all__ = [
    "PowerLawFit", "RobustAccuracy", "RobustnessCurve", "SanityCheck", "SanityReport", "clopper_pearson",
    "fit_power_law", "minimal_epsilon", "robust_accuracy", "robustness_curve", "sanity_checks",
    "standard_ensemble",
]
