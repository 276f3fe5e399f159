"""Data sets: ``load(name, *, root=None, **options)`` and ``available()``.

Embedded (offline): ``digits``, ``mnist1d``, ``gaussians``, ``blobs2d`` and the diagnostic sets.
From files under ``root``: ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``; by path:
``svmlight:<path>``, ``csv:<path>``, ``npz:<path>``; streamed from an image tree: ``imagefolder:<path>``
(a :class:`StreamingData`; see ``data/_imagefolder.py``).
"""

from __future__ import annotations

from typing import Any

from ._base import DATASETS, ClassificationData, register_dataset
from ._longtail import apply_load_options, longtail, longtail_counts, pop_load_options, tail_classes
from ._ref import DataRef
from ._stream import StreamingData, is_streaming, iter_batches
from ._unlabeled import (
    UNLABELED_POOL_KEYS,
    GaussianMixtureShift,
    Unlabeled,
    check_pool_spec,
    gaussian_mixture_shift,
    holdout_split,
    shift_inputs,
    split_and_shift,
    unlabeled_shifted,
)

__all__ = ["ClassificationData", "DATASETS", "DataRef", "available", "load", "register_dataset"]
__all__ += ["StreamingData", "is_streaming", "iter_batches"]
__all__ += ["gaussian_mixture_shift", "longtail", "longtail_counts", "tail_classes", "unlabeled_shifted",
            "GaussianMixtureShift", "Unlabeled"]
__all__ += ["shift_inputs"]
__all__ += ["UNLABELED_POOL_KEYS", "check_pool_spec", "holdout_split", "split_and_shift"]

# "prefix:<path>" loaders, filled by the file-format modules.
_PATH_LOADERS: dict[str, Any] = {}


# Modules registering data sets on import.
from . import _diagnostic, _download, _embedded, _files, _mnist1d  # noqa: E402,F401
from ._imagefolder import load_imagefolder  # noqa: E402

_PATH_LOADERS["imagefolder"] = load_imagefolder

from ._regression import (  # noqa: E402  (regression sets)
    REGRESSION_DATASETS,
    RegressionData,
    check_regression_csv_options,
    load_regression_csv,
)

__all__ += ["REGRESSION_DATASETS", "RegressionData"]
from ._segmentation import MASK_CORRUPTIONS, SegmentationData, corrupt_masks, synthetic_segmentation  # noqa: E402  (dense prediction)

__all__ += ["MASK_CORRUPTIONS", "SegmentationData", "corrupt_masks", "synthetic_segmentation"]


def available() -> list[str]:
    """Names accepted by :func:`load` (path-based forms are listed as ``prefix:<path>``)."""
    return DATASETS.available() + REGRESSION_DATASETS.available() + [f"{p}:<path>" for p in sorted(_PATH_LOADERS)]


def load(name: str, *, root: str | None = None,
         **options: Any) -> ClassificationData | StreamingData | RegressionData:
    """Load the data set ``name`` (see :func:`available`) with its ``options``.

    ``imagefolder:<path>`` gives a :class:`StreamingData` (``in_memory=True``: a ClassificationData).

    Regression sets (``friedman``, ``diabetes``; ``csv:<path>`` with ``target="COLUMN"``) give a
    :class:`RegressionData`.

    Every classification set also takes ``longtail=rho`` (and ``longtail_seed``): the train split subsampled to the
    exponential long-tail profile (:func:`longtail`).
    """
    if not isinstance(name, str):
        raise TypeError(f"The 'name' parameter of load must be a str. Got {type(name).__name__} instead.")
    prefix, sep, path = name.partition(":")
    if name in REGRESSION_DATASETS:
        return REGRESSION_DATASETS.get(name, root=root, **options)
    if prefix == "csv" and "target" in options:
        check_regression_csv_options(options)
        return load_regression_csv(path, **options)
    generic = pop_load_options(options)  # longtail: every data set takes it
    if sep and prefix in _PATH_LOADERS:
        return apply_load_options(_PATH_LOADERS[prefix](path, **options), generic)
    return apply_load_options(DATASETS.get(name, root=root, **options), generic)
