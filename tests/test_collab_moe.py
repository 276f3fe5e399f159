"""The MoE convolution and moe_lenet: top-k routing, load-balancing loss, routing part of the model."""

import pytest
import torch

from robustlab import models
from robustlab._validation import InvalidParameterError


def test_top_k_gates_mix_exactly_k_experts():
    torch.manual_seed(0)
    layer = models.MoEConv2d(2, 3, 3, experts=4, top_k=2, padding=1)
    x = torch.rand(5, 2, 6, 6)
    y = layer(x)
    assert y.shape == (5, 3, 6, 6) and layer.last_routing.shape == (5, 2)
    # by hand: softmax router on the pooled input, the 2 largest renormalised, experts mixed
    probs = torch.softmax(layer.router(x.mean((2, 3))), 1)
    top_p, top_i = probs.topk(2, 1)
    outs = layer.experts(x).view(5, 4, 3, 6, 6)
    want = torch.stack([sum(top_p[n, j] / top_p[n].sum() * outs[n, top_i[n, j]] for j in range(2)) for n in range(5)])
    torch.testing.assert_close(y, want)
    assert torch.equal(layer.last_routing, top_i)


def test_load_balancing_loss_is_one_when_balanced_and_e_when_collapsed():
    layer = models.MoEConv2d(1, 1, 1, experts=4, top_k=1)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))  # every sample to expert 0
    layer(torch.rand(8, 1, 4, 4))
    assert float(layer.aux_loss.detach()) == pytest.approx(4.0, rel=1e-3)
    with torch.no_grad():
        layer.router.bias.zero_()
    layer(torch.rand(8, 1, 4, 4))  # uniform probabilities: E * sum(frac * 1/E) = 1
    assert float(layer.aux_loss.detach()) == pytest.approx(1.0)


def test_moe_lenet_routes_differentiably_and_reports_routing():
    torch.manual_seed(0)
    m = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=10, experts=3, top_k=1)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    out = m(x)
    out.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert float(models.load_balancing_loss(m).detach()) > 0 and len(models.routing(m)) == 2
    assert all(r.shape == (4, 1) for r in models.routing(m))
    with pytest.raises(InvalidParameterError, match="'top_k' parameter of MoEConv2d"):
        models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=10, experts=2, top_k=3)


def test_advmoe_alternates_router_and_expert_updates():
    from robustlab.losses import get as get_loss
    from robustlab.training import Batch, objectives

    torch.manual_seed(0)
    m = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=3, channels=(2, 3), hidden=(8,), experts=2)
    obj = objectives.get("advmoe", eps=0.1, steps=2)
    obj.setup(model=m, epochs=1, steps_per_epoch=4, num_classes=3, num_train=8,
              generator=torch.Generator().manual_seed(0))
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 3
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    routers = {id(p) for mod in m.modules() if isinstance(mod, models.MoEConv2d) for p in mod.router.parameters()}
    for phase in ("router", "experts", "router"):
        assert obj.phase() == phase
        before = {id(p): p.detach().clone() for p in m.parameters()}
        value, metrics = obj(m, Batch(x, y, torch.arange(8)), get_loss("ce"))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        assert all(p.requires_grad for p in m.parameters())  # the freeze is undone after the step
        moved = {id(p) for p in m.parameters() if not torch.equal(p.detach(), before[id(p)])}
        assert moved == (routers if phase == "router" else {id(p) for p in m.parameters()} - routers), phase
        assert float(metrics["router_phase"]) == (phase == "router")


def test_advmoe_and_joint_pgd_at_train_moe_lenet_through_fit():
    from robustlab import data
    from robustlab.training import fit

    d = data.load("digits").subset(n_train=120, n_test=60)
    for name in ("advmoe", "pgd_at"):
        torch.manual_seed(0)
        m = models.create("moe_lenet", input_shape=d.input_shape, num_classes=10, channels=(4, 8), hidden=(16,))
        res = fit(m, d, objective=name, objective_kw={"eps": 0.05, "steps": 2}, epochs=1, batch_size=40,
                  progress=False)
        assert 0.0 <= res.history["test_acc"][-1] <= 1.0


def test_advmoe_balance_adds_the_load_balancing_loss():
    from robustlab.losses import get as get_loss
    from robustlab.training import Batch, objectives

    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 3
    vals = []
    for balance in (0.0, 0.5):
        torch.manual_seed(0)
        m = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=3, channels=(2, 3), hidden=(8,))
        obj = objectives.get("advmoe", eps=0.1, steps=1, random_start=False, balance=balance)
        obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=3, num_train=8, generator=torch.Generator())
        vals.append((float(obj(m, Batch(x, y, torch.arange(8)), get_loss("ce"))[0].detach()),
                     float(models.load_balancing_loss(m).detach())))
    assert vals[1][0] == pytest.approx(vals[0][0] + 0.5 * vals[1][1], rel=1e-5)
    with pytest.raises(InvalidParameterError, match="'balance' parameter of advmoe"):
        objectives.get("advmoe", balance=-1.0)
