"""Randomized smoothing: closed-form radius of a linear classifier, abstention, statistics."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from robustlab.certify import ABSTAIN, SmoothedClassifier, certified_accuracy_curve, clopper_pearson_lower
from robustlab.certify.smoothing import _binom_pvalue


class _Halfplane(nn.Module):
    """Two-class linear classifier: logits (0, w·x + b); its smoothed class probability is Φ(|w·x+b| / (σ‖w‖))."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.as_tensor(w), float(b)

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def test_certified_radius_matches_closed_form_within_mc_error():
    w = torch.tensor([3.0, -4.0])  # ‖w‖ = 5
    f = _Halfplane(w, 0.5)
    x = torch.tensor([[0.3, 0.1], [0.1, 0.4], [0.9, 0.2], [0.0, 0.6]])
    sigma, n, alpha = 0.5, 20000, 0.001
    smooth = SmoothedClassifier(f, sigma=sigma, num_classes=2)
    classes, radii = smooth.certify(x, n0=100, n=n, alpha=alpha, batch_size=8192, generator=torch.Generator().manual_seed(0))
    s = (x @ w + 0.5)
    dist = s.abs() / 5.0  # distance to the decision boundary = exact radius with p_A known
    p = norm.cdf(dist.numpy() / sigma)
    # Monte-Carlo envelope: n_A within 5 standard deviations of n·p
    sd = np.sqrt(n * p * (1 - p))
    lo_r = sigma * norm.ppf(beta.ppf(alpha, np.floor(n * p - 5 * sd), n - np.floor(n * p - 5 * sd) + 1))
    hi_r = sigma * norm.ppf(beta.ppf(alpha, np.minimum(np.ceil(n * p + 5 * sd), n), n - np.minimum(np.ceil(n * p + 5 * sd), n) + 1))
    assert torch.equal(classes, (s > 0).long())
    assert np.all(radii.numpy() >= lo_r - 1e-6) and np.all(radii.numpy() <= hi_r + 1e-6), (radii, lo_r, hi_r)
    assert np.all(radii.numpy() < dist.numpy())  # a lower bound of the true radius
    assert np.all(radii.numpy() > 0.9 * dist.numpy() - 0.05)  # and close to it


def test_tie_abstains_in_certify_and_predict():
    f = _Halfplane(torch.tensor([1.0, 0.0]), -0.5)
    x = torch.tensor([[0.5, 0.3], [0.5, 0.9]])  # on the boundary: p_A = 1/2 exactly
    smooth = SmoothedClassifier(f, sigma=0.25, num_classes=2)
    g = torch.Generator().manual_seed(1)
    classes, radii = smooth.certify(x, n0=100, n=2000, alpha=0.001, generator=g)
    assert torch.equal(classes, torch.full((2,), ABSTAIN)) and torch.equal(radii, torch.zeros(2))
    assert torch.equal(smooth.predict(x, n=2000, alpha=0.001, generator=g), torch.full((2,), ABSTAIN))
    # far from the boundary PREDICT answers
    far = torch.tensor([[0.95, 0.5], [0.05, 0.5]])
    assert smooth.predict(far, n=500, alpha=0.001, generator=g).tolist() == [1, 0]


def test_clopper_pearson_and_binomial_test_match_scipy():
    ks, n, alpha = torch.tensor([0, 1, 37, 99, 100]), 100, 0.01
    got = clopper_pearson_lower(ks, n, alpha)
    for k, lo in zip(ks.tolist(), got.tolist()):
        ref = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert lo == pytest.approx(ref, abs=1e-9)
    n1 = np.array([60, 50, 30, 7, 0])
    n2 = np.array([40, 50, 10, 0, 0])
    got = _binom_pvalue(n1, n2)
    for a, b, p in zip(n1, n2, got):
        ref = binomtest(int(a), int(a + b), 0.5).pvalue if a + b > 0 else 1.0
        assert p == pytest.approx(ref, rel=1e-9)


def test_seeded_and_batched_over_noise():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(5, 1, 4, 4)
    smooth = SmoothedClassifier(net, sigma=0.3, num_classes=3)
    a = smooth.certify(x, n0=20, n=300, alpha=0.01, batch_size=128, generator=torch.Generator().manual_seed(3))
    b = smooth.certify(x, n0=20, n=300, alpha=0.01, batch_size=128, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    counts = smooth.sample_counts(x, 300, batch_size=77, generator=torch.Generator().manual_seed(3))
    assert counts.shape == (5, 3) and counts.sum(1).tolist() == [300] * 5
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    smooth.sample_counts(x, 300, batch_size=500, generator=torch.Generator().manual_seed(3))
    assert calls == [500, 500, 500]  # 1500 draws in three forward passes: no per-sample loop


def test_curve_and_validation():
    classes = torch.tensor([0, 1, -1, 2])
    radii = torch.tensor([0.5, 0.2, 0.0, 1.0])
    y = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(certified_accuracy_curve(classes, radii, y, [0.0, 0.25, 0.5, 0.75]),
                               torch.tensor([0.5, 0.25, 0.25, 0.0]))
    with pytest.raises(ValueError, match="'sigma' parameter"):
        SmoothedClassifier(nn.Linear(2, 2), sigma=0.0, num_classes=2)
    with pytest.raises(ValueError, match="'n0' parameter"):
        SmoothedClassifier(nn.Linear(2, 2), sigma=0.1, num_classes=2).certify(torch.rand(2, 2), n0=0, n=10)


def test_gaussian_aug_objective_is_seeded():
    from robustlab.training import Batch
    from robustlab.training.objectives import get

    net = nn.Linear(3, 2)
    vals = []
    for _ in range(2):
        obj = get("gaussian_aug", sigma=0.5)
        obj.setup(model=net, epochs=1, steps_per_epoch=1, num_classes=2, num_train=4, generator=torch.Generator().manual_seed(9))
        vals.append(obj(net, Batch(torch.rand(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1]), torch.arange(4)),
                        nn.CrossEntropyLoss())[0])
    assert torch.equal(vals[0], vals[1])
    assert not math.isnan(float(vals[0].detach()))


def test_model_output_width_must_match_num_classes():
    # class 2 of a 3-output model would be counted as class 0 of the next input (flat index i*C + c)
    class ThreeOutputs(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[:, 0] = 1.0
            out[x[:, 0] > 0.5, 2] = 5.0
            return out

    smooth = SmoothedClassifier(ThreeOutputs(), sigma=0.01, num_classes=2)
    x = torch.tensor([[0.1], [0.9], [0.1]])
    with pytest.raises(ValueError, match="num_classes=2"):
        smooth.sample_counts(x, 10, batch_size=5, generator=torch.Generator().manual_seed(0))


def test_clopper_pearson_lower_validates_its_arguments():
    # a count above the number of trials used to give NaN, and NaN < 1/2 is False: a "certified" NaN radius
    with pytest.raises(ValueError, match="'successes' parameter"):
        clopper_pearson_lower(torch.tensor([5]), 3, 0.001)
    with pytest.raises(ValueError, match="'successes' parameter"):
        clopper_pearson_lower(torch.tensor([-1]), 3, 0.001)
    with pytest.raises(ValueError, match="'trials' parameter"):
        clopper_pearson_lower(torch.tensor([0]), 0, 0.001)
    with pytest.raises(ValueError, match="'alpha' parameter"):
        clopper_pearson_lower(torch.tensor([1]), 3, 1.0)
