"""The no-grad IBP rules derive ``W/2``, ``|W|/2`` (and BatchNorm's halved affine map) once per bound computation:
the same bounds, bit for bit, as the rules that recompute them per layer call, and nothing kept between calls
(an optimizer step between two calls, even one that does not bump a version counter, is always seen)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.certify import _rules, interval_bounds, margin_bounds


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 12),
                      nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(16, 1, 8, 8))  # running statistics away from (0, 1)
    return m.eval()


def _recomputed(m: nn.Module, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules that recompute everything: autograd on and recording the weights (certified training)."""
    with torch.enable_grad():
        lo, up = interval_bounds(m, x, eps=eps)
    assert lo.requires_grad
    return lo.detach(), up.detach()


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3])
def test_memo_rules_equal_recomputed_bit_for_bit(eps: float, monkeypatch: pytest.MonkeyPatch) -> None:
    m, x = _model(), torch.rand(40, 1, 8, 8)
    made: list[int] = []
    memo = _rules._memo

    def counting(layer, make, *weights):  # type: ignore[no-untyped-def]
        out = memo(layer, make, *weights)
        made.append(id(layer))
        return out

    monkeypatch.setattr(_rules, "_memo", counting)
    monkeypatch.setattr("robustlab.certify.ibp.IBP_BLOCK_BYTES", 4 * 4 * 6 * 6 * 4)  # several sample blocks
    with torch.no_grad():
        lo, up = interval_bounds(m, x, eps=eps)
    assert len(made) > 5 and _rules._CALL_MEMO.get() is None  # used across the blocks, gone after the call
    monkeypatch.setattr(_rules, "_memo", lambda *a: None)  # the per-layer-call rules, on the same blocks
    with torch.no_grad():
        ref = interval_bounds(m, x, eps=eps)
    assert torch.equal(lo, ref[0]) and torch.equal(up, ref[1])


def test_margin_bounds_and_crown_unchanged_by_the_memo() -> None:
    m, x, y = _model(), torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for method in ("ibp", "crown_ibp", "crown"):
        with torch.no_grad():
            got = margin_bounds(m, x, y, eps=0.05, method=method)
        with torch.enable_grad():
            ref = margin_bounds(m, x, y, eps=0.05, method=method).detach()
        assert torch.allclose(got, ref, rtol=0, atol=1e-6), method


@pytest.mark.parametrize("optimizer", ["sgd", "adam_fused", "inplace", "bn_stats"])
def test_weight_changes_between_calls_are_seen(optimizer: str) -> None:
    # fused Adam and BatchNorm's running-statistics update do not bump version counters: nothing may be kept
    m, x = _model(), torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        before = interval_bounds(m, x, eps=0.1)
    if optimizer == "inplace":
        with torch.no_grad():
            m[4].weight.mul_(3.0)
    elif optimizer == "bn_stats":
        m.train()
        with torch.no_grad():
            m(x * 5.0)
        m.eval()
    else:
        opt = (torch.optim.SGD(m.parameters(), lr=0.5) if optimizer == "sgd"
               else torch.optim.Adam(m.parameters(), lr=0.1, fused=True))
        m(x).square().mean().backward()
        opt.step()
    with torch.no_grad():
        after = interval_bounds(m, x, eps=0.1)
    ref = _recomputed(m, x, 0.1)
    assert not torch.equal(before[0], after[0])
    assert torch.equal(after[0], ref[0]) and torch.equal(after[1], ref[1])
