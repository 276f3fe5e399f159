"""Batched resampling helpers on (N, C, H, W) tensors: affine warps about the centre, zooms, flows."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["affine_about_centre", "flow_sample", "zoom_about_centre"]


def _pixel_grid(n: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(N, H, W, 2) pixel coordinates (row, col)."""
    r = torch.arange(h, dtype=dtype, device=device)
    c = torch.arange(w, dtype=dtype, device=device)
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    return torch.stack([rr, cc], dim=-1).expand(n, h, w, 2)


def flow_sample(x: torch.Tensor, src: torch.Tensor, *, padding: str = "zeros") -> torch.Tensor:
    """Bilinear sample ``x`` at source pixel coordinates ``src`` (N, H', W', 2) given as (row, col).

    Pixel centres are at integer coordinates (``align_corners=True``); ``padding`` is grid_sample's
    (``zeros`` = constant 0 outside, ``reflection`` = mirror about the border pixels, ``border``).
    """
    h, w = x.shape[-2:]
    gy = src[..., 0] * (2.0 / max(h - 1, 1)) - 1.0
    gx = src[..., 1] * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def affine_about_centre(x: torch.Tensor, a: torch.Tensor, t: torch.Tensor | None = None, *,
                        padding: str = "zeros") -> torch.Tensor:
    """Inverse-map warp: ``out(q) = x(A (q - c) + c + t)`` with c the image centre, per image.

    ``a`` is (N, 2, 2) acting on (row, col) vectors, ``t`` is (N, 2) in pixels (row, col).
    """
    n, _, h, w = x.shape
    dt = torch.float64
    q = _pixel_grid(n, h, w, dt, x.device)
    c = torch.tensor([(h - 1) / 2.0, (w - 1) / 2.0], dtype=dt, device=x.device)
    src = torch.einsum("nij,nhwj->nhwi", a.to(dtype=dt, device=x.device), q - c) + c
    if t is not None:
        src = src + t.to(dtype=dt, device=x.device)[:, None, None, :]
    return flow_sample(x, src, padding=padding)


def zoom_about_centre(x: torch.Tensor, z: float) -> torch.Tensor:
    """Zoom in by ``z`` >= 1 about the image centre (continuous; the crop and resize in one bilinear step)."""
    n = x.shape[0]
    a = torch.eye(2, dtype=torch.float64, device=x.device).expand(n, 2, 2) / float(z)
    return affine_about_centre(x, a, padding="border")
