"""``certify.tightness`` on models that are not plain stacks (residual adds, concatenations, MaxPool, Tanh)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.certify import tightness

torch.manual_seed(0)


class _ResMLP(nn.Module):
    """relu(L1 x) -> z = relu(h + L2 relu(L3 h)) -> L4 z (``act=False``: the same without activations)."""

    def __init__(self, act: bool = True) -> None:
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = nn.Linear(6, 8), nn.Linear(5, 8), nn.Linear(8, 5), nn.Linear(8, 4)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu if self.act else (lambda t: t)
        h = f(self.l1(x))
        return self.l4(f(h + self.l2(f(self.l3(h)))))


def _reference(net: _ResMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The definition written out with explicit matrices and ReLU masks."""
    w1, w2, w3, w4 = (m.weight for m in (net.l1, net.l2, net.l3, net.l4))
    out = []
    for xi, yi in zip(x, y):
        a1 = net.l1(xi)
        d1 = (a1 > 0).float() if net.act else torch.ones_like(a1)
        h = a1 * d1
        a3 = net.l3(h)
        d3 = (a3 > 0).float() if net.act else torch.ones_like(a3)
        az = h + net.l2(a3 * d3)
        dz = (az > 0).float() if net.act else torch.ones_like(az)
        jac = w4 @ torch.diag(dz) @ (torch.eye(8) + w2 @ torch.diag(d3) @ w3) @ torch.diag(d1) @ w1
        r1 = d1 * (w1.abs() @ torch.ones(6))
        rz = dz * (r1 + w2.abs() @ (d3 * (w3.abs() @ r1)))
        c = torch.eye(4)[yi] - torch.eye(4)
        keep = torch.arange(4) != yi
        out.append(((c @ jac).abs().sum(1) / ((c @ w4).abs() @ rz))[keep])
    return torch.cat(out).mean()


@pytest.mark.parametrize("act", [False, True])
def test_residual_tightness_matches_the_written_out_definition(act):
    torch.manual_seed(1)
    net = _ResMLP(act).eval()
    x = torch.randn(5, 6)
    y = torch.tensor([0, 1, 2, 3, 0])
    got = tightness(net, x, y)
    torch.testing.assert_close(got, _reference(net, x, y), rtol=1e-5, atol=1e-7)
    assert 0 < float(got) <= 1
    if not act:  # a linear residual network: the closed form |W4 (I + W2 W3) W1| 1 / (|W4| (I + |W2||W3|) |W1| 1)
        assert float(got) < 1


class _Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.tanh(self.a(x)), torch.relu(self.b(x))], 1)
        return self.fc(self.pool(h).flatten(1))


def test_concat_maxpool_tanh_model_has_a_tightness_in_the_unit_interval():
    net = _Branches().eval()
    x = torch.rand(4, 1, 8, 8)
    t = tightness(net, x, torch.tensor([0, 1, 2, 0]))
    assert 0 < float(t) <= 1
    assert float(tightness(net, x, eps=0.1)) == pytest.approx(float(tightness(net, x, eps=2.0)), rel=1e-5)


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.l1(x) * x)  # a product of two input-dependent tensors: not affine


def test_a_non_affine_op_is_named_in_the_error():
    with pytest.raises(TypeError, match=r"tightness does not support the op mul at fx node 'mul'"):
        tightness(_Gated(), torch.rand(3, 4))
