"""CROWN / CROWN-IBP through MoE layers (``certify._moe_crown``): sound when the routing flips inside the box,
exact where the routing is decided, tighter than IBP."""

from __future__ import annotations

import pytest
import torch

from robustlab import models
from robustlab.certify import interval_bounds, margin_bounds
from robustlab.certify._moe_crown import _product_relaxation


def _sharp(model: torch.nn.Module, x: torch.Tensor, scale: float = 20.0) -> None:
    """Sharpen every router and put its logits near a tie at the mean of ``x``: routing flips inside small boxes."""
    h = x
    with torch.no_grad():
        for m in model.modules() if isinstance(model, torch.nn.Sequential) else [model]:
            if isinstance(m, models.MoEConv2d):
                m.router.weight.mul_(scale)
                m.router.bias.copy_(-m.router.weight @ h.mean((0, 2, 3)))
            if isinstance(m, (models.MoEConv2d, torch.nn.ReLU, torch.nn.AvgPool2d)):
                h = m(h)


def _check_sound(model: torch.nn.Module, x: torch.Tensor, eps: float, k: int = 256) -> set:
    g = torch.Generator().manual_seed(7)
    y = model(x).argmax(1) if model(x).dim() == 2 else None
    bounds = {m: interval_bounds(model, x, eps=eps, method=m) for m in ("ibp", "crown_ibp", "crown")}
    margins = {m: margin_bounds(model, x, y, eps=eps, method=m) for m in ("crown_ibp", "crown")} if y is not None else {}
    routes = set()
    shift = torch.rand(k, *x.shape[:2], 1, 1, generator=g) * 2 - 1  # per-channel shifts move the pooled router input
    xs = (x + (0.5 * shift + 0.5 * (torch.rand(k, *x.shape, generator=g) * 2 - 1)) * eps).clamp(0, 1)
    for xi in xs:
        out = model(xi)
        routes.add(tuple(torch.cat([r.flatten() for r in models.routing(model)]).tolist()))
        for name, (lo, up) in bounds.items():
            assert bool((out >= lo - 1e-5).all() and (out <= up + 1e-5).all()), name
        for name, mb in margins.items():
            marg = out.gather(1, y[:, None]) - out
            assert bool((marg >= mb - 1e-5).all()), name
    for name in ("crown_ibp", "crown"):  # never looser than IBP (the boxes are intersected)
        lo, up = bounds[name]
        assert bool((up - lo <= bounds["ibp"][1] - bounds["ibp"][0] + 1e-6).all())
    return routes


@pytest.mark.parametrize("experts, top_k", [(4, 1), (4, 2), (3, 3)])
def test_moe_layer_crown_bounds_contain_outputs_when_routing_flips(experts, top_k):
    torch.manual_seed(0)
    layer = models.MoEConv2d(2, 3, 3, experts=experts, top_k=top_k, padding=1).eval()
    x = 0.5 + 0.05 * torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    _sharp(layer, x)
    with torch.no_grad():
        routes = _check_sound(layer, x, 0.1)
    if top_k < experts:
        assert len(routes) > 1  # the box really holds several routings


@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_moe_lenet_crown_is_sound_and_tighter_than_ibp(eps):
    torch.manual_seed(0)
    model = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,),
                          experts=3, top_k=2).eval()
    x = 0.4 + 0.2 * torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    _sharp(model, x, 5.0)
    with torch.no_grad():
        routes = _check_sound(model, x, eps, k=128)
        lo_i, up_i = interval_bounds(model, x, eps=eps)
        lo_c, up_c = interval_bounds(model, x, eps=eps, method="crown")
    assert len(routes) > 1
    assert float((up_c - lo_c).mean()) < float((up_i - lo_i).mean())


def test_decided_routing_makes_the_layer_linear_and_crown_exact_for_it():
    torch.manual_seed(3)
    layer = models.MoEConv2d(2, 3, 3, experts=3, top_k=1, padding=1).eval()
    with torch.no_grad():
        layer.router.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))  # expert 1 always wins on the box
    x = torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        lo, up = interval_bounds(layer, x, eps=0.05, method="crown")
        lo_e, up_e = interval_bounds(layer.experts, x, eps=0.05, method="crown")  # all experts, bounded exactly
    torch.testing.assert_close(lo, lo_e[:, 3:6], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(up, up_e[:, 3:6], rtol=1e-5, atol=1e-5)


def test_product_relaxation_lines_enclose_every_gate_times_difference():
    g = torch.Generator().manual_seed(5)
    n = 2000
    g_lo = torch.rand(n, generator=g) * 0.6
    g_hi = g_lo + torch.rand(n, generator=g) * (1 - g_lo)
    g_hi[:100] = g_lo[:100]  # decided gates
    lo = torch.randn(n, generator=g)
    up = lo + torch.rand(n, generator=g).pow(3) * 2
    up[100:200] = lo[100:200]  # point intervals
    s_lo, t_lo, s_up, t_up = _product_relaxation(g_lo, g_hi, lo, up)
    for _ in range(50):
        gate = g_lo + torch.rand(n, generator=g) * (g_hi - g_lo)
        d = lo + torch.rand(n, generator=g) * (up - lo)
        for v in (d, lo, up):
            prod = gate * v
            assert bool((s_lo * v + t_lo <= prod + 1e-6).all() and (prod <= s_up * v + t_up + 1e-6).all())
    exact = (g_lo == g_hi) & (up - lo > 1e-3)
    torch.testing.assert_close(s_lo[exact], g_lo[exact])
    torch.testing.assert_close(s_up[exact], g_hi[exact])
