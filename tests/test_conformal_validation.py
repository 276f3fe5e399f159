"""Conformal prediction refuses NaN/Inf inputs and probabilities and bad labels (never empty sets or a NaN threshold)."""

import pytest
import torch
from torch import nn

from robustlab.conformal import (
    RobustConformal,
    SplitConformal,
    conformal_quantile,
    coverage,
    size_stratified_coverage,
)


def _probs(n=30, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(n, c, generator=g) * 2).softmax(1)
    return p, torch.multinomial(p, 1, generator=g).squeeze(1)


@pytest.mark.parametrize("score", ["thr", "aps", "raps"])
def test_split_conformal_refuses_nan_probabilities(score):
    p, y = _probs()
    bad = p.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'probs' of SplitConformal.calibrate contains 1 NaN"):
        SplitConformal(score).calibrate(bad, y)
    cp = SplitConformal(score).calibrate(p, y, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="'probs' of SplitConformal.predict_sets contains 1 NaN"):
        cp.predict_sets(bad)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        cp.predict_sets(bad)


def test_conformal_quantile_refuses_nan_scores():
    with pytest.raises(ValueError, match="'scores' of conformal_quantile contains 10 NaN"):
        conformal_quantile(torch.tensor([0.1, float("nan"), 0.3] * 10), 0.1)
    with pytest.raises(TypeError, match="floating-point"):
        conformal_quantile(torch.arange(30), 0.1)


def test_metrics_validate_labels():
    sets = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        coverage(sets, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        size_stratified_coverage(sets, torch.tensor([0.0, 1, 2, 1]))
    assert coverage(sets, torch.tensor([0, 1, 2, 1], dtype=torch.int32)) == 1.0


@pytest.fixture(scope="module")
def rc_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3)).eval()


def _rc(model, **kw):
    return RobustConformal(model, sigma=0.25, eps=0.1, n_mc=16, n_holdout=10, batch_size=64, **kw)


@pytest.mark.parametrize("ptt", [False, True])
def test_robust_conformal_refuses_nan_inputs(rc_model, ptt):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 2, generator=g), torch.randint(0, 3, (40,), generator=g)
    bad = x.clone()
    bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match="'x' of RobustConformal.calibrate contains 1 NaN"):
        _rc(rc_model, ptt=ptt).calibrate(bad, y, generator=g)
    rc = _rc(rc_model, ptt=ptt).calibrate(x, y, generator=g)
    with pytest.raises(ValueError, match="'x' of RobustConformal.predict_sets contains 1 NaN"):
        rc.predict_sets(bad, generator=g)
    with pytest.raises(ValueError, match="NaN or infinite"):
        rc.smoothed_scores(bad.masked_fill(bad.isnan(), float("inf")), generator=g)


def test_robust_conformal_refuses_a_model_that_returns_nan(rc_model):
    class NaNAbove(nn.Module):  # finite on clean inputs, NaN on some noisy copies
        def forward(self, x):
            z = rc_model(x)
            return torch.where(x[:, :1] > 0.9, torch.full_like(z, float("nan")), z)

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 2, generator=g) * 0.9, torch.randint(0, 3, (40,), generator=g)
    with pytest.raises(ValueError, match="'model output' of RobustConformal contains"):
        _rc(NaNAbove(), ptt=False).calibrate(x, y, generator=g)


@pytest.mark.parametrize("ptt", [False, True])
def test_robust_conformal_validates_labels(rc_model, ptt):
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(40, 2, generator=g), torch.randint(0, 3, (40,), generator=g)
    for bad, kind, text in ((y.index_fill(0, torch.tensor([7]), 3), ValueError, r"outside \[0, 3\)"),
                            (y.index_fill(0, torch.tensor([7]), -2), ValueError, r"outside \[0, 3\)"),
                            (y.float(), TypeError, "integer class indices"), (y[:9], ValueError, r"shape \(40,\)")):
        with pytest.raises(kind, match=text):
            _rc(rc_model, ptt=ptt).calibrate(x, bad, generator=g)
    a = _rc(rc_model, ptt=ptt).calibrate(x, y.to(torch.int32), generator=torch.Generator().manual_seed(3))
    b = _rc(rc_model, ptt=ptt).calibrate(x, y, generator=torch.Generator().manual_seed(3))
    assert a.threshold_ == b.threshold_


def test_robust_conformal_progress_argument(rc_model, capsys):
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(20, 2, generator=g), torch.randint(0, 3, (20,), generator=g)
    rc = _rc(rc_model, ptt=False)
    quiet = rc.calibrate(x, y, generator=torch.Generator().manual_seed(5), progress=False).threshold_
    loud = rc.calibrate(x, y, generator=torch.Generator().manual_seed(5), progress=True).threshold_
    assert quiet == loud  # the bar changes nothing
    assert "robust conformal" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'progress'"):
        rc.predict_sets(x, progress=1)
    assert rc.predict_sets(x[:0]).shape == (0, 3)
