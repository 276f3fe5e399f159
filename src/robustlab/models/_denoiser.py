"""Image-to-image models for denoised smoothing: a small DnCNN and a convolutional autoencoder.

Both map a batch (N, C, H, W) to a batch of the same shape (tag ``image_to_image``: the model battery checks
shapes and training on noisy images instead of logits). ``num_classes`` is accepted only because
``models.create`` passes it to every model; a denoiser's output does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_bool, check_int
from ._base import register_model
from ._cnn import image_shape

__all__ = ["ConvAutoencoder", "DnCNN"]


class DnCNN(nn.Module):
    """DnCNN (Zhang et al. 2017): ``depth`` 3x3 conv layers predicting the noise, output ``x − noise``.

    Layers: Conv-ReLU, then ``depth − 2`` × Conv-BN-ReLU, then Conv back to ``C`` channels (residual learning).
    """

    def __init__(self, channels_in: int, *, width: int = 32, depth: int = 5, batchnorm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels_in, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=not batchnorm)]
            layers += [nn.BatchNorm2d(width), nn.ReLU()] if batchnorm else [nn.ReLU()]
        layers.append(nn.Conv2d(width, channels_in, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


class ConvAutoencoder(nn.Module):
    """Encoder (two stride-2 convs, then a 1x1 conv to ``latent_channels``) and a mirrored decoder.

    The latent code has ``latent_channels × H/4 × W/4`` entries (196 for MNIST with 4 channels): the
    low dimension in which ZO-AE-DS (Zhang et al. 2022) estimates gradients. ``forward = decoder ∘ encoder``.
    """

    def __init__(self, channels_in: int, *, width: int = 32, latent_channels: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels_in, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, width, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels_in, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@register_model("dncnn", tags={"image", "image_to_image", "denoiser"}, reference="Zhang et al. 2017, arXiv:1608.03981 (DnCNN)",
                example_kwargs={"input_shape": (1, 8, 8), "num_classes": 10, "width": 8, "depth": 3})
def dncnn(*, input_shape: Sequence[int], num_classes: int, width: int = 32, depth: int = 5,
          batchnorm: bool = True) -> nn.Module:
    """A small DnCNN denoiser (Zhang et al. 2017) mapping (C, H, W) images to images of the same shape.

    ``depth`` conv layers of ``width`` channels (the paper uses 17 × 64); residual output ``x − D(x)``.
    """
    c, _, _ = image_shape(input_shape, "dncnn", min_size=1)
    owner = "dncnn"
    return DnCNN(c, width=check_int(width, "width", 1, None, owner=owner), depth=check_int(depth, "depth", 2, None, owner=owner),
                 batchnorm=check_bool(batchnorm, "batchnorm", owner=owner))


@register_model("conv_autoencoder", tags={"image", "image_to_image", "autoencoder"},
                reference="Zhang et al. 2022, ZO-AE-DS, arXiv:2203.14195 (encoder-decoder in front of a black box)",
                example_kwargs={"input_shape": (1, 8, 8), "num_classes": 10, "width": 8, "latent_channels": 2})
def conv_autoencoder(*, input_shape: Sequence[int], num_classes: int, width: int = 32,
                     latent_channels: int = 4) -> nn.Module:
    """A convolutional autoencoder with ``.encoder``/``.decoder`` (latent ``latent_channels × H/4 × W/4``).

    H and W must be multiples of 4 (two stride-2 stages each way reproduce the input size exactly).
    """
    c, h, w = image_shape(input_shape, "conv_autoencoder", min_size=4)
    if h % 4 or w % 4:
        raise ValueError(f"The 'input_shape' parameter of conv_autoencoder must have H and W divisible by 4. "
                         f"Got {tuple(input_shape)} instead.")
    owner = "conv_autoencoder"
    return ConvAutoencoder(c, width=check_int(width, "width", 1, None, owner=owner),
                           latent_channels=check_int(latent_channels, "latent_channels", 1, None, owner=owner))
