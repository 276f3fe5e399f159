"""The data container and the data-set registry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .._registry import Registry
from .._validation import check_finite, check_labels

__all__ = ["ClassificationData", "DATASETS", "register_dataset"]

DATASETS: Registry[ClassificationData] = Registry("data set", checks="robustlab.testing._data")
register_dataset = DATASETS.register


@dataclass
class ClassificationData:
    """A classification data set held in memory as tensors.

    Inputs are float32 scaled to [0, 1]; labels are int64 in ``[0, num_classes)``.
    ``input_shape`` excludes the batch dimension, e.g. ``(1, 28, 28)`` or ``(64,)``.
    ``meta`` carries provenance (source files, split seed, notes) and never affects computation.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check dtypes, shapes, finiteness, [0, 1] range and label range; raise ``ValueError``."""
        for split in ("train", "test"):
            x: torch.Tensor = getattr(self, f"x_{split}")
            y: torch.Tensor = getattr(self, f"y_{split}")
            if x.dtype != torch.float32:
                raise TypeError(f"x_{split} of data set '{self.name}' must be float32. Got {x.dtype}.")
            if y.dtype != torch.int64:
                raise TypeError(f"y_{split} of data set '{self.name}' must be int64. Got {y.dtype}.")
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"Data set '{self.name}': x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]} labels."
                )
            if x.numel() and tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"Data set '{self.name}': x_{split} has sample shape {tuple(x.shape[1:])}, "
                    f"expected input_shape {tuple(self.input_shape)}."
                )
            check_finite(x, f"x_{split}", owner=f"data set '{self.name}'")
            if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
                raise ValueError(
                    f"Data set '{self.name}': x_{split} must be scaled to [0, 1]; got range "
                    f"[{float(x.min()):.4g}, {float(x.max()):.4g}]."
                )
            check_labels(y, self.num_classes, f"y_{split}", owner=f"data set '{self.name}'")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"Data set '{self.name}': {len(self.class_names)} class names for {self.num_classes} classes."
            )

    @property
    def num_features(self) -> int:
        n = 1
        for s in self.input_shape:
            n *= int(s)
        return n

    def with_train_labels(self, y_train: torch.Tensor, **meta: Any) -> ClassificationData:
        """A copy whose training labels are replaced (e.g. by noisy labels); inputs are shared."""
        return replace(self, y_train=y_train, meta={**self.meta, **meta})

    def subset(self, *, n_train: int | None = None, n_test: int | None = None) -> ClassificationData:
        """The first ``n_train`` / ``n_test`` examples of each split (splits are already shuffled)."""
        return replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )

    def __repr__(self) -> str:
        return (
            f"ClassificationData(name={self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes})"
        )
