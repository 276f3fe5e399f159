"""Conformance checks for every registered corruption (``robustlab.shift.CORRUPTIONS``).

Inputs are small smooth random images (blurred noise plus a bright blob), grayscale and RGB, at 8x8
(the ``digits`` size) and 20x24 (non-square), so each corruption is exercised at the smallest size it
must support.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._registry import Spec
from . import check

SIZES = ((1, 8, 8), (3, 8, 8), (1, 20, 24), (3, 20, 24))


def smooth_images(n: int, c: int, h: int, w: int, *, seed: int = 0) -> torch.Tensor:
    """(n, c, h, w) smooth test images in [0, 1]: 3x3-blurred noise mixed with a Gaussian blob."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    noise = F.avg_pool2d(F.pad(noise, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    rr = torch.arange(h, dtype=torch.float64)[:, None]
    cc = torch.arange(w, dtype=torch.float64)[None, :]
    cy = torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64) * h * 0.5 + h * 0.25
    cx = torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64) * w * 0.5 + w * 0.25
    blob = torch.exp(-((rr - cy) ** 2 + (cc - cx) ** 2) / (2 * (0.2 * min(h, w)) ** 2))
    return (0.35 * noise + 0.6 * blob).clamp(0, 1).float()


def _make(spec: Spec[Any], severity: int) -> Any:
    return spec.create(severity=severity)


def _apply(spec: Spec[Any], x: torch.Tensor, severity: int, seed: int = 1) -> torch.Tensor:
    return _make(spec, severity)(x, generator=torch.Generator().manual_seed(seed))


@check()
def check_output_in_unit_range(spec: Spec[Any]) -> None:
    for c, h, w in SIZES:
        x = smooth_images(3, c, h, w)
        for s in range(1, 6):
            y = _apply(spec, x, s)
            assert torch.isfinite(y).all(), f"{spec.name} s={s} {c}x{h}x{w}: non-finite output"
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0, f"{spec.name} s={s}: output outside [0, 1]"


@check()
def check_shape_and_dtype_kept(spec: Spec[Any]) -> None:
    for dtype in (torch.float32, torch.float64):
        for c, h, w in SIZES:
            x = smooth_images(2, c, h, w).to(dtype)
            y = _apply(spec, x, 3)
            assert y.shape == x.shape, f"{spec.name}: shape {tuple(y.shape)} != {tuple(x.shape)}"
            assert y.dtype == x.dtype, f"{spec.name}: dtype {y.dtype} != {x.dtype}"
            assert y.data_ptr() != x.data_ptr(), f"{spec.name}: output aliases the input"


@check()
def check_input_not_modified(spec: Spec[Any]) -> None:
    x = smooth_images(2, 3, 20, 24)
    ref = x.clone()
    _apply(spec, x, 5)
    assert torch.equal(x, ref), f"{spec.name} modified its input in place"


@check()
def check_severity_zero_is_identity(spec: Spec[Any]) -> None:
    from ..shift import corrupt

    for c, h, w in SIZES:
        x = smooth_images(2, c, h, w)
        y = corrupt(x, spec.name, severity=0, generator=torch.Generator().manual_seed(3))
        assert torch.equal(x, y), f"{spec.name}: severity 0 changed the input"


@check()
def check_identity_params(spec: Spec[Any]) -> None:
    ident = getattr(spec.factory, "identity_params", None)
    if ident is None:
        return
    for c, h, w in SIZES:
        x = smooth_images(2, c, h, w)
        y = spec.create(params=ident)(x, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0, msg=f"{spec.name}: identity params {ident} change x")


@check()
def check_changes_the_input(spec: Spec[Any]) -> None:
    for c, h, w in SIZES:
        x = smooth_images(4, c, h, w)
        d5 = float((_apply(spec, x, 5) - x).abs().mean())
        assert d5 > 1e-3, f"{spec.name} at severity 5 barely changes {c}x{h}x{w} images (mean |dx| {d5:.2e})"


@check()
def check_distance_grows_with_severity(spec: Spec[Any]) -> None:
    """Mean |x' - x| over a batch is non-decreasing in severity (5% slack) and d(5) > d(1)."""
    for c, h, w in SIZES:
        x = smooth_images(16, c, h, w, seed=5)
        d = [float((_apply(spec, x, s, seed=7) - x).abs().mean()) for s in range(1, 6)]
        for s in range(4):
            assert d[s + 1] >= 0.95 * d[s] - 1e-6, (
                f"{spec.name} {c}x{h}x{w}: distance drops from severity {s + 1} to {s + 2}: {d}")
        assert d[4] > d[0], f"{spec.name} {c}x{h}x{w}: severity 5 not farther than severity 1: {d}"


@check()
def check_deterministic_under_generator(spec: Spec[Any]) -> None:
    x = smooth_images(3, 3, 20, 24)
    a = _apply(spec, x, 4, seed=11)
    b = _apply(spec, x, 4, seed=11)
    assert torch.equal(a, b), f"{spec.name}: same generator seed, different output"


@check(requires={"random"})
def check_generator_changes_output(spec: Spec[Any]) -> None:
    x = smooth_images(3, 3, 20, 24)
    a = _apply(spec, x, 4, seed=11)
    b = _apply(spec, x, 4, seed=12)
    assert not torch.equal(a, b), f"{spec.name} is tagged random but ignores the generator"


@check(excludes={"random"})
def check_non_random_ignores_generator(spec: Spec[Any]) -> None:
    x = smooth_images(3, 3, 20, 24)
    assert torch.equal(_apply(spec, x, 4, seed=11), _apply(spec, x, 4, seed=12)), (
        f"{spec.name} is not tagged random but its output depends on the generator")


@check()
def check_batch_independence(spec: Spec[Any]) -> None:
    """A deterministic corruption of image i does not depend on the other images of the batch."""
    if "random" in spec.tags:
        return
    x = smooth_images(4, 3, 20, 24)
    full = _apply(spec, x, 3)
    part = _apply(spec, x[1:3], 3)
    torch.testing.assert_close(full[1:3], part, atol=1e-6, rtol=0)


@check()
def check_rejects_bad_inputs(spec: Spec[Any]) -> None:
    import pytest

    c = _make(spec, 2)
    with pytest.raises(ValueError):
        c(torch.rand(2, 8, 8))  # no channel dim
    with pytest.raises(ValueError):
        c(torch.rand(2, 1, 8, 8) * 2)  # outside [0, 1]
    with pytest.raises(ValueError):
        c(torch.rand(2, 1, 4, 4))  # too small
    with pytest.raises((ValueError, TypeError)):
        spec.create(severity=6)
