"""Model registry, ``create`` and the input-normalization layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._registry import Registry

__all__ = ["MODELS", "Normalize", "create", "register_model"]

MODELS: Registry[nn.Module] = Registry("model", checks=("robustlab.testing._models", "robustlab.testing._models_ibp",
                                                   "robustlab.testing._models_lipschitz"))
register_model = MODELS.register


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (or per feature), inside the model.

    Keeping normalization inside the model lets every attack and certificate work in [0, 1] input space.
    ``mean``/``std`` are buffers broadcast over the sample shape: a scalar, one value per channel
    (for images ``(C, H, W)``) or one per feature.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], input_shape: Sequence[int] = ()) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if bool((s <= 0).any()):
            raise ValueError(f"The 'std' parameter of Normalize must be positive. Got {s.tolist()} instead.")
        shape = [-1] + [1] * (len(input_shape) - 1) if len(input_shape) > 1 else [-1]
        self.register_buffer("mean", m.view(shape) if m.numel() > 1 else m.view(()))
        self.register_buffer("std", s.view(shape) if s.numel() > 1 else s.view(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def create(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    normalize: tuple[Any, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the model ``name`` for inputs of ``input_shape`` (no batch dim) and ``num_classes`` outputs.

    ``normalize=(mean, std)`` prepends a :class:`Normalize` layer, so the model takes [0, 1] inputs.
    The returned module carries ``robustlab_config`` (name, shapes, kwargs) for checkpoints.
    """
    from .._validation import check_int

    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    input_shape = tuple(int(s) for s in input_shape)
    check_int(num_classes, "num_classes", 2, None, owner="models.create")
    model = MODELS.get(name, input_shape=input_shape, num_classes=num_classes, **kwargs)
    if normalize is not None:
        model = nn.Sequential(Normalize(normalize[0], normalize[1], input_shape), model)
    model.robustlab_config = {  # type: ignore[assignment]
        "name": name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "normalize": None if normalize is None else [_tolist(normalize[0]), _tolist(normalize[1])],
        "kwargs": kwargs,
    }
    return model


def _tolist(v: Any) -> Any:
    return v.tolist() if hasattr(v, "tolist") else v
