"""Fully connected models: ``linear`` and ``mlp``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .._validation import check_int, check_option
from ._base import register_model

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@register_model("linear", tags={"ibp", "tabular", "image"}, reference="multinomial logistic regression",
                example_kwargs={"input_shape": (1, 8, 8), "num_classes": 10})
def linear(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Flatten then one Linear layer: logits = W x + b."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_numel(input_shape), num_classes))


@register_model("mlp", tags={"ibp", "tabular", "image"}, reference="multi-layer perceptron",
                example_kwargs={"input_shape": (1, 8, 8), "num_classes": 10, "hidden": (32, 32)})
def mlp(
    *,
    input_shape: Sequence[int],
    num_classes: int,
    hidden: int | Sequence[int] = (256, 256),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Module:
    """Flatten, then ``len(hidden)`` Linear+activation layers, then a Linear head.

    ``activation`` in {relu, tanh, gelu, sigmoid}. The LDR protocol uses two tanh layers of width min(d, K).
    """
    check_option(activation, "activation", sorted(_ACTIVATIONS), owner="mlp")
    layers: list[nn.Module] = [nn.Flatten()]
    d = _numel(input_shape)
    widths: Sequence[int] = (hidden,) if isinstance(hidden, int) else hidden  # an int: one hidden layer
    for i, h in enumerate(widths):
        check_int(h, f"hidden[{i}]", 1, None, owner="mlp")
        layers += [nn.Linear(d, int(h)), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = int(h)
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)
