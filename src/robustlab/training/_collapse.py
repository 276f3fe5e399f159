"""Collapse detection for ``fit``: training accuracy stuck at chance for several epochs.

A collapsed run (typically adversarial training with SGD at lr 0.1, or an ε too large for the model at the
start of training) ends as a constant classifier: every input gets the same class, so accuracy equals the
share of that class. ``fit`` stops on a non-finite loss; this warns about the quiet failure.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["CollapseMonitor", "CollapseWarning"]


class CollapseWarning(UserWarning):
    """Training accuracy sat at chance level for several epochs: the run has likely collapsed."""


class CollapseMonitor:
    """Warn once when training accuracy stays at chance for ``patience`` consecutive recorded epochs.

    Chance is the share of the most frequent training label (the accuracy of a constant classifier). An
    epoch counts as "at chance" when its training accuracy (``train_acc``, or ``train_adv_acc`` for
    objectives that report only adversarial accuracy) is at most ``chance + tol`` and, when a test accuracy
    was measured, that is at chance too (so a slowly rising robust accuracy alone never triggers it).
    ``lr``, ``optimizer`` and ``objective`` only shape the message: the likely causes, most likely first.

    Example::

        mon = CollapseMonitor(y_train, lr=0.1, optimizer="sgd", objective=obj)
        mon.update(epoch, {"train_acc": 0.11, "test_acc": 0.10})
    """

    def __init__(self, y_train: torch.Tensor, *, patience: int = 3, tol: float = 0.02, lr: float | None = None,
                 optimizer: str | None = None, objective: Any = None) -> None:
        counts = torch.bincount(y_train.detach().long().flatten().cpu()) if y_train.numel() else torch.zeros(1)
        self.chance = float(counts.max()) / max(int(y_train.numel()), 1)
        self.patience = int(patience)
        self.tol = float(tol)
        self.lr, self.optimizer, self.objective = lr, optimizer, objective
        self.run: list[tuple[int, float]] = []
        self.warned = False

    def _at_chance(self, row: Mapping[str, float]) -> tuple[bool, float]:
        acc = row.get("train_acc", float("nan"))
        if not math.isfinite(acc):
            acc = row.get("train_adv_acc", float("nan"))
        if not math.isfinite(acc):
            return False, acc
        test = row.get("test_acc", float("nan"))
        limit = self.chance + self.tol
        return acc <= limit and (not math.isfinite(test) or test <= limit), acc

    def update(self, epoch: int, row: Mapping[str, float]) -> bool:
        """Record one evaluated epoch's row (1-based ``epoch``); warn (once) and return True on collapse."""
        stuck, acc = self._at_chance(row)
        self.run = [*self.run, (epoch, acc)] if stuck else []
        if self.warned or len(self.run) < self.patience:
            return False
        self.warned = True
        warnings.warn(self.message(), CollapseWarning, stacklevel=3)
        return True

    def message(self) -> str:
        """The warning text: what was seen and the likely causes."""
        first, last = self.run[0][0], self.run[-1][0]
        accs = ", ".join(f"{a:.3f}" for _, a in self.run)
        causes = []
        obj = self.objective
        eps = getattr(obj, "eps", None)
        adversarial = eps is not None and hasattr(obj, "steps")
        if adversarial and (self.optimizer or "sgd") == "sgd" and (self.lr or 0) >= 0.05:
            causes.append(f"a learning rate too high for adversarial training (lr={self.lr:g} with SGD; "
                          "try optimizer='adam' with lr=1e-3)")
        if eps is not None and getattr(obj, "eps_schedule", "constant") == "constant":
            causes.append(f"an ε too large for the model at the start of training (eps={float(eps):g}; try "
                          "eps_schedule='linear' with eps_warmup_epochs=5, or a smaller eps)")
        if self.lr is not None and self.lr < 1e-3:
            causes.append(f"a learning rate too small to move the model (lr={self.lr:g}; try 1e-3 with Adam)")
        elif not causes:
            causes.append(f"a learning rate too high (lr={self.lr:g}; try a 10x smaller lr or optimizer='adam')"
                          if self.lr is not None else "a learning rate too high")
        causes.append("very noisy labels or a loss/regulariser that rewards a constant prediction")
        return (f"fit: training accuracy has stayed at chance level ({accs}; a constant classifier scores "
                f"{self.chance:.3f}) for {len(self.run)} epochs ({first}-{last}): the run has likely collapsed to "
                f"predicting one class. Likely causes: {'; '.join(causes)}.")
