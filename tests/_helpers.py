"""Small helpers shared by the tests (import as ``from _helpers import ...``)."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

import torch

from robustlab import models


def tiny_mlp(d, seed: int = 0, hidden: tuple[int, ...] = (16,)) -> torch.nn.Module:
    """A seeded MLP sized to data set ``d``."""
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=hidden)


def flat_params(m: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``m`` as one detached vector (for bit-identity checks)."""
    return torch.cat([p.detach().flatten() for p in m.parameters()])


ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(path: str | pathlib.Path, name: str | None = None) -> ModuleType:
    """A script that is not part of the package (``benchmarks/x.py``, ``docs/x.py``; relative to the repository
    root) imported as a fresh module."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(name or f"robustlab_script_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
