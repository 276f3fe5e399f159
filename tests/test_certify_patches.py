"""CROWN coefficients in patches form (``certify._patches``): same bounds as the dense rows, never densified on CNNs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.certify import _patches, interval_bounds, margin_bounds
from robustlab.certify._crown import _conv2d_backward
from robustlab.models import Normalize

torch.manual_seed(0)


class _Res(nn.Module):
    """Residual blocks whose branches reach the add with windows of different sizes and paddings."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c1 = nn.Conv2d(4, 4, (3, 5), padding=(1, 2), bias=False)
        self.c2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.pool = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(4, 6, 3, stride=(2, 1), padding=0, groups=2)
        self.act = act
        self.fc = nn.Linear(6 * 1 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn(self.c0(x)))
        h = self.act(h + self.c2(torch.relu(self.c1(h))))
        h = torch.relu(self.c3(self.pool(h)))
        return self.fc(h.flatten(1))


def _chain() -> nn.Sequential:
    return nn.Sequential(Normalize([0.4, 0.5], [0.3, 0.2], (2, 8, 8)), nn.Conv2d(2, 4, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 5, 2, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 2 * 2, 3))


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(1)
    out = {"chain": _chain(), "res_relu": _Res(nn.ReLU()), "res_leaky": _Res(nn.LeakyReLU(0.1)),
           "res_tanh": _Res(nn.Tanh())}
    for m in out.values():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
    return {k: m.eval() for k, m in out.items()}


X = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2])


@pytest.mark.parametrize("name", ["chain", "res_relu", "res_leaky", "res_tanh"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3), ("l1", 0.5)])
def test_patches_give_the_dense_bounds(monkeypatch, name, norm, eps):
    model = _models()[name]
    with torch.no_grad():
        got = interval_bounds(model, X, eps=eps, norm=norm, method="crown")
        got_m = margin_bounds(model, X, Y, eps=eps, norm=norm, method="crown")
        monkeypatch.setattr(_patches, "ENABLED", False)
        want = interval_bounds(model, X, eps=eps, norm=norm, method="crown")
        want_m = margin_bounds(model, X, Y, eps=eps, norm=norm, method="crown")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_m, want_m, rtol=1e-5, atol=1e-5)


def test_cnn_crown_never_densifies_conv_rows_and_is_sound(monkeypatch):
    model = _models()["res_relu"]

    def refuse(self):  # every op of this model has a patches rule
        raise AssertionError("patches converted to dense rows")

    monkeypatch.setattr(_patches.Patches, "to_dense", refuse)
    with torch.no_grad():
        lo, up = interval_bounds(model, X, eps=0.05, method="crown")
        g = torch.Generator().manual_seed(5)
        for _ in range(20):
            xs = (X + (torch.rand(X.shape, generator=g) * 2 - 1) * 0.05).clamp(0, 1)
            out = model(xs)
            assert bool((out >= lo - 1e-5).all() and (out <= up + 1e-5).all())


def test_maxpool_falls_back_to_dense_rows_with_the_same_bounds(monkeypatch):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    with torch.no_grad():
        got = interval_bounds(model, X, eps=0.05, method="crown")
        monkeypatch.setattr(_patches, "ENABLED", False)
        want = interval_bounds(model, X, eps=0.05, method="crown")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 1, 1, 1), (2, 1, 1, 1), (2, 0, 2, 2), (3, 2, 1, 4)])
def test_conv_back_on_patches_equals_the_dense_transpose(stride, padding, dilation, groups):
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = torch.rand(2, 4, 11, 11)
    oh, ow = conv(x).shape[-2:]
    idx = torch.arange(0, 8 * oh * ow, 3)
    rows = _patches.identity(idx, torch.Size((8, oh, ow)), 2, x)
    rows = rows.with_data(rows.data * torch.randn(2, idx.numel(), 1, 1, 1))  # a different row scale per sample
    back, b = _patches.conv_back(rows, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                                 (11, 11))
    dense_back, dense_b = _conv2d_backward(conv, rows.to_dense(), torch.Size((4, 11, 11)))
    torch.testing.assert_close(back.to_dense(), dense_back, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, dense_b, rtol=1e-5, atol=1e-6)
    # a second convolution: windows grow again and the sum of two differently padded windows stays exact
    again, _ = _patches.conv_back(back, torch.randn(4, 4, 1, 1), None, (1, 1), (0, 0), (1, 1), 1, (11, 11))
    total = _patches.add(back, again)
    assert isinstance(total, _patches.Patches)
    torch.testing.assert_close(total.to_dense(), back.to_dense() + again.to_dense())


def test_windows_are_zero_outside_the_map():
    rows = _patches.identity(torch.tensor([0, 24]), torch.Size((1, 5, 5)), 1, X)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    back, _ = _patches.conv_back(rows, torch.ones(1, 1, 3, 3), None, (1, 1), (1, 1), (1, 1), 1, (5, 5))
    assert back.data.shape[-2:] == (3, 3) and conv.padding == (1, 1)
    assert back.data[0, 0].sum() == 4 and back.data[0, 1].sum() == 4  # corner windows: 2x2 inside the map
    assert back.to_dense()[0, 0, 0, :2, :2].sum() == 4


@pytest.mark.parametrize("cin, cout, k, stride, padding, dilation, groups", [
    (1, 8, 3, (2, 2), (1, 1), (2, 2), 1), (1, 16, 4, (2, 1), (1, 0), (1, 1), 1), (8, 8, 3, (1, 1), (1, 1), (1, 1), 1),
    (8, 8, 3, (1, 1), (0, 2), (1, 2), 1), (4, 8, 3, (3, 2), (2, 1), (1, 1), 2)])
def test_conv_transpose_matches_aten_on_every_path(cin, cout, k, stride, padding, dilation, groups):
    torch.manual_seed(5)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = torch.rand(2, cin, 13, 12)
    out = conv(x)
    lam = torch.randn(3, *out.shape[1:])
    pads = [x.shape[2 + i] - ((out.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k - 1) + 1)
            for i in (0, 1)]
    want = torch.nn.functional.conv_transpose2d(lam, conv.weight, None, stride, padding, tuple(pads), groups, dilation)
    got = _patches.conv_transpose(lam, conv.weight, stride, padding, dilation, groups, (13, 12))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
