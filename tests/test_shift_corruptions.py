"""Unit tests of individual corruptions against closed forms and independent computations."""

from __future__ import annotations

import colorsys
import gzip
import io
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from robustlab import shift
from robustlab._registry import UnknownNameError
from robustlab.shift import _common, _mnist_c
from robustlab.testing._corruptions import smooth_images


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- API -------------------------------------------------------------------------------------------

def test_available_and_suites():
    names = shift.available()
    assert names == sorted(names)
    for s in ("common", "common_extra", "mnist_c"):
        assert set(shift.suite(s)) <= set(names)
    assert shift.suite("all") == names
    assert len(shift.suite("common")) == 15 and len(shift.suite("mnist_c")) == 15
    assert "rotate" in shift.available(tags=["geometric"])
    with pytest.raises(ValueError, match="suite"):
        shift.suite("cifar")


def test_corrupt_validates():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(UnknownNameError, match="Did you mean 'fog'"):
        shift.corrupt(x, "fogg", severity=1)
    with pytest.raises(ValueError, match="severity"):
        shift.corrupt(x, "fog", severity=6)
    with pytest.raises(ValueError, match="severity"):
        shift.corrupt(x, "fog", severity=-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        shift.corrupt(torch.rand(2, 2, 8, 8), "fog", severity=1)
    with pytest.raises(TypeError):
        shift.corrupt(torch.ones(2, 1, 8, 8, dtype=torch.uint8), "fog", severity=1)


def test_severity_zero_returns_copy_and_empty_batch():
    x = torch.rand(3, 3, 8, 8)
    y = shift.corrupt(x, "gaussian_noise", severity=0)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()
    e = torch.rand(0, 1, 8, 8)
    assert shift.corrupt(e, "jpeg_compression", severity=3).shape == (0, 1, 8, 8)


def test_corruption_object_repr_and_flags():
    c = shift.CORRUPTIONS.get("motion_blur", severity=2)
    assert c.severity == 2 and c.params == (6, 1.5) and not c.faithful and "ImageMagick" in c.note
    assert "motion_blur" in repr(c)
    assert shift.CORRUPTIONS.get("contrast", severity=1).faithful


def test_uses_global_rng_without_generator():
    x = torch.full((2, 1, 8, 8), 0.5)
    torch.manual_seed(3)
    a = shift.corrupt(x, "gaussian_noise", severity=3)
    torch.manual_seed(3)
    b = shift.corrupt(x, "gaussian_noise", severity=3)
    assert torch.equal(a, b)


# -- noise -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("severity,sigma", [(1, 0.04), (5, 0.10)])
def test_gaussian_noise_variance(severity, sigma):
    x = torch.full((64, 3, 16, 16), 0.5, dtype=torch.float64)  # far from the clip bounds
    d = shift.corrupt(x, "gaussian_noise", severity=severity, generator=gen()) - x
    assert abs(float(d.mean())) < 3 * sigma / math.sqrt(d.numel())
    assert float(d.std()) == pytest.approx(sigma, rel=0.02)


def test_shot_noise_poisson_moments():
    x = torch.full((64, 1, 16, 16), 0.4, dtype=torch.float64)
    c = 50.0  # severity 5
    y = shift.corrupt(x, "shot_noise", severity=5, generator=gen())
    assert float(y.mean()) == pytest.approx(0.4, abs=3 * math.sqrt(0.4 / c / y.numel()))
    assert float(y.var()) == pytest.approx(0.4 / c, rel=0.05)
    # values lie on the lattice k / c
    k = y * c
    assert torch.allclose(k, k.round(), atol=1e-9)


def test_impulse_noise_rate_and_values():
    x = torch.full((64, 3, 16, 16), 0.5, dtype=torch.float64)
    y = shift.corrupt(x, "impulse_noise", severity=5, generator=gen())  # amount 0.07
    changed = y != 0.5
    assert float(changed.double().mean()) == pytest.approx(0.07, abs=0.006)
    vals = y[changed]
    assert bool(((vals == 0) | (vals == 1)).all())
    assert float((vals == 1).double().mean()) == pytest.approx(0.5, abs=0.05)


def test_speckle_noise_scales_with_x():
    x = torch.full((64, 1, 16, 16), 0.25, dtype=torch.float64)
    d = shift.corrupt(x, "speckle_noise", severity=5, generator=gen()) - x
    assert float(d.std()) == pytest.approx(0.25 * 0.2, rel=0.03)


# -- colour / digital ------------------------------------------------------------------------------

def test_contrast_keeps_channel_means():
    x = smooth_images(4, 3, 16, 16).double()
    for s in range(1, 6):
        y = shift.corrupt(x, "contrast", severity=s)
        torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-12, rtol=0)
        c = [0.75, 0.5, 0.4, 0.3, 0.15][s - 1]
        torch.testing.assert_close(y.std(dim=(2, 3)), c * x.std(dim=(2, 3)), atol=1e-12, rtol=0)


def _hsv_map(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn(h, s, v) -> (h, s, v)`` per pixel with the standard library's colorsys (independent code)."""
    a = x.double().numpy()
    out = np.empty_like(a)
    for n in range(a.shape[0]):
        for i in range(a.shape[2]):
            for j in range(a.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*a[n, :, i, j])
                out[n, :, i, j] = colorsys.hsv_to_rgb(*fn(h, s, v))
    return torch.from_numpy(out)


@pytest.mark.parametrize("severity", [1, 5])
def test_brightness_matches_colorsys(severity):
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    x = torch.rand(2, 3, 8, 8, generator=gen(1), dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black pixel
    x[0, :, 0, 1] = 0.4  # grey pixel
    y = shift.corrupt(x, "brightness", severity=severity)
    ref = _hsv_map(x, lambda h, s, v: (h, s, min(v + c, 1.0)))
    torch.testing.assert_close(y, ref, atol=1e-9, rtol=0)
    g = torch.rand(2, 1, 8, 8, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(shift.corrupt(g, "brightness", severity=severity), (g + c).clamp(max=1.0))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_saturate_matches_colorsys(severity):
    mult, add = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    x = torch.rand(2, 3, 8, 8, generator=gen(3), dtype=torch.float64)
    x[0, :, 0, 1] = 0.4  # grey pixel: hue 0
    y = shift.corrupt(x, "saturate", severity=severity)
    ref = _hsv_map(x, lambda h, s, v: (h, min(max(s * mult + add, 0.0), 1.0), v))
    torch.testing.assert_close(y, ref, atol=1e-9, rtol=0)


def test_pixelate_matches_pillow():
    x = smooth_images(2, 3, 32, 32).double()
    for s, n in zip(range(1, 6), (30, 28, 27, 24, 20)):
        y = shift.corrupt(x, "pixelate", severity=s)
        ref = np.empty(tuple(x.shape))
        for i in range(2):
            for ch in range(3):
                im = Image.fromarray(x[i, ch].float().numpy(), mode="F")
                small = im.resize((n, n), Image.Resampling.BOX)
                ref[i, ch] = np.asarray(small.resize((32, 32), Image.Resampling.BOX))
        torch.testing.assert_close(y, torch.from_numpy(ref).clamp(0, 1), atol=1e-5, rtol=0)


def test_jpeg_matches_pillow_and_quality_order():
    x = smooth_images(2, 3, 16, 16)
    y = shift.corrupt(x, "jpeg_compression", severity=5)
    a = np.rint(x[1].numpy() * 255).astype(np.uint8).transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGB").save(buf, format="JPEG", quality=40)
    ref = np.asarray(Image.open(buf), dtype=np.float64).transpose(2, 0, 1) / 255
    torch.testing.assert_close(y[1].double(), torch.from_numpy(ref), atol=1e-6, rtol=0)


def test_fog_closed_form_bounds():
    x = smooth_images(4, 1, 16, 16).double()
    c = 1.5
    y = shift.corrupt(x, "fog", severity=5, generator=gen())
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    # y = (x + c F) m / (m + c) with F in [0, 1]
    f = y * (m + c) / m / c - x / c
    assert float(f.min()) >= -1e-9 and float(f.max()) <= 1 + 1e-9
    plasma = _common.plasma_fractal(3, 32, 2.0, np.random.default_rng(0))
    assert plasma.shape == (3, 32, 32)
    assert np.allclose(plasma.min(axis=(1, 2)), 0) and np.allclose(plasma.max(axis=(1, 2)), 1)


# -- blur ------------------------------------------------------------------------------------------

def test_zoom_sets_sizes():
    assert tuple(len(z) for z in _common.ZOOM_SETS) == (7, 12, 16, 21, 26)
    assert _common.ZOOM_SETS[4][-1] == 1.25 and all(z[0] == 1.0 for z in _common.ZOOM_SETS)


def test_disk_kernel():
    k = _common._disk(0.3, 0.4)  # radius < 1: only the centre, so a 3x3 Gaussian with sigma 0.4
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.4**2))
    g /= g.sum()
    np.testing.assert_allclose(k, np.outer(g, g), atol=1e-12)
    for r, a in [(1.0, 0.2), (1.5, 0.1), (3.0, 0.5)]:
        k = _common._disk(r, a)
        assert k.sum() == pytest.approx(1.0) and np.allclose(k, k.T) and np.allclose(k, k[::-1])


def test_defocus_is_correlation_with_disk():
    x = smooth_images(2, 1, 16, 16).double()
    y = shift.corrupt(x, "defocus_blur", severity=4)
    k = torch.from_numpy(_common._disk(1.0, 0.2))
    r = k.shape[0] // 2
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, r, r), mode="reflect"), k[None, None])
    torch.testing.assert_close(y, ref.clamp(0, 1), atol=1e-12, rtol=0)


def test_gaussian_blur_against_conv():
    x = smooth_images(2, 3, 16, 16).double()
    sigma = 1.0  # severity 5
    y = shift.corrupt(x, "gaussian_blur", severity=5)
    r = 4
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma**2))
    g = g / g.sum()
    k = torch.outer(g, g)[None, None].repeat(3, 1, 1, 1)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r,) * 4, mode="replicate"), k, groups=3)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)


def test_motion_blur_horizontal_formula():
    x = smooth_images(2, 1, 12, 12).double()
    radius, sigma = 2, 1.0
    out = _common.motion_blur_batch(x, radius, sigma, np.zeros(2))
    w = np.exp(-np.arange(5) ** 2 / 2.0)
    w /= w.sum()
    ref = torch.zeros_like(x)
    for i in range(5):  # angle 0: out[r, c] = sum_i w_i x[r, clamp(c + i)]
        idx = torch.arange(12).add(i).clamp(max=11)
        ref += w[i] * x[..., idx]
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    wts, dy, dx = _common.motion_kernel_shifts(3, 1.5, np.array([90.0]))
    assert wts.sum() == pytest.approx(1) and (dx == 0).all() and list(dy[0]) == [0, -1, -2, -3, -4, -5, -6]


# -- MNIST-C ---------------------------------------------------------------------------------------

def test_rotate_quarter_turn_is_rot90():
    x = smooth_images(6, 1, 9, 9)
    y = shift.CORRUPTIONS.get("rotate", params=(math.pi / 2,))(x, generator=gen())
    for i in range(6):
        ok = [torch.allclose(y[i], torch.rot90(x[i], k, dims=(1, 2)), atol=1e-5) for k in (1, -1)]
        assert any(ok), f"image {i} is not a quarter turn"


def test_translate_is_zero_filled_roll():
    x = smooth_images(4, 1, 28, 28)
    y = shift.CORRUPTIONS.get("translate", params=(2,))(x, generator=gen())  # 2 px at 28 px
    for i in range(4):
        found = False
        for sr in (-2, 2):
            for sc in (-2, 2):
                ref = torch.zeros_like(x[i])
                # out(q) = x(q + t): content moves by -t
                src = x[i][:, max(sr, 0):28 + min(sr, 0), max(sc, 0):28 + min(sc, 0)]
                ref[:, max(-sr, 0):28 + min(-sr, 0), max(-sc, 0):28 + min(-sc, 0)] = src
                found |= torch.allclose(y[i], ref, atol=1e-6)
        assert found


def test_scale_keeps_centre_and_shrinks_mass():
    x = smooth_images(4, 1, 29, 29)
    y = shift.corrupt(x, "scale", severity=5)  # 0.5
    torch.testing.assert_close(y[..., 14, 14], x[..., 14, 14])
    ratio = y.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert bool((ratio < 0.4).all()) and bool((ratio > 0.15).all())  # area shrinks by 0.25 (+ border)


def test_stripe_exact():
    x = smooth_images(2, 1, 28, 28)
    y = shift.corrupt(x, "stripe", severity=5)  # 7 columns each side
    torch.testing.assert_close(y[..., :7], 1 - x[..., :7])
    torch.testing.assert_close(y[..., 21:], 1 - x[..., 21:])
    torch.testing.assert_close(y[..., 7:21], x[..., 7:21])


def test_line_profile_and_dotted_bands():
    p = _mnist_c.line_profile(10, 12, np.array([4.0]), np.array([4.0]), 0.0, 11.0, 2.3)[0]
    assert np.allclose(p[4, :11], 1.0) and np.allclose(p[:, 11], 0.0)  # column c1 is excluded
    assert np.allclose(p[0], 0.0)  # 4 px away: beyond the stroke
    x = torch.zeros(3, 1, 28, 28)
    y = shift.corrupt(x, "dotted_line", severity=1, generator=gen())
    off = (torch.arange(28) // 2) % 2 == 0
    assert float(y[..., off].abs().max()) == 0.0 and float(y.max()) > 0.9


def test_canny_square_edges():
    x = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    x[..., 8:20, 8:20] = 1.0
    e = _mnist_c.canny(x.numpy(), sigma=1.0)[0, 0]
    ys, xs = np.nonzero(e)
    assert len(ys) > 20
    assert ys.min() >= 6 and ys.max() <= 21 and xs.min() >= 6 and xs.max() <= 21
    assert e[12:16, 12:16].sum() == 0 and e[:4].sum() == 0  # nothing inside or far outside
    y = shift.corrupt(x.float(), "canny_edges", severity=5)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def test_mnist_c_suite_on_real_digits(shared_datasets):
    path = os.path.join(shared_datasets, "mnist-t10k", "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(path):
        pytest.skip("MNIST test images not present")
    x = torch.from_numpy(_read_idx(path)[:16].astype(np.float32) / 255.0)[:, None]
    for name in shift.suite("mnist_c"):
        d = []
        for s in (1, 3, 5):
            y = shift.corrupt(x, name, severity=s, generator=gen(1))
            assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
            d.append(float((y - x).abs().mean()))
        assert d[2] > 0 and d[2] >= 0.95 * d[0], (name, d)


# -- weather ---------------------------------------------------------------------------------------

def test_frost_is_the_documented_blend():
    from robustlab.shift import _weather
    from robustlab.shift._base import _numpy_rng

    x = smooth_images(3, 3, 16, 16).double()
    y = shift.corrupt(x, "frost", severity=5, generator=gen(4))
    tex = _weather.frost_texture(3, 16, 16, _numpy_rng(gen(4)))
    assert tex.min() >= 0 and tex.max() <= 1 and tex.shape == (3, 3, 16, 16)
    torch.testing.assert_close(y, (0.75 * x + 0.45 * torch.from_numpy(tex)).clamp(0, 1))


def test_spatter_mud_moves_pixels_towards_mud_colour():
    x = smooth_images(8, 3, 32, 32).double()
    y = shift.corrupt(x, "spatter", severity=5, generator=gen(5))
    col = torch.tensor([63, 42, 20], dtype=torch.float64).view(1, 3, 1, 1) / 255
    t = (y - x) / (col - x)  # the mixing weight m, equal in every channel
    changed = (y - x).abs().amax(1) > 1e-9
    assert bool(changed.any())
    tt = t.permute(0, 2, 3, 1)[changed]
    torch.testing.assert_close(tt[:, 0], tt[:, 1], atol=1e-6, rtol=0)
    assert float(tt.min()) >= 0.8 - 1e-6 and float(tt.max()) <= 1 + 1e-6  # m < 0.8 is zeroed


def test_snow_only_adds_flakes_on_top_of_the_brightened_image():
    x = smooth_images(4, 3, 32, 32).double()
    y = shift.corrupt(x, "snow", severity=4, generator=gen(6))
    gray = (x * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1, keepdim=True)
    xp = 0.85 * x + 0.15 * torch.maximum(x, gray * 1.5 + 0.5)
    assert bool((y >= xp.clamp(0, 1) - 1e-9).all())
    assert float((y - xp.clamp(0, 1)).abs().max()) > 0.05


def test_equalize_is_uniform():
    from robustlab.shift._weather import _equalize

    a = np.random.default_rng(0).random((2, 16, 16))
    e = _equalize(a)
    assert e.min() == 0 and e.max() == 255
    assert np.allclose(np.sort(e[0].ravel()), np.floor(np.arange(256) / 255 * 255))
