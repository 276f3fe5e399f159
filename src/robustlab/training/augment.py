"""Batched, on-device, seeded training augmentations (``training.augment.get(name, **kw)``).

An augmentation is a callable ``aug(x, generator) -> x_aug``: ``x`` is a batch of inputs in [0, 1]
(images ``(N, C, H, W)`` for the spatial ones), the result has the same shape, dtype and device and stays
in [0, 1]. Every random number is drawn from ``generator`` (a ``torch.Generator`` on ``x``'s device; ``fit``
owns one seeded from its ``seed``), so a seed reproduces a run. No per-sample Python: each augmentation is
a handful of tensor operations on the whole batch.

Example::

    >>> from robustlab.training import augment
    >>> aug = augment.get("crop_flip")               # pad 4 (reflect) + random 32x32 crop + flip
    >>> x = torch.rand(8, 3, 32, 32)
    >>> aug(x, torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .._registry import Registry
from .._validation import InvalidParameterError, check_in_range, check_int, check_option

__all__ = ["AUGMENTATIONS", "Augmentation", "available", "get", "register_augmentation", "resolve"]

AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation", checks="robustlab.testing._augment")
register_augmentation = AUGMENTATIONS.register
PAD_MODES = ("reflect", "zeros")


class Augmentation:
    """Base class: ``__call__(x, generator) -> x`` (same shape/dtype/device, values in [0, 1]).

    ``needs_image``: the augmentation works on ``(N, C, H, W)`` batches only (``fit`` checks the data).
    """

    needs_image: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _flip_mask(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=x.device) < 0.5).view(-1, *([1] * (x.dim() - 1)))


def _check_image(x: torch.Tensor, owner: str) -> None:
    if x.dim() != 4:
        raise InvalidParameterError(
            f"The augmentation '{owner}' needs image batches of shape (N, C, H, W). Got shape {tuple(x.shape)}; "
            "use augment='noise' or 'none' for flat inputs.")


@register_augmentation("none", tags={"identity"}, reference="no augmentation")
class NoAugmentation(Augmentation):
    """The identity: returns ``x`` unchanged (draws no random numbers)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


@register_augmentation("flip", tags={"image"}, reference="horizontal flip, p = 0.5")
class Flip(Augmentation):
    """Horizontal flip of each image with probability ``p`` (one uniform draw per image)."""

    needs_image = True

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(check_in_range(p, "p", 0.0, 1.0, owner="flip"))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "flip")
        mask = torch.rand(x.shape[0], generator=generator, device=x.device) < self.p
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


@register_augmentation("crop_flip", tags={"image"}, example_kwargs={"padding": 2},
                       reference="He et al. 2016 (CIFAR standard): pad 4, random crop, horizontal flip")
class CropFlip(Augmentation):
    r"""Pad by ``padding`` (``reflect`` or ``zeros``), crop a random ``H x W`` window, flip with p = 0.5.

    The CIFAR standard (``padding=4``). Offsets :math:`(i, j) \sim U\{0..2p\}^2` per image; the crop is two
    ``gather`` calls (rows, then columns) on the padded batch. ``flip=False`` crops only.
    """

    needs_image = True

    def __init__(self, padding: int = 4, padding_mode: str = "reflect", flip: bool = True) -> None:
        self.padding = check_int(padding, "padding", 0, None, owner="crop_flip")
        self.padding_mode = check_option(padding_mode, "padding_mode", PAD_MODES, owner="crop_flip")
        self.flip = bool(flip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "crop_flip")
        n, c, h, w = x.shape
        p = self.padding
        if self.padding_mode == "reflect" and p >= min(h, w):
            raise InvalidParameterError(
                f"The 'padding' parameter of crop_flip must be smaller than the image side for reflect padding. "
                f"Got padding={p} for {h}x{w} images; use padding_mode='zeros' or a smaller padding.")
        out = x
        if p > 0:
            mode = "reflect" if self.padding_mode == "reflect" else "constant"
            padded = F.pad(x, (p, p, p, p), mode=mode)
            off = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=x.device)
            rows = (off[0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
            cols = (off[1].view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
            out = padded.gather(2, rows.expand(n, c, h, w + 2 * p)).gather(3, cols.expand(n, c, h, w))
        if self.flip:
            out = torch.where(_flip_mask(n, x, generator), out.flip(-1), out)
        return out


@register_augmentation("cutout", tags={"image"}, example_kwargs={"size": 3},
                       reference="DeVries & Taylor 2017, arXiv:1708.04552")
class Cutout(Augmentation):
    """Zero a ``size x size`` square at a uniformly random centre (clipped at the borders), per image.

    ``size=None``: half the image side (16 on 32x32 inputs, the CIFAR-10 setting of the paper).
    """

    needs_image = True

    def __init__(self, size: int | None = None) -> None:
        self.size = None if size is None else check_int(size, "size", 1, None, owner="cutout")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "cutout")
        n, _, h, w = x.shape
        s = self.size if self.size is not None else max(1, min(h, w) // 2)
        cy = torch.randint(0, h, (n, 1), generator=generator, device=x.device)
        cx = torch.randint(0, w, (n, 1), generator=generator, device=x.device)
        ry = torch.arange(h, device=x.device) - (cy - s // 2)  # row offset from the square's top edge
        rx = torch.arange(w, device=x.device) - (cx - s // 2)
        inside = ((ry >= 0) & (ry < s)).view(n, 1, h, 1) & ((rx >= 0) & (rx < s)).view(n, 1, 1, w)
        return x.masked_fill(inside, 0.0)


@register_augmentation("noise", tags={"any_shape"}, example_kwargs={"sigma": 0.1},
                       reference="Gaussian data augmentation (Cohen et al. 2019 train smoothing bases with it)")
class GaussianNoise(Augmentation):
    """``clamp(x + sigma * N(0, I), 0, 1)``; works on any input shape."""

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = float(check_in_range(sigma, "sigma", 0.0, None, owner="noise"))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.sigma * eps).clamp_(0.0, 1.0)


def get(name: str, **kwargs: Any) -> Augmentation:
    """Build the augmentation registered under ``name`` (``available()`` lists them)."""
    return AUGMENTATIONS.get(name, **kwargs)


def available(pattern: str = "*") -> list[str]:
    """Sorted names of the registered augmentations."""
    return AUGMENTATIONS.available(pattern)


Augment = Callable[..., torch.Tensor]


def resolve(augment: Any, augment_kw: dict[str, Any] | None = None, *, owner: str = "fit") -> Augment | None:
    """``None``/``"none"`` -> None (no augmentation); a name -> :func:`get`; a callable ``(x, generator)`` as is."""
    if augment is None or (augment == "none" and not augment_kw):
        return None
    if isinstance(augment, str):
        return get(augment, **(augment_kw or {}))
    if augment_kw:
        raise InvalidParameterError(f"The 'augment_kw' parameter of {owner} is only used with a registry name for 'augment'.")
    if not callable(augment):
        raise InvalidParameterError(
            f"The 'augment' parameter of {owner} must be a name ({', '.join(available())}), a callable "
            f"(x, generator) -> x, or None. Got {augment!r} instead.")
    return augment
