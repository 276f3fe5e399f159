"""CROWN back-substitution through ``models.MoEConv2d`` (top-k gated experts): a linear relaxation of the gated sum.

The layer computes ``y = Σ_e g_e o_e`` with ``o = conv(x)`` (all experts' outputs, linear in x) and gates
``g_e ≥ 0`` that sum to 1, so for any reference expert r

    y = o_r + Σ_{e≠r} g_e d_e,    d_e = o_e − o_r.

Each product ``g_e d_e`` is relaxed on the box ``g_e ∈ [g̲_e, ḡ_e]`` (the router's gate bounds, the IBP rule's
:func:`._rules._moe_gate_bounds`) × ``d_e ∈ [l_e, u_e]`` (exact interval bounds of the linear map
``(W_e − W_r) x`` over the layer's input box): for a fixed ``d`` the product lies between
``h(d) = min(g̲ d, ḡ d)`` (concave) and ``H(d) = max(g̲ d, ḡ d)`` (convex), so the chord of ``h`` is a sound
lower line and the chord of ``H`` a sound upper line (McCormick-type, with the gate concretised). Where the
routing is decided on the box (``g̲ = ḡ``) the relaxation is exact and the layer is linear. The reference
expert is the one with the largest lower gate (a surely routed one when there is one), so experts that
agree leave small ``d_e``. The lines act on ``d``, then on ``o`` and through the experts' convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._relax import _TINY, Relaxation, apply_relaxation


def _product_relaxation(g_lo: torch.Tensor, g_hi: torch.Tensor, lo: torch.Tensor, up: torch.Tensor) -> Relaxation:
    """Lines below / above ``g·d`` for ``g ∈ [g_lo, g_hi]`` (≥ 0) and ``d ∈ [lo, up]``: the chords of min/max(g_lo d, g_hi d)."""
    def low(d: torch.Tensor) -> torch.Tensor:
        return torch.minimum(g_lo * d, g_hi * d)

    def high(d: torch.Tensor) -> torch.Tensor:
        return torch.maximum(g_lo * d, g_hi * d)

    width = up - lo
    narrow = width < _TINY
    w = width.clamp_min(_TINY)
    s_lo = (low(up) - low(lo)) / w
    s_up = (high(up) - high(lo)) / w
    g_lo, g_hi = g_lo.expand_as(lo), g_hi.expand_as(lo)
    s_lo = torch.where(lo >= 0, g_lo, torch.where(up <= 0, g_hi, s_lo))  # one-signed d: the product's exact line
    s_up = torch.where(lo >= 0, g_hi, torch.where(up <= 0, g_lo, s_up))
    t_lo = torch.where((lo >= 0) | (up <= 0), torch.zeros_like(lo), low(lo) - s_lo * lo)
    t_up = torch.where((lo >= 0) | (up <= 0), torch.zeros_like(lo), high(lo) - s_up * lo)
    zero = torch.zeros_like(lo)
    # a (near) point interval: constant bounds (h is concave, H convex: their extremes are at the ends)
    s_lo, t_lo = torch.where(narrow, zero, s_lo), torch.where(narrow, torch.minimum(low(lo), low(up)), t_lo)
    s_up, t_up = torch.where(narrow, zero, s_up), torch.where(narrow, torch.maximum(high(lo), high(up)), t_up)
    return s_lo, t_lo, s_up, t_up


def moe_relaxation(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, Relaxation]:
    """``(reference expert (N,), relaxation of g_e d_e with tensors (N, E, C, H, W))`` of MoE layer ``m`` on ``[lower, upper]``."""
    from ._rules import _moe_gate_bounds

    conv = m.experts
    e, c = m.num_experts, m.out_channels
    g_lo, g_hi = _moe_gate_bounds(m, lower, upper)  # (N, E)
    ref = g_lo.argmax(1)  # (N,)
    centre, rad = (upper + lower) / 2, (upper - lower) / 2
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    o = F.conv2d(centre, conv.weight, conv.bias, **kw)
    n, _, h, w = o.shape
    o = o.view(n, e, c, h, w)
    wts = conv.weight.view(e, c, *conv.weight.shape[1:])
    diff = (wts.unsqueeze(0) - wts.unsqueeze(1)).abs()  # [r, e]: |W_e - W_r|
    rads = F.conv2d(rad, diff.reshape(e * e * c, *conv.weight.shape[1:]), None, **kw).view(n, e, e, c, h, w)
    pick = ref.view(n, 1, 1, 1, 1, 1).expand(n, 1, e, c, h, w)
    d_rad = rads.gather(1, pick).squeeze(1)  # (N, E, C, H, W)
    d_c = o - o.gather(1, ref.view(n, 1, 1, 1, 1).expand(n, 1, c, h, w))
    shape = (n, e, 1, 1, 1)
    return ref, _product_relaxation(g_lo.view(shape), g_hi.view(shape), d_c - d_rad, d_c + d_rad)


def moe_back(m: Any, lam: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-substitute ``lam`` (N, S, C, H, W) through MoE layer ``m`` with input bounds ``[lower, upper]``.

    Returns ``(lam_in (N, S, C_in, H_in, W_in), bias (N, S))``.
    """
    from ._crown import _conv2d_backward

    n, s = lam.shape[:2]
    e = m.num_experts
    ref, relax = moe_relaxation(m, lower, upper)
    lam_e = lam.unsqueeze(2).expand(n, s, e, *lam.shape[2:])
    lam_d, bias = apply_relaxation(lam_e, relax)  # coefficients on d_e = o_e - o_r
    onehot = F.one_hot(ref, e).to(lam.dtype).view(n, 1, e, 1, 1, 1)
    lam_o = lam_d + onehot * (lam - lam_d.sum(2)).unsqueeze(2)  # y = o_r + Σ_e (relaxed g_e d_e)
    lam_in, b = _conv2d_backward(m.experts, lam_o.reshape(n, s, e * lam.shape[2], *lam.shape[3:]), lower.shape[1:])
    return lam_in, bias + b
