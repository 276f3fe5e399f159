"""Data sets: ``load(name, *, root=None, **options)`` and ``available()``.

Embedded (offline): ``digits``, ``mnist1d``, ``gaussians``, ``blobs2d`` and the diagnostic sets.
From files under ``root``: ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``; by path:
``svmlight:<path>``, ``csv:<path>``, ``npz:<path>``.
"""

from __future__ import annotations

from typing import Any

from ._base import DATASETS, ClassificationData, register_dataset
from ._ref import DataRef

__all__ = ["ClassificationData", "DATASETS", "DataRef", "available", "load", "register_dataset"]

# "prefix:<path>" loaders, filled by the file-format modules.
_PATH_LOADERS: dict[str, Any] = {}


# Modules registering data sets on import.
from . import _diagnostic, _download, _embedded, _files, _mnist1d  # noqa: E402,F401


def available() -> list[str]:
    """Names accepted by :func:`load` (path-based forms are listed as ``prefix:<path>``)."""
    return DATASETS.available() + [f"{p}:<path>" for p in sorted(_PATH_LOADERS)]


def load(name: str, *, root: str | None = None, **options: Any) -> ClassificationData:
    """Load the data set ``name`` (see :func:`available`) with its ``options``."""
    if not isinstance(name, str):
        raise TypeError(f"The 'name' parameter of load must be a str. Got {type(name).__name__} instead.")
    prefix, sep, path = name.partition(":")
    if sep and prefix in _PATH_LOADERS:
        return _PATH_LOADERS[prefix](path, **options)
    return DATASETS.get(name, root=root, **options)
