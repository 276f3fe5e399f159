"""certify.lipschitz_bound on arbitrary torch.fx graphs: per-node rules, soundness by sampled and optimised pairs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certify import lipschitz, lipschitz_bound
from robustlab.testing._models_lipschitz import sampled_lipschitz_ratio


class ResNetLike(nn.Module):
    """A residual CNN written as a plain module: no Sequential/Residual for a module-tree walk to follow."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.head_a = nn.Linear(4, 3)
        self.head_b = nn.Linear(4 * 3 * 3, 3)
        self.register_buffer("scale", torch.tensor([0.5, -2.0, 1.0, 0.25]).view(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = h + self.conv2(torch.relu(self.conv1(h)))  # residual add
        h = h * self.scale  # a constant per-channel scale
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        small = F.max_pool2d(h, 2)
        z = torch.cat([self.head_a(pooled), self.head_b(small.reshape(small.shape[0], -1))], dim=1)
        return z[:, :3] - 0.5 * z[:, 3:]


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = ResNetLike()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    return m.eval()


def _sigma(layer: nn.Module, shape) -> float:
    from robustlab.certify._spectral import spectral_norm

    return spectral_norm(layer, shape)


def test_residual_graph_bound_is_the_rule_composition():
    m = _model()
    b = lipschitz_bound(m, (2, 6, 6))
    bn = float((m.bn.weight.double() / torch.sqrt(m.bn.running_var.double() + m.bn.eps)).abs().max())
    trunk = _sigma(m.stem, (2, 6, 6)) * bn
    trunk = trunk * (1 + _sigma(m.conv1, (4, 6, 6)) * _sigma(m.conv2, (4, 6, 6))) * 2.0  # max |scale| = 2
    a = trunk / 6 * _sigma(m.head_a, (4,))  # adaptive avg pool over 36 positions: 1/√36
    c = trunk * 1.0 * _sigma(m.head_b, (36,))  # disjoint 2x2 max pool: 1
    want = math.sqrt(a ** 2 + c ** 2) * (1 + 0.5)  # cat, then z[:, :3] − 0.5·z[:, 3:]
    assert b.value == pytest.approx(want, rel=1e-9)
    assert b.method == "svd" and {"stem", "bn", "conv1", "conv2", "head_a", "head_b"} <= {n for n, _, _ in b.layers}


def test_residual_graph_bound_is_sound_against_sampled_and_optimised_pairs():
    m = _model()
    b = lipschitz_bound(m, (2, 6, 6))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 2, 6, 6, generator=g)
    assert sampled_lipschitz_ratio(m, x, generator=g) <= b.value
    # gradient ascent on ‖f(x) − f(x')‖ / ‖x − x'‖ over pairs: the worst ratio found stays below the bound
    x = x.clone().requires_grad_(True)
    d = (0.1 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([x, d], lr=0.02)
    worst = 0.0
    for _ in range(150):
        ratio = (m(x + d) - m(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
        worst = max(worst, float(ratio.max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    assert 0 < worst <= b.value  # a product bound: sound, not tight (about 25x here)


def test_certificate_on_a_graph_model_holds():
    m = _model()
    x = torch.rand(8, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = m(x).argmax(1)
    cert = lipschitz(m, x, y)
    r = cert.radius.clamp_min(0).float().view(-1, 1, 1, 1) * 0.999
    for seed in range(5):
        d = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            assert torch.equal(m(x + d * r / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).argmax(1), y)


class Ops(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        self.register_buffer("gate", torch.tensor([1.0, 4.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.w)  # σ = 3
        h = torch.tanh(h) / 2 + h.mean(1, keepdim=True)  # 1/2, plus a 3-way mean broadcast back: 1/√3·√3 = 1
        g = F.leaky_relu(x, 0.2) * self.gate  # max |gate| = 4
        return torch.cat([h, g], dim=1).sigmoid()


def test_functional_ops_rules():
    b = lipschitz_bound(Ops(), (2,))
    assert b.value == pytest.approx(math.sqrt((3 * 0.5 + 3 * 1.0) ** 2 + 4.0 ** 2) * 0.25, rel=1e-12)
    assert sampled_lipschitz_ratio(Ops(), torch.randn(64, 2)) <= b.value


def test_unsupported_nodes_are_named():
    class Gather(nn.Module):
        def forward(self, x):
            return x[:, [0, 0, 1]]  # advanced indexing copies entries

    with pytest.raises(TypeError, match=r"'getitem' at graph node 'getitem'.*copy entries.*Supported"):
        lipschitz_bound(Gather(), (3,))

    class Softmaxed(nn.Module):
        def forward(self, x):
            return torch.softmax(x, 1)

    with pytest.raises(TypeError, match=r"layer 'softmax' \(call_function 'softmax'.*Supported: .*Linear"):
        lipschitz_bound(Softmaxed(), (3,))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Bilinear(3, 3, 2)

        def forward(self, x):
            return self.lin(x, x)

    with pytest.raises(TypeError, match=r"layer 'lin' \(Bilinear with several input-dependent arguments\)"):
        lipschitz_bound(Twice(), (3,))

    class AlwaysDropout(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5)  # training=True by default: active even in eval mode

    with pytest.raises(TypeError, match="training=True"):
        lipschitz_bound(AlwaysDropout(), (3,))

    class EvalDropout(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=self.training)

    assert lipschitz_bound(EvalDropout(), (3,)).value == 1.0

    class Reflect(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 1), mode="reflect")  # copies border entries

    with pytest.raises(TypeError, match="copying mode"):
        lipschitz_bound(Reflect(), (2, 4))

    class Divide(nn.Module):
        def forward(self, x):
            return 1.0 / (x + 2)

    with pytest.raises(TypeError, match="division by, a constant"):
        lipschitz_bound(Divide(), (3,))


def test_constant_branches_and_extra_inputs_count_zero():
    class WithBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.offset = nn.Parameter(torch.ones(3))

        def forward(self, x, temperature: float = 2.0):
            return self.lin(x) / temperature + torch.exp(self.offset) * 0  # constant branch: any op allowed

    m = WithBias()
    b = lipschitz_bound(m, (3,))
    assert b.value == pytest.approx(_sigma(m.lin, (3,)) / 2.0, rel=1e-12)
