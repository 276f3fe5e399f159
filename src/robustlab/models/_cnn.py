"""A small LeNet-style CNN for (C, H, W) inputs of any size >= 8 x 8."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from .._validation import check_int
from ._base import register_model
from ._mlp import _ACTIVATIONS


def image_shape(input_shape: Sequence[int], owner: str, min_size: int = 8) -> tuple[int, int, int]:
    """Check ``input_shape`` is (C, H, W) with H, W >= ``min_size``; return it."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape[1:]) < min_size or shape[0] < 1:
        raise ValueError(
            f"The 'input_shape' parameter of {owner} must be an image shape (C, H, W) with H, W >= {min_size}. "
            f"Got {shape} instead; use 'mlp' or 'linear' for vector inputs."
        )
    return shape  # type: ignore[return-value]


@register_model("lenet", tags={"ibp", "image", "cnn"}, reference="LeCun et al., Proc. IEEE 1998 (LeNet-5)",
                example_kwargs={"input_shape": (1, 8, 8), "num_classes": 10, "channels": (4, 8), "hidden": (16,)})
def lenet(
    *,
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (6, 16),
    hidden: Sequence[int] = (120, 84),
    activation: str = "relu",
) -> nn.Module:
    """LeNet-5 style CNN (LeCun et al., 1998): two [Conv5x5(pad 2) - act - AvgPool2] stages, then an MLP head.

    Padding keeps the spatial size before each pool, so any H, W >= 8 work (flattened size
    ``channels[-1] * (H // 4) * (W // 4)``). Only Conv2d/ReLU/AvgPool2d/Flatten/Linear layers (IBP-friendly).
    He-normal initialisation (see :func:`kaiming_init`).
    """
    c, h, w = image_shape(input_shape, "lenet")
    if activation not in _ACTIVATIONS:
        from .._validation import check_option

        check_option(activation, "activation", sorted(_ACTIVATIONS), owner="lenet")
    act = _ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    cin = c
    for i, ch in enumerate(channels):
        check_int(ch, f"channels[{i}]", 1, None, owner="lenet")
        layers += [nn.Conv2d(cin, int(ch), kernel_size=5, padding=2), act(), nn.AvgPool2d(2)]
        cin = int(ch)
        h, w = h // 2, w // 2
        if min(h, w) < 1:
            raise ValueError(f"lenet: input {tuple(input_shape)} is too small for {len(channels)} pooling stages.")
    layers.append(nn.Flatten())
    d = cin * h * w
    for i, units in enumerate(hidden):
        check_int(units, f"hidden[{i}]", 1, None, owner="lenet")
        layers += [nn.Linear(d, int(units)), act()]
        d = int(units)
    layers.append(nn.Linear(d, num_classes))
    model = nn.Sequential(*layers)
    kaiming_init(model, mode="fan_in")
    return model


def kaiming_init(model: nn.Module, *, mode: Literal["fan_in", "fan_out"] = "fan_in") -> None:
    """He-normal weights (ReLU gain) for Conv2d/Linear, zero biases, BatchNorm (1, 0).

    With PyTorch's default init, the avg-pool LeNet stays at chance level for many epochs at lr 0.1.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
