"""BCOP orthogonal convolution (Li et al. 2019): exact orthogonality with circular padding, its selection in
lipschitz_cnn, and the model battery on the conv="bcop" variant."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from robustlab._registry import Registry
from robustlab._validation import InvalidParameterError
from robustlab.certify import lipschitz, orthogonality
from robustlab.models import MODELS, create
from robustlab.models._lipschitz import BCOPConv2d
from robustlab.testing import iter_checks


def _perturbed(cin, cout, k, seed=0, n_iter=20):
    """A BCOP layer whose parameters are far from their orthogonal initialisation (as after training)."""
    torch.manual_seed(seed)
    conv = BCOPConv2d(cin, cout, k, n_iter=n_iter)
    with torch.no_grad():
        conv.ortho.add_(0.5 * torch.randn_like(conv.ortho))
        conv.projectors.add_(0.5 * torch.randn_like(conv.projectors))
    return conv


def _jacobian_svdvals(layer, shape):
    x = torch.randn(1, *shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.float()).double(), x)
    return torch.linalg.svdvals(jac.reshape(-1, x.numel()))


@pytest.mark.parametrize("cin,cout,k", [(3, 3, 3), (2, 4, 3), (4, 2, 3), (4, 4, 5), (1, 4, 3), (3, 3, 2)])
@pytest.mark.parametrize("size", [(5, 6), (4, 4)])
def test_bcop_jacobian_singular_values_are_one(cin, cout, k, size):
    """Autograd Jacobian of the float32 layer (circular padding): every singular value 1 (isometry, or co-isometry
    when out < in), and the float64 dense operator to 1e-12."""
    conv = _perturbed(cin, cout, k)
    sv = _jacobian_svdvals(conv, (cin, *size))
    assert sv.numel() == min(cin, cout) * size[0] * size[1]
    torch.testing.assert_close(sv, torch.ones_like(sv), atol=2e-6, rtol=0)
    dense = torch.linalg.svdvals(conv.operator_matrix(*size))
    torch.testing.assert_close(dense, torch.ones_like(dense), atol=1e-12, rtol=0)


def test_bcop_with_zero_padding_is_not_orthogonal():
    """The padding caveat (Achour et al. 2022): the same kernel, zero-padded, loses the isometry at the border."""
    conv = _perturbed(3, 3, 3)
    n = 3 * 5 * 5
    eye = torch.eye(n, dtype=torch.float64).view(n, 3, 5, 5)
    mat = F.conv2d(eye, conv.kernel(torch.float64).detach(), padding=1).reshape(n, -1).T
    sv = torch.linalg.svdvals(mat)
    assert float(sv.max()) <= 1 + 1e-12 and float(sv.min()) < 0.99


def test_bcop_unconverged_bjorck_stays_one_lipschitz():
    """With one Björck step the projectors are not exact, so σ < 1 somewhere, but never above 1."""
    conv = _perturbed(4, 4, 3, n_iter=1)
    sv = torch.linalg.svdvals(conv.operator_matrix(5, 5))
    assert float(sv.max()) <= 1 + 1e-12 and float(sv.min()) < 1 - 1e-3


def test_bcop_errors_dtype_and_gradients():
    with pytest.raises(InvalidParameterError, match=r"'kernel_size'.*Got 0"):
        BCOPConv2d(2, 2, 0)
    with pytest.raises(InvalidParameterError, match="n_iter"):
        BCOPConv2d(2, 2, 3, n_iter=0)
    conv = BCOPConv2d(2, 4, 5)
    with pytest.raises(InvalidParameterError, match=r"\(N, 2, H, W\).*\(2, 3, 8, 8\)"):
        conv(torch.rand(2, 3, 8, 8))
    with pytest.raises(InvalidParameterError, match=r"H, W ≥ 2.*\(1, 2, 1, 8\)"):
        conv(torch.rand(1, 2, 1, 8))
    x = torch.rand(2, 2, 8, 8)
    out = conv(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 8, 8)
    conv(x).square().sum().backward()
    for p in (conv.ortho, conv.projectors):
        assert torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0
    assert torch.equal(conv.bias, torch.zeros(4))


def test_lipschitz_cnn_bcop_certifies_by_construction():
    torch.manual_seed(0)
    m = create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,), conv="bcop",
               linear="bjorck")
    cert = lipschitz(m, torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,)))
    assert cert.bound.method == "by_construction" and cert.bound.value == 1.0
    spectra = {s.kind: s for s in orthogonality(m, (1, 8, 8))}
    assert set(spectra) == {"BCOPConv2d", "BjorckLinear"} and spectra["BCOPConv2d"].deviation < 1e-10


def test_bad_conv_choice_lists_bcop():
    with pytest.raises(InvalidParameterError, match=r"'conv'.*lipschitz_cnn.*\['bcop', 'cayley', 'soc'\].*'bogus'"):
        create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, conv="bogus")


_VARIANTS: Registry = Registry("model", checks=MODELS.checks)
_spec = MODELS.spec("lipschitz_cnn")
_VARIANTS.add(dataclasses.replace(_spec, example_kwargs={**_spec.example_kwargs, "conv": "bcop"}))


@pytest.mark.parametrize("spec, check", [pytest.param(s, c, id=f"lipschitz_cnn[bcop]-{c.name}")
                                         for s, c in iter_checks(_VARIANTS)])
def test_model_battery_on_bcop_variant(spec, check):
    check(spec)


@pytest.mark.parametrize("shape", [(4, 9), (30, 7), (5, 5)])
def test_bjorck_gram_form_equals_the_plain_recursion(shape):
    """bjorck runs the iteration on the Gram side (coupled Newton–Schulz): the iterates of W ← W(3/2 I − 1/2 WᵀW),
    and stable when iterated long past convergence (the uncoupled Gram form drifts by 1e-7 after 60 steps)."""
    from robustlab.models._orthogonal import bjorck

    w = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tall = w if shape[0] >= shape[1] else w.T
    q = tall / torch.linalg.matrix_norm(tall.T @ tall @ tall.T @ tall) ** 0.25
    for n_iter in (1, 3, 15, 100):
        plain = q
        for _ in range(n_iter):
            plain = 1.5 * plain - 0.5 * plain @ (plain.T @ plain)
        got = bjorck(w, n_iter)
        torch.testing.assert_close(got, plain if shape[0] >= shape[1] else plain.T, atol=1e-12, rtol=0)
