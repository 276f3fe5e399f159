"""Distribution shift: common corruptions (CIFAR-10-C / MNIST-C style), mCE, tabular shifts, diagnostics.

* ``corrupt(x, name, *, severity, generator=None)`` on a batch (N, C, H, W) in [0, 1]; ``available()``;
  suites ``common``, ``common_extra``, ``mnist_c`` (``suite(name)``); registry ``CORRUPTIONS``
  (``CORRUPTIONS.get(name, severity=s)`` or ``params=...`` gives a callable :class:`Corruption`).
* ``corruption_error(model, data, *, corruptions, severities, baseline)`` -> :class:`CorruptionResult`
  (accuracy grid, mCE and relative mCE against a baseline model).
* Tabular shifts: ``gaussian_feature_noise``, ``feature_dropout``, ``covariate_scaling``, ``prior_shift``.
* Diagnostics: ``slab_randomization_auc`` / ``randomize_features`` for the ``slabs`` data set,
  ``memorization_report`` for ``modular``, ``binary_auc``.

Corruptions are computed in memory with our own random streams, so numbers are not comparable with the
published CIFAR-10-C / MNIST-C files. Approximations carry the tag ``approximate`` and a ``note``.
"""

from __future__ import annotations

from . import _common, _mnist_c  # noqa: F401  (register the corruptions)
from ._base import CORRUPTIONS, SUITES, Corruption, available, corrupt, register_corruption, suite
from ._diagnostics import SlabAUC, binary_auc, memorization_report, randomize_features, slab_randomization_auc
from ._evaluate import CorruptionResult, corruption_error
from ._mnist_c import MNIST_C_SEVERITY
from ._tabular import covariate_scaling, feature_dropout, gaussian_feature_noise, prior_shift

__all__ = [
    "CORRUPTIONS", "Corruption", "CorruptionResult", "MNIST_C_SEVERITY", "SUITES", "SlabAUC", "available",
    "binary_auc", "corrupt", "corruption_error", "covariate_scaling", "feature_dropout",
    "gaussian_feature_noise", "memorization_report", "prior_shift", "randomize_features", "register_corruption",
    "slab_randomization_auc", "suite",
]
