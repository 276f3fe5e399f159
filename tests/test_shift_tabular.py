"""Tabular shifts: closed-form moments and exact counts."""

from __future__ import annotations

import pytest
import torch

from robustlab import shift
from robustlab._validation import InvalidParameterError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_feature_noise_moments_and_clip():
    x = torch.full((4000, 5), 0.5, dtype=torch.float64)
    y = shift.gaussian_feature_noise(x, std=0.05, generator=gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float((y - x).std()) == pytest.approx(0.05, rel=0.03)
    z = shift.gaussian_feature_noise(x, std=2.0, generator=gen())
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    u = shift.gaussian_feature_noise(x, std=2.0, clip=False, generator=gen())
    assert float(u.max()) > 1
    torch.testing.assert_close(shift.gaussian_feature_noise(x, std=0.0), x)
    with pytest.raises(InvalidParameterError, match="'std' parameter of gaussian_feature_noise"):
        shift.gaussian_feature_noise(x, std=-1.0)


def test_feature_dropout_rate_and_fill():
    x = torch.rand(2000, 10, generator=gen(1)) * 0.5 + 0.25
    y = shift.feature_dropout(x, rate=0.3, generator=gen())
    assert float((y == 0).float().mean()) == pytest.approx(0.3, abs=0.015)
    means = x.mean(0)
    z = shift.feature_dropout(x, rate=0.3, fill=means, generator=gen())
    dropped = y == 0
    torch.testing.assert_close(z[dropped], means.expand_as(x)[dropped])
    torch.testing.assert_close(z[~dropped], x[~dropped])
    assert torch.equal(shift.feature_dropout(x, rate=0.0), x)
    with pytest.raises(InvalidParameterError):
        shift.feature_dropout(x, rate=1.5)


def test_covariate_scaling_closed_form():
    x = torch.rand(100, 4, generator=gen(2), dtype=torch.float64) * 0.4 + 0.3
    y = shift.covariate_scaling(x, scale=0.5, shift=0.1)
    ref = (x - x.mean(0)) * 0.5 + x.mean(0) + 0.1
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(y.std(0), 0.5 * x.std(0))
    per = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    z = shift.covariate_scaling(x, scale=per, center=0.5, clip=False)
    torch.testing.assert_close(z, (x - 0.5) * per + 0.5)
    with pytest.raises(InvalidParameterError):
        shift.covariate_scaling(x, scale=-1.0)


def test_prior_shift_counts_and_conditionals():
    g = gen(3)
    y = torch.randint(0, 3, (3000,), generator=g)
    x = y[:, None].double() / 10 + torch.rand(3000, 2, generator=g, dtype=torch.float64) * 0.05
    xs, ys = shift.prior_shift(x, y, priors=[0.7, 0.2, 0.1], n=1000, generator=gen())
    assert torch.bincount(ys, minlength=3).tolist() == [700, 200, 100]
    # every sampled row is a real row of its class (p(x|y) kept)
    assert bool(((xs[:, 0] * 10).floor() == ys).all())
    xs2, ys2 = shift.prior_shift(x, y, priors=[1 / 3, 1 / 3, 1 / 3], n=100, replace=False, generator=gen())
    assert sorted(torch.bincount(ys2).tolist()) == [33, 33, 34]
    assert len({tuple(r) for r in xs2.tolist()}) == 100  # without replacement: distinct rows
    with pytest.raises(ValueError, match="sum to 1"):
        shift.prior_shift(x, y, priors=[0.5, 0.2, 0.2])
    with pytest.raises(ValueError, match="without replacement"):
        shift.prior_shift(x, y, priors=[1.0, 0.0, 0.0], n=5000, replace=False)
    with pytest.raises(ValueError, match="no rows"):
        shift.prior_shift(x[y != 2], y[y != 2], priors=[0.5, 0.0, 0.5])
