"""Post-hoc defences: adaptive smoothing of two models, robust weight signatures, robust critical fine-tuning,
denoised smoothing of (black-box) classifiers (``DenoisedSmoothing``: FO, ZO-AE-DS and consistency-trained denoisers).

Training-time defences (PGD-AT, TRADES, MART, DRO-AT, ARD/MTARD, ...) are objectives of
``robustlab.training.fit`` (``robustlab.training.objectives``).
"""

from __future__ import annotations

from ._denoised import DENOISER_METHODS, DenoisedSmoothing, DenoiserFit
from ._denoised_io import load_denoised, save_denoiser
from ._rcal import (
    Calibration,
    RCALResult,
    calibrate,
    local_outlier_factor,
    mixed_cross_entropy,
    mixup_draw,
    rcal,
)
from ._rift import RiFTResult, module_robust_criticality, robust_critical_fine_tuning
from ._signatures import WeightSignature, extract_signature, patch, patches, unpatch
from ._smoothing import (
    AdaptiveSmoothing,
    MixingNetwork,
    lipschitz_certified_radius,
    smoothing_certified_radius,
    train_mixing_network,
)

__all__ = [
    "AdaptiveSmoothing",
    "MixingNetwork",
    "RiFTResult",
    "WeightSignature",
    "extract_signature",
    "lipschitz_certified_radius",
    "module_robust_criticality",
    "patch",
    "patches",
    "robust_critical_fine_tuning",
    "smoothing_certified_radius",
    "train_mixing_network",
    "unpatch",
]
__all__ += ["DENOISER_METHODS", "DenoisedSmoothing", "DenoiserFit"]
__all__ += ["load_denoised", "save_denoiser"]
__all__ += ["RCALResult", "local_outlier_factor", "rcal"]
__all__ += ["Calibration", "calibrate"]
__all__ += ["mixed_cross_entropy", "mixup_draw"]
