"""Robust evaluation: ``robust_accuracy`` (AutoAttack-style cascade), ``robustness_curve`` and sanity checks.

``robust_accuracy(model, data, "standard", eps=8/255)`` runs AutoAttack's standard suite (APGD-CE → APGD-T →
FAB-T → Square-5000; ``"fast"`` drops FAB-T), each attack on the points still correct, seeded;
``robustness_curve(model, data, eps_grid=...)`` fits ``err ≈ A·ε^k``; ``sanity_checks`` flags gradient masking.
Suites are declared once in ``SUITES``. Every entry point takes ``progress=`` (None: a bar when stderr is a TTY).
"""

from __future__ import annotations

from ._curve import PowerLawFit, RobustnessCurve, fit_power_law, minimal_epsilon, robustness_curve
from ._robust import RobustAccuracy, clopper_pearson, robust_accuracy
from ._sanity import SanityCheck, SanityReport, sanity_checks
from ._suites import SUITES, Suite, fast_ensemble, resolve_attacks, standard_ensemble, suite_names

__all__ = [
    "SUITES", "PowerLawFit", "RobustAccuracy", "RobustnessCurve", "SanityCheck", "SanityReport", "Suite",
    "clopper_pearson", "fast_ensemble", "fit_power_law", "minimal_epsilon", "resolve_attacks", "robust_accuracy",
    "robustness_curve", "sanity_checks", "standard_ensemble", "suite_names",
]
from ._regression import REGRESSION_ATTACK_NORMS, regression_pgd, regression_robustness  # noqa: E402  (regression)

__all__ += ["REGRESSION_ATTACK_NORMS", "regression_pgd", "regression_robustness"]
