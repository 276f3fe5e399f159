"""Lipschitz-by-construction layers and models: Cayley linear/convolution, GroupSort/MaxMin, lipschitz_mlp/cnn."""

import pytest
import torch
import torch.nn.functional as F

from robustlab.models import create
from robustlab.models._lipschitz import CayleyConv2d, CayleyLinear, GroupSort, MaxMin, cayley


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (5, 5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cayley_is_orthogonal(shape, dtype):
    w = torch.randn(4, *shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    q = cayley(w)
    assert q.shape == w.shape
    small = min(shape)
    gram = q.mH @ q if shape[0] >= shape[1] else q @ q.mH
    torch.testing.assert_close(gram, torch.eye(small, dtype=dtype).expand(4, small, small), atol=1e-12, rtol=0)


def test_cayley_linear_orthogonal_and_learnable():
    torch.manual_seed(0)
    lin = CayleyLinear(10, 4)
    q = lin.orthogonal_weight()
    torch.testing.assert_close(q @ q.T, torch.eye(4), atol=1e-5, rtol=0)
    x = torch.randn(3, 10)
    lin(x).sum().backward()
    assert lin.weight.grad is not None and lin.alpha.grad is not None and lin.bias.grad is not None
    tall = CayleyLinear(4, 10)
    x1, x2 = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close((tall(x1) - tall(x2)).norm(dim=1), (x1 - x2).norm(dim=1), rtol=1e-5, atol=1e-6)


def test_cayley_conv_unconstrained_operator_is_circular_cross_correlation():
    """Before orthogonalisation, the Fourier-domain operator equals conv2d with circular padding (kernel centred)."""
    torch.manual_seed(0)
    conv = CayleyConv2d(3, 5, 3, init_size=(8, 10))
    x = torch.randn(2, 3, 8, 10)
    h, w = 8, 10
    wfft = torch.fft.rfft2(conv.weight, (h, w)).conj() * conv._shift(h, w, x.device)
    wfft = wfft.reshape(5, 3, -1).permute(2, 0, 1)
    xfft = torch.fft.rfft2(x).permute(2, 3, 1, 0).reshape(h * (w // 2 + 1), 3, 2)
    y = torch.fft.irfft2((wfft @ xfft).reshape(h, w // 2 + 1, 5, 2).permute(3, 2, 0, 1), s=(h, w))
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), conv.weight)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cin,cout", [(3, 6), (4, 4), (6, 3)])
@pytest.mark.parametrize("size", [(8, 8), (6, 10), (7, 5)])
def test_cayley_conv_is_orthogonal(cin, cout, size):
    """Isometry when out >= in, 1-Lipschitz when out < in, at any input size (odd sizes included)."""
    torch.manual_seed(0)
    conv = CayleyConv2d(cin, cout, 3, init_size=size)
    x1, x2 = torch.randn(4, cin, *size), torch.randn(4, cin, *size)
    ratio = (conv(x1) - conv(x2)).flatten(1).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    if cout >= cin:
        torch.testing.assert_close(ratio, torch.ones(4), atol=1e-5, rtol=0)
    else:
        assert bool((ratio <= 1 + 1e-5).all()) and bool((ratio < 0.99).any())
    y = conv(x1)
    assert y.shape == (4, cout, *size)
    y.sum().backward()
    assert conv.alpha.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_cayley_conv_half_precision_input_and_shape_error():
    conv = CayleyConv2d(2, 4, 3, init_size=(8, 8))
    x = torch.rand(2, 2, 8, 8)
    out = conv(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), conv(x), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        conv(torch.rand(2, 3, 8, 8))


def test_groupsort_is_a_permutation_and_gradient_norm_preserving():
    x = torch.randn(5, 6, 3, 3, requires_grad=True)
    gs = GroupSort(3)
    y = gs(x)
    torch.testing.assert_close(y.detach(), x.detach().reshape(5, 2, 3, 3, 3).sort(dim=2).values.reshape(5, 6, 3, 3))
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    assert bool((y.reshape(5, 2, 3, 3, 3).diff(dim=2) >= 0).all())
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(grad.norm(), g.norm())
    mm = MaxMin()
    a = torch.tensor([[3.0, -1.0, 0.5, 2.0]])
    assert mm(a).tolist() == [[-1.0, 3.0, 0.5, 2.0]]
    with pytest.raises(ValueError, match="divisible by 3"):
        gs(torch.randn(2, 4))
    with pytest.raises(ValueError, match="group_size"):
        GroupSort(1)


@pytest.mark.parametrize("name,kw", [("lipschitz_mlp", {"hidden": (16, 16)}),
                                     ("lipschitz_cnn", {"channels": (4, 8), "hidden": (16,)})])
def test_models_are_one_lipschitz_on_sampled_pairs(name, kw):
    torch.manual_seed(0)
    m = create(name, input_shape=(1, 8, 8), num_classes=10, **kw).eval()
    assert m.lipschitz_constant() == 1.0
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.rand(64, 1, 8, 8, generator=g), torch.rand(64, 1, 8, 8, generator=g)
    with torch.no_grad():
        ratio = (m(x1) - m(x2)).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= 1 + 1e-5


def test_model_argument_errors():
    with pytest.raises(ValueError, match=r"hidden\[0\].*even"):
        create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(5,))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*len\\(channels\\) = 4"):
        create("lipschitz_cnn", input_shape=(1, 10, 10), num_classes=3, channels=(4, 4))
    with pytest.raises(ValueError, match="input_shape"):
        create("lipschitz_cnn", input_shape=(16,), num_classes=3)
    with pytest.raises(ValueError, match=r"channels\[1\]"):
        create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=3, channels=(4, 3))


def test_orthogonal_weights_stay_float32_under_autocast():
    """Mixed precision must not round the Cayley transform: Q stays orthogonal to float32 accuracy."""
    torch.manual_seed(0)
    lin, conv = CayleyLinear(12, 6), CayleyConv2d(3, 6, 3, init_size=(8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = lin.orthogonal_weight()
        f = conv.frequency_matrices(8, 8)
        y = conv(torch.rand(2, 3, 8, 8))
    assert q.dtype == torch.float32 and f.dtype == torch.complex64 and y.dtype == torch.float32
    torch.testing.assert_close(q @ q.T, torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(f.mH @ f, torch.eye(3, dtype=torch.complex64).expand_as(f.mH @ f), atol=1e-5, rtol=0)
