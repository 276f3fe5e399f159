"""Björck options of deel-torchlip's SpectralLinear: tolerance stop, spectral start, truncated gradient."""

import dataclasses

import pytest
import torch

from robustlab._registry import Registry
from robustlab._validation import InvalidParameterError
from robustlab.models import MODELS
from robustlab.models._orthogonal import BjorckLinear, bjorck
from robustlab.testing import iter_checks


def _plain(w, n_iter, *, tol=None, start="frobenius", detach_after=None):
    """The plain recursion W ← 3/2·W − 1/2·W·WᵀW on a tall matrix, with torchlip's stop and detached cubic term."""
    gram = w.T @ w
    scale = torch.linalg.eigvalsh(gram)[-1].sqrt() if start == "spectral" else torch.linalg.matrix_norm(gram @ gram) ** 0.25
    x, steps = w / scale, 0
    for i in range(n_iter):
        cubic = x @ (x.T @ x)
        new = 1.5 * x - 0.5 * (cubic.detach() if detach_after is not None and i >= detach_after else cubic)
        steps += 1
        stop = tol is not None and float((new - x).detach().norm()) < tol
        x = new
        if stop:
            break
    return x, steps


def _w(shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-8])
def test_tolerance_stop_is_the_plain_recursion_stopped_at_the_same_step(tol):
    w = _w((40, 12))
    want, steps = _plain(w, 30, tol=tol, start="spectral")
    assert steps < 30  # the criterion, not the step cap, ended it
    torch.testing.assert_close(bjorck(w, 30, tol=tol, start="spectral"), want, atol=1e-12, rtol=0)
    if tol <= 1e-8:  # converged: orthonormal columns
        q = bjorck(w, 30, tol=tol)
        torch.testing.assert_close(q.T @ q, torch.eye(12, dtype=torch.float64), atol=1e-7, rtol=0)


def test_spectral_start_scales_by_the_largest_singular_value():
    w = _w((9, 5))
    q1 = bjorck(w, 1, start="spectral")
    sv = torch.linalg.svdvals(w)
    s = sv / sv[0]  # one step maps each σ of W/σ_max to 3/2·σ − 1/2·σ³
    torch.testing.assert_close(torch.linalg.svdvals(q1), 1.5 * s - 0.5 * s ** 3, atol=1e-12, rtol=0)
    for n_iter in (1, 2, 4):
        assert float(torch.linalg.svdvals(bjorck(w, n_iter, start="spectral")).max()) <= 1 + 1e-12


@pytest.mark.parametrize("shape", [(30, 8), (8, 30)])
@pytest.mark.parametrize("grad_iters", [0, 2, 4])
def test_truncated_gradient_is_torchlips_detached_cubic_term(shape, grad_iters):
    """Same values as the full iteration; the gradient of the recursion whose cubic term is detached from step
    ``grad_iters`` on (deel-torchlip's DEFAULT_BJORK_DETACH)."""
    w = _w(shape)
    up = _w(shape, seed=1)
    tall = shape[0] >= shape[1]
    a = w.clone().requires_grad_()
    got = bjorck(a, 15, start="spectral", grad_iters=grad_iters)
    (got * up).sum().backward()
    b = w.clone().requires_grad_()
    want, _ = _plain(b if tall else b.T, 15, start="spectral", detach_after=grad_iters)
    want = want if tall else want.T
    (want * up).sum().backward()
    torch.testing.assert_close(got.detach(), bjorck(w, 15, start="spectral"), atol=1e-14, rtol=0)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-9)
    full = w.clone().requires_grad_()
    (bjorck(full, 15, start="spectral") * up).sum().backward()
    assert not torch.allclose(a.grad, full.grad, atol=1e-6)  # the truncation does change the gradient


def test_truncated_gradient_with_tolerance_stop():
    w = _w((50, 20))
    up = _w((50, 20), seed=1)
    a = w.clone().requires_grad_()
    (bjorck(a, 15, tol=1e-3, start="spectral", grad_iters=4) * up).sum().backward()
    b = w.clone().requires_grad_()
    want, steps = _plain(b, 15, tol=1e-3, start="spectral", detach_after=4)
    assert 4 < steps < 15
    (want * up).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("kw", [{"tol": 1e-3, "start": "spectral", "grad_iters": 4}, {"tol": 1e-1}, {"n_iter": 2}])
def test_bjorck_linear_options_stay_one_lipschitz(kw):
    """A stopped (unconverged) iteration only shrinks: every singular value of the layer's Jacobian ≤ 1."""
    torch.manual_seed(0)
    lin = BjorckLinear(24, 10, **kw)
    with torch.no_grad():  # a trained, far-from-orthogonal weight
        lin.weight.add_(0.5 * torch.randn_like(lin.weight))
    x = torch.randn(1, 24)
    jac = torch.autograd.functional.jacobian(lambda v: lin(v), x).reshape(10, 24)
    assert float(torch.linalg.svdvals(jac.double()).max()) <= 1 + 1e-6
    lin(torch.randn(3, 24)).sum().backward()
    assert torch.isfinite(lin.weight.grad).all() and float(lin.weight.grad.abs().sum()) > 0


def test_bjorck_linear_refuses_bad_options_naming_them():
    with pytest.raises(InvalidParameterError, match=r"'tol'.*BjorckLinear"):
        BjorckLinear(4, 4, tol=0.0)
    with pytest.raises(InvalidParameterError, match=r"'start'.*BjorckLinear.*\['frobenius', 'spectral'\].*'power'"):
        BjorckLinear(4, 4, start="power")
    with pytest.raises(InvalidParameterError, match=r"'grad_iters'.*BjorckLinear"):
        BjorckLinear(4, 4, grad_iters=-1)
    with pytest.raises(InvalidParameterError, match=r"'start'.*bjorck.*'power'"):
        bjorck(torch.eye(3), 2, start="power")
    assert "tol=0.001, start='spectral', grad_iters=4" in repr(BjorckLinear(4, 4, tol=1e-3, start="spectral",
                                                                          grad_iters=4))


def test_linear_options_reach_the_layers_and_bad_ones_are_refused():
    from robustlab.models import create

    m = create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,), conv="bcop",
               linear="bjorck", linear_options=TORCHLIP)
    layers = [x for x in m if isinstance(x, BjorckLinear)]
    assert len(layers) == 2 and all((x.tol, x.start, x.grad_iters) == (1e-3, "spectral", 4) for x in layers)
    with pytest.raises(InvalidParameterError, match=r"'linear_options'.*lipschitz_mlp.*grad_iters.*'iters'"):
        create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(8,), linear="bjorck", linear_options={"iters": 3})
    with pytest.raises(InvalidParameterError, match=r"'linear_options'.*lipschitz_cnn.*CayleyLinear"):
        create("lipschitz_cnn", input_shape=(1, 8, 8), num_classes=10, linear_options={"tol": 1e-3})


# the model battery (Lipschitz soundness by sampling, by-construction diagnostics, ...) on the torchlip-style options
TORCHLIP = {"tol": 1e-3, "start": "spectral", "grad_iters": 4}
_VARIANTS: Registry = Registry("model", checks=MODELS.checks)
for _base, _extra in (("lipschitz_cnn", {"conv": "bcop", "linear": "bjorck", "linear_options": TORCHLIP}),
                      ("lipschitz_mlp", {"linear": "bjorck", "linear_options": TORCHLIP})):
    _spec = MODELS.spec(_base)
    _VARIANTS.add(dataclasses.replace(_spec, example_kwargs={**_spec.example_kwargs, **_extra}))


@pytest.mark.parametrize("spec, check", [pytest.param(s, c, id=f"{s.name}[torchlip-bjorck]-{c.name}")
                                         for s, c in iter_checks(_VARIANTS)])
def test_model_battery_on_torchlip_style_bjorck(spec, check):
    check(spec)
