"""Regression metrics equal scikit-learn's."""

import pytest
import torch
from sklearn import metrics as skm

from robustlab import metrics


def test_regression_metrics_match_sklearn():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, generator=g, dtype=torch.float64)
    p = y + 0.3 * torch.randn(50, generator=g, dtype=torch.float64)
    assert metrics.mean_squared_error(p, y) == pytest.approx(skm.mean_squared_error(y, p), rel=1e-12)
    assert metrics.mean_absolute_error(p[:, None], y) == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert metrics.r2_score(p, y) == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert metrics.interval_coverage(y - 0.1, y + 0.1, y) == 1.0
    assert metrics.interval_coverage(p - 0.2, p + 0.2, y) == pytest.approx(float(((y - p).abs() <= 0.2).double().mean()))
    assert metrics.interval_width(p - 0.2, p + 0.3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="target"):
        metrics.r2_score(p, y[:3])
