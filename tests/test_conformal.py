"""Split conformal (exact threshold, scores by hand, metrics) and RSCP+ robust conformal."""

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

from robustlab._validation import NotCalibratedError
from robustlab.conformal import (
    RobustConformal,
    SplitConformal,
    average_set_size,
    conformal_quantile,
    coverage,
    get_score,
    quantile_rank,
    size_stratified_coverage,
)


def test_threshold_is_exact_order_statistic():
    assert quantile_rank(99, 0.1) == 90  # (n+1)(1-α) = 90 exactly, no float round-up to 91
    assert quantile_rank(9, 0.1) == 9 and quantile_rank(10, 0.1) == 10 and quantile_rank(19, 0.05) == 19
    g = torch.Generator().manual_seed(0)
    s = torch.rand(37, generator=g)
    for alpha in (0.05, 0.1, 0.2, 0.5):
        k = math.ceil((37 + 1) * (1 - alpha) - 1e-9)
        assert float(conformal_quantile(s, alpha)) == float(s.sort().values[k - 1])
    with pytest.warns(UserWarning, match="inf"):
        assert math.isinf(float(conformal_quantile(torch.rand(5), 0.1)))


def test_scores_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    torch.testing.assert_close(get_score("thr")(p), torch.tensor([[0.5, 0.7, 0.8]]))
    torch.testing.assert_close(get_score("aps", randomized=False)(p), torch.tensor([[0.5, 0.8, 1.0]]))
    g = torch.Generator().manual_seed(0)
    u = float(torch.rand(1, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(get_score("aps")(p, generator=g), torch.tensor([[0.5 * u, 0.5 + 0.3 * u, 0.8 + 0.2 * u]]))
    raps = get_score("raps", penalty=0.1, k_reg=1, randomized=False)
    torch.testing.assert_close(raps(p), torch.tensor([[0.5, 0.9, 1.2]]))
    assert raps.upper(3) == pytest.approx(1.2)


def test_split_conformal_sets_and_metrics():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]])
    y = torch.tensor([0, 2, 1, 2])
    cp = SplitConformal("thr", alpha=0.25).calibrate(probs, y)  # k = ceil(5 * 0.75) = 4 -> largest score 0.7
    assert float(cp.threshold_) == pytest.approx(0.7)
    sets = cp.predict_sets(probs)
    assert sets.tolist() == [[True, False, False], [False, True, True], [True, True, True], [False, False, True]]
    assert coverage(sets, y) == 1.0 and average_set_size(sets) == pytest.approx(7 / 4)
    assert size_stratified_coverage(sets, torch.tensor([1, 1, 0, 2])) == {1: (0.5, 2), 2: (1.0, 1), 3: (1.0, 1)}
    with pytest.raises(NotCalibratedError, match="calibrate"):
        SplitConformal().predict_sets(probs)
    with pytest.raises(ValueError, match="softmax"):
        SplitConformal().calibrate(probs.log(), y)
    with pytest.raises(ValueError, match="'alpha' parameter"):
        SplitConformal("thr", alpha=1.5)
    with pytest.raises(KeyError, match="Did you mean 'aps'"):
        SplitConformal("apss")


def _blobs(n, g):
    means = torch.tensor([[0.25, 0.25], [0.75, 0.3], [0.5, 0.75]])
    y = torch.randint(0, 3, (n,), generator=g)
    return (means[y] + 0.12 * torch.randn(n, 2, generator=g)).clamp(0, 1), y


def _pgd_l2(model, x, y, eps, steps=20):
    d = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x + d), y), d)
        d = d + 0.25 * eps * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = (d * (eps / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1)).detach().requires_grad_(True)
    return (x + d).detach()


@pytest.fixture(scope="module")
def blob_model():
    g = torch.Generator().manual_seed(0)
    x, y = _blobs(1200, g)
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x + 0.25 * torch.randn(x.shape, generator=g)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x, y


@pytest.mark.parametrize("ptt", [False, True])
def test_rscp_plus_covers_pgd_perturbed_points(blob_model, ptt):
    model, x, y = blob_model
    eps, sigma, alpha = 0.125, 0.25, 0.1
    rc = RobustConformal(model, sigma=sigma, eps=eps, score="aps", alpha=alpha, n_mc=256, ptt=ptt, n_holdout=150)
    g = torch.Generator().manual_seed(1)
    rc.calibrate(x[:600], y[:600], generator=g)
    x_adv = _pgd_l2(model, x[600:], y[600:], eps)
    assert float((x_adv - x[600:]).norm(dim=1).max()) <= eps + 1e-5
    sets = rc.predict_sets(x_adv, generator=g)
    assert coverage(sets, y[600:]) >= 1 - alpha
    if ptt:  # PTT shrinks the sets below the trivial full set
        assert average_set_size(sets) < 2.9
    # vanilla split conformal loses coverage under the same attack: the robust sets are needed
    probs = model(x[:600]).softmax(1).detach()
    cp = SplitConformal("aps", alpha).calibrate(probs, y[:600], generator=g)
    assert coverage(cp.predict_sets(model(x_adv).softmax(1).detach(), generator=g), y[600:]) < 1 - alpha + 0.02


def test_rscp_plus_threshold_formula(blob_model):
    model, x, y = blob_model
    rc = RobustConformal(model, sigma=0.5, eps=0.1, score="thr", alpha=0.1, beta=0.01, n_mc=64, ptt=False)
    rc.calibrate(x[:300], y[:300], generator=torch.Generator().manual_seed(0))
    b_h = math.sqrt(math.log(1 / 0.01) / (2 * 64))
    assert rc.hoeffding == pytest.approx(b_h)
    assert rc.robust_threshold_ == pytest.approx(norm.cdf(norm.ppf(min(rc.threshold_ + b_h, 1)) + 0.1 / 0.5))
    v = torch.tensor([0.0, 0.04])
    lg = math.log(2 / 0.01)
    torch.testing.assert_close(rc.bernstein(v), torch.sqrt(2 * v * lg / 64) + 7 * lg / (3 * 63))
    # the threshold is the exact order statistic of the smoothed calibration scores at level α − 2β
    mean, var = rc.smoothed_scores(x[:5], generator=torch.Generator().manual_seed(0))
    assert mean.shape == var.shape == (5, 3) and bool((var >= 0).all())
    with pytest.raises(NotCalibratedError):
        RobustConformal(model, sigma=0.5, eps=0.1).predict_sets(x[:2])
    with pytest.raises(ValueError, match="alpha > 2"):
        RobustConformal(model, sigma=0.5, eps=0.1, alpha=0.01, beta=0.01)


def test_rscp_plus_calibrates_at_alpha_minus_two_beta(blob_model):
    # the threshold is the exact order statistic of the smoothed calibration scores at level α − 2β
    # (recomputed here with the same generator stream; ptt=False so calibrate draws nothing else)
    model, x, y = blob_model
    alpha, beta = 0.1, 0.02
    rc = RobustConformal(model, sigma=0.5, eps=0.1, score="thr", alpha=alpha, beta=beta, n_mc=32, ptt=False)
    rc.calibrate(x[:199], y[:199], generator=torch.Generator().manual_seed(3))
    mean, _ = rc.smoothed_scores(x[:199], generator=torch.Generator().manual_seed(3))
    cal = mean.gather(1, y[:199, None]).squeeze(1).sort().values
    k = math.ceil((199 + 1) * (1 - (alpha - 2 * beta)) - 1e-9)  # 188, while level α would give 180
    assert rc.threshold_ == pytest.approx(float(cal[k - 1]))
    assert rc.threshold_ != pytest.approx(float(cal[math.ceil(200 * (1 - alpha)) - 1]))


def test_random_draws_honour_a_generator_on_another_device():
    # review fix: a generator on another device than the probabilities was silently replaced by the
    # global RNG (non-reproducible sets); now it is drawn from on its own device and moved
    from robustlab.conformal._scores import _uniform

    g = torch.Generator().manual_seed(0)
    like = torch.empty(4, device="meta")
    state = g.get_state().clone()
    _uniform(4, like, g)
    assert not torch.equal(g.get_state(), state)  # the explicit generator was used
    torch.manual_seed(123)
    glob = torch.get_rng_state().clone()
    _uniform(4, like, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), glob)  # the global RNG was not
