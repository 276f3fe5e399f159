"""Small helpers shared by the training tests (import as ``from _helpers import ...``)."""

from __future__ import annotations

import torch

from robustlab import models


def tiny_mlp(d, seed: int = 0, hidden: tuple[int, ...] = (16,)) -> torch.nn.Module:
    """A seeded MLP sized to data set ``d``."""
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=hidden)


def flat_params(m: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``m`` as one detached vector (for bit-identity checks)."""
    return torch.cat([p.detach().flatten() for p in m.parameters()])
