"""OCNN orthogonality regulariser (Wang et al. 2020; Achour et al. 2022): the value against the dense circular
operator, zero for orthogonal layers, and its use as lipschitz_margin's orth_weight on ordinary models."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab import data, models, training
from robustlab._validation import InvalidParameterError
from robustlab.certify import lipschitz_bound, orthogonality, orthogonality_penalty
from robustlab.certify.lipschitz import conv_orthogonality_penalty, linear_orthogonality_penalty
from robustlab.models._lipschitz import BCOPConv2d
from robustlab.training._objectives import Batch
from robustlab.training.objectives import get
from robustlab.training.objectives._lipschitz import lipschitz_margin_loss


def _circular_matrix(kernel, n, stride):
    """Dense float64 matrix of the circular-padded, strided convolution on n x n inputs (independent of the penalty)."""
    m, c, kh, kw = kernel.shape
    size = c * n * n
    eye = torch.eye(size, dtype=torch.float64).view(size, c, n, n)
    lo, hi = (kh - 1) // 2, kh // 2
    return F.conv2d(F.pad(eye, (lo, hi, lo, hi), mode="circular"), kernel.double(), stride=stride).reshape(size, -1).T


@pytest.mark.parametrize("m,c,k,stride", [(4, 3, 3, 1), (3, 5, 3, 1), (8, 2, 3, 2), (4, 4, 3, 2), (2, 4, 3, 2),
                                          (6, 3, 5, 1), (6, 3, 4, 2)])
def test_penalty_is_the_dense_operators_deviation_over_the_grid(m, c, k, stride):
    """Achour et al.: ‖𝒦𝒦ᵀ − I‖²_F (rows ≤ columns) or ‖𝒦ᵀ𝒦 − I‖²_F = (N/S)²·L_orth(K) for circular padding."""
    n = 8 if k < 5 else 10
    kernel = 0.3 * torch.randn(m, c, k, k, generator=torch.Generator().manual_seed(m * 10 + c))
    a = _circular_matrix(kernel, n, stride)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    want = (gram - torch.eye(gram.shape[0], dtype=gram.dtype)).square().sum()
    got = conv_orthogonality_penalty(kernel, stride) * (n / stride) ** 2
    assert float(got) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("cin,cout", [(4, 4), (2, 6), (6, 2)])
def test_penalty_is_zero_for_a_bcop_kernel_in_a_plain_conv(cin, cout):
    """A BCOP kernel (orthogonal with circular padding) copied into an ordinary Conv2d: penalty 0; perturbed: > 0."""
    torch.manual_seed(0)
    bcop = BCOPConv2d(cin, cout, 3)
    with torch.no_grad():
        bcop.ortho.add_(torch.randn_like(bcop.ortho))
        bcop.projectors.add_(torch.randn_like(bcop.projectors))
        plain = nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular")
        plain.weight.copy_(bcop.kernel())
    assert abs(float(orthogonality_penalty(plain).detach())) < 1e-5
    with torch.no_grad():
        plain.weight.add_(0.05 * torch.randn_like(plain.weight))
    assert float(orthogonality_penalty(plain).detach()) > 1e-3


def test_grouped_and_dilated_convolutions():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, groups=2, dilation=2, stride=1)
    per_group = sum(conv_orthogonality_penalty(w, 1, 2) for w in conv.weight.detach().split(3))
    assert float(orthogonality_penalty(conv)) == pytest.approx(float(per_group), rel=1e-6)
    dilated = torch.zeros(6, 2, 5, 5)
    dilated[:, :, ::2, ::2] = conv.weight.detach()
    assert float(conv_orthogonality_penalty(conv.weight, 1, 2, 2)) == pytest.approx(
        float(conv_orthogonality_penalty(dilated, 1, 1, 2)), rel=1e-6)
    with pytest.raises(InvalidParameterError, match="groups=4"):
        conv_orthogonality_penalty(conv.weight, groups=4)


def test_linear_penalty_and_model_sum():
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    assert float(linear_orthogonality_penalty(w)) == pytest.approx(float((w.T @ w - torch.eye(3)).square().sum()), rel=1e-6)
    assert float(linear_orthogonality_penalty(w.T)) == pytest.approx(float(linear_orthogonality_penalty(w)), rel=1e-6)
    q = torch.linalg.qr(torch.randn(7, 4, dtype=torch.float64))[0].float()
    assert float(linear_orthogonality_penalty(q)) < 1e-10
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    want = conv_orthogonality_penalty(model[0].weight) + linear_orthogonality_penalty(model[2].weight)
    assert float(orthogonality_penalty(model)) == pytest.approx(float(want), rel=1e-6)


def test_constrained_layers_are_skipped_and_nothing_to_penalise_is_refused():
    m = models.create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    with pytest.raises(InvalidParameterError, match="no unconstrained Conv2d or Linear"):
        orthogonality_penalty(m)
    mixed = nn.Sequential(m, nn.Linear(3, 3))
    assert float(orthogonality_penalty(mixed)) == pytest.approx(float(linear_orthogonality_penalty(mixed[1].weight)))


def test_minimising_the_penalty_makes_the_convolution_an_isometry():
    """Stability (Achour et al.): max |σ² − 1| ≤ ‖𝒦ᵀ𝒦 − I‖_F = N·√L_orth on N × N circular inputs, so driving
    L_orth to ~0 brings every singular value of the operator to 1. (The landscape has other stationary points:
    Adam at lr 0.01 stalls at L_orth ≈ 0.08 from this start; SGD with momentum reaches 1e-5.)"""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular", bias=False)
    opt = torch.optim.SGD(conv.parameters(), lr=0.05, momentum=0.9)
    spectra = [orthogonality(conv, (4, 8, 8))[0]]
    for _ in range(300):
        opt.zero_grad()
        orthogonality_penalty(conv).backward()
        opt.step()
    spectra.append(orthogonality(conv, (4, 8, 8))[0])
    final = float(orthogonality_penalty(conv).detach())
    assert final < 1e-4
    assert spectra[0].sigma_max - spectra[0].sigma_min > 0.5
    assert abs(spectra[1].sigma_max - 1) < 1e-2 and abs(spectra[1].sigma_min - 1) < 1e-2
    worst = max(abs(spectra[1].sigma_max ** 2 - 1), abs(spectra[1].sigma_min ** 2 - 1))
    assert worst <= 8 * final ** 0.5 + 1e-6


def test_objective_adds_the_weighted_penalty():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    batch = Batch(torch.rand(5, 6), torch.tensor([0, 1, 2, 0, 1]), None)
    obj = get("lipschitz_margin", mode="hinge", margin=1.0, orth_weight=0.5)
    value, metrics = obj(model, batch, None)
    base = lipschitz_margin_loss(model(batch.x), batch.y, mode="hinge", margin=1.0)
    pen = orthogonality_penalty(model)
    assert float(value) == pytest.approx(float(base + 0.5 * pen), rel=1e-6)
    assert float(metrics["orth"]) == pytest.approx(float(pen), rel=1e-6)
    assert "orth" not in get("lipschitz_margin", mode="hinge")(model, batch, None)[1]
    with pytest.raises(InvalidParameterError, match="no unconstrained"):
        obj(models.create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(8,)), batch, None)


@pytest.mark.parametrize("bad,kind", [(-0.1, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_orth_weight(bad, kind):
    with pytest.raises(kind, match="orth_weight"):
        get("lipschitz_margin", orth_weight=bad)


def test_penalty_shrinks_the_lipschitz_bound_of_a_trained_mlp():
    """The accuracy/orthogonality trade-off in miniature: λ > 0 gives a much smaller power-iteration bound."""
    d = data.load("digits")
    bounds = {}
    for lam in (0.0, 0.1):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        training.fit(m, d, objective="lipschitz_margin", objective_kw={"mode": "hinge", "margin": 1.0, "orth_weight": lam},
                     epochs=3, batch_size=64, optimizer="adam", lr=0.01, weight_decay=0.0, progress=False, seed=0,
                     eval_every=0)
        bounds[lam] = lipschitz_bound(m, d.input_shape, method="power", n_iter=200).value
    assert bounds[0.1] < 0.5 * bounds[0.0] and bounds[0.1] < 2.0
