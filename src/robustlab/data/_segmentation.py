"""A synthetic binary segmentation set (random rectangles and discs) and mask corruptions.

``synthetic_segmentation(n_train, n_test, size, seed)`` gives :class:`SegmentationData`: images (N, 1, H, W)
float32 in [0, 1] (objects brighter than the background, Gaussian pixel noise) and masks (N, H, W) int64 in
{0, 1}. ``corrupt_masks(masks, kind, amount, generator)`` corrupts training masks the way annotators do:

- ``boundary``: each boundary pixel (a pixel with a differing 4-neighbour) flipped with probability ``amount``;
- ``remove``: each connected object erased with probability ``amount`` (missed objects);
- ``dilate`` / ``erode``: objects grown / shrunk by ``amount`` pixels (int; systematic boundary offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import InvalidParameterError, check_in_range, check_int, check_option

__all__ = ["MASK_CORRUPTIONS", "SegmentationData", "corrupt_masks", "synthetic_segmentation"]

MASK_CORRUPTIONS = ("boundary", "remove", "dilate", "erode")


@dataclass
class SegmentationData:
    """Images ``x_*`` (N, 1, H, W) float32 in [0, 1] and masks ``y_*`` (N, H, W) int64 in {0, 1}."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "synthetic_segmentation"
    meta: dict[str, Any] | None = None

    def with_train_masks(self, y_train: torch.Tensor) -> SegmentationData:
        """A copy with the training masks replaced (e.g. corrupted); images are shared."""
        return SegmentationData(self.x_train, y_train, self.x_test, self.y_test, self.name, self.meta)


def _draw(n: int, size: int, max_objects: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for _ in range(rng.integers(1, max_objects + 1)):
            if rng.random() < 0.5:  # rectangle
                h, w = rng.integers(size // 6, size // 2, 2)
                r0, c0 = rng.integers(0, size - h), rng.integers(0, size - w)
                masks[i, r0:r0 + h, c0:c0 + w] = 1
            else:  # disc
                rad = rng.uniform(size / 10, size / 4)
                cy, cx = rng.uniform(rad, size - rad, 2)
                masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad] = 1
    x = 0.25 + 0.5 * masks + noise * rng.standard_normal(masks.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)[:, None], masks


def synthetic_segmentation(*, n_train: int = 512, n_test: int = 256, size: int = 32, max_objects: int = 3,
                           noise: float = 0.2, seed: int = 0) -> SegmentationData:
    """Random rectangles and discs (1..``max_objects`` per image) on ``size`` x ``size`` images; seeded."""
    owner = "synthetic_segmentation"
    check_int(n_train, "n_train", 1, None, owner=owner)
    check_int(n_test, "n_test", 1, None, owner=owner)
    check_int(size, "size", 8, 1024, owner=owner)
    check_int(max_objects, "max_objects", 1, None, owner=owner)
    check_in_range(noise, "noise", 0.0, None, owner=owner)
    rng = np.random.default_rng(seed)
    xtr, ytr = _draw(n_train, size, max_objects, noise, rng)
    xte, yte = _draw(n_test, size, max_objects, noise, rng)
    t = torch.from_numpy
    return SegmentationData(t(xtr), t(ytr), t(xte), t(yte), meta={"seed": seed, "size": size, "noise": noise})


def _boundary(m: torch.Tensor) -> torch.Tensor:
    f = m[:, None].float()
    grown = F.max_pool2d(f, 3, 1, 1)
    shrunk = -F.max_pool2d(-f, 3, 1, 1)
    return (grown != shrunk)[:, 0]


def corrupt_masks(masks: torch.Tensor, *, kind: str, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupted copy of binary ``masks`` (N, H, W); see the module docstring for the kinds."""
    owner = "corrupt_masks"
    check_option(kind, "kind", MASK_CORRUPTIONS, owner=owner)
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3 or masks.dtype.is_floating_point:
        raise InvalidParameterError(f"The 'masks' parameter of {owner} must be an integer tensor (N, H, W). "
                                    f"Got {getattr(masks, 'dtype', type(masks).__name__)}.")
    if kind in ("dilate", "erode"):
        k = check_int(amount, "amount", 0, None, owner=owner)
        f = masks[:, None].float()
        for _ in range(k):
            f = F.max_pool2d(f, 3, 1, 1) if kind == "dilate" else -F.max_pool2d(-f, 3, 1, 1)
        return f[:, 0].to(masks.dtype)
    p = check_in_range(amount, "amount", 0.0, 1.0, owner=owner)
    if kind == "boundary":
        flip = _boundary(masks) & (torch.rand(masks.shape, generator=generator) < p)
        return torch.where(flip, 1 - masks, masks)
    from scipy import ndimage

    out = masks.clone()
    for i in range(masks.shape[0]):
        lab, n = ndimage.label(masks[i].numpy())
        drop = torch.rand(n, generator=generator) < p
        for j in torch.nonzero(drop).flatten().tolist():
            out[i][torch.from_numpy(lab == j + 1)] = 0
    return out
