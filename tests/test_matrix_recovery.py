"""Robust matrix recovery: the ℓ1 sub-gradient method recovers a low-rank matrix despite outliers; ℓ2 would not."""

import pytest
import torch

from robustlab._validation import InvalidParameterError
from robustlab.diagnostics import make_matrix_sensing, subgradient_recovery


def test_recovers_with_outliers_and_over_parameterisation():
    pr = make_matrix_sensing(d=8, rank=1, outlier_fraction=0.2, seed=1)
    assert int(pr.is_outlier.sum()) == round(0.2 * pr.y.shape[0])
    _, err = subgradient_recovery(pr, width=4, iterations=200, init_scale=1e-3, decay=0.99)
    assert err[0] > 0.99 and err[-1] < 0.1, err[-1]
    # the least-squares estimate of X from the same measurements is ruined by the outliers
    a = pr.a.reshape(pr.a.shape[0], -1)
    x_ls = torch.linalg.lstsq(a, pr.y[:, None]).solution.reshape(8, 8)
    assert float(torch.linalg.norm(x_ls - pr.x_star) / torch.linalg.norm(pr.x_star)) > 5 * err[-1]


def test_seeded_and_validated():
    a, b = make_matrix_sensing(d=6, seed=3), make_matrix_sensing(d=6, seed=3)
    assert torch.equal(a.y, b.y)
    assert subgradient_recovery(a, width=2, iterations=5)[1] == subgradient_recovery(b, width=2, iterations=5)[1]
    with pytest.raises(InvalidParameterError, match="'width'"):
        subgradient_recovery(a, width=7)
    with pytest.raises(InvalidParameterError, match="'outlier_fraction'"):
        make_matrix_sensing(outlier_fraction=1.0)


def test_exact_recovery_fully_over_parameterised_with_outliers():
    """Defaults (alpha 1e-6, eta_t = 0.5 * 0.98^t, 500 steps): error well below 1e-3 at r' = d with 20 % outliers,
    where the larger initialisation leaves an O(alpha) floor from the extra directions (the paper's small-init claim)."""
    pr = make_matrix_sensing(d=10, rank=2, outlier_fraction=0.2, seed=1)
    _, err = subgradient_recovery(pr, width=10)
    assert err[-1] < 1e-4, err[-1]
    assert err[250] > 10 * err[-1]  # still decaying geometrically, not a plateau
    _, err_big_init = subgradient_recovery(pr, width=10, init_scale=1e-3)
    assert err_big_init[-1] > 10 * err[-1]
