"""Pure IBP (no autograd) lets a layer overwrite the input bounds it alone holds (``_rules.propagate_owned`` in
chains, ``_graph._Owned`` in fx graphs): the same bounds, bit for bit, as the allocating rules, and never a write
into a tensor someone else holds (the caller's input, a module's buffers, a node's bounds that another node
still reads, or a view of them)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from robustlab.certify import _graph, _rules, interval_bounds, margin_bounds


@pytest.fixture
def allocating(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A switch to the rules that allocate every output (the reference)."""
    def off() -> None:
        monkeypatch.setattr(_rules, "owned_twin", lambda m: None)
        monkeypatch.setattr(_graph._Owned, "sole_input", lambda self, node, env: False)

    return off


def _bounds(model: nn.Module, x: torch.Tensor, eps: float, **kw: Any) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(interval_bounds(model, x, eps=eps, **kw))


def _chain() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Identity(),
                      nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(), nn.Linear(6 * 2 * 2, 16), nn.Tanh(),
                      nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    m.train()
    with torch.no_grad():
        m(torch.rand(8, 1, 8, 8))
    return m.eval()


class _ResBlock(nn.Module):
    """relu(h) feeds both a branch and the residual add; a flatten view and a reshape view of one node."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)
        self.fc2 = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c0(x))
        h = torch.relu(h + self.c2(torch.relu(self.c1(h))))
        a, b = torch.flatten(h, 1), h.reshape(h.shape[0], -1)  # two views of h, both read after each other
        return self.fc(torch.relu(a)) + self.fc2(b)


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.2])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_chain_bounds_equal_the_allocating_rules_bit_for_bit(eps: float, norm: str, allocating: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    m, x = _chain(), torch.rand(20, 1, 8, 8)
    monkeypatch.setattr("robustlab.certify.ibp.IBP_BLOCK_BYTES", 4 * 4 * 8 * 8 * 4)  # several sample blocks
    got = _bounds(m, x, eps, norm=norm)
    allocating()
    ref = _bounds(m, x, eps, norm=norm)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_graph_bounds_and_margins_equal_the_allocating_rules(norm: str, allocating: Any) -> None:
    torch.manual_seed(1)
    m, x, y = _ResBlock().eval(), torch.rand(6, 1, 8, 8), torch.randint(0, 5, (6,))
    got = _bounds(m, x, 0.05, norm=norm)
    with torch.no_grad():
        got_margin = margin_bounds(m, x, y, eps=0.05, norm=norm)
    allocating()
    ref = _bounds(m, x, 0.05, norm=norm)
    with torch.no_grad():
        ref_margin = margin_bounds(m, x, y, eps=0.05, norm=norm)
    assert all(torch.equal(a, b) for a, b in zip(got, ref)) and torch.equal(got_margin, ref_margin)
    # and sound: sampled points of the box stay inside
    with torch.no_grad():
        for _ in range(20):
            xs = (x + (torch.rand_like(x) * 2 - 1) * 0.05).clamp(0, 1) if norm == "linf" else x
            z = m(xs)
            assert (z >= got[0] - 1e-5).all() and (z <= got[1] + 1e-5).all()


class _Fixed(nn.Module):
    """A layer whose registered rule returns its own buffers as bounds (they alias module state)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("lo", -torch.ones(1, 5))
        self.register_buffer("hi", torch.ones(1, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 5)


def test_bounds_that_alias_module_state_or_the_input_are_never_overwritten() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), _Fixed(), nn.ReLU(), nn.Identity(), nn.Linear(5, 3)).eval()
    x = torch.rand(4, 1, 4, 4)
    x0 = x.clone()
    _rules.register_ibp_rule(_Fixed)(lambda m, lower, upper: (m.lo.expand(len(lower), -1), m.hi.expand(len(lower), -1)))
    try:
        lo, up = _bounds(m, x, 0.0, clip=None)
    finally:
        _rules.IBP_RULES.pop(_Fixed)
    fixed = m[2]
    assert torch.equal(fixed.lo, -torch.ones(1, 5)) and torch.equal(fixed.hi, torch.ones(1, 5))
    assert torch.equal(x, x0)
    w, b = m[5].weight, m[5].bias
    c, r = w @ torch.full((5,), 0.5) + b, w.abs() @ torch.full((5,), 0.5)  # relu([-1, 1]) = [0, 1]
    assert torch.allclose(lo, (c - r).expand(4, -1), atol=1e-6) and torch.allclose(up, (c + r).expand(4, -1), atol=1e-6)


def test_autograd_keeps_the_allocating_rules() -> None:
    # certified training differentiates through the bounds: no layer may overwrite a tensor autograd saved
    m, x = _chain(), torch.rand(5, 1, 8, 8)
    lo, up = interval_bounds(m, x, eps=0.05)
    (up - lo).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    for method in ("crown_ibp", "crown"):  # these keep every layer's bounds (records)
        with torch.no_grad():
            got = interval_bounds(m, x, eps=0.05, method=method)
        assert (got[0] <= got[1]).all()
