"""Every registered regression loss passes the regression battery; cs_divergence matches a direct O(n^2) numpy sum."""

import numpy as np
import pytest
import torch

from robustlab._validation import InvalidParameterError
from robustlab.losses import LOSSES, REGRESSION_LOSSES, cs_divergence, regression
from robustlab.testing import parametrize_checks


@parametrize_checks(REGRESSION_LOSSES)
def test_regression_loss(spec, check):
    check(spec)


def _cs_numpy(p, y, x, sigma, xs):
    n = len(p)
    def g(a, b, s):
        return np.exp(-((a - b) ** 2).sum() / (2 * s * s))
    def term(a, b):
        tot = 0.0
        for i in range(n):
            ki = sum(g(x[i], x[j], xs) for j in range(n))
            tot += sum(g(x[i], x[j], xs) * g(a[i], b[j], sigma) for j in range(n)) / ki ** 2
        return np.log(tot)
    return term(y, y) + term(p, p) - 2 * term(y, p)


def test_cs_divergence_matches_direct_sum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, generator=g, dtype=torch.float64)
    p = y + 0.5 * torch.randn(7, generator=g, dtype=torch.float64)
    got = float(cs_divergence(p, y, sigma=0.8, x=x, x_sigma=1.3))
    want = _cs_numpy(p.numpy()[:, None], y.numpy()[:, None], x.numpy(), 0.8, 1.3)
    assert got == pytest.approx(want, rel=1e-10)
    assert got > 0
    # identity input kernel: the correntropy form
    r = (y - p).numpy()
    assert float(cs_divergence(p, y, sigma=0.8)) == pytest.approx(-2 * np.log(np.mean(np.exp(-r ** 2 / 1.28))))


def test_cs_divergence_is_robust_to_an_outlier():
    """Its gradient on a huge residual vanishes (MSE's grows with it): the CS-IB robustness."""
    y = torch.zeros(10, dtype=torch.float64)
    p = torch.full((10,), 0.1, dtype=torch.float64)
    p[0] = 1e3
    p.requires_grad_(True)
    cs_divergence(p, y, sigma=1.0).backward()
    assert abs(float(p.grad[0])) < 1e-12 < abs(float(p.grad[1]))


def test_names_do_not_clash_with_classification():
    assert "mse" in LOSSES and "mse" in REGRESSION_LOSSES
    assert set(REGRESSION_LOSSES.available()) == {"mse", "mae", "huber", "pseudo_huber", "quantile", "log_cosh",
                                                  "cauchy", "cs_divergence"}
    with pytest.raises(InvalidParameterError, match="tau"):
        regression("quantile", tau=1.0)
    with pytest.raises(InvalidParameterError, match="reduction"):
        regression("cs_divergence", reduction="sum")


def test_battery_catches_a_naive_log_cosh():
    """log(cosh(r)) overflows at |r| ~ 90 in float32: the extreme-residual check fails on it."""
    from robustlab._registry import Spec
    from robustlab.losses._regression import RegressionLoss
    from robustlab.testing import _regression_losses as B

    class NaiveLogCosh(RegressionLoss):
        residual_fn = staticmethod(lambda r: torch.log(torch.cosh(r)))

    with pytest.raises(AssertionError, match="not finite"):
        B.check_finite_extreme_residuals(Spec("log_cosh", NaiveLogCosh))
