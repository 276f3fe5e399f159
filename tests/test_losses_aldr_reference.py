"""ALDR-KL against the formula of its docstring written plainly in float64, on every code path of the kernel:
few classes (row sums as a product), many classes in row blocks, the re-shift for large margins, the three
normalisations, the three reductions, logits up to 1e4, half-precision logits, the module's state update."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustlab import losses
from robustlab.losses import _fn_aldr as A
from robustlab.losses import _fn_margin as M

LAM0, ALPHA = 1.0, 2.0


def _normalized(f: torch.Tensor, normalize: str | None) -> torch.Tensor:
    if normalize == "softplus":
        g = F.softplus(f)
        return g / g.mean(1, keepdim=True)
    if normalize == "mean_abs":
        return f / f.abs().mean(1, keepdim=True)
    return f


def _reference(logits: torch.Tensor, y: torch.Tensor, lam_old: torch.Tensor, margin: float,
               normalize: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample value, its gradient (lambda held constant) and the new lambda, all in float64."""
    f = logits.double().requires_grad_(True)
    ft = _normalized(f, normalize)
    k = f.shape[1]
    logk = math.log(k)
    with torch.no_grad():
        logq = torch.log_softmax(ft / lam_old.double()[:, None], 1)
        kl = (logq.exp() * logq).sum(1) + logk
        lam = (LAM0 - LAM0 * kl / (ALPHA * logk)).clamp(LAM0 * (1 - 1 / ALPHA), LAM0)
    u = (margin * (1.0 - F.one_hot(y, k).double()) + ft - ft.gather(1, y[:, None])) / lam[:, None]
    v = lam * (torch.logsumexp(u, 1) - logk) - ALPHA * logk / (2 * LAM0) * (lam - LAM0) ** 2
    v.sum().backward()
    return v.detach(), f.grad, lam


def _data(n: int, k: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    y = torch.randint(0, k, (n,), generator=g)
    lam = LAM0 * (1 - 0.5 * torch.rand(n, generator=g))  # inside [lam0 (1 - 1/alpha), lam0]
    return logits, y, lam


def _assert_matches(logits: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, margin: float, normalize: str | None,
                    reduction: str, tol: float = 2e-5) -> None:
    ref_v, ref_g, ref_lam = _reference(logits, y, lam, margin, normalize)
    x = logits.clone().requires_grad_(True)
    v, new = M._aldr(x, y, lam.clone(), LAM0, ALPHA, margin, normalize, reduction)
    w = torch.linspace(0.5, 1.5, logits.shape[0], dtype=torch.float64)
    (v.double() * w).sum().backward() if reduction == "none" else v.backward()
    weight = w if reduction == "none" else torch.full_like(w, 1 / logits.shape[0] if reduction == "mean" else 1.0)
    ref = ref_v * w if reduction == "none" else (ref_v.mean() if reduction == "mean" else ref_v.sum())
    scale = 1.0 + logits.abs().max().item() / 100  # float32 rounding of values that grow with the logits
    torch.testing.assert_close(new.double(), ref_lam, rtol=tol, atol=tol)
    got = v.double() * w if reduction == "none" else v.double()
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(x.grad.double(), ref_g * weight[:, None], rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(8, 5), (64, 10), (300, 1000)])  # product row sums / row blocks (3 of 131)
@pytest.mark.parametrize("margin", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("normalize", [None, "softplus", "mean_abs"])
def test_aldr_matches_the_float64_formula(shape: tuple[int, int], margin: float, normalize: str | None) -> None:
    logits, y, lam = _data(*shape, scale=3.0)
    _assert_matches(logits, y, lam, margin, normalize, "none")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(64, 10), (300, 1000)])
def test_aldr_reductions_match_the_float64_formula(reduction: str, shape: tuple[int, int]) -> None:
    logits, y, lam = _data(*shape, scale=2.0, seed=1)
    _assert_matches(logits, y, lam, 0.1, None, reduction)


@pytest.mark.parametrize("shape", [(64, 10), (300, 1000)])
@pytest.mark.parametrize("scale", [30.0, 1e4])
def test_aldr_large_logits_match_the_float64_formula(shape: tuple[int, int], scale: float) -> None:
    logits, y, lam = _data(*shape, scale=scale, seed=2)
    _assert_matches(logits, y, lam, 0.1, None, "none")


@pytest.mark.parametrize("shape", [(64, 10), (300, 1000)])
def test_aldr_large_margin_reshift_matches_the_float64_formula(shape: tuple[int, int]) -> None:
    # c / (lam0 (1 - 1/alpha)) = 80 > 30: the target entry is re-shifted before its exponential
    logits, y, lam = _data(*shape, scale=3.0, seed=3)
    _assert_matches(logits, y, lam, 40.0, None, "none", tol=5e-5)


def test_aldr_row_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, y, lam = _data(64, 10, scale=3.0, seed=4)
    whole = M._aldr(logits, y, lam, LAM0, ALPHA, 0.1, None, "none")
    monkeypatch.setattr(A, "_BLOCK_ELEMENTS", 70)  # 7 rows per block, the last one shorter
    assert A._block_rows(logits) == 7
    blocks = M._aldr(logits, y, lam, LAM0, ALPHA, 0.1, None, "none")
    for a, b in zip(whole, blocks):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(64, 10), (300, 1000)])
def test_aldr_half_logits_match_the_float64_formula_of_the_rounded_logits(dtype: torch.dtype,
                                                                         shape: tuple[int, int]) -> None:
    logits, y, lam = _data(*shape, scale=3.0, seed=5)
    half = logits.to(dtype)
    ref_v, ref_g, _ = _reference(half.double(), y, lam, 0.1, None)
    x = half.clone().requires_grad_(True)
    v = M.aldr_kl(x, y, lam0=LAM0, alpha=ALPHA, margin=0.1, lam=lam, reduction="sum")
    v.backward()
    assert v.dtype == dtype and x.grad.dtype == dtype
    torch.testing.assert_close(v.double(), ref_v.sum(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x.grad.double(), ref_g, rtol=2e-2, atol=1e-3)
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(64, 10), (300, 1000)])
def test_module_state_update_matches_the_float64_formula(shape: tuple[int, int]) -> None:
    n, k = shape
    logits, y, lam = _data(n, k, scale=3.0, seed=6)
    loss = losses.get("aldr_kl", lam0=LAM0, alpha=ALPHA, num_samples=2 * n, margin=0.1)
    index = torch.randperm(2 * n, generator=torch.Generator().manual_seed(0))[:n]
    loss.lam[index] = lam
    untouched = loss.lam.clone()
    ref_v, ref_g, ref_lam = _reference(logits, y, lam, 0.1, None)
    x = logits.clone().requires_grad_(True)
    loss(x, y, index=index).backward()
    torch.testing.assert_close(loss.lam[index].double(), ref_lam, rtol=2e-6, atol=2e-6)
    rest = torch.ones(2 * n, dtype=torch.bool)
    rest[index] = False
    assert torch.equal(loss.lam[rest], untouched[rest])
    torch.testing.assert_close(x.grad.double(), ref_g / n, rtol=2e-5, atol=2e-7)


@pytest.mark.parametrize("shape", [(64, 10), (300, 1000)])
def test_aldr_backward_twice_with_retain_graph_gives_the_same_gradient(shape: tuple[int, int]) -> None:
    # the saved exponentials are not modified in place by the backward
    logits, y, lam = _data(*shape, scale=3.0, seed=7)
    x = logits.clone().requires_grad_(True)
    v = M.aldr_kl(x, y, lam=lam)
    (g1,) = torch.autograd.grad(v, x, retain_graph=True)
    (g2,) = torch.autograd.grad(v, x)
    assert torch.equal(g1, g2)


def test_aldr_non_contiguous_logits_equal_contiguous() -> None:
    logits, y, lam = _data(10, 64, scale=3.0, seed=8)
    t = logits.t().contiguous().t()  # same values, column-major
    assert not t.is_contiguous()
    a = M.aldr_kl(logits, y, lam=lam, reduction="none")
    b = M.aldr_kl(t, y, lam=lam, reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
