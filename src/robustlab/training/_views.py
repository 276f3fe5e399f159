"""View augmentations for contrastive pre-training on small images (digits 8x8, MNIST 28x28).

Registered in :data:`robustlab.training.augment.AUGMENTATIONS`, so ``fit(augment=...)`` takes them too.
SimCLR's recipe is random resized crop + colour distortion; grey digits keep the crop (milder scales, no
flip: a flipped digit is another symbol) and replace colour by Gaussian pixel noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._validation import InvalidParameterError, check_in_range
from .augment import Augmentation, _check_image, register_augmentation

__all__ = ["ResizedCrop"]


@register_augmentation("resized_crop", tags={"image"}, example_kwargs={"scale": 0.5},
                       reference="Szegedy et al. 2015 / SimCLR (Chen et al. 2020): random resized crop")
class ResizedCrop(Augmentation):
    r"""Crop a random window and resize it back to ``H x W`` (bilinear), one window per image.

    Area fraction :math:`s \sim U[\mathrm{scale}, 1]`, aspect ratio :math:`r` log-uniform in
    ``[ratio, 1/ratio]``; window sides :math:`\sqrt{s r}` and :math:`\sqrt{s / r}` of the image (capped at 1),
    centre uniform over the positions that keep the window inside. ``scale=0.6`` suits 28x28 digits
    (SimCLR's ImageNet setting is 0.08). One ``affine_grid`` + ``grid_sample`` for the whole batch.
    """

    needs_image = True

    def __init__(self, scale: float = 0.6, ratio: float = 0.75) -> None:
        self.scale = float(check_in_range(scale, "scale", 0.0, 1.0, closed="right", owner="resized_crop"))
        self.ratio = float(check_in_range(ratio, "ratio", 0.0, 1.0, closed="right", owner="resized_crop"))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "resized_crop")
        if not x.dtype.is_floating_point:
            raise InvalidParameterError(f"resized_crop needs floating-point images. Got {x.dtype}.")
        n = x.shape[0]
        u = torch.rand(4, n, generator=generator, device=x.device, dtype=torch.float32)
        s = self.scale + (1.0 - self.scale) * u[0]
        log_r = math.log(self.ratio) * (2 * u[1] - 1)
        w = torch.sqrt(s * torch.exp(log_r)).clamp(max=1.0)
        h = torch.sqrt(s * torch.exp(-log_r)).clamp(max=1.0)
        cx, cy = (1 - w) * (2 * u[2] - 1), (1 - h) * (2 * u[3] - 1)  # in normalised [-1, 1] coordinates
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0.0, 1.0)
