"""SOC convolution and Björck linear layers; their selection in lipschitz_mlp/lipschitz_cnn and the model battery."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from robustlab._registry import Registry
from robustlab._validation import InvalidParameterError
from robustlab.certify import lipschitz, lipschitz_bound, orthogonality
from robustlab.models import MODELS, create
from robustlab.models._lipschitz import BjorckLinear, SOCConv2d
from robustlab.models._orthogonal import bjorck, taylor_tail
from robustlab.testing import iter_checks


def _jacobian_svdvals(layer, shape):
    x = torch.randn(1, *shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.float()).double(), x)
    return torch.linalg.svdvals(jac.reshape(-1, x.numel()))


@pytest.mark.parametrize("cin,cout", [(3, 3), (2, 4), (4, 2)])
@pytest.mark.parametrize("size", [(5, 6), (4, 4)])
def test_soc_jacobian_singular_values_are_one(cin, cout, size):
    """Autograd Jacobian of the float32 layer: every singular value 1 (isometry, or a co-isometry when out < in)."""
    torch.manual_seed(0)
    conv = SOCConv2d(cin, cout, 3)
    sv = _jacobian_svdvals(conv, (cin, *size))
    assert sv.numel() == min(cin, cout) * size[0] * size[1]
    torch.testing.assert_close(sv, torch.ones_like(sv), atol=2e-6, rtol=0)
    dense = torch.linalg.svdvals(conv.operator_matrix(*size))  # the float64 matrix: exact up to the Taylor tail
    torch.testing.assert_close(dense, torch.ones_like(dense), atol=1e-12, rtol=0)


def test_soc_kernel_is_skew_and_its_norm_is_bounded():
    """The zero-padded convolution with the skew kernel is a skew-symmetric operator of norm ≤ max_norm."""
    torch.manual_seed(1)
    conv = SOCConv2d(3, 3, 5, max_norm=0.7)
    kernel = conv.skew_kernel().double()
    n = 3 * 6 * 7
    eye = torch.eye(n, dtype=torch.float64).view(n, 3, 6, 7)
    mat = F.conv2d(eye, kernel.detach(), padding=2).reshape(n, n).T
    torch.testing.assert_close(mat + mat.T, torch.zeros_like(mat), atol=1e-12, rtol=0)
    assert float(torch.linalg.matrix_norm(mat, ord=2)) <= 0.7 + 1e-9


def test_soc_declared_constant_covers_the_truncation():
    conv = SOCConv2d(2, 2, 3, terms=3, max_norm=1.0, bias=False)
    assert conv.lipschitz_constant() == pytest.approx(1 + math.e - 1 - 1 - 1 / 2 - 1 / 6, rel=1e-12)
    assert taylor_tail(1.0, 12) < 2e-10 and SOCConv2d(2, 2).lipschitz_constant() - 1 < 2e-10
    # with 3 terms the layer is not orthogonal, but stays under its declared constant
    sv = _jacobian_svdvals(conv, (2, 4, 4))
    assert float(sv.max()) <= conv.lipschitz_constant() and float((sv - 1).abs().max()) > 1e-4


def test_soc_errors_dtype_and_gradients():
    with pytest.raises(InvalidParameterError, match=r"'kernel_size'.*odd.*Got 4"):
        SOCConv2d(2, 2, 4)
    with pytest.raises(InvalidParameterError, match=r"'max_norm'"):
        SOCConv2d(2, 2, 3, max_norm=0.0)
    conv = SOCConv2d(2, 4, 3)
    with pytest.raises(InvalidParameterError, match=r"\(N, 2, H, W\).*\(2, 3, 8, 8\)"):
        conv(torch.rand(2, 3, 8, 8))
    x = torch.rand(2, 2, 8, 8)
    out = conv(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 8, 8)
    conv(x).square().sum().backward()
    assert torch.isfinite(conv.weight.grad).all() and float(conv.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("shape", [(9, 4), (4, 9), (6, 6)])
def test_bjorck_orthonormalises_and_never_exceeds_one(shape):
    w = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for n_iter in (1, 2, 5):  # every iterate is 1-Lipschitz, converged or not
        assert float(torch.linalg.svdvals(bjorck(w, n_iter)).max()) <= 1 + 1e-12
    q = bjorck(w, 40)
    small = min(shape)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64), atol=1e-10, rtol=0)


def test_bjorck_linear_layer():
    torch.manual_seed(0)
    lin = BjorckLinear(10, 4, n_iter=15)
    q = lin.orthogonal_weight()
    torch.testing.assert_close(q @ q.T, torch.eye(4), atol=1e-5, rtol=0)
    lin(torch.randn(3, 10)).sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    with torch.no_grad():  # a trained, non-orthogonal weight is orthonormalised by the iteration
        lin.weight.add_(0.3 * torch.randn_like(lin.weight))
    sv = torch.linalg.svdvals(lin.orthogonal_weight().double())
    torch.testing.assert_close(sv, torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(InvalidParameterError, match="n_iter"):
        BjorckLinear(3, 3, n_iter=0)


@pytest.mark.parametrize("kw", [{"conv": "soc"}, {"linear": "bjorck"}, {"conv": "soc", "linear": "bjorck"}])
def test_lipschitz_cnn_variants_certify_by_construction(kw):
    torch.manual_seed(0)
    m = create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,), **kw)
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,))
    cert = lipschitz(m, x, y)
    assert cert.bound.method == "by_construction" and cert.bound.value == pytest.approx(1.0, abs=1e-9)
    kinds = {s.kind for s in orthogonality(m, (1, 8, 8))}
    assert kinds == {"SOCConv2d" if "conv" in kw else "CayleyConv2d", "BjorckLinear" if "linear" in kw else "CayleyLinear"}


def test_bad_layer_choice_is_refused_naming_it():
    with pytest.raises(InvalidParameterError, match=r"'conv'.*lipschitz_cnn.*\['bcop', 'cayley', 'soc'\].*'lot'"):
        create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, conv="lot")
    with pytest.raises(InvalidParameterError, match=r"'linear'.*lipschitz_mlp.*\['bjorck', 'cayley'\].*'spectral'"):
        create("lipschitz_mlp", input_shape=(6,), num_classes=3, linear="spectral")
    with pytest.raises(InvalidParameterError, match="kernel_size"):
        create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, conv="soc", kernel_size=2)


# the whole model battery (forward, determinism, Lipschitz soundness, by-construction diagnostics, ...) on the
# SOC and Björck variants of the registered Lipschitz models
_VARIANTS: Registry = Registry("model", checks=MODELS.checks)
for _base, _extra in (("lipschitz_cnn", {"conv": "soc", "linear": "bjorck"}), ("lipschitz_mlp", {"linear": "bjorck"})):
    _spec = MODELS.spec(_base)
    _VARIANTS.add(dataclasses.replace(_spec, example_kwargs={**_spec.example_kwargs, **_extra}))


def _variant_id(spec) -> str:
    extra = [v for k, v in spec.example_kwargs.items() if k in ("conv", "linear")]
    return f"{spec.name}[{','.join(extra)}]"


@pytest.mark.parametrize("spec, check", [pytest.param(s, c, id=f"{_variant_id(s)}-{c.name}")
                                         for s, c in iter_checks(_VARIANTS)])
def test_model_battery_on_orthogonal_variants(spec, check):
    check(spec)


def test_variant_bound_is_the_declared_product():
    m = create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,), conv="soc")
    assert lipschitz_bound(m, (1, 8, 8)).value == m.lipschitz_constant() == pytest.approx(1 + 2 * taylor_tail(1.0, 12))


def test_orthogonal_layers_start_with_zero_bias():
    """deel-torchlip's initialisation: torch's default U(±1/√fan_in) biases cost margin (see bench_lipschitz)."""
    from robustlab.models._lipschitz import CayleyConv2d, CayleyLinear

    torch.manual_seed(0)
    for layer in (CayleyLinear(5, 3), CayleyConv2d(1, 4, 3, init_size=(8, 8)), BjorckLinear(5, 3), SOCConv2d(1, 4)):
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias)), type(layer).__name__
    m = create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,))
    assert all(float(p.abs().max()) == 0 for n, p in m.named_parameters() if n.endswith("bias"))
