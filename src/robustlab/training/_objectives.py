"""Training objectives: what ``fit`` minimises on one batch (the hook defences plug into)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._registry import Registry

__all__ = ["Batch", "OBJECTIVES", "Objective", "StandardObjective", "compute_loss", "register_objective"]

OBJECTIVES: Registry[Objective] = Registry("objective", checks="robustlab.testing._objectives")
register_objective = OBJECTIVES.register


@dataclass
class Batch:
    """One training batch: inputs in [0, 1], (possibly noisy) labels and their data-set indices."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None  # None only from a user's DataLoader that yields (x, y) (fit's streaming path)


def compute_loss(
    loss: Any, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None,
    *, per_sample: bool = False,
) -> torch.Tensor:
    """Call ``loss`` on a batch, passing ``index`` to losses that declare ``needs_index``.

    With ``per_sample=True`` returns the (N,) vector (needs a registry loss with ``per_sample``).
    """
    needs_index = bool(getattr(loss, "needs_index", False))
    if per_sample:
        fn = getattr(loss, "per_sample", None)
        if fn is None:
            raise TypeError(
                f"This objective needs per-sample losses, but {loss!r} has no 'per_sample' method; "
                "use a registry loss (robustlab.losses.get(name))."
            )
        return fn(logits, target, index) if needs_index else fn(logits, target)
    return loss(logits, target, index=index) if needs_index else loss(logits, target)


class Objective:
    """Base objective. ``__call__(model, batch, loss) -> (scalar to minimise, {metric: scalar tensor})``.

    ``passes_per_step``: forward+backward passes per step relative to standard training (documented cost).
    ``setup`` is called once by ``fit`` (with a seeded generator for any randomness); ``on_epoch_start``
    at the start of each epoch (for ramps/schedules). Metrics are batch means, kept as tensors
    (no ``.item()`` per batch); ``fit`` averages them over the epoch. Return ``"acc"`` for train accuracy.
    """

    passes_per_step: float = 1.0
    # Set by ``fit`` before each epoch: False when that epoch's metrics are not recorded
    # (``eval_every``), so objectives may skip computing them (optional to honour).
    track_metrics: bool = True

    def setup(self, *, model: nn.Module, epochs: int, steps_per_epoch: int, num_classes: int,
              num_train: int, generator: torch.Generator) -> None:
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.num_classes = num_classes
        self.num_train = num_train
        self.generator = generator

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_") and k not in {"generator", "epochs", "steps_per_epoch",
                                                                    "num_classes", "num_train", "epoch"})
        return f"{type(self).__name__}({params})"


@register_objective("standard", tags={"clean"}, reference="empirical risk minimisation", example_kwargs={})
class StandardObjective(Objective):
    """The chosen loss on clean inputs. Cost: 1 forward + 1 backward per step."""

    passes_per_step = 1.0

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch.x)
        value = compute_loss(loss, logits, batch.y, batch.index)
        if not self.track_metrics:  # ~5% of a small-MLP step; skipped on epochs fit does not record
            return value, {}
        acc = (logits.detach().argmax(1) == batch.y).float().mean()
        return value, {"acc": acc}
