"""Distribution shift: common corruptions (CIFAR-10-C / MNIST-C style), mCE, tabular shifts, diagnostics.

* ``corrupt(x, name, *, severity, generator=None)`` on a batch (N, C, H, W) in [0, 1]; ``available()``;
  suites ``common``, ``common_extra``, ``mnist_c`` (``suite(name)``); registry ``CORRUPTIONS``
  (``CORRUPTIONS.get(name, severity=s)`` or ``params=...`` gives a callable :class:`Corruption`).
* ``corruption_error(model, data, *, corruptions, severities, baseline)`` -> :class:`CorruptionResult`
  (accuracy grid, mCE and relative mCE against a baseline model); ``mnist_c_accuracy`` at MNIST-C's
  own fixed parameters (``MNIST_C_PARAMS``).
* Tabular shifts: ``gaussian_feature_noise``, ``feature_dropout``, ``covariate_scaling``, ``prior_shift``.
* Quantization: ``quantize(model, bits=..., scheme=..., symmetry=..., activations=...)`` (post-training fake
  quantization; ``bits`` one width or one per layer),
  ``quantization_error(model, data, bits=[8, 6, 4, 3, 2], attack=None)`` -> :class:`QuantizationResult`.
  ``mixed_precision_search(model, data, budget=3.0)`` -> :class:`MixedPrecisionResult` (per-layer widths under an
  average-bit budget, EQ-Net's genetic search).
* Diagnostics: ``slab_randomization_auc`` / ``randomize_features`` for the ``slabs`` data set,
  ``memorization_report`` for ``modular``, ``binary_auc``.

Corruptions are computed in memory with our own random streams, so numbers are not comparable with the
published CIFAR-10-C / MNIST-C files. Approximations carry the tag ``approximate`` and a ``note``;
``frost`` uses a procedural texture (non-canonical). MNIST-C's single fixed severities are graded over
1..5 here (``MNIST_C_SEVERITY`` names the MNIST-C setting of the MNIST-C-only corruptions).
"""

from __future__ import annotations

from . import _common, _mnist_c, _weather  # noqa: F401  (register the corruptions)
from ._base import CORRUPTIONS, SUITES, Corruption, available, corrupt, register_corruption, suite
from ._diagnostics import SlabAUC, binary_auc, memorization_report, randomize_features, slab_randomization_auc
from ._evaluate import CorruptionResult, corruption_error, mnist_c_accuracy
from ._mixed import MixedPrecisionResult, average_bits, mixed_precision_search
from ._mnist_c import MNIST_C_PARAMS, MNIST_C_SEVERITY
from ._quantize import (
    QUANT_SCHEMES,
    QUANT_SYMMETRIES,
    QuantizationResult,
    fake_quantize,
    quantizable_layers,
    quantization_error,
    quantize,
)
from ._tabular import covariate_scaling, feature_dropout, gaussian_feature_noise, prior_shift

# The suites, in the benchmarks' own order (make_cifar_c.py dict order; mnist-c CORRUPTIONS).
SUITES["common"] = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
]
SUITES["common_extra"] = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
SUITES["mnist_c"] = [
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
    "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges",
]

__all__ = [
    "CORRUPTIONS", "Corruption", "CorruptionResult", "MNIST_C_PARAMS", "MNIST_C_SEVERITY", "SUITES", "SlabAUC",
    "available", "binary_auc", "corrupt", "corruption_error", "covariate_scaling", "feature_dropout",
    "gaussian_feature_noise", "memorization_report", "mnist_c_accuracy", "prior_shift", "randomize_features",
    "register_corruption", "slab_randomization_auc", "suite",
]
__all__ += ["QUANT_SCHEMES", "QuantizationResult", "fake_quantize", "quantization_error", "quantize"]
__all__ += ["QUANT_SYMMETRIES", "quantizable_layers"]
__all__ += ["MixedPrecisionResult", "average_bits", "mixed_precision_search"]
