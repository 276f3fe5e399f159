"""IBP through MoE layers (the gate-aware convex-combination rule) and the moe_resnet model."""

import pytest
import torch

from robustlab import models
from robustlab._validation import InvalidParameterError
from robustlab.certify._rules import _moe_gate_bounds
from robustlab.certify.ibp import interval_bounds


def _layer(experts: int, top_k: int, seed: int = 0) -> models.MoEConv2d:
    torch.manual_seed(seed)
    layer = models.MoEConv2d(2, 3, 3, experts=experts, top_k=top_k, padding=1)
    with torch.no_grad():
        layer.router.weight.mul_(20.0)  # a sharp router: routing flips inside the box
    return layer.eval()


@pytest.mark.parametrize("experts,top_k", [(4, 1), (4, 2), (3, 3), (5, 3)])
def test_moe_layer_bounds_contain_outputs_even_when_routing_changes(experts, top_k):
    layer = _layer(experts, top_k)
    g = torch.Generator().manual_seed(1)
    x, eps = 0.5 + 0.05 * torch.rand(3, 2, 5, 5, generator=g), 0.1
    with torch.no_grad():  # near-tied router logits at x: the routing flips inside the box
        layer.router.bias.copy_(-layer.router.weight @ x.mean((0, 2, 3)))
    lo, up = interval_bounds(layer, x, eps=eps)
    shift = torch.rand(256, 3, 2, 1, 1, generator=g) * 2 - 1  # per-channel shifts move the pooled router input
    xs = (x + (0.5 * shift + 0.5 * (torch.rand(256, *x.shape, generator=g) * 2 - 1)) * eps).clamp(0, 1)
    routes = set()
    with torch.no_grad():
        for xi in xs:
            y = layer(xi)
            routes.add(tuple(layer.last_routing.flatten().tolist()))
            assert bool((y >= lo - 1e-5).all() and (y <= up + 1e-5).all())
    if top_k < experts:
        assert len(routes) > 1  # the box really contains different routings


def test_gate_bounds_contain_the_gates_and_are_exact_at_zero_width():
    layer = _layer(5, 2)
    g = torch.Generator().manual_seed(2)
    x, eps = torch.rand(4, 2, 5, 5, generator=g), 0.05
    g_lo, g_hi = _moe_gate_bounds(layer, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1))
    for _ in range(128):
        xi = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
        with torch.no_grad():
            probs = torch.softmax(layer.router(xi.mean((2, 3))), 1)
        top_p, top_i = probs.topk(2, 1)
        gates = torch.zeros_like(probs).scatter(1, top_i, top_p / top_p.sum(1, keepdim=True))
        assert bool((gates >= g_lo - 1e-6).all() and (gates <= g_hi + 1e-6).all())
    e_lo, e_hi = _moe_gate_bounds(layer, x, x)
    torch.testing.assert_close(e_lo, e_hi)
    assert bool((e_lo > 0).sum(1).eq(2).all())


def test_moe_bounds_no_looser_than_the_expert_hull():
    layer = _layer(4, 2)
    x, eps = torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(3)), 0.01
    lo, up = interval_bounds(layer, x, eps=eps)
    plain = torch.nn.Conv2d(2, 12, 3, padding=1)
    plain.load_state_dict(layer.experts.state_dict())
    elo, eup = interval_bounds(torch.nn.Sequential(plain), x, eps=eps)
    elo, eup = elo.view(2, 4, 3, 5, 5), eup.view(2, 4, 3, 5, 5)
    assert bool((lo >= elo.amin(1) - 1e-6).all() and (up <= eup.amax(1) + 1e-6).all())
    assert bool((up - lo < eup.amax(1) - elo.amin(1) - 1e-6).any())  # the gate bounds do tighten


def test_moe_lenet_ibp_and_crown_are_exact_at_zero_radius():
    torch.manual_seed(0)
    m = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=4, channels=(2, 3), hidden=(8,)).eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        for method in ("ibp", "crown_ibp", "crown"):  # CROWN relaxes the gated sum (tests/test_certify_moe_crown.py)
            lo, up = interval_bounds(m, x, eps=0.0, method=method)
            torch.testing.assert_close(lo, m(x), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(up, m(x), rtol=1e-4, atol=1e-4)


def test_moe_resnet_layout_and_arguments():
    m = models.create("moe_resnet", input_shape=(3, 16, 16), num_classes=10, width=4, blocks=(1, 2, 1),
                      moe_stages=2, experts=3, top_k=1)
    moes = [mod for mod in m.modules() if isinstance(mod, models.MoEConv2d)]
    assert len(moes) == 2 * 3 and all(mod.experts.bias is None for mod in moes)  # blocks 2+1, two convs each
    out = m(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 10) and all(r.shape == (2, 1) for r in models.routing(m))
    dense = models.create("moe_resnet", input_shape=(3, 16, 16), num_classes=10, width=4, blocks=(1, 1), moe_stages=0)
    assert not models.routing(dense)
    for kw, what in (({"moe_stages": 4}, "moe_stages"), ({"top_k": 5}, "top_k"), ({"blocks": (1, 0)}, r"blocks\[1\]"),
                     ({"width": 0}, "width"), ({"experts": 0}, "experts")):
        with pytest.raises(InvalidParameterError, match=f"'{what}' parameter of moe_resnet"):
            models.create("moe_resnet", **{"input_shape": (3, 16, 16), "num_classes": 10, "blocks": (1, 1), **kw})
    with pytest.raises(ValueError, match="'blocks' parameter of moe_resnet"):
        models.create("moe_resnet", input_shape=(3, 16, 16), num_classes=10, blocks=())
