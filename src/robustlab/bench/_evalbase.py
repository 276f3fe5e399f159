"""The evaluation plug-in interface: what an evaluation sees (:class:`EvalContext`), returns
(:class:`EvalOutput`) and declares (:class:`Evaluation`). Plug-ins live in ``bench.evaluations``."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._metrics import Metric

__all__ = ["EvalContext", "EvalOutput", "Evaluation"]


@dataclass
class EvalContext:
    """What an evaluation sees: the trained model (eval mode), the clean data, the labels it trained on."""

    model: nn.Module
    data: Any  # ClassificationData with clean labels
    train_labels: torch.Tensor
    is_noisy: torch.Tensor | None
    seed: int
    device: torch.device = torch.device("cpu")
    _cache: dict[str, Any] = field(default_factory=dict)

    def generator(self, salt: str) -> torch.Generator:
        """A generator seeded from the run seed and ``salt`` (independent streams per evaluation)."""
        h = int(hashlib.sha256(f"{self.seed}:{salt}".encode()).hexdigest()[:12], 16)
        return torch.Generator().manual_seed(h)

    def test_logits(self) -> torch.Tensor:
        if "test_logits" not in self._cache:
            from ..training import predict_logits

            self._cache["test_logits"] = predict_logits(self.model, self.data.x_test).cpu()
        return self._cache["test_logits"]

    def test_subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x_test, self.data.y_test
        return (x, y) if n is None else (x[:n], y[:n])


@dataclass
class EvalOutput:
    """Metrics as ``(name, value, step)`` (step -1 when none) and JSON-able ``curves`` for artifacts."""

    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float, step: int = -1) -> None:
        self.metrics.append((name, float(value), int(step)))


class Evaluation:
    """Base class: ``defaults`` and ``constraints`` (every accepted param, declared once), ``requires``
    (modules), ``validate`` (cross-parameter rules only), ``run``."""

    requires: tuple[str, ...] = ()
    defaults: dict[str, Any] = {}
    constraints: dict[str, Any] = {}  # name -> robustlab._constraints.Constraint, the same keys as defaults
    metrics: tuple[Metric, ...] = ()  # every metric run() writes, declared once
    note: str = ""  # a caveat the report prints when this evaluation's metrics are present
    task: str = "classification"  # the runs it applies to: "classification" or "regression" (a RegressionData)

    def validate(self, params: dict[str, Any]) -> str | None:
        """Return an error message for a bad combination of (individually valid) parameters, or None."""
        return None

    # ``run(self, ctx, **params) -> EvalOutput``, with the parameters of ``defaults`` as keywords
    # (declared as an attribute so each plug-in spells out its own keyword arguments).
    run: Callable[..., EvalOutput]


def _missing(requires: tuple[str, ...]) -> str | None:
    for mod in requires:
        try:
            importlib.import_module(mod)
        except ImportError:
            return mod
    return None
