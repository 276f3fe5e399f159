"""certify.lipschitz: spectral norms, the layer-wise bound, the certificate and its soundness by sampling."""

import math

import pytest
import torch
from torch import nn

from robustlab.certify import lipschitz, lipschitz_bound, orthogonality
from robustlab.certify._spectral import power_iteration, spectral_norm
from robustlab.models import Normalize, Residual, create
from robustlab.testing._models_lipschitz import pgd_l2_flip, sampled_lipschitz_ratio


def _dense_conv_norm(conv: nn.Conv2d, shape) -> float:
    """σ_max of the conv operator from its dense Jacobian (small shapes only)."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    w = conv.weight.detach().double()
    cols = nn.functional.conv2d(eye, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return float(torch.linalg.matrix_norm(cols.reshape(n, -1), ord=2))


def test_linear_svd_exact_and_power_converges():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    exact = float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2))
    assert spectral_norm(lin, (12,)) == pytest.approx(exact, rel=1e-12)
    est, converged = power_iteration(lin, (12,), n_iter=2000, generator=torch.Generator().manual_seed(0))
    assert converged and est == pytest.approx(exact, rel=1e-6) and est <= exact * (1 + 1e-12)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=0, stride=2), dict(padding=2, dilation=2),
                                dict(padding="same"), dict(padding=1, groups=2)])
def test_conv_svd_bound_is_an_upper_bound_and_power_a_lower_one(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **kw)
    shape = (4, 6, 7)
    true = _dense_conv_norm(conv, shape)
    upper = spectral_norm(conv, shape, method="svd")
    lower, _ = power_iteration(conv, shape, n_iter=500, generator=torch.Generator().manual_seed(0))
    assert lower <= true * (1 + 1e-9) <= upper * (1 + 1e-9)
    assert lower == pytest.approx(true, rel=1e-3)


def test_circular_conv_svd_is_exact():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular", bias=False)
    shape = (3, 6, 6)
    lower, _ = power_iteration(conv, shape, n_iter=2000, generator=torch.Generator().manual_seed(0))
    assert spectral_norm(conv, shape) == pytest.approx(lower, rel=1e-5)


def test_layer_rules_batchnorm_normalize_pools_residual():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.25, 4.0]))
        bn.weight.copy_(torch.tensor([1.5, -3.0]))
    model = nn.Sequential(Normalize([0.5, 0.5], [0.5, 0.25], (2, 4, 4)), bn, nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                          Residual(nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.Sigmoid())),
                          nn.AvgPool2d(2), nn.Flatten())
    with torch.no_grad():
        model[4].body[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1) * 3)
    b = lipschitz_bound(model, (2, 4, 4))
    bn_factor = max(1.5 / math.sqrt(0.25 + bn.eps), 3 / math.sqrt(4 + bn.eps))
    want = 4.0 * bn_factor * 1.0 * 1.0 * (3 * 0.25 + 1.0) * 0.5
    assert b.value == pytest.approx(want, rel=1e-9)
    assert b.method == "svd"
    x = torch.rand(16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert sampled_lipschitz_ratio(model.eval(), x) <= b.value


def test_overlapping_maxpool_and_adaptive_avgpool():
    b = lipschitz_bound(nn.Sequential(nn.MaxPool2d(3, stride=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (1, 6, 6))
    assert b.value == pytest.approx(3.0 * 1 / 4, rel=1e-12)  # ceil(3/1)^2 = 9 windows -> 3; then 1/sqrt(16)


def test_unsupported_layer_is_refused_naming_it():
    m = create("mlp", input_shape=(6,), num_classes=3, hidden=(8,), activation="gelu")
    with pytest.raises(TypeError, match=r"layer '2' \(GELU\).*Supported"):
        lipschitz_bound(m, (6,))

    class Custom(nn.Module):
        def forward(self, x):
            return x * x  # a product of two input-dependent tensors: no Lipschitz rule

    with pytest.raises(TypeError, match=r"'mul' at graph node 'mul'.*constant.*Supported"):
        lipschitz(Custom(), torch.rand(2, 3), torch.tensor([0, 1]))

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow: torch.fx cannot trace it

    with pytest.raises(TypeError, match=r"could not trace Branchy with torch.fx.*Supported"):
        lipschitz_bound(Branchy(), (3,))


def test_by_construction_certificate_radius_formula():
    torch.manual_seed(0)
    m = create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(8,), normalize=(0.5, 0.5))
    x, y = torch.rand(10, 6), torch.randint(0, 3, (10,))
    cert = lipschitz(m, x, y, tol=0.0)
    assert cert.bound.method == "by_construction" and cert.lipschitz == pytest.approx(2.0)  # Normalize std 0.5
    with torch.no_grad():
        z = m(x).double()
    margin = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], -math.inf).amax(1)
    torch.testing.assert_close(cert.radius, margin / (math.sqrt(2) * 2.0))
    assert cert.certified_accuracy(0.0) == pytest.approx(float((z.argmax(1) == y).float().mean()))
    assert lipschitz(m, x, y).radius.abs().le(cert.radius.abs()).all()  # tol shrinks every radius


def test_certificate_sound_on_a_trained_model(trained_digits_mlp):
    """No point inside a certified radius changes the prediction (random sphere points + PGD-L2)."""
    model, d = trained_digits_mlp
    x, y = d.x_test[:64], d.y_test[:64]
    cert = lipschitz(model, x, y)
    ok = cert.radius > 0
    assert 0 < int(ok.sum()) and cert.bound.method == "svd"
    xs, ys, r = x[ok], y[ok], cert.radius[ok].float() * 0.999
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        dlt = torch.randn(xs.shape, generator=g)
        dlt = dlt * (r / dlt.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        with torch.no_grad():
            assert torch.equal(model(xs + dlt).argmax(1), ys)
    assert bool((pgd_l2_flip(model, xs, ys, r, steps=50) < 0).all())
    # and the attack is strong enough to flip just outside a loose multiple of the radius on some points
    assert bool((pgd_l2_flip(model, xs, ys, r * 50, steps=50) > 0).any())


def test_power_method_certificate_and_nonconvergence_warning():
    torch.manual_seed(0)
    m = create("lenet", input_shape=(1, 8, 8), num_classes=4, channels=(2, 4), hidden=(8,))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    with pytest.warns(UserWarning, match="did not converge"):
        lipschitz(m, x, y, method="power", n_iter=2)
    svd = lipschitz(m, x, y)
    power = lipschitz(m, x, y, method="power", n_iter=3000)
    assert power.bound.converged and power.bound.value <= svd.bound.value * (1 + 1e-9)
    assert sampled_lipschitz_ratio(m.eval(), x) <= power.bound.value


@pytest.mark.parametrize("bad,kind,text", [
    (dict(method="exact"), ValueError, "method"), (dict(n_iter=0), ValueError, "n_iter"),
    (dict(tol=-1.0), ValueError, "tol"), (dict(batch_size=0), ValueError, "batch_size")])
def test_bad_arguments(bad, kind, text):
    m = create("lipschitz_mlp", input_shape=(4,), num_classes=3, hidden=(4,))
    with pytest.raises(kind, match=text):
        lipschitz(m, torch.rand(2, 4), torch.tensor([0, 1]), **bad)


def test_bad_inputs():
    m = create("lipschitz_mlp", input_shape=(4,), num_classes=3, hidden=(4,))
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="NaN"):
        lipschitz(m, x.masked_fill(torch.eye(2, 4).bool(), float("nan")), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="'y'"):
        lipschitz(m, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="'y'"):
        lipschitz(m, x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="'x'"):
        lipschitz(m, x.long(), torch.tensor([0, 1]))


def test_orthogonality_diagnostic():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    plain = nn.Sequential(lin)
    (s,) = orthogonality(plain, (5,))
    w = lin.weight.detach().double()
    assert s.deviation == pytest.approx(float(torch.linalg.matrix_norm(w @ w.T - torch.eye(3, dtype=torch.float64))))
    assert s.sigma_max == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)))
    m = create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=4, channels=(4, 8), hidden=(8,))
    spectra = orthogonality(m, (1, 8, 8))
    assert [s.kind for s in spectra] == ["CayleyConv2d", "CayleyConv2d", "CayleyLinear", "CayleyLinear"]
    assert all(s.deviation < 1e-5 and abs(s.sigma_max - 1) < 1e-5 for s in spectra)
    assert set(spectra[0].as_dict()) == {"name", "kind", "sigma_max", "sigma_min", "deviation"}


def test_a_sequential_with_its_own_forward_is_bounded_through_its_graph():
    """A Sequential overriding forward is no longer a chain: the graph gives 1 + 10·σ(W), not σ(W)."""

    class Skip(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x) * 10

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), Skip(nn.Linear(4, 4))).eval()
    b = lipschitz_bound(model, (4,))
    sigma = float(torch.linalg.matrix_norm(model[1][0].weight.detach().double(), ord=2))
    assert b.value == pytest.approx(1 + 10 * sigma, rel=1e-9)
    assert sampled_lipschitz_ratio(model, torch.rand(16, 4)) <= b.value
