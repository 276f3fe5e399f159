"""L2 / L1 input balls through the first affine layer, bounded exactly with the dual norm.

For ``z = W x + b`` and ``‖x' − x‖_p ≤ ε``: ``z_i ∈ W_i x + b_i ± ε ‖W_i‖_q`` with ``q`` the dual norm
(L2 → L2, L1 → L∞), which is exact. A Conv2d is the linear map of its unfolded operator: each output
position's row holds the kernel restricted to the input positions inside the image (zero padding is
not perturbed), so its dual norm is taken over that receptive field only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.threat import BOUND_NORMS
from ..models import Normalize
from ._crown import Bounds

#: input norms of the bound methods (L∞ box, L2 ball, L1 ball).
BALL_NORMS = tuple(n for n in BOUND_NORMS if n != "linf")


def linear_dual(weight: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row dual norm of a Linear weight (out, in): ``‖W_i‖₂`` (L2 ball) or ``max_j |W_ij|`` (L1 ball)."""
    return weight.norm(dim=1) if norm == "l2" else weight.abs().amax(1)


def conv_dual(m: nn.Conv2d, in_shape: torch.Size, norm: str) -> torch.Tensor:
    """Dual norm of each row of the unfolded Conv2d operator, shape (1, out_channels, oh, ow).

    L2: ``sqrt(conv(1_image, W²))``, i.e. the kernel's 2-norm over the in-image part of each window.
    L1: the largest ``|W|`` over that part (the whole kernel for grouped or 'same'-padded convolutions,
    a sound upper bound).
    """
    w = m.weight
    ones = torch.ones((1, *in_shape), dtype=w.dtype, device=w.device)
    kw: dict[str, Any] = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
    if norm == "l2":
        return F.conv2d(ones, w * w, None, **kw).clamp_min(0).sqrt()
    out = F.conv2d(ones, w, None, **kw)  # output shape only
    if m.groups != 1 or isinstance(m.padding, str):
        return w.abs().flatten(1).amax(1).view(1, -1, 1, 1).expand_as(out)
    mask = F.unfold(ones, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)[0]  # (C*K, L)
    d = (w.abs().flatten(1).unsqueeze(-1) * mask.unsqueeze(0)).amax(1)  # (O, L)
    return d.view_as(out)


def affine_ball(m: nn.Module, centre: torch.Tensor, radius: float, norm: str) -> Bounds | None:
    """Exact bounds of Linear / Conv2d ``m`` over the ``norm`` ball of ``radius`` around ``centre``; None otherwise."""
    if isinstance(m, nn.Linear):
        z = F.linear(centre, m.weight, m.bias)
        rad = radius * linear_dual(m.weight, norm)
        return z - rad, z + rad
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and centre.dim() == 4:
        z = m(centre)
        rad = radius * conv_dual(m, centre.shape[1:], norm)
        return z - rad, z + rad
    return None


def ball_step(m: nn.Module, centre: torch.Tensor, radius: float) -> tuple[torch.Tensor, float] | None:
    """A layer that keeps an input ball a ball (Flatten, Identity, eval Dropout, Normalize); None otherwise.

    Normalize scales deviations by ``1/std`` per channel, so the radius becomes ``radius / min(std)``.
    """
    if isinstance(m, (nn.Flatten, nn.Identity)) or (isinstance(m, nn.Dropout) and not (m.training and m.p > 0)):
        return m(centre), radius
    if isinstance(m, Normalize):
        return m(centre), radius / float(m.std.min())
    return None


def forward_ball_start(layers: list[nn.Module], x: torch.Tensor, eps: float, norm: str) -> tuple[int, Bounds] | None:
    """For an L2/L1 ball: skip leading Flatten/Identity/Normalize, then bound a Linear or Conv2d exactly.

    Returns ``(index of the next layer, bounds)`` or ``None`` when the network does not start that way.
    """
    c, radius = x, float(eps)
    for i, m in enumerate(layers):
        step = ball_step(m, c, radius)
        if step is not None:
            c, radius = step
            continue
        got = affine_ball(m, c, radius, norm)
        return None if got is None else (i + 1, got)
    return None
