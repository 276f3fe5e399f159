"""CROWN / CROWN-IBP fast path: one backward pass for lower and upper bounds, the identity folded into the last
Linear, the first Linear concretised through its outputs, blocks of samples, in-place relaxations.

Bounds are checked against a plain float64 CROWN written here from the definitions (dense operators, an
explicit identity specification, separate lower and upper passes).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.certify import _crown, interval_bounds, margin_bounds
from robustlab.certify._relax import apply_relaxation, relu_relaxation


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


def _cnn() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 3 * 3, 12), nn.ReLU(), nn.Linear(12, 5)).eval()


def _x(n: int = 7) -> torch.Tensor:
    return torch.rand((n, 1, 6, 6), generator=torch.Generator().manual_seed(2))


def _operators(model: nn.Sequential, shape: tuple[int, ...]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The network as ("affine", W, b) / ("relu", -, -) steps on flat vectors (float64, dense W)."""
    steps, cur = [], shape
    for m in model:
        if isinstance(m, nn.ReLU):
            steps.append(("relu", torch.empty(0), torch.empty(0)))
            continue
        k = 1
        for d in cur:
            k *= d
        if isinstance(m, nn.Flatten):
            cur = (k,)
            continue
        basis = torch.eye(k, dtype=torch.float64).view(k, *cur)
        zero = torch.zeros((1, *cur), dtype=torch.float64)
        with torch.no_grad():
            b = m(zero).flatten(1)[0]
            w = (m(basis).flatten(1) - b).T
            cur = tuple(m(zero).shape[1:])
        steps.append(("affine", w, b))
    return steps


def _reference_crown(model: nn.Sequential, x: torch.Tensor, eps: float, norm: str, full: bool):
    """Element-wise bounds of the logits: float64 CROWN(-IBP) from the definitions, one sample at a time."""
    steps = _operators(model.double(), tuple(x.shape[1:]))
    model.float()
    los, ups = [], []
    for xi in x.double().flatten(1):
        lo_in, up_in = ((xi - eps).clamp(0, 1), (xi + eps).clamp(0, 1)) if norm == "linf" else (None, None)

        def back(k: int, spec: torch.Tensor, pre: list, xi=xi, lo_in=lo_in, up_in=up_in) -> torch.Tensor:
            """Lower bound of spec @ (output of steps[:k]) over the input set."""
            lam, bias = spec, torch.zeros(spec.shape[0], dtype=torch.float64)
            for j in reversed(range(k)):
                kind, w, b = steps[j]
                if kind == "affine":
                    bias = bias + lam @ b
                    lam = lam @ w
                    continue
                lo, up = pre[j]
                act, dead = lo >= 0, up <= 0
                chord = torch.where(act | dead, torch.zeros_like(up), up / (up - lo).clamp_min(1e-12))
                s_up = torch.where(act, torch.ones_like(up), chord)
                t_up = torch.where(act | dead, torch.zeros_like(up), -lo * chord)
                s_lo = torch.where(act, torch.ones_like(up), torch.where(dead, torch.zeros_like(up),
                                                                          (up > -lo).double()))
                pos, neg = lam.clamp(min=0), lam.clamp(max=0)
                bias = bias + neg @ t_up
                lam = pos * s_lo + neg * s_up
            if norm == "linf":
                return bias + lam.clamp(min=0) @ lo_in + lam.clamp(max=0) @ up_in
            return bias + lam @ xi - eps * lam.norm(dim=1)

        pre: list = [None] * len(steps)
        # IBP (the L2 ball is bounded exactly at the first affine layer, as robustlab and auto_LiRPA do)
        cen, rad = ((lo_in + up_in) / 2, (up_in - lo_in) / 2) if norm == "linf" else (xi, None)
        lo = up = None
        for j, (kind, w, b) in enumerate(steps):
            if kind == "relu":
                if full and j > 1:
                    eye = torch.eye(lo.numel(), dtype=torch.float64)
                    lo = torch.maximum(lo, back(j, eye, pre))
                    up = torch.minimum(up, -back(j, -eye, pre))
                pre[j] = (lo, up)
                lo, up = lo.clamp(min=0), up.clamp(min=0)
                continue
            if lo is None:
                z = w @ cen + b
                r = w.abs() @ rad if norm == "linf" else eps * w.norm(dim=1)
            else:
                c, r0 = (lo + up) / 2, (up - lo) / 2
                z, r = w @ c + b, w.abs() @ r0
            lo, up = z - r, z + r
        eye = torch.eye(lo.numel(), dtype=torch.float64)
        los.append(torch.maximum(lo, back(len(steps), eye, pre)))
        ups.append(torch.minimum(up, -back(len(steps), -eye, pre)))
    return torch.stack(los), torch.stack(ups)


@pytest.mark.parametrize("build", [_mlp, _cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("method", ["crown_ibp", "crown"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.4)])
def test_bounds_equal_a_float64_reference_crown(build, method, norm, eps):
    model, x = build(), _x()
    ref_lo, ref_up = _reference_crown(model, x, eps, norm, full=method == "crown")
    with torch.no_grad():
        lo64, up64 = interval_bounds(model.double(), x.double(), eps=eps, norm=norm, method=method)
        model.float()
        lo, up = interval_bounds(model, x, eps=eps, norm=norm, method=method)
    torch.testing.assert_close(lo64, ref_lo, rtol=0, atol=1e-10)
    torch.testing.assert_close(up64, ref_up, rtol=0, atol=1e-10)
    scale = float(ref_up.abs().max())
    assert float((lo.double() - ref_lo).abs().max()) <= 2e-6 * scale
    assert float((up.double() - ref_up).abs().max()) <= 2e-6 * scale


def test_crown_ibp_bounds_lower_and_upper_in_one_backward_pass_from_the_folded_last_layer(monkeypatch):
    model, x = _mlp(), _x()
    calls = []
    real = _crown._crown_backward

    def spy(layers, records, lam, *args, **kw):
        calls.append((len(layers), tuple(lam.shape)))
        return real(layers, records, lam, *args, **kw)

    monkeypatch.setattr(_crown, "_crown_backward", spy)
    with torch.no_grad():
        interval_bounds(model, x, eps=0.05, method="crown_ibp")
    # one pass through all but the last Linear, rows [W; -W] shared by the batch (no identity matrix, no 2nd pass)
    assert calls == [(len(model) - 1, (1, 2 * 5, 16))]


def test_sample_blocks_give_the_same_bounds(monkeypatch):
    model, x = _cnn(), _x(9)
    y = torch.arange(9) % 5
    with torch.no_grad():
        whole = [interval_bounds(model, x, eps=0.05, method=m) for m in ("crown_ibp", "crown")]
        whole_mb = margin_bounds(model, x, y, eps=0.05, method="crown_ibp")
    calls = []
    real = _crown._crown_backward

    def spy(layers, records, lam, x_, *args, **kw):
        calls.append(x_.shape[0])
        return real(layers, records, lam, x_, *args, **kw)

    monkeypatch.setattr(_crown, "_crown_backward", spy)
    monkeypatch.setattr(_crown, "BLOCK_BYTES", 1)  # one sample per block
    with torch.no_grad():
        blocked = [interval_bounds(model, x, eps=0.05, method=m) for m in ("crown_ibp", "crown")]
        blocked_mb = margin_bounds(model, x, y, eps=0.05, method="crown_ibp")
    assert calls and max(calls) == 1
    for (a, b), (c, d) in zip(whole, blocked):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b, d, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(whole_mb, blocked_mb, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample rows", "shared rows"])
def test_in_place_relaxation_equals_the_autograd_path_and_the_definition(shared):
    g = torch.Generator().manual_seed(4)
    lo = torch.randn(5, 30, generator=g)
    up = lo + torch.rand(5, 30, generator=g)
    relax = relu_relaxation(lo, up, slope=0.1)
    lam = torch.randn(1 if shared else 5, 8, 30, generator=g)
    with torch.no_grad():
        fast, fast_b = apply_relaxation(lam, relax)
    lam_g = lam.clone().requires_grad_(True)
    slow, slow_b = apply_relaxation(lam_g, relax)
    s_lo, t_lo, s_up, t_up = (r.unsqueeze(1) for r in relax)
    lam_n = lam.expand(5, 8, 30)
    pos, neg = lam_n.clamp(min=0), lam_n.clamp(max=0)
    want, want_b = pos * s_lo + neg * s_up, (pos * t_lo + neg * t_up).sum(-1)
    for got, got_b in ((fast, fast_b), (slow.detach(), slow_b.detach())):
        assert got.shape == (5, 8, 30)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got_b, want_b, rtol=1e-6, atol=1e-6)
    slow.sum().backward()  # the autograd path keeps a differentiable graph
    assert lam_g.grad is not None and torch.isfinite(lam_g.grad).all()


class _Res(nn.Module):
    """A residual CNN with its own forward (bounded through the fx graph interpreter)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c0, self.c1 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c0(x))
        h = torch.relu(h + self.c1(h))
        return self.fc(torch.flatten(h, 1))


def test_graph_sample_blocks_give_the_same_bounds(monkeypatch):
    from robustlab.certify import _graph_crown

    model, x = _Res().eval(), _x(5)
    with torch.no_grad():
        whole = [interval_bounds(model, x, eps=0.05, method=m) for m in ("crown_ibp", "crown")]
    calls = []
    real = _graph_crown.backward

    def spy(t, start, lam, x_, *args, **kw):
        calls.append(x_.shape[0])
        return real(t, start, lam, x_, *args, **kw)

    monkeypatch.setattr(_graph_crown, "backward", spy)
    monkeypatch.setattr(_crown, "BLOCK_BYTES", 1)
    with torch.no_grad():
        blocked = [interval_bounds(model, x, eps=0.05, method=m) for m in ("crown_ibp", "crown")]
    assert calls and max(calls) == 1
    for (a, b), (c, d) in zip(whole, blocked):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b, d, rtol=1e-6, atol=1e-6)


def test_sample_blocks_keep_the_gradients_of_certified_training(monkeypatch):
    model, x = _mlp(), _x(6)
    y = torch.arange(6) % 5

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        margin_bounds(model, x, y, eps=0.05, method="crown_ibp").sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = grads()
    monkeypatch.setattr(_crown, "BLOCK_BYTES", 1)
    for a, b in zip(whole, grads()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(7, 3, 11), (1, 4, 9), (5, 1, 6)])
def test_bmv_row_products_match_float64(shape: tuple[int, int, int]) -> None:
    from robustlab.certify._relax import bmv

    g = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=g)
    v = torch.randn(5 if shape[0] == 1 else shape[0], shape[2], generator=g)
    got = bmv(a, v)
    ref = torch.einsum("nsk,nk->ns", a.double().expand(v.shape[0], -1, -1), v.double())
    assert got.shape == (v.shape[0], shape[1]) and torch.allclose(got.double(), ref, rtol=1e-6, atol=1e-6)
    a.requires_grad_(True)
    bmv(a, v).sum().backward()  # the gradient reaches the coefficients (certified training differentiates them)
    assert a.grad is not None and a.grad.shape == a.shape
