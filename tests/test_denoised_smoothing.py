"""defences.DenoisedSmoothing: FO, ZO-AE-DS and consistency-trained denoisers in front of a frozen classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import data, models, training
from robustlab._validation import InvalidParameterError
from robustlab.defences import DenoisedSmoothing
from robustlab.defences._denoised import cge


@pytest.fixture(scope="module")
def digits_base():
    """A LeNet trained on clean 8x8 digits (frozen base classifier) and the data."""
    d = data.load("digits")
    torch.manual_seed(0)
    base = models.create("lenet", input_shape=d.input_shape, num_classes=10, channels=(8, 16), hidden=(32,))
    training.fit(base, d, epochs=15, batch_size=64, lr=0.05, progress=False, seed=0)
    return base.eval(), d


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    den = models.create("dncnn", input_shape=(1, 8, 8), num_classes=10, width=8, depth=3)
    ae = models.create("conv_autoencoder", input_shape=(1, 8, 8), num_classes=10, width=8, latent_channels=2)
    return den, ae


def _noisy_acc(model, d, sigma, n=300, draws=1):
    """Accuracy on the first ``n`` test points under ``draws`` gaussian draws each (one fixed generator)."""
    g = torch.Generator().manual_seed(5)
    x, y = d.x_test[:n], d.y_test[:n]
    with torch.no_grad():
        return sum(float((model(x + sigma * torch.randn(x.shape, generator=g)).argmax(1) == y).float().mean())
                   for _ in range(draws)) / draws


def test_forward_is_base_of_denoiser_and_base_stays_frozen(digits_base):
    base, d = digits_base
    den, ae = _parts()
    x = d.x_test[:4]
    ds = DenoisedSmoothing(base, den, 0.25)
    with torch.no_grad():
        torch.testing.assert_close(ds(x), base(den.eval()(x)))
        ds_ae = DenoisedSmoothing(base, den, 0.25, autoencoder=ae)
        torch.testing.assert_close(ds_ae(x), base(ae.decoder(ae.encoder(den(x)))))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in base.parameters()]
    ds.train()
    assert not base.training and den.training
    ds.fit(d.x_train[:128], method="fo", epochs=1, batch_size=32)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items()), "the base classifier changed"
    assert all(p.requires_grad for p in base.parameters())
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, base.parameters())), \
        "gradients reached the frozen classifier's parameters"
    assert not ds.training and not base.training


def test_fo_denoiser_restores_accuracy_under_noise(digits_base):
    base, d = digits_base
    sigma = 0.5
    torch.manual_seed(0)
    den = models.create("dncnn", input_shape=(1, 8, 8), num_classes=10, width=16, depth=5)
    ds = DenoisedSmoothing(base, den, sigma)
    g = torch.Generator().manual_seed(0)
    ds.fit(d.x_train, method="mse", epochs=3, batch_size=64, lr=3e-3, generator=g)
    acc = {"mse": _noisy_acc(ds, d, sigma, n=450, draws=4), "base": _noisy_acc(base, d, sigma, n=450, draws=4)}
    fit = ds.fit(d.x_train, method="fo", epochs=4, batch_size=64, lr=3e-3, generator=g)
    assert fit.queries == 0 and fit.steps == 4 * 22 and len(fit.history) == 4
    assert fit.history[-1] < fit.history[0]
    # 4 more epochs at a lower rate: after the first 4 alone, FO accuracy still moved a lot with the seed and the CPU;
    # scored on 450 test points x 4 noise draws at sigma = 0.5
    ds.fit(d.x_train, method="fo", epochs=4, batch_size=64, lr=1e-3, generator=g)
    assert _noisy_acc(ds, d, sigma, n=450, draws=4) > max(acc["mse"] + 0.05, acc["base"] + 0.04)


def test_zo_trains_a_black_box_within_its_query_budget(digits_base):
    base, d = digits_base
    sigma = 0.5
    torch.manual_seed(0)
    den = models.create("dncnn", input_shape=(1, 8, 8), num_classes=10, width=16, depth=5)
    ae = models.create("conv_autoencoder", input_shape=(1, 8, 8), num_classes=10, width=16, latent_channels=4)

    def black_box(x: torch.Tensor) -> torch.Tensor:  # logits only: no gradient, no module
        with torch.no_grad():
            return base(x)

    ds = DenoisedSmoothing(black_box, den, sigma, autoencoder=ae)
    g = torch.Generator().manual_seed(0)
    ds.fit_autoencoder(d.x_train, epochs=5, lr=3e-3, generator=g)
    ds.fit(d.x_train, method="mse", epochs=3, lr=3e-3, generator=g)
    start = _noisy_acc(ds, d, sigma)
    fit = ds.fit(d.x_train[:1280], method="zo", q=10, epochs=2, batch_size=64, lr=1e-3, generator=g)
    assert fit.queries == fit.steps * 64 * (10 + 2) and fit.steps == 40  # target, ℓ(z) and q directions
    assert fit.history[-1] < fit.history[0]
    assert _noisy_acc(ds, d, sigma) > start + 0.03  # 48% after the MSE stage
    capped = ds.fit(d.x_train[:640], method="zo", q=10, epochs=2, batch_size=64, query_budget=5000, generator=g)
    assert capped.stopped_by_budget and capped.queries <= 5000 and capped.steps == 5000 // (64 * 12)
    cg = ds.fit(d.x_train[:64], method="zo", estimator="cge", epochs=1, batch_size=32, generator=g)
    assert cg.queries == 2 * 32 * (2 + 2 * 16)  # latent 4 x 2 x 2 = 16 coordinates, 2 queries each; target, ℓ(z)
    with pytest.raises(InvalidParameterError, match="'base_model' must be an nn.Module"):
        ds.fit(d.x_train[:64], method="fo")


def test_zo_needs_an_autoencoder_and_fit_is_reproducible(digits_base):
    base, d = digits_base
    den, _ = _parts()
    with pytest.raises(InvalidParameterError, match="autoencoder="):
        DenoisedSmoothing(base, den, 0.25).fit(d.x_train[:32], method="zo")
    weights = []
    for _ in range(2):
        den, ae = _parts(seed=3)
        ds = DenoisedSmoothing(base, den, 0.25, autoencoder=ae)
        ds.fit(d.x_train[:128], method="zo", q=4, epochs=1, batch_size=32, generator=torch.Generator().manual_seed(1))
        weights.append(torch.cat([p.detach().flatten() for p in ds.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_consistency_denoiser_learns_to_denoise(digits_base):
    base, d = digits_base
    sigma = 0.5
    den, _ = _parts()
    g = torch.Generator().manual_seed(7)
    x = d.x_test[:200]
    noisy = x + sigma * torch.randn(x.shape, generator=g)
    before = float((noisy - x).square().mean())
    fit = DenoisedSmoothing(base, den, sigma).fit(d.x_train, method="consistency", representation="pixel", levels=4,
                                                         epochs=4, lr=3e-3, generator=g)
    with torch.no_grad():
        after = float((den.eval()(noisy) - x).square().mean())
    assert after < 0.5 * before and fit.history[-1] < fit.history[0]


def test_certify_like_any_smoothed_classifier(digits_base):
    base, d = digits_base
    den, _ = _parts()
    sc = DenoisedSmoothing(base, den, 0.25).smoothed(num_classes=10)
    classes, radii = sc.certify(d.x_test[:5], n0=10, n=50, generator=torch.Generator().manual_seed(0))
    assert classes.shape == radii.shape == (5,) and bool((radii >= 0).all())


def test_cge_equals_the_gradient_of_a_smooth_function_and_rge_points_along_it():
    from robustlab.attacks._zoo import rge

    w = torch.linspace(-1, 1, 12).view(1, 3, 2, 2)
    z = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))

    def f(zs, owner=None):
        return (torch.sin(zs) * w).flatten(1).sum(1)

    zz = z.clone().requires_grad_(True)
    f(zz).sum().backward()
    torch.testing.assert_close(cge(f, z, mu=1e-3), zz.grad, atol=1e-3, rtol=1e-3)
    g = rge(f, z, q=4000, mu=1e-4, generator=torch.Generator().manual_seed(1))
    cos = nn.functional.cosine_similarity(g.flatten(1), zz.grad.flatten(1))
    assert bool((cos > 0.9).all()), cos


@pytest.mark.parametrize("kw, text", [
    ({"method": "sgd"}, "'method' parameter of DenoisedSmoothing.fit must be a str among"),
    ({"loss": "mse"}, "'loss'"), ({"estimator": "spsa"}, "'estimator'"), ({"q": 0}, "'q'"), ({"mu": 0.0}, "'mu'"),
    ({"query_budget": 0}, "'query_budget'"), ({"levels": 0}, "'levels'"), ({"epochs": 0}, "'epochs'"),
    ({"lr": -1.0}, "'lr'"), ({"method": "fo", "loss": "classification"}, "needs the labels 'y'"),
])
def test_bad_arguments_raise(digits_base, kw, text):
    base, d = digits_base
    den, _ = _parts()
    with pytest.raises(InvalidParameterError, match=text):
        DenoisedSmoothing(base, den, 0.25).fit(d.x_train[:16], **kw)


def test_bad_construction_and_inputs_raise(digits_base):
    base, d = digits_base
    den, _ = _parts()
    for sigma in (0.0, -1.0, "0.25", True):
        with pytest.raises(InvalidParameterError, match="'sigma'"):
            DenoisedSmoothing(base, den, sigma)
    with pytest.raises(TypeError, match="'denoiser'"):
        DenoisedSmoothing(base, lambda x: x, 0.25)
    with pytest.raises(TypeError, match="'base_model'"):
        DenoisedSmoothing(3, den, 0.25)
    with pytest.raises(TypeError, match="'autoencoder'"):
        DenoisedSmoothing(base, den, 0.25, autoencoder=nn.Identity())
    ds = DenoisedSmoothing(base, den, 0.25)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        ds.fit(d.x_train[:8] * 255, method="mse")
    with pytest.raises(InvalidParameterError, match="'y'"):
        ds.fit(d.x_train[:8], d.y_train[:7], method="fo", loss="classification")
    with pytest.raises(InvalidParameterError, match="no autoencoder"):
        ds.fit_autoencoder(d.x_train[:8])


@pytest.mark.parametrize("representation", ["logits", "pixel"])
def test_consistency_keeps_a_pretrained_batchnorm_denoiser_working(digits_base, representation):
    """The consistency loss mixes noise levels 0..σ in a batch: BatchNorm statistics must end up those of σ-noisy
    inputs (the earlier form drove an MSE-pre-trained DnCNN to chance accuracy at the certification level)."""
    base, d = digits_base
    sigma = 0.5
    torch.manual_seed(0)
    den = models.create("dncnn", input_shape=(1, 8, 8), num_classes=10, width=16, depth=5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in den.modules())
    ds = DenoisedSmoothing(base, den, sigma)
    ds.fit(d.x_train, method="mse", epochs=4, lr=3e-3, generator=torch.Generator().manual_seed(0))
    pre = _noisy_acc(ds, d, sigma)
    fit = ds.fit(d.x_train, method="consistency", representation=representation, levels=4, epochs=4, lr=1e-3,
                 generator=torch.Generator().manual_seed(1))
    after = _noisy_acc(ds, d, sigma)
    assert after >= pre - 0.05 and after > 0.5, (pre, after, fit.history)


def test_consistency_options(digits_base):
    base, d = digits_base
    den, _ = _parts()
    with pytest.raises(InvalidParameterError, match="'representation'"):
        DenoisedSmoothing(base, den, 0.25).fit(d.x_train[:16], method="consistency", representation="latent")
    with pytest.raises(InvalidParameterError, match="'anchor_weight'"):
        DenoisedSmoothing(base, den, 0.25).fit(d.x_train[:16], method="consistency", anchor_weight=-1.0)

    def black_box(x):
        with torch.no_grad():
            return base(x)

    with pytest.raises(InvalidParameterError, match="representation='pixel'"):
        DenoisedSmoothing(black_box, den, 0.25).fit(d.x_train[:16], method="consistency", representation="logits")
    fit = DenoisedSmoothing(black_box, den, 0.25).fit(d.x_train[:64], method="consistency", epochs=1)  # auto: pixel
    assert fit.steps == 1
