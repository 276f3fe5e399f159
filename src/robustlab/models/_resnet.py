"""Residual networks: ``preact_resnet18`` and ``wide_resnet`` built from plain layers.

Every residual add is a :class:`Residual` module (``body(x) + shortcut(x)``), and the global pooling is
an ``AvgPool2d`` whose kernel equals the final feature-map size (computed from ``input_shape``), so
interval (IBP) rules need only Conv2d, BatchNorm2d, ReLU, AvgPool2d, Flatten, Linear, Identity, Residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_in_range, check_int
from ._base import register_model
from ._cnn import image_shape, kaiming_init

__all__ = ["Residual", "preact_resnet18", "wide_resnet"]


class Residual(nn.Module):
    """``body(x) + shortcut(x)``: the residual add as its own module type (``shortcut`` may be ``nn.Identity``)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _preact_block(cin: int, cout: int, stride: int, dropout: float = 0.0) -> nn.Module:
    """Pre-activation block (He et al., 2016). With a projection, BN-ReLU is shared by both branches."""
    inner: list[nn.Module] = [_conv3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU()]
    if dropout > 0:
        inner.append(nn.Dropout(dropout))
    inner.append(_conv3(cout, cout))
    if stride != 1 or cin != cout:
        shortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), Residual(nn.Sequential(*inner), shortcut))
    return Residual(nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), *inner), nn.Identity())


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # conv3x3, padding 1


def _head(channels: int, h: int, w: int, num_classes: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(), nn.AvgPool2d((h, w)), nn.Flatten(), nn.Linear(channels, num_classes)]


@register_model("preact_resnet18", tags={"ibp", "image", "cnn", "residual", "batchnorm"},
                reference="He et al., ECCV 2016 (arXiv:1603.05027)",
                example_kwargs={"input_shape": (3, 8, 8), "num_classes": 10, "width": 4})
def preact_resnet18(
    *, input_shape: Sequence[int], num_classes: int, width: int = 64,
) -> nn.Module:
    """Pre-activation ResNet-18 (He et al., ECCV 2016, arXiv:1603.05027), CIFAR style.

    3x3 stem (stride 1, no max-pool), four stages of two pre-activation blocks with
    ``width * (1, 2, 4, 8)`` channels and strides (1, 2, 2, 2), BN-ReLU, global average pool, Linear.
    ``width=64`` is the standard model (11.2M parameters); use a small width for tests.
    """
    c, h, w = image_shape(input_shape, "preact_resnet18")
    check_int(width, "width", 1, None, owner="preact_resnet18")
    layers: list[nn.Module] = [_conv3(c, width)]
    cin = width
    for i, stride in enumerate((1, 2, 2, 2)):
        cout = width * 2**i
        for j in range(2):
            s = stride if j == 0 else 1
            layers.append(_preact_block(cin, cout, s))
            h, w = _out_size(h, s), _out_size(w, s)
            cin = cout
    layers += _head(cin, h, w, num_classes)
    model = nn.Sequential(*layers)
    kaiming_init(model, mode="fan_out")  # He et al.'s ResNet initialisation
    return model


@register_model("wide_resnet", tags={"ibp", "image", "cnn", "residual", "batchnorm"},
                reference="Zagoruyko & Komodakis, BMVC 2016 (arXiv:1605.07146)",
                example_kwargs={"input_shape": (3, 8, 8), "num_classes": 10, "depth": 10, "width": 1, "base": 4})
def wide_resnet(
    *, input_shape: Sequence[int], num_classes: int, depth: int = 28, width: int = 10, dropout: float = 0.0,
    base: int = 16,
) -> nn.Module:
    """Wide ResNet WRN-``depth``-``width`` (Zagoruyko & Komodakis, BMVC 2016, arXiv:1605.07146).

    ``depth = 6n + 4``: three stages of ``n`` pre-activation blocks with ``base * width * (1, 2, 4)``
    channels (strides 1, 2, 2) after a ``base``-channel 3x3 stem. ``dropout`` between the convolutions
    of a block (0 keeps the model IBP-friendly). WRN-28-10 is the default; WRN-10-1 is tiny.
    """
    c, h, w = image_shape(input_shape, "wide_resnet")
    check_int(depth, "depth", 10, None, owner="wide_resnet")
    if (depth - 4) % 6:
        raise ValueError(f"The 'depth' parameter of wide_resnet must be 6n + 4 (10, 16, 22, 28, ...). Got {depth} instead.")
    check_int(width, "width", 1, None, owner="wide_resnet")
    check_int(base, "base", 1, None, owner="wide_resnet")
    check_in_range(dropout, "dropout", 0.0, 1.0, closed="left", owner="wide_resnet")
    n = (depth - 4) // 6
    layers: list[nn.Module] = [_conv3(c, base)]
    cin = base
    for i, stride in enumerate((1, 2, 2)):
        cout = base * width * 2**i
        for j in range(n):
            s = stride if j == 0 else 1
            layers.append(_preact_block(cin, cout, s, dropout))
            h, w = _out_size(h, s), _out_size(w, s)
            cin = cout
    layers += _head(cin, h, w, num_classes)
    model = nn.Sequential(*layers)
    kaiming_init(model, mode="fan_out")  # He et al.'s ResNet initialisation
    return model
