"""robustlab: make classifiers robust and prove how robust they are.

Subpackages (one per concept): ``data``, ``noise``, ``losses``, ``models``, ``training``, ``metrics``,
``attacks``, ``evaluate``, ``defences``, ``certify``, ``conformal``, ``shift``, ``bench``.
They are imported lazily: ``import robustlab; robustlab.losses.get("gce")`` works.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = (
    "attacks", "bench", "certify", "collab", "conformal", "data", "defences", "diagnostics", "evaluate", "losses",
    "metrics", "models", "noise", "pipeline", "shift", "testing", "training",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'robustlab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
