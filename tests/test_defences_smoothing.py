"""Adaptive smoothing: the mixture formula, its numerics, the mixing network and the certified radii."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm as normal

from robustlab import attacks, data, models, training
from robustlab._validation import InvalidParameterError
from robustlab.defences import (
    AdaptiveSmoothing,
    MixingNetwork,
    lipschitz_certified_radius,
    smoothing_certified_radius,
    train_mixing_network,
)


def _pair(seed=0, d=6, c=4):
    torch.manual_seed(seed)
    return (models.create("mlp", input_shape=(d,), num_classes=c, hidden=(8,)),
            models.create("mlp", input_shape=(d,), num_classes=c, hidden=(8,)))


def _np_softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8, 1.0])
def test_mixture_matches_numpy(alpha):
    g, h = _pair()
    x = torch.rand(7, 6, generator=torch.Generator().manual_seed(1))
    mix = AdaptiveSmoothing(g, h, alpha, std_scale=2.0, rob_scale=0.5)
    out = mix(x).detach().double().numpy()
    with torch.no_grad():
        pg, ph = _np_softmax(2.0 * g(x).double().numpy()), _np_softmax(0.5 * h(x).double().numpy())
    expect = (1 - alpha) * pg + alpha * ph
    assert np.allclose(np.exp(out), expect, atol=1e-6)
    assert np.allclose(np.exp(out).sum(1), 1.0, atol=1e-6)


def test_mixture_is_finite_for_huge_logits():
    mix = AdaptiveSmoothing(torch.nn.Identity(), torch.nn.Identity(), 0.4)
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], requires_grad=True)
    out = mix.mix(logits, -logits, torch.full((2,), 0.4))
    assert bool(torch.isfinite(out).all())
    out.logsumexp(1).sum().backward()
    assert bool(torch.isfinite(logits.grad).all())
    # mass 0.6 on the standard model's argmax, 0.4 on the robust one's
    assert math.exp(float(out[0, 0].detach())) == pytest.approx(0.6, abs=1e-6)
    assert math.exp(float(out[0, 1].detach())) == pytest.approx(0.4, abs=1e-6)


def test_validation():
    g, h = _pair()
    with pytest.raises(InvalidParameterError, match="The 'alpha' parameter of AdaptiveSmoothing"):
        AdaptiveSmoothing(g, h, 1.5)
    with pytest.raises(TypeError):
        AdaptiveSmoothing(g, "robust.pt", 0.5)
    with pytest.raises(InvalidParameterError):
        AdaptiveSmoothing(g, h, 0.5, rob_scale=0.0)


def test_per_example_alpha_from_a_module():
    g, h = _pair()
    net = MixingNetwork((6,), hidden=(4,), alpha_range=(0.2, 0.9))
    mix = AdaptiveSmoothing(g, h, net)
    x = torch.rand(5, 6)
    a = mix.alpha_of(x).detach()
    assert a.shape == (5,) and float(a.min()) >= 0.2 and float(a.max()) <= 0.9
    manual = [AdaptiveSmoothing(g, h, float(a[i]))(x[i:i + 1]) for i in range(5)]
    assert torch.allclose(mix(x), torch.cat(manual), atol=1e-6)


@pytest.fixture(scope="module")
def digits_pair():
    d = data.load("digits")

    def train(objective, kw=None):
        torch.manual_seed(0)
        m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(64,))
        training.fit(m, d, objective=objective, objective_kw=kw, epochs=20, batch_size=64, lr=0.05,
                     progress=False, seed=0)
        return m.eval()

    return d, train("standard"), train("pgd_at", {"eps": 0.2, "steps": 5})


def _acc(model, x, y):
    return float((training.predict_logits(model, x).argmax(1) == y).float().mean())


def test_alpha_trades_accuracy_for_robustness_on_digits(digits_pair):
    d, std, rob = digits_pair
    atk = attacks.get("pgd", norm="linf", eps=0.2, step_size=0.05, steps=10)
    res = {}
    for a in (0.0, 1.0):
        mix = AdaptiveSmoothing(std, rob, a)
        x_adv = atk(mix, d.x_test, d.y_test, generator=torch.Generator().manual_seed(0))  # end-to-end attack
        res[a] = (_acc(mix, d.x_test, d.y_test), _acc(mix, x_adv, d.y_test))
    # alpha = 0 / 1 are the standard / robust models themselves
    assert res[0.0][0] == pytest.approx(_acc(std, d.x_test, d.y_test))
    assert res[1.0][0] == pytest.approx(_acc(rob, d.x_test, d.y_test))
    assert res[1.0][1] >= res[0.0][1] + 0.2


def test_mixing_network_learns_to_detect_attacks(digits_pair):
    d, std, rob = digits_pair
    torch.manual_seed(0)
    net = MixingNetwork(d.input_shape, hidden=(32,))
    mix = AdaptiveSmoothing(std, rob, net)
    before = [p.detach().clone() for p in std.parameters()]
    hist = train_mixing_network(mix, d.x_train, d.y_train, eps=0.2, steps=5, epochs=10, lr=3e-2,
                                batch_size=64, generator=torch.Generator().manual_seed(0))
    assert hist[-1] < 0.5 * hist[0]
    assert all(torch.equal(a, b) for a, b in zip(before, std.parameters()))  # base models frozen
    atk = attacks.get("pgd", norm="linf", eps=0.2, step_size=0.05, steps=10)
    x_adv = atk(mix, d.x_test, d.y_test, generator=torch.Generator().manual_seed(1))  # adaptive attack
    with torch.no_grad():
        a_clean, a_adv = mix.alpha_of(d.x_test).mean(), mix.alpha_of(x_adv).mean()
    assert float(a_adv) > float(a_clean) + 0.5
    # near the standard model's clean accuracy, far above its robust accuracy
    std_adv = atk(std, d.x_test, d.y_test, generator=torch.Generator().manual_seed(1))
    assert _acc(mix, d.x_test, d.y_test) >= _acc(std, d.x_test, d.y_test) - 0.03
    assert _acc(mix, x_adv, d.y_test) >= _acc(std, std_adv, d.y_test) + 0.2


def test_lipschitz_radius_closed_form_and_soundness():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    pred = torch.tensor([0, 0, 1])
    r = lipschitz_certified_radius(probs, pred, 0.8, lipschitz=2.0)
    mu = np.array([0.85, 0.1, 0.5])
    expect = np.maximum(0, 0.8 * mu + 0.8 - 1) / (2 * 0.8 * 2.0)
    assert np.allclose(r.numpy(), expect)
    assert float(lipschitz_certified_radius(probs, pred, 0.5, 2.0).max()) == 0.0  # alpha <= 1/2: nothing
    assert float(lipschitz_certified_radius(probs, pred, 0.0, 2.0).max()) == 0.0

    # soundness: h = softmax(W x), each h_i is (sqrt(2)/4 * ||W||_2)-Lipschitz in l2; g is adversarial
    torch.manual_seed(0)
    W = torch.randn(3, 5) * 3
    h = torch.nn.Sequential(torch.nn.Linear(5, 3, bias=False))
    h[0].weight.data = W
    g = torch.nn.Sequential(torch.nn.Linear(5, 3))
    lip = math.sqrt(2) / 4 * float(torch.linalg.matrix_norm(W, 2))
    alpha = 0.85
    mix = AdaptiveSmoothing(g, h, alpha)
    x = torch.rand(200, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = mix(x).argmax(1)
        radius = lipschitz_certified_radius(torch.softmax(h(x), 1), pred, alpha, lip)
    keep = radius > 0
    assert int(keep.sum()) > 20
    xs, ps, rs = x[keep], pred[keep], radius[keep]
    # strongest l2 attack inside each certified radius: PGD on the mixture's margin, g fixed adversarially
    delta = torch.zeros_like(xs, requires_grad=True)
    for _ in range(50):
        out = mix(xs + delta)
        other = out.scatter(1, ps[:, None], -1e9).amax(1)
        obj = (other - out.gather(1, ps[:, None]).squeeze(1)).sum()
        (gr,) = torch.autograd.grad(obj, delta)
        with torch.no_grad():
            delta += 0.1 * rs[:, None] * gr / gr.norm(dim=1, keepdim=True).clamp_min(1e-12)
            n = delta.norm(dim=1, keepdim=True)
            delta *= torch.clamp(0.999 * rs[:, None] / n.clamp_min(1e-12), max=1.0)
    with torch.no_grad():
        assert torch.equal(mix(xs + delta).argmax(1), ps)


def test_smoothing_radius_reduces_to_cohen_and_shrinks_with_alpha():
    p_a = torch.tensor([0.9, 0.99, 0.6])
    p_b = torch.tensor([0.05, 0.01, 0.3])
    r1 = smoothing_certified_radius(p_a, p_b, 1.0, sigma=0.5)
    cohen = 0.25 * (normal.ppf(p_a.double().numpy()) - normal.ppf(p_b.double().numpy()))
    assert np.allclose(r1.numpy(), cohen, rtol=1e-5)
    r = smoothing_certified_radius(p_a, p_b, 0.8, sigma=0.5)
    mu = 0.25
    expect = 0.25 * np.maximum(0, normal.ppf(p_a.numpy() / (1 + mu)) - normal.ppf((p_b.numpy() + mu) / (1 + mu)))
    assert np.allclose(r.numpy(), expect, rtol=1e-5)
    assert bool((r <= r1 + 1e-7).all())
    assert float(smoothing_certified_radius(p_a, p_b, 0.0, 0.5).max()) == 0.0


def test_mixing_network_training_leaves_frozen_base_models_batchnorm_untouched():
    # review fix: the base models used to be switched to train mode for the mixer's loss, so a
    # BatchNorm in a "frozen" base model had its running statistics overwritten (and dropout was on)
    torch.manual_seed(0)
    std = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(8, 3)).eval()
    rob = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    buffers = [(m, k, v.clone()) for m in (std, rob) for k, v in m.state_dict().items() if k.startswith("1.")]
    mix = AdaptiveSmoothing(std, rob, MixingNetwork((6,), hidden=(4,)))
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    train_mixing_network(mix, x, y, eps=0.1, steps=2, epochs=2, batch_size=16, ce_weight=1.0,
                         generator=torch.Generator().manual_seed(0))
    for m, k, v in buffers:
        assert torch.equal(m.state_dict()[k], v), k
    assert not std.training and not rob.training


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_radius_helpers_validate_alpha(alpha):
    probs = torch.tensor([[0.9, 0.1]])
    with pytest.raises(InvalidParameterError, match="alpha"):
        lipschitz_certified_radius(probs, torch.tensor([0]), alpha, 1.0)
    with pytest.raises(InvalidParameterError, match="alpha"):
        smoothing_certified_radius(torch.tensor([0.9]), torch.tensor([0.1]), alpha, 0.5)
    with pytest.raises(InvalidParameterError, match="alpha"):
        smoothing_certified_radius(torch.tensor([0.9]), torch.tensor([0.1]), torch.tensor([0.5, alpha]), 0.5)


class _SaturatedMixer(torch.nn.Module):
    def forward(self, x):
        return torch.sigmoid(40 * x.sum(1))  # exactly 1.0 / 0.0 in float32 away from the boundary


def test_saturated_per_example_alpha_gives_finite_input_gradients():
    # review fix: alpha(x) of exactly 0 or 1 made log(alpha) / log1p(-alpha) back-propagate NaN into
    # the input gradient, so an adaptive PGD attack through the mixing network produced NaN inputs
    g, h = _pair(d=3)
    mix = AdaptiveSmoothing(g, h, _SaturatedMixer())
    x = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [0.01, 0.0, 0.0]], requires_grad=True)
    a = mix.alpha_of(x).detach()
    assert float(a[0]) == 1.0 and float(a[1]) == 0.0
    out = mix(x)
    F_nll = torch.nn.functional.nll_loss(out, torch.tensor([0, 1, 2]))
    F_nll.backward()
    assert bool(torch.isfinite(x.grad).all())
    # values are those of the robust model alone (alpha 1) and the standard one alone (alpha 0)
    with torch.no_grad():
        assert torch.allclose(out[0], torch.log_softmax(h(x[:1]), 1)[0], atol=1e-6)
        assert torch.allclose(out[1], torch.log_softmax(g(x[1:2]), 1)[0], atol=1e-6)
    # and a linf PGD through the mixer stays finite
    atk = attacks.get("pgd", norm="linf", eps=0.1, step_size=0.05, steps=3)
    x_adv = atk(mix, x.detach().clamp(0, 1), torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(x_adv).all())
