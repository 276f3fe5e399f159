"""Sound linear relaxations of the nonlinear ops for CROWN back-substitution.

For an element-wise op ``f`` on ``[l, u]`` a relaxation is ``(s_lo, t_lo, s_up, t_up)`` with
``s_lo x + t_lo <= f(x) <= s_up x + t_up`` for every ``x`` in ``[l, u]``:

- ReLU / LeakyReLU (slope ``a`` in [0, 1]): the chord above, a line through 0 of slope 1 or ``a`` below
  (Zhang et al. 2018, CROWN).
- Sigmoid / Tanh (convex for x < 0, concave for x > 0): where the interval is on one side, the chord on
  the outer side and the tangent at the midpoint on the inner side; across 0 two parallel lines of
  slope ``min(f'(l), f'(u))`` through ``(l, f(l))`` (below) and ``(u, f(u))`` (above), sound because
  ``f' >= min(f'(l), f'(u))`` on ``[l, u]`` (``f'`` is unimodal with its peak at 0).
- MaxPool2d: below, the input of each window with the largest lower bound; above, that same input when
  its lower bound is at least every other upper bound of the window, else the constant ``max u``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

_TINY = 1e-6  # intervals narrower than this get constant bounds (chords would divide by ~0)


def relu_relaxation(lo: torch.Tensor, up: torch.Tensor, slope: float = 0.0) -> Relaxation:
    """LeakyReLU (``slope`` in [0, 1]; 0 = ReLU): chord above, slope 1 or ``slope`` below."""
    one, a = torch.ones_like(up), torch.full_like(up, float(slope))
    act, dead = lo >= 0, up <= 0
    unstable = ~(act | dead)
    chord = (up - slope * lo) / (up - lo).clamp_min(1e-12)
    s_up = torch.where(act, one, torch.where(dead, a, chord))
    t_up = torch.where(unstable, lo * (slope - chord), torch.zeros_like(up))
    s_lo = torch.where(act, one, torch.where(dead, a, torch.where(up > -lo, one, a)))
    return s_lo, torch.zeros_like(up), s_up, t_up


def _sigmoid_grad(t: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(t)
    return s * (1 - s)


def _tanh_grad(t: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(t) ** 2


def s_shaped_relaxation(lo: torch.Tensor, up: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor],
                        df: Callable[[torch.Tensor], torch.Tensor]) -> Relaxation:
    """Relaxation of an increasing function convex on x < 0 and concave on x > 0 (sigmoid, tanh)."""
    fl, fu = f(lo), f(up)
    width = up - lo
    narrow = width < _TINY
    mid = (lo + up) / 2
    fm, dm = f(mid), df(mid)
    chord = (fu - fl) / width.clamp_min(_TINY)
    convex, concave = up <= 0, lo >= 0
    d = torch.minimum(df(lo), df(up))
    zero = torch.zeros_like(lo)
    # lower line
    s_lo = torch.where(convex, dm, torch.where(concave, chord, d))
    t_lo = torch.where(convex, fm - dm * mid, torch.where(concave, fl - chord * lo, fl - d * lo))
    # upper line
    s_up = torch.where(convex, chord, torch.where(concave, dm, d))
    t_up = torch.where(convex, fl - chord * lo, torch.where(concave, fm - dm * mid, fu - d * up))
    s_lo, t_lo = torch.where(narrow, zero, s_lo), torch.where(narrow, fl, t_lo)
    s_up, t_up = torch.where(narrow, zero, s_up), torch.where(narrow, fu, t_up)
    return s_lo, t_lo, s_up, t_up


def sigmoid_relaxation(lo: torch.Tensor, up: torch.Tensor) -> Relaxation:
    """Sound linear bounds of ``sigmoid`` on ``[lo, up]``."""
    return s_shaped_relaxation(lo, up, torch.sigmoid, _sigmoid_grad)


def tanh_relaxation(lo: torch.Tensor, up: torch.Tensor) -> Relaxation:
    """Sound linear bounds of ``tanh`` on ``[lo, up]``."""
    return s_shaped_relaxation(lo, up, torch.tanh, _tanh_grad)


def apply_relaxation(lam: torch.Tensor, relax: Relaxation) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-substitute ``lam`` (N, S, *shape) through an element-wise relaxation: ``(lam_in, bias (N, S))``.

    ``lam_in = Λ⁺ s_lo + Λ⁻ s_up = Λ s_lo + Λ⁻ (s_up − s_lo)`` (one fused multiply-add), ``bias = Λ⁺ t_lo + Λ⁻ t_up``
    (batched matrix-vector products; the ``t_lo`` term is skipped when it is 0, as for ReLU). Where the two
    lines coincide (stable ReLUs) the coefficient is only scaled; the sign split is computed on the other
    neurons only (their union over the batch) when they are fewer than half. ``lam`` may have a batch
    dimension of 1 (rows shared by all samples); the result has the relaxation's batch size.
    """
    n = relax[0].shape[0]
    s = lam.shape[1]
    shape = lam.shape[2:]
    s_lo, t_lo, s_up, t_up = (r.reshape(n, -1) for r in relax)
    split = ((s_lo != s_up) | (t_lo != 0) | (t_up != 0)).any(0).nonzero().squeeze(1)
    lam_f = lam.reshape(lam.shape[0], s, -1)
    if split.numel() * 2 > lam_f.shape[-1]:  # mostly split: the dense form is cheaper
        return _split(lam_f, s_lo, t_lo, s_up, t_up, (n, s, *shape))
    out = lam_f * s_up.unsqueeze(1)
    if split.numel() == 0:
        return out.view(n, s, *shape), lam.new_zeros(n, s)
    sub = lam_f.index_select(2, split)
    p_lo, q_lo, p_up, q_up = (r.index_select(1, split) for r in (s_lo, t_lo, s_up, t_up))
    coef, bias = _split(sub, p_lo, q_lo, p_up, q_up, (n, s, split.numel()))
    return out.index_copy_(2, split, coef).view(n, s, *shape), bias


def bmv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise products ``a[n] @ v[n]`` (N, S) of ``a`` (N or 1, S, K) and ``v`` (N, K).

    Taken as ``v[n]ᵀ a[n]ᵀ``, one (1, K) × (K, S) product per sample: faster than ``bmm(a, v[..., None])``, whose
    (S, K) × (K, 1) shape takes a slow batched path (CROWN-IBP A/B: ``benchmarks/bench_certify.py --only blocks``).
    """
    if a.shape[0] == 1 and v.shape[0] != 1:
        return F.linear(v, a[0])  # rows shared by all samples: one matrix product
    return torch.matmul(v.unsqueeze(1), a.transpose(1, 2)).squeeze(1)


def _split(lam: torch.Tensor, s_lo: torch.Tensor, t_lo: torch.Tensor, s_up: torch.Tensor, t_up: torch.Tensor,
           shape: tuple[int, ...] | torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Λ⁺ s_lo + Λ⁻ s_up, Λ⁺ t_lo + Λ⁻ t_up)`` for ``lam`` (N or 1, S, K) and line parameters (N, K).

    Without autograd the coefficients are built in the buffer of ``Λ⁻`` (one allocation instead of three).
    """
    neg = lam.clamp(max=0)
    bias = bmv(neg, t_up)
    if bool(t_lo.any()):
        bias = bias + bmv(lam, t_lo) - bmv(neg, t_lo)  # Λ⁺ t_lo = Λ t_lo − Λ⁻ t_lo
    d = (s_up - s_lo).unsqueeze(1)
    inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in (lam, s_lo, s_up, t_lo, t_up)))
    if inplace:  # rows shared by all samples (batch 1) take the batch size in the product
        out = (neg.mul_(d) if neg.shape[0] == d.shape[0] else neg * d).addcmul_(lam, s_lo.unsqueeze(1))
    else:
        out = torch.addcmul(lam * s_lo.unsqueeze(1), neg, d)
    return out.view(shape), bias


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def maxpool_params(kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None,
                   padding: int | tuple[int, ...] = 0, dilation: int | tuple[int, ...] = 1,
                   ceil_mode: bool = False, return_indices: bool = False) -> dict[str, tuple[int, int] | bool]:
    """Normalised MaxPool2d parameters (the keyword order of ``F.max_pool2d``)."""
    k = _pair(kernel_size)
    return {"kernel_size": k, "stride": _pair(stride) if stride not in (None, ()) else k,  # type: ignore[arg-type]
            "padding": _pair(padding), "dilation": _pair(dilation), "ceil_mode": bool(ceil_mode),
            "return_indices": bool(return_indices)}


def maxpool_backward(lam: torch.Tensor, lo: torch.Tensor, up: torch.Tensor,
                     p: dict[str, tuple[int, int] | bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-substitute ``lam`` (N, S, C, oh, ow) through MaxPool2d with input bounds ``lo, up`` (N, C, H, W)."""
    if p["ceil_mode"] or p["return_indices"]:
        raise TypeError("CROWN supports MaxPool2d with ceil_mode=False and return_indices=False only.")
    n, s = lam.shape[:2]
    c, h, w = lo.shape[1:]
    k, st, pad, dil = p["kernel_size"], p["stride"], p["padding"], p["dilation"]
    kk = k[0] * k[1]  # type: ignore[index]
    padded = (pad[1], pad[1], pad[0], pad[0])  # type: ignore[index]
    kw = dict(kernel_size=k, dilation=dil, stride=st)
    lo_u = F.unfold(F.pad(lo, padded, value=-float("inf")), **kw).view(n, c, kk, -1)  # type: ignore[arg-type]
    up_u = F.unfold(F.pad(up, padded, value=-float("inf")), **kw).view(n, c, kk, -1)  # type: ignore[arg-type]
    best = lo_u.argmax(2, keepdim=True)  # (N, C, 1, L): the input with the largest lower bound
    l_best = lo_u.gather(2, best)
    others = up_u.scatter(2, best, -float("inf")).amax(2, keepdim=True)
    exact = (l_best >= others).squeeze(2)  # (N, C, L): that input is the maximum on the whole box
    u_max = up_u.amax(2)  # (N, C, L)
    lam_f = lam.reshape(n, s, c, -1)
    pos, neg = lam_f.clamp(min=0), lam_f.clamp(max=0)
    ex = exact.unsqueeze(1)
    coef = pos + torch.where(ex, neg, torch.zeros_like(neg))  # coefficient on x_best
    bias = torch.where(ex, torch.zeros_like(neg), neg * u_max.unsqueeze(1)).flatten(2).sum(-1)
    onehot = torch.zeros((n, 1, c, kk, coef.shape[-1]), dtype=lam.dtype, device=lam.device)
    onehot.scatter_(3, best.unsqueeze(1), 1.0)
    cols = (onehot * coef.unsqueeze(3)).reshape(n * s, c * kk, -1)
    back = F.fold(cols, (h, w), padding=pad, **kw)  # type: ignore[arg-type]
    return back.view(n, s, c, h, w), bias
