"""IBP / CROWN-IBP bounds: closed forms, an independent interval computation, soundness, training."""

import math

import pytest
import torch
from torch import nn

from robustlab.certify import (
    certified_accuracy,
    interval_bounds,
    margin_bounds,
    register_ibp_rule,
    supported_layers,
    tightness,
)
from robustlab.models import Normalize, Residual


def _mlp(seed=0, d=6, h=12, c=4):
    torch.manual_seed(seed)
    return nn.Sequential(Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                         nn.Linear(h, c)).eval()


def _naive_intervals(layers, lower, upper):
    """Independent float64 interval arithmetic with explicit positive/negative weight parts."""
    lo, up = lower.double(), upper.double()
    for m in layers:
        if isinstance(m, nn.Linear):
            w, b = m.weight.double(), m.bias.double()
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            lo, up = lo @ wp.T + up @ wn.T + b, up @ wp.T + lo @ wn.T + b
        elif isinstance(m, nn.ReLU):
            lo, up = lo.clamp(min=0), up.clamp(min=0)
        elif isinstance(m, nn.Flatten):
            lo, up = lo.flatten(1), up.flatten(1)
        elif isinstance(m, Normalize):
            lo, up = (lo - 0.5) / 0.25, (up - 0.5) / 0.25
        else:
            raise AssertionError(type(m))
    return lo, up


def _ball(x, eps, k, g, norm="linf"):
    if norm == "linf":
        d = torch.cat([torch.randint(0, 2, (k // 2, *x.shape), generator=g) * 2.0 - 1,
                       torch.rand((k - k // 2, *x.shape), generator=g) * 2 - 1]) * eps
        return (x + d).clamp(0, 1)
    d = torch.randn((k, *x.shape), generator=g)
    d = d / d.flatten(2).norm(dim=2).view(k, x.shape[0], *[1] * (x.dim() - 1))
    return x + d * eps * torch.rand((k, x.shape[0], *[1] * (x.dim() - 1)), generator=g).sqrt()


def test_linear_model_bounds_are_exact():
    g = torch.Generator().manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    x = torch.rand(5, 2, 4, generator=g)
    w, b = lin[1].weight, lin[1].bias
    z = x.flatten(1) @ w.T + b
    with torch.no_grad():
        for method in ("ibp", "crown_ibp", "crown"):
            lo, up = interval_bounds(lin, x, eps=0.1, clip=None, method=method)
            torch.testing.assert_close(lo, z - 0.1 * w.abs().sum(1))
            torch.testing.assert_close(up, z + 0.1 * w.abs().sum(1))
            lo, up = interval_bounds(lin, x, eps=0.1, norm="l2", method=method)
            torch.testing.assert_close(up, z + 0.1 * w.norm(dim=1))
        # the extreme point is reached: the bound is attained (exact, not just sound)
        x_star = x.flatten(1) + 0.1 * w[0].sign()
        torch.testing.assert_close(lin[1](x_star)[:, 0], up[:, 0] - 0.1 * w[0].norm() + 0.1 * w[0].abs().sum())


def test_ibp_equals_independent_interval_computation():
    net = _mlp()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(7, 6, generator=g)
    with torch.no_grad():
        lo, up = interval_bounds(net, x, eps=0.05)
    ref_lo, ref_up = _naive_intervals(list(net), (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1))
    torch.testing.assert_close(lo.double(), ref_lo, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(up.double(), ref_up, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["ibp", "crown_ibp", "crown"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bounds_contain_sampled_points_and_crown_is_tighter(method, norm):
    net = _mlp(seed=2)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 6, generator=g), torch.tensor([0, 1, 2, 3])
    eps = 0.08
    xs = _ball(x, eps, 600, g, norm)
    with torch.no_grad():
        z = net(xs.reshape(-1, 6)).reshape(600, 4, 4)
        lo, up = interval_bounds(net, x, eps=eps, norm=norm, method=method)
        assert bool((z >= lo - 1e-5).all() and (z <= up + 1e-5).all())
        mb = margin_bounds(net, x, y, eps=eps, norm=norm, method=method)
        m = z.gather(2, y.view(1, 4, 1).expand(600, 4, 1)) - z
        assert bool((m >= mb - 1e-5).all())
        lo_i, up_i = interval_bounds(net, x, eps=eps, norm=norm)
        assert bool((up - lo <= up_i - lo_i + 1e-5).all())
        # the specification matrix is at least as tight as comparing raw intervals
        naive = lo.gather(1, y[:, None]) - up
        assert bool((mb >= naive - 1e-5).all())


def test_spec_matrix_strictly_tighter_than_raw_intervals():
    net = _mlp(seed=3)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
    with torch.no_grad():
        lo, up = interval_bounds(net, x, eps=0.05)
        mb = margin_bounds(net, x, y, eps=0.05)
    naive = (lo.gather(1, y[:, None]) - up).masked_fill(nn.functional.one_hot(y, 4).bool(), 0)
    assert float((mb - naive).sum()) > 1e-3


def test_conv_batchnorm_pool_residual_soundness():
    torch.manual_seed(4)
    body = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    net = nn.Sequential(Normalize([0.4, 0.5, 0.6], [0.2, 0.3, 0.25], (3, 8, 8)), nn.Conv2d(3, 3, 3, padding=1),
                        Residual(body, nn.Identity()), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(48, 5))
    with torch.no_grad():
        body[0].running_mean.uniform_(-0.5, 0.5)
        body[0].running_var.uniform_(0.5, 2)
        body[0].weight.uniform_(-1, 1)  # negative scales too
    net.eval()
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 8, 8, generator=g)
    xs = _ball(x, 0.03, 200, g)
    with torch.no_grad():
        z = net(xs.reshape(-1, 3, 8, 8)).reshape(200, 3, 5)
        lo, up = interval_bounds(net, x, eps=0.03)
    assert bool((z >= lo - 1e-4).all() and (z <= up + 1e-4).all())
    with torch.no_grad():  # the residual block goes through the fx graph interpreter for CROWN-IBP
        lc, uc = interval_bounds(net, x, eps=0.03, method="crown_ibp")
    assert bool((z >= lc - 1e-4).all() and (z <= uc + 1e-4).all()) and bool((uc - lc <= up - lo + 1e-5).all())


def test_unsupported_layer_lists_supported_ones_and_custom_rules_register():
    class Double(nn.Module):  # exp has no IBP rule (fx traces this forward into torch.exp)
        def forward(self, x):
            return 2 * torch.exp(x)

    net = nn.Sequential(nn.Linear(3, 3), Double())
    with pytest.raises(TypeError, match="Supported layers: .*Conv2d.*Linear"):
        interval_bounds(net, torch.rand(2, 3), eps=0.1)
    register_ibp_rule(Double)(lambda m, lo, up: (2 * lo.exp(), 2 * up.exp()))
    lo, up = interval_bounds(net, torch.rand(2, 3), eps=0.1)
    assert bool((lo <= up).all()) and "Double" in supported_layers()
    with pytest.raises(ValueError, match="already registered"):
        register_ibp_rule(Double)(lambda m, lo, up: (lo, up))


def test_bad_arguments_raise():
    net = _mlp()
    x = torch.rand(2, 6)
    with pytest.raises(ValueError, match="'eps' parameter"):
        interval_bounds(net, x, eps=-1.0)
    with pytest.raises(ValueError, match="'norm' parameter"):
        interval_bounds(net, x, eps=0.1, norm="l7")
    with pytest.raises(ValueError, match="'method' parameter"):
        interval_bounds(net, x, eps=0.1, method="deepz")


def test_bounds_finite_for_huge_logits():
    net = _mlp()
    with torch.no_grad():
        net[-1].weight.mul_(3e4)
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = net(x)
        assert float(z.abs().max()) > 5e3
        for method in ("ibp", "crown_ibp"):
            mb = margin_bounds(net, x, z.argmax(1), eps=0.1, method=method)
            assert bool(torch.isfinite(mb).all())


def test_certified_accuracy_at_zero_is_clean_accuracy_and_decreases():
    net = _mlp(seed=5)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(64, 6, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
        y[:16] = (y[:16] + 1) % 4  # a quarter wrong
    accs = [certified_accuracy(net, (x, y), eps=e) for e in (0.0, 0.01, 0.05, 0.2)]
    assert accs[0] == pytest.approx(0.75)
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert certified_accuracy(net, (x, y), eps=0.05, method="crown") >= accs[2]


def test_tightness_deep_linear_closed_form_and_range():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3))
    x = torch.rand(4, 5)
    w1, w2, w3 = (m.weight for m in net)
    ref = ((w3 @ w2 @ w1).abs().sum(1) / (w3.abs() @ w2.abs() @ w1.abs()).sum(1)).mean()
    torch.testing.assert_close(tightness(net, x), ref)
    t = tightness(_mlp(), torch.rand(8, 6), torch.randint(0, 4, (8,)))
    assert 0 < float(t) <= 1


def test_ibp_objective_schedule_and_metrics():
    from robustlab.training.objectives import get

    obj = get("ibp", eps=0.2, warmup=0.2, rampup=0.4)
    obj.setup(model=nn.Linear(2, 2), epochs=10, steps_per_epoch=10, num_classes=2, num_train=100,
              generator=torch.Generator().manual_seed(0))
    eps0, k0 = obj.schedule(0)
    assert (eps0, k0) == (0.0, 1.0)
    assert obj.schedule(19) == (0.0, 1.0)  # warm-up: 20 steps
    e, k = obj.schedule(39)  # half-way through the 40-step ramp
    assert e == pytest.approx(0.5 * 1.1 * 0.2) and k == pytest.approx(0.75)
    assert obj.schedule(59) == pytest.approx((1.1 * 0.2, 0.5))
    assert obj.schedule(99) == pytest.approx((1.1 * 0.2, 0.5))
    obj.on_epoch_start(4)
    assert obj._step == 40


def test_ibp_training_raises_certified_accuracy():
    from robustlab.data import load
    from robustlab.models import create
    from robustlab.training import fit

    data = load("gaussians", num_classes=3, dim=6, n_train=300, n_test=150, separation=3.0, seed=0)
    accs = {}
    for objective in ("standard", "ibp"):
        torch.manual_seed(0)
        model = create("mlp", input_shape=data.input_shape, num_classes=3, hidden=(32,))
        kw = {"eps": 0.1} if objective == "ibp" else None
        res = fit(model, data, objective=objective, objective_kw=kw, epochs=12, batch_size=50, optimizer="adam",
                  lr=0.01, weight_decay=0.0, progress=False, seed=0)
        accs[objective] = certified_accuracy(res.model, data, eps=0.1)
        if objective == "ibp":
            h = res.history
            assert h["train_eps"][0] < h["train_eps"][-1] == pytest.approx(0.11)
            assert h["train_kappa"][-1] == pytest.approx(0.5)
            assert all(0 < t <= 1 for t in h["train_tightness"])
    assert accs["ibp"] > accs["standard"] + 0.05, accs
    assert not math.isnan(accs["ibp"])


def test_linear_model_margins_are_exact_for_both_norms():
    torch.manual_seed(7)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    x, y = torch.rand(3, 6), torch.tensor([0, 2, 3])
    w, b = lin[1].weight, lin[1].bias
    cw = w[y].unsqueeze(1) - w.unsqueeze(0)
    margin = (x @ w.T + b).gather(1, y[:, None]) - (x @ w.T + b)
    with torch.no_grad():
        torch.testing.assert_close(margin_bounds(lin, x, y, eps=0.1, norm="l2"), margin - 0.1 * cw.norm(dim=2))
        torch.testing.assert_close(margin_bounds(lin, x, y, eps=0.1, clip=None), margin - 0.1 * cw.abs().sum(2))


@pytest.mark.parametrize("method", ["crown_ibp", "crown"])
def test_crown_through_conv_batchnorm_pool_is_sound_and_tighter(method):
    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(-1, 1)
    net.eval()
    g = torch.Generator().manual_seed(8)
    x, y = torch.rand(3, 1, 8, 8, generator=g), torch.tensor([0, 1, 2])
    xs = _ball(x, 0.05, 300, g)
    with torch.no_grad():
        z = net(xs.reshape(-1, 1, 8, 8)).reshape(300, 3, 3)
        lo, up = interval_bounds(net, x, eps=0.05, method=method)
        lo_i, up_i = interval_bounds(net, x, eps=0.05)
        mb = margin_bounds(net, x, y, eps=0.05, method=method)
    assert bool((z >= lo - 1e-5).all() and (z <= up + 1e-5).all())
    assert bool((up - lo <= up_i - lo_i + 1e-5).all()) and float((up_i - lo_i - (up - lo)).sum()) > 0
    m = z.gather(2, y.view(1, 3, 1).expand(300, 3, 1)) - z
    assert bool((m >= mb - 1e-5).all())


@pytest.mark.parametrize("method", ["ibp", "crown_ibp", "crown"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bare_linear_margin_bound_is_exact(method, norm):
    # margin z_y − z_j = (w_y − w_j)·x' + (b_y − b_j): its minimum over the ball is the centre value minus
    # eps times the dual norm of w_y − w_j (the specification matrix folded in, also for a lone nn.Linear)
    torch.manual_seed(7)
    lin = nn.Linear(5, 3)
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(7))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    eps = 0.05
    with torch.no_grad():
        mb = margin_bounds(lin, x, y, eps=eps, norm=norm, method=method, clip=None)
        z = lin(x).double()
        d = (lin.weight[y][:, None, :] - lin.weight[None]).double()
        dual = d.abs().sum(-1) if norm == "linf" else d.norm(dim=-1)
    exact = (z.gather(1, y[:, None]) - z - eps * dual).masked_fill(nn.functional.one_hot(y, 3).bool(), 0.0)
    torch.testing.assert_close(mb.double(), exact, rtol=1e-5, atol=1e-5)


def test_inputs_outside_the_clip_box_raise_instead_of_unsound_bounds():
    # a normalised input (outside [0, 1]) with the default clip=(0, 1): the clipped box would not even
    # contain x, so the "bounds" would not hold at x itself
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = (torch.rand(5, 4, generator=torch.Generator().manual_seed(8)) - 0.5) / 0.2
    y = torch.zeros(5, dtype=torch.long)
    with torch.no_grad():
        for fn in (lambda: interval_bounds(net, x, eps=0.01), lambda: margin_bounds(net, x, y, eps=0.01),
                   lambda: certified_accuracy(net, (x, y), eps=0.01)):
            with pytest.raises(ValueError, match="Normalize"):
                fn()
        with pytest.raises(ValueError, match="'clip' parameter"):
            interval_bounds(net, x.clamp(0, 1), eps=0.01, clip=(1.0, 0.0))
        lo, up = interval_bounds(net, x, eps=0.01, clip=None)  # an unclipped box is sound anywhere
        z = net(x)
        assert bool((z >= lo - 1e-5).all() and (z <= up + 1e-5).all())
