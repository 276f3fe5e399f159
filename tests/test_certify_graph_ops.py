"""Bounds for any fx-traceable model: graph = chain numbers, relaxations sound, clear errors, L2/L1 dual norms, memory."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab import models
from robustlab.certify import IBP_RULES, _relax, interval_bounds, margin_bounds, register_ibp_rule, verified
from robustlab.certify._graph_crown import graph_bytes_per_sample, graph_interval_bounds, graph_margin_bounds
from robustlab.testing._models_ibp import GRAPH_MODELS, graph_model


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_graph_interpreter_reproduces_the_sequential_fast_path(name):
    """The same stack through the fx interpreter gives the fast path's numbers (IBP, CROWN-IBP, CROWN; L∞, L2, L1)."""
    torch.manual_seed(0)
    kw = {"hidden": (24, 24)} if name == "mlp" else {"channels": (3, 4), "hidden": (12,)}
    m = models.create(name, input_shape=(1, 8, 8), num_classes=5, **kw).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 8, 8, generator=g), torch.tensor([0, 3, 4])
    for norm in ("linf", "l2", "l1"):
        for method in ("ibp", "crown_ibp", "crown"):
            with torch.no_grad():
                lo, up = interval_bounds(m, x, eps=0.05, norm=norm, method=method)
                glo, gup = graph_interval_bounds(m, x, 0.05, norm, method, (0.0, 1.0), None)
                mb = margin_bounds(m, x, y, eps=0.05, norm=norm, method=method)
                gmb = graph_margin_bounds(m, x, y, 0.05, norm, method, (0.0, 1.0), None)
            torch.testing.assert_close(glo, lo, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(gup, up, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(gmb.masked_fill(F.one_hot(y, 5).bool(), 0), mb, atol=1e-5, rtol=1e-5)


def _interval_samples(lo, up, k=400):
    t = torch.linspace(0, 1, k).view(k, *[1] * lo.dim())
    return lo + (up - lo) * t


@pytest.mark.parametrize("kind", ["relu", "leaky", "tanh", "sigmoid"])
def test_elementwise_relaxations_are_sound_on_every_kind_of_interval(kind):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, generator=g) * 3
    b = a + torch.rand(500, generator=g) * torch.tensor([1e-8, 1e-3, 0.5, 5.0]).repeat(125)
    lo = torch.cat([a, torch.tensor([-1e4, -1e4, 1e4 - 1, -3.0])])
    up = torch.cat([b, torch.tensor([1e4, -1e4 + 1, 1e4, 3.0])])
    f, relax = {
        "relu": (torch.relu, _relax.relu_relaxation(lo, up)),
        "leaky": (lambda t: F.leaky_relu(t, 0.2), _relax.relu_relaxation(lo, up, 0.2)),
        "tanh": (torch.tanh, _relax.tanh_relaxation(lo, up)),
        "sigmoid": (torch.sigmoid, _relax.sigmoid_relaxation(lo, up)),
    }[kind]
    s_lo, t_lo, s_up, t_up = relax
    xs = _interval_samples(lo.double(), up.double())
    fx = f(xs)
    tol = 1e-5 * (1 + xs.abs())
    assert bool((fx >= s_lo * xs + t_lo - tol).all()), f"{kind}: lower line above the function"
    assert bool((fx <= s_up * xs + t_up + tol).all()), f"{kind}: upper line below the function"
    assert all(bool(torch.isfinite(r).all()) for r in relax)


def test_maxpool_relaxation_is_sound_with_overlapping_padded_windows():
    g = torch.Generator().manual_seed(0)
    p = _relax.maxpool_params(3, 2, 1)
    c = torch.randn(2, 2, 7, 7, generator=g)
    r = torch.rand(2, 2, 7, 7, generator=g) * torch.tensor([0.01, 1.0]).view(1, 2, 1, 1)
    lo, up = c - r, c + r
    lam = torch.randn(2, 4, 2, 4, 4, generator=g)
    lam_in, bias = _relax.maxpool_backward(lam, lo, up, p)
    xs = lo + (up - lo) * torch.rand((300, *lo.shape), generator=g)
    out = F.max_pool2d(xs.flatten(0, 1), 3, 2, 1).view(300, 2, 2, 4, 4)
    exact = torch.einsum("knchw,nschw->kns", out, lam)
    linear = torch.einsum("knchw,nschw->kns", xs, lam_in) + bias
    assert bool((exact >= linear - 1e-4).all())


def test_graph_models_bounds_contain_samples_and_tighten_with_crown():
    """CROWN-IBP and CROWN through residual adds, cat and MaxPool are sound and much tighter than IBP."""
    name = "residual_maxpool_fx"
    m = graph_model(name)
    x = torch.rand(4, *GRAPH_MODELS[name][1], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        widths = {meth: float((lambda b: (b[1] - b[0]).mean())(interval_bounds(m, x, eps=0.05, method=meth)))
                  for meth in ("ibp", "crown_ibp", "crown")}
    assert widths["crown"] <= widths["crown_ibp"] < 0.8 * widths["ibp"]


def test_unsupported_op_names_the_op_and_the_node_and_crown_points_to_ibp():
    class Exp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return torch.exp(self.fc(x)) - 1

    net, x = Exp(), torch.rand(2, 4)
    with pytest.raises(TypeError, match=r"the op exp at fx node 'exp'.*Supported layers: .*Conv2d"):
        interval_bounds(net, x, eps=0.1)
    register_ibp_rule(torch.exp)(lambda fn, args, kwargs: (args[0].lower.exp(), args[0].upper.exp()))
    try:
        lo, up = interval_bounds(net, x, eps=0.1)
        z = net(x)
        assert bool((lo <= z).all() and (z <= up).all())
        with pytest.raises(TypeError, match=r"CROWN bounds do not support the op exp at fx node 'exp'.*use method='ibp'"):
            interval_bounds(net, x, eps=0.1, method="crown_ibp")
    finally:
        IBP_RULES.pop(torch.exp)
    gelu = nn.Sequential(nn.Linear(4, 3), nn.GELU())
    with pytest.raises(TypeError, match=r"layer GELU.*fx node '_1', module '1'"):
        interval_bounds(gelu, x, eps=0.1)


def test_untraceable_model_and_two_inputs_get_clear_errors():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)  # data-dependent control flow

    with pytest.raises(TypeError, match="torch.fx can trace"):
        interval_bounds(Branchy(), torch.rand(2, 4), eps=0.1)

    class Nonlinear(nn.Module):  # x * x: two bounded factors
        def forward(self, x):
            return x * x

    with pytest.raises(TypeError, match="not two bounded tensors"):
        interval_bounds(Nonlinear(), torch.rand(2, 4), eps=0.1)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_single_linear_layer_matches_the_dual_norm_closed_form_and_is_attained(norm):
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    x = torch.rand(3, 6)
    eps = 0.3
    with torch.no_grad():
        lo, up = interval_bounds(lin, x, eps=eps, norm=norm)
        z = lin(x)
        dual = lin.weight.norm(dim=1) if norm == "l2" else lin.weight.abs().amax(1)
        torch.testing.assert_close(up, z + eps * dual)
        torch.testing.assert_close(lo, z - eps * dual)
        # the maximiser of row i lies in the ball and reaches the bound
        w = lin.weight
        if norm == "l2":
            d = eps * w / w.norm(dim=1, keepdim=True)
        else:
            d = eps * torch.eye(6)[w.abs().argmax(1)] * w.gather(1, w.abs().argmax(1, keepdim=True)).sign()
        reach = lin(x.unsqueeze(1) + d.unsqueeze(0))  # (N, rows, out)
        torch.testing.assert_close(reach.diagonal(dim1=1, dim2=2), up)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_conv_dual_norm_equals_the_rows_of_the_unfolded_operator_and_beats_the_box(norm):
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    x = torch.rand(2, 2, 7, 7)
    eps = 0.2
    with torch.no_grad():
        lo, up = interval_bounds(conv, x, eps=eps, norm=norm)
        jac = torch.autograd.functional.jacobian(lambda t: conv(t.view(1, 2, 7, 7)).flatten(), torch.zeros(98))
        dual = jac.norm(dim=1) if norm == "l2" else jac.abs().amax(1)
        torch.testing.assert_close((up - lo).flatten(1) / 2, (eps * dual).expand(2, -1), atol=1e-6, rtol=1e-5)
        box_lo, box_up = interval_bounds(conv, x, eps=eps, norm="linf", clip=None)  # the old fallback
    assert float((up - lo).sum()) < 0.7 * float((box_up - box_lo).sum())


def test_l2_and_l1_cnn_bounds_contain_samples():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 8, 8, generator=g)
    for norm in ("l2", "l1"):
        d = torch.randn((200, *x.shape), generator=g)
        if norm == "l1":
            d = d * (torch.rand(d.shape, generator=g) < 0.05)
        size = d.flatten(2).norm(dim=-1) if norm == "l2" else d.flatten(2).abs().sum(-1)
        xs = x + 0.5 * d / size.clamp_min(1e-9).view(200, 2, 1, 1, 1)
        with torch.no_grad():
            z = net(xs.flatten(0, 1)).view(200, 2, 5)
            for method in ("ibp", "crown_ibp", "crown"):
                lo, up = interval_bounds(net, x, eps=0.5, norm=norm, method=method)
                assert bool((z >= lo - 1e-4).all() and (z <= up + 1e-4).all()), (norm, method)


def test_memory_estimate_grows_with_width_and_method():
    x1 = torch.rand(1, 1, 8, 8)
    small = graph_model("residual_maxpool_fx")
    ibp, c = graph_bytes_per_sample(small, x1, "linf", "ibp")
    cibp, _ = graph_bytes_per_sample(small, x1, "linf", "crown_ibp")
    crown, _ = graph_bytes_per_sample(small, x1, "linf", "crown")
    assert c == 5 and 0 < ibp <= cibp <= crown
    # CROWN on the first hidden layer of 4x8x8 = 256 neurons: at least 256 rows x the 256-wide layer x 4 bytes
    assert crown >= 256 * 256 * 4


def test_crown_on_a_28x28_cnn_stays_under_a_memory_cap(capped_memory):
    """Full CROWN on a registry CNN at 28x28 with the default batch size and max_memory fits in 3 GiB of address space."""
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=(1, 28, 28), num_classes=10, channels=(2, 4), hidden=(16,)).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ok = verified(m, x, torch.zeros(3, dtype=torch.long), eps=0.001, method="crown", progress=False)
    assert ok.shape == (3,)
    big = math.prod((2, 28, 28))  # widest ReLU input
    per, _ = graph_bytes_per_sample(m, x[:1], "linf", "crown")
    assert per >= big * big * 4  # the estimate sees the full-CROWN working set of that layer


@pytest.mark.parametrize("method", ["ibp", "crown_ibp"])
def test_certified_training_gradients_flow_through_graph_models(method):
    """The ibp / crown_ibp objectives call margin_bounds with autograd on: it must be differentiable on fx graphs."""
    m = graph_model("concat_functional_fx").train()
    x = torch.rand(3, *GRAPH_MODELS["concat_functional_fx"][1], generator=torch.Generator().manual_seed(4))
    loss = F.cross_entropy(-margin_bounds(m, x, torch.tensor([0, 1, 2]), eps=0.02, method=method), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_shape_queries_in_forward_and_a_replaced_submodule_retraces():
    class Reshaper(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(x.reshape(x.shape[0], -1)) + torch.add(x.sum(dim=(1, 2)).unsqueeze(1), 1.0, alpha=2)

    torch.manual_seed(0)
    m, x = Reshaper(), torch.rand(2, 3, 4)
    for method in ("ibp", "crown"):
        lo, up = interval_bounds(m, x, eps=0.1, method=method)
        z = m(x)
        assert lo.shape == (2, 3) and bool((lo <= z).all() and (z <= up).all())
    m.fc = nn.Linear(12, 5)  # same names and types, new module: the cached trace must not be reused
    assert interval_bounds(m, x, eps=0.1)[0].shape == (2, 5)
