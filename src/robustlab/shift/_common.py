"""CIFAR-10-C style common corruptions (Hendrycks & Dietterich, ICLR 2019, arXiv:1903.12261).

Severity tables are the 32x32 ones of ``hendrycks/robustness: make_cifar_c.py``. All functions take a
float batch (N, C, H, W) in [0, 1] (C = 1 or 3, H, W >= 8) and work on the whole batch at once.

Size rule (documented per corruption): parameters in pixels are given for 32 px images. Noise, colour
and JPEG corruptions have no size parameter. Blur kernels (gaussian, defocus, glass) are multiplied by
``max(1, min(H, W)/32)`` -- they never shrink below their 32 px size, because sub-pixel kernels would
vanish on 8x8 images; motion-blur length, elastic and fog scale with ``min(H, W)/32`` both ways;
pixelate uses ``int(size * c)``. The numbers are therefore not comparable with published CIFAR-10-C
results (corruptions are computed in memory, with our own random streams).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ._base import from_numpy, register_corruption, size_scale, to_numpy
from ._warp import flow_sample, zoom_about_centre

_REF = "arXiv:1903.12261 (hendrycks/robustness make_cifar_c.py)"


def _blur_scale(x: torch.Tensor) -> float:
    return max(1.0, size_scale(x))


def _rgb(x: torch.Tensor) -> bool:
    return x.shape[1] == 3


# -- noise ------------------------------------------------------------------------------------------

@register_corruption("gaussian_noise", [(0.04,), (0.06,), (0.08,), (0.09,), (0.10,)], tags={"noise", "random"},
                     reference=_REF, identity=(0.0,))
def gaussian_noise(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Additive Gaussian noise: ``clip(x + N(0, sigma^2))``, sigma = .04, .06, .08, .09, .10."""
    noise = rng.standard_normal(tuple(x.shape))
    return x + from_numpy(noise, x) * float(p[0])


@register_corruption("shot_noise", [(500,), (250,), (100,), (75,), (50,)], tags={"noise", "random"}, reference=_REF)
def shot_noise(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Poisson (shot) noise: ``Poisson(x c) / c``, c = 500, 250, 100, 75, 50 photons."""
    c = float(p[0])
    return from_numpy(rng.poisson(to_numpy(x) * c) / c, x)


@register_corruption("impulse_noise", [(0.01,), (0.02,), (0.03,), (0.05,), (0.07,)], tags={"noise", "random"},
                     reference=_REF, identity=(0.0,),
                     note="salt-and-pepper per element, channels independent (current skimage rule)")
def impulse_noise(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Salt-and-pepper noise: each element flips with p = amount to 0 or 1 (even odds); amount .01 ... .07."""
    flip = rng.random(tuple(x.shape)) < float(p[0])
    salt = rng.random(tuple(x.shape)) < 0.5
    a = to_numpy(x)
    a[flip & salt] = 1.0
    a[flip & ~salt] = 0.0
    return from_numpy(a, x)


@register_corruption("speckle_noise", [(0.06,), (0.1,), (0.12,), (0.16,), (0.2,)], tags={"noise", "random", "extra"},
                     reference=_REF, identity=(0.0,))
def speckle_noise(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Multiplicative noise: ``x + x N(0, sigma^2)``, sigma = .06, .1, .12, .16, .2 (validation corruption)."""
    return x + x * from_numpy(rng.standard_normal(tuple(x.shape)), x) * float(p[0])


# -- blur -------------------------------------------------------------------------------------------

@register_corruption("gaussian_blur", [(0.4,), (0.6,), (0.7,), (0.8,), (1.0,)], tags={"blur", "extra"},
                     reference=_REF, identity=(0.0,))
def gaussian_blur(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Gaussian blur, sigma = .4, .6, .7, .8, 1 px (x max(1, size/32)), border 'nearest', truncate 4."""
    s = float(p[0]) * _blur_scale(x)
    if s == 0:
        return x.clone()
    return from_numpy(ndimage.gaussian_filter(to_numpy(x), sigma=(0, 0, s, s), mode="nearest", truncate=4.0), x)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a normalised disk of ``radius`` smoothed by a 3x3 (5x5 if r > 8) Gaussian."""
    if radius <= 8:
        size, ks = 8, 3
    else:
        size, ks = int(math.ceil(radius)), 5
    ll = np.arange(-size, size + 1)
    xx, yy = np.meshgrid(ll, ll)
    k = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    k /= k.sum()
    half = ks // 2
    g = np.exp(-(np.arange(-half, half + 1) ** 2) / (2.0 * alias_blur**2))
    g /= g.sum()
    k = ndimage.correlate1d(ndimage.correlate1d(k, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")
    rows, cols = np.flatnonzero(k.sum(1) > 1e-12), np.flatnonzero(k.sum(0) > 1e-12)
    r = max(size - rows.min(), rows.max() - size, size - cols.min(), cols.max() - size)
    return k[size - r:size + r + 1, size - r:size + r + 1]


@register_corruption("defocus_blur", [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)], tags={"blur"},
                     reference=_REF)
def defocus_blur(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Defocus: correlate with a disk(radius) smoothed by a small Gaussian (alias_blur), border reflect-101.

    (radius, alias) = (.3, .4), (.4, .5), (.5, .6), (1, .2), (1.5, .1), both x max(1, size/32).
    """
    sc = _blur_scale(x)
    k = _disk(float(p[0]) * sc, float(p[1]) * sc)
    return from_numpy(ndimage.correlate(to_numpy(x), k[None, None], mode="mirror"), x)


@register_corruption("glass_blur", [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
                     tags={"blur", "random"}, reference=_REF, faithful=False,
                     note="pixel moves are drawn for all pixels at once (vectorised) instead of the original "
                          "sequential in-place loop")
def glass_blur(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Glass blur: Gaussian blur, then each interior pixel copies a random neighbour (offsets in [-d, d-1]), blur.

    (sigma, d, iterations) = (.05,1,1), (.25,1,1), (.4,1,1), (.25,1,2), (.4,1,2); sigma and d x max(1, size/32).
    Approximation: all pixel moves of an iteration happen in parallel (a gather), not sequentially.
    """
    sc = _blur_scale(x)
    sigma, d, its = float(p[0]) * sc, max(1, int(round(int(p[1]) * sc))), int(p[2])
    a = ndimage.gaussian_filter(to_numpy(x), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    a = np.floor(a * 255.0) / 255.0  # the original's uint8 truncation
    n, c, h, w = a.shape
    rows, cols = np.arange(d, h - d), np.arange(d, w - d)
    for _ in range(its):
        dy = rng.integers(-d, d, size=(n, len(rows), len(cols)))
        dx = rng.integers(-d, d, size=(n, len(rows), len(cols)))
        sr = rows[None, :, None] + dy
        sc_ = cols[None, None, :] + dx
        ni = np.arange(n)[:, None, None]
        moved = a[ni, :, sr, sc_]  # (n, R, C, c)
        a[:, :, d:h - d, d:w - d] = np.moveaxis(moved, -1, 1)
    a = ndimage.gaussian_filter(a, sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    return from_numpy(a, x)


def motion_kernel_shifts(radius: int, sigma: float, angle_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sided motion-blur taps: weights (T,) and integer (row, col) shifts (N, T) per angle.

    w_i ~ exp(-i^2 / 2 sigma^2), i = 0..2 radius; shift_i = -ceil(i (sin, cos)(angle) - 0.5) as in
    bethgelab/imagecorruptions' ImageMagick-free motion blur.
    """
    width = 2 * radius + 1
    i = np.arange(width, dtype=np.float64)
    wts = np.exp(-(i**2) / (2.0 * sigma**2))
    wts /= wts.sum()
    th = np.deg2rad(angle_deg)[:, None]
    dy = -np.ceil(i[None] * np.sin(th) - 0.5).astype(np.int64)
    dx = -np.ceil(i[None] * np.cos(th) - 0.5).astype(np.int64)
    return wts, dy, dx


def motion_blur_batch(x: torch.Tensor, radius: int, sigma: float, angle_deg: np.ndarray) -> torch.Tensor:
    """``out = sum_i w_i x[clamp(r - dy_i), clamp(c - dx_i)]`` per image (edge replication)."""
    n, _, h, w = x.shape
    wts, dy, dx = motion_kernel_shifts(radius, sigma, angle_deg)
    keep = (np.abs(dy) < h).all(0) & (np.abs(dx) < w).all(0)  # taps beyond the image are dropped
    wts = wts[keep] / wts[keep].sum()
    dev = x.device
    sy, sx = torch.as_tensor(dy[:, keep], device=dev), torch.as_tensor(dx[:, keep], device=dev)
    r = torch.arange(h, device=dev)[None, :]
    c = torch.arange(w, device=dev)[None, :]
    ni = torch.arange(n, device=dev)[:, None, None]
    out = torch.zeros_like(x, dtype=torch.float64)
    xd = x.to(torch.float64).permute(0, 2, 3, 1)  # (N, H, W, C)
    for t, wt in enumerate(wts):
        rr = (r - sy[:, t:t + 1]).clamp(0, h - 1)  # (N, H)
        cc = (c - sx[:, t:t + 1]).clamp(0, w - 1)  # (N, W)
        out += float(wt) * xd[ni, rr[:, :, None], cc[:, None, :]].permute(0, 3, 1, 2)
    return out


@register_corruption("motion_blur", [(6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)], tags={"blur", "random"},
                     reference=_REF, faithful=False,
                     note="numpy/torch one-sided Gaussian motion kernel instead of ImageMagick's (as imagecorruptions)")
def motion_blur(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Motion blur along a random angle in U(-45, 45) deg; (radius, sigma) = (6,1), (6,1.5), (6,2), (8,2), (9,2.5).

    radius and sigma x size/32 (radius >= 1). Approximation of ImageMagick's motion blur (not bit-exact).
    """
    sc = size_scale(x)
    radius = max(1, int(round(float(p[0]) * sc)))
    sigma = max(0.25, float(p[1]) * sc)
    angle = rng.uniform(-45.0, 45.0, size=x.shape[0])
    return motion_blur_batch(x, radius, sigma, angle).to(x.dtype)


#: Zoom sets as produced by np.arange(1, 1.06 / 1.11 / 1.16 / 1.21 / 1.26, 0.01): 7, 12, 16, 21, 26 values.
ZOOM_SETS: tuple[tuple[float, ...], ...] = tuple(
    tuple(round(1.0 + 0.01 * i, 2) for i in range(k)) for k in (7, 12, 16, 21, 26)
)


@register_corruption("zoom_blur", [(z,) for z in ZOOM_SETS], tags={"blur"}, reference=_REF, faithful=False,
                     identity=((1.0,),),
                     note="each zoom is one continuous bilinear resample about the centre (no integer crop)")
def zoom_blur(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Zoom blur: mean of x and its zooms by z in {1.00, 1.01, ...} (7, 12, 16, 21, 26 factors).

    Approximation: the original crops ceil(h/z) px and resizes with scipy; here each zoom is one
    continuous bilinear zoom about the centre, which keeps every factor effective on 8x8 images.
    """
    zs = tuple(p[0])
    acc = x.to(torch.float64).clone()
    for z in zs:
        acc += zoom_about_centre(x.to(torch.float64), z) if z != 1.0 else x.to(torch.float64)
    return (acc / (len(zs) + 1)).to(x.dtype)


# -- weather / digital --------------------------------------------------------------------------------

def plasma_fractal(n: int, mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """(n, mapsize, mapsize) diamond-square plasma fractals in [0, 1] (toroidal), as in make_cifar_c.py."""
    a = np.zeros((n, mapsize, mapsize))
    step = mapsize
    wibble = 100.0

    def noise(shape: tuple[int, ...]) -> np.ndarray:
        return wibble * rng.uniform(-wibble, wibble, size=shape)

    while step >= 2:
        half = step // 2
        corner = a[:, 0::step, 0::step]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        a[:, half::step, half::step] = sq / 4.0 + noise(sq.shape)
        d = a[:, half::step, half::step]
        u0 = a[:, 0::step, 0::step]
        ltsum = d + np.roll(d, 1, axis=1)
        ttsum = u0 + np.roll(u0, -1, axis=2)
        a[:, 0::step, half::step] = (ltsum + ttsum) / 4.0 + noise(ltsum.shape)
        ltsum = d + np.roll(d, 1, axis=2)
        ttsum = u0 + np.roll(u0, -1, axis=1)
        a[:, half::step, 0::step] = (ltsum + ttsum) / 4.0 + noise(ltsum.shape)
        step //= 2
        wibble /= wibbledecay
    a -= a.min(axis=(1, 2), keepdims=True)
    return a / np.maximum(a.max(axis=(1, 2), keepdims=True), 1e-12)


@register_corruption("fog", [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)],
                     tags={"weather", "random"}, reference=_REF, identity=(0.0, 2.0))
def fog(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Fog: ``(x + c F) m / (m + c)`` with F a plasma fractal, m = max(x) per image.

    (c, wibbledecay) = (.2,3), (.5,3), (.75,2.5), (1,2), (1.5,1.75); mapsize = next power of two >= size.
    """
    c = float(p[0])
    n, _, h, w = x.shape
    size = 1 << max(1, int(math.ceil(math.log2(max(h, w)))))
    f = from_numpy(plasma_fractal(n, size, float(p[1]), rng)[:, None, :h, :w], x)
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c * f) * m / (m + c).clamp_min(1e-12)


@register_corruption("brightness", [(0.05,), (0.1,), (0.15,), (0.2,), (0.3,)], tags={"weather"}, reference=_REF,
                     identity=(0.0,))
def brightness(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Brightness: HSV value V <- clip(V + c), c = .05 ... .3 (closed form: rgb V'/V; grey: min(x + c, 1))."""
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + float(p[0])).clamp(0.0, 1.0)
    return torch.where(v > 0, x * (v2 / v.clamp_min(1e-12)), v2.expand_as(x))


@register_corruption("saturate", [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)],
                     tags={"digital", "extra"}, reference=_REF, identity=(1.0, 0.0),
                     known_failures={"check_distance_grows_with_severity":
                                     "the reference table desaturates at severities 1-2 and oversaturates at 3-5, "
                                     "so the distance to the clean image is not monotone by design"})
def saturate(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Saturation: HSV S <- clip(S mult + add); (mult, add) = (.3,0), (.1,0), (1.5,0), (2,.1), (2.5,.2).

    Closed form keeping H and V: ``rgb' = V - (V - rgb) S'/S``; grey pixels (S = 0) get hue 0 (red) as in
    skimage. Grayscale input is converted to RGB and back with the luma weights .299/.587/.114.
    """
    gray = not _rgb(x)
    xx = x.expand(-1, 3, -1, -1) if gray else x
    v = xx.amax(dim=1, keepdim=True)
    m = xx.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - m) / v.clamp_min(1e-12), torch.zeros_like(v))
    s2 = (s * float(p[0]) + float(p[1])).clamp(0.0, 1.0)
    coloured = v - (v - xx) * (s2 / s.clamp_min(1e-12))
    hue0 = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
    out = torch.where(s > 0, coloured, hue0)
    if gray:
        wts = torch.tensor([0.299, 0.587, 0.114], dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
        out = (out * wts).sum(1, keepdim=True)
    return out


@register_corruption("contrast", [(0.75,), (0.5,), (0.4,), (0.3,), (0.15,)], tags={"digital"}, reference=_REF,
                     identity=(1.0,))
def contrast(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Contrast: ``(x - mu) c + mu`` with mu the per-image, per-channel mean; c = .75, .5, .4, .3, .15."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    return (x - mu) * float(p[0]) + mu


@register_corruption("elastic_transform",
                     [(0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
                     tags={"digital", "random"}, reference=_REF, faithful=False, identity=(0.0, 0.0, 0.0),
                     known_failures={"check_distance_grows_with_severity":
                                     "the reference table shrinks the affine jitter (aff .08 -> .03 x size) while the "
                                     "elastic flow grows, so pixel distance is not monotone in severity"},
                     note="affine jitter and elastic flow are composed into one bilinear resample (reflect border)")
def elastic_transform(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Random affine jitter of three control points (+-aff) plus a smoothed random flow (alpha, sigma).

    (alpha, sigma, aff) = size x (0,0,.08), (.05,.2,.07), (.08,.06,.06), (.1,.04,.05), (.1,.03,.03).
    Approximation: the original warps twice (cv2 affine, then map_coordinates); here both are one resample.
    """
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, aff = float(p[0]) * size, float(p[1]) * size, float(p[2]) * size
    cy, cx = h / 2.0, w / 2.0  # the original's centre (16, 16) for 32 px
    q = size // 3
    src = np.array([[cy + q, cx + q], [cy + q, cx - q], [cy - q, cx - q]])  # (row, col)
    dst = src[None] + rng.uniform(-aff, aff, size=(n, 3, 2))
    # forward affine M maps src -> dst; the resample needs its inverse: src_pt = M^-1 (dst_pt)
    ones = np.ones((3, 1))
    src_h = np.concatenate([src, ones], axis=1)  # (3, 3)
    inv = np.empty((n, 2, 3))
    for i in range(n):  # dst_h @ B = src  (3 points, exact)
        dst_h = np.concatenate([dst[i], ones], axis=1)
        inv[i] = np.linalg.solve(dst_h, src).T
    del src_h
    flow = np.zeros((n, 2, h, w))
    if alpha > 0:
        u = rng.uniform(-1.0, 1.0, size=(n, 2, h, w))
        flow = ndimage.gaussian_filter(u, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0) * alpha
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    pr = rr[None] + flow[:, 0]
    pc = cc[None] + flow[:, 1]
    sr = inv[:, 0, 0, None, None] * pr + inv[:, 0, 1, None, None] * pc + inv[:, 0, 2, None, None]
    sc = inv[:, 1, 0, None, None] * pr + inv[:, 1, 1, None, None] * pc + inv[:, 1, 2, None, None]
    grid = torch.from_numpy(np.stack([sr, sc], axis=-1)).to(x.device)
    return flow_sample(x.to(torch.float64), grid, padding="reflection").to(x.dtype)


_BOX_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def pil_box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix equal to Pillow's 1-D BOX resize (float mode), read off by resizing an identity."""
    key = (n_in, n_out)
    if key not in _BOX_CACHE:
        from PIL import Image

        eye = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
        out = np.asarray(eye.resize((n_out, n_in), Image.Resampling.BOX), dtype=np.float64)  # (n_in, n_out)
        _BOX_CACHE[key] = torch.from_numpy(out.T.copy())
    return _BOX_CACHE[key]


@register_corruption("pixelate", [(0.95,), (0.9,), (0.85,), (0.75,), (0.65,)], tags={"digital"}, reference=_REF,
                     identity=(1.0,),
                     note="Pillow BOX down then up, applied in float (no uint8 rounding between the two resizes)")
def pixelate(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """Pixelate: Pillow BOX resize to int(size c) then back; c = .95, .9, .85, .75, .65 (32 px: 30, 28, 27, 24, 20)."""
    h, w = x.shape[-2:]
    c = float(p[0])
    nh, nw = max(1, int(h * c)), max(1, int(w * c))
    rh = pil_box_matrix(nh, h) @ pil_box_matrix(h, nh)
    rw = pil_box_matrix(nw, w) @ pil_box_matrix(w, nw)
    xd = x.to(torch.float64)
    return torch.einsum("ij,ncjk,lk->ncil", rh.to(x.device), xd, rw.to(x.device)).to(x.dtype)


@register_corruption("jpeg_compression", [(80,), (65,), (58,), (50,), (40,)], tags={"digital"}, reference=_REF,
                     note="Pillow JPEG (4:2:0 for RGB); bytes depend on the libjpeg build")
def jpeg_compression(x: torch.Tensor, p: tuple[Any, ...], rng: np.random.Generator) -> torch.Tensor:
    """JPEG round trip with Pillow at quality 80, 65, 58, 50, 40 (input rounded to uint8 first), per image."""
    from PIL import Image

    a = np.rint(to_numpy(x) * 255.0).astype(np.uint8)
    out = np.empty(a.shape, dtype=np.float64)
    for i in range(a.shape[0]):
        img = Image.fromarray(a[i, 0]) if a.shape[1] == 1 else Image.fromarray(np.moveaxis(a[i], 0, -1), mode="RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(p[0]))
        dec = np.asarray(Image.open(buf).convert("L" if a.shape[1] == 1 else "RGB"), dtype=np.float64) / 255.0
        out[i] = dec[None] if a.shape[1] == 1 else np.moveaxis(dec, -1, 0)
    return from_numpy(out, x)
