"""The ALDR-KL kernel: the closed-form temperature update and the loss at the new temperature, in one node.

With few classes on CPU every tensor op costs about its fixed overhead: the kernel keeps the op count low and
takes row sums as x @ ones (cheaper than ``sum(1)`` there). With many classes on
CPU the passes run in row blocks (:func:`_block_rows`) whose buffers stay in the L2 cache from pass to pass.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["ALDRKL", "aldr_lambda", "small_cpu"]

#: elements of f per row block of the passes on CPU (512 KB in float32): a block's buffers stay in the L2 cache
#: across the several passes over it instead of each pass streaming the whole (N, C) tensor from memory
#: (faster than whole-tensor passes at (512, 1000)); on an accelerator one block.
_BLOCK_ELEMENTS = 1 << 17


def _block_rows(f: torch.Tensor) -> int | None:
    """Rows per block of :data:`_BLOCK_ELEMENTS` elements of ``f`` (N, C) on CPU, or None for one block."""
    rows = max(1, _BLOCK_ELEMENTS // max(f.shape[1], 1))
    return rows if f.device.type == "cpu" and rows < f.shape[0] else None


def small_cpu(f: torch.Tensor) -> bool:
    """Few classes (K <= 64) on CPU: each op costs about its fixed overhead, and the fused softmax kernels pay a
    per-row overhead that a handful of elementwise ops over the whole (N, K) block avoid (~3x at K = 10)."""
    return f.device.type == "cpu" and f.shape[1] <= 64


@functools.lru_cache(maxsize=16)
def _ones(c: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.ones(c, 1, dtype=dtype, device=device)


def _row_sums(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Row sums of ``x`` (N, C) as an (N, 1) column (into ``out``): x @ ones for few classes on CPU."""
    if small_cpu(x):
        return torch.mm(x, _ones(x.shape[1], x.dtype, x.device), out=out)
    return torch.sum(x, 1, keepdim=True, out=out)


def _lambda_sums(f: torch.Tensor, lam: torch.Tensor, z: torch.Tensor | None = None, e: torch.Tensor | None = None,
                 s: torch.Tensor | None = None, d: torch.Tensor | None = None, *, inverse: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z = (f - max f)/lam, s = sum exp(z) and d = sum exp(z) z per row, written into the given buffers (None:
    new ones); ``s`` holds the row max until the sum replaces it. ``inverse``: ``lam`` holds 1/lam, multiplied
    (on a block in L2 a product takes half a division's time)."""
    z = torch.sub(f, torch.amax(f, 1, keepdim=True, out=s), out=z)
    z = z.mul_(lam) if inverse else z.div_(lam)
    e = torch.exp(z, out=e)
    s = _row_sums(e, s)
    return z, s, _row_sums(e.mul_(z), d)


def aldr_lambda(f: torch.Tensor, lam: torch.Tensor, lam0: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The update (N, 1) and the shifted logits z = (f - max f)/lam (kept for the loss); no gradient.

    KL(q||u) = d/s - log s + log K with e = exp(z), s = sum e, d = sum e z (z <= 0, max 0): one exp pass and no
    softmax normalisation pass, in row blocks (e needs one block's buffer). ``lam`` an (N, 1) column in f's
    dtype (every per-row quantity is a column: no reshapes).
    """
    logk = math.log(f.shape[1])
    k = lam0 / (alpha * logk)
    rows = _block_rows(f)
    if rows is None:
        z, s, d = _lambda_sums(f, lam)
    else:
        n = f.shape[0]
        z, s, d, e = torch.empty_like(f), f.new_empty(n, 1), f.new_empty(n, 1), f.new_empty(rows, f.shape[1])
        for fb, ib, zb, sb, db in zip(*(x.split(rows) for x in (f, lam.reciprocal(), z, s, d))):
            _lambda_sums(fb, ib, zb, e[:fb.shape[0]], sb, db, inverse=True)
    # new = lam0 - k KL; the KL in [0, log K] maps onto exactly [lam0 (1 - 1/alpha), lam0]: one clamp.
    new = torch.addcdiv(s.log().mul_(k).add_(lam0 - k * logk), d, s, value=-k)
    return new.clamp_(lam0 * (1.0 - 1.0 / alpha), lam0), z


def _margin_exp_sums(z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, lam_old: torch.Tensor, margin: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """u = (z - (c/lam_old) e_y) r, then z <- exp(u) in place; returns (u_y, row sums). One block: the target
    entry is gathered after the rescale (c/lam = c r/lam_old off it); row blocks: before, so that the rescale,
    exp and sum of a block run back to back."""
    rows = _block_rows(z)
    if rows is None:
        uy = z.mul_(r).gather(1, t)
        if margin:
            z.scatter_(1, t, uy.addcdiv_(r, lam_old, value=-margin))
        return uy, _row_sums(z.exp_())
    zy = z.gather(1, t)
    if margin:
        z.scatter_(1, t, zy.sub_(lam_old.reciprocal(), alpha=margin))
    s = z.new_empty(z.shape[0], 1)
    for zb, rb, sb in zip(z.split(rows), r.split(rows), s.split(rows)):
        _row_sums(zb.mul_(rb).exp_(), sb)
    return zy.mul_(r), s  # the same product as the target entry's in z r


class ALDRKL(torch.autograd.Function):
    """ALDR-KL in one autograd node: the temperature update, then the value at the new temperature ``lam``.

    From the update's z = (f - m)/lam_old (m = max f): u - shift = (z - (c/lam_old) e_y) r, r = lam_old/lam
    (shift (m + c)/lam >= max u puts every entry <= 0 and the largest >= -c/lam; re-shifted exactly where that
    could underflow), one exp pass in place and a row sum: log p*_y = (u - shift)_y - log s, value
    -lam (log p*_y + log K) - penalty, reduced here; gradient p* - e_y with the target entry expm1(log p*_y), as
    LDR-KL's. With few classes on CPU the gradient is finished in the forward (small passes cost little; the
    backward is one product); else the backward scales the exponentials (one pass fewer). Two N x C
    allocations in all: z and the gradient. ``f`` (N, C), ``target`` and ``lam_old`` (N,); returns (value,
    lam (N,)).
    """

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor, target: torch.Tensor, lam_old: torch.Tensor, lam0: float,
                alpha: float, margin: float, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
        n, logk = f.shape[0], math.log(f.shape[1])
        lo, t = lam_old.view(n, 1), target.view(n, 1)
        lam, z = aldr_lambda(f, lo, lam0, alpha)
        r = torch.div(lo, lam)
        # exp(-c/lam) underflows float32 near c/lam = 87: re-shift exactly long before (a hyper-parameter test)
        if margin / (lam0 * (1.0 - 1.0 / alpha)) > 30.0:
            z.mul_(r).scatter_(1, t, z.gather(1, t).addcdiv_(r, lo, value=-margin))
            z.sub_(z.amax(1, keepdim=True))
            uy, s = z.gather(1, t), _row_sums(z.exp_())
        else:
            uy, s = _margin_exp_sums(z, t, r, lo, margin)
        ls_y = uy.sub_(s.log())
        gy = torch.expm1(ls_y)
        d0 = lam - lam0  # the penalty (alpha log K / (2 lam0)) (lam - lam0)^2 is taken off
        v = torch.addcmul(torch.rsub(ls_y, -logk).mul_(lam), d0, d0, value=-alpha * logk / (2.0 * lam0))
        if small_cpu(f):
            ctx.save_for_backward(z.div_(s).scatter_(1, t, gy), None, None, None)
        else:
            ctx.save_for_backward(z, t, s, gy)
        ctx.scale = None if reduction == "none" else 1.0 / max(n, 1) if reduction == "mean" else 1.0
        lam = lam.view(n)
        ctx.mark_non_differentiable(lam)
        ctx.set_materialize_grads(False)  # no zero gradient built for lam
        return (v.view(n) if reduction == "none" else v.mean() if reduction == "mean" else v.sum()), lam

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple[torch.Tensor | None, ...]:
        if grad is None:
            return None, None, None, None, None, None, None
        p, t, s, gy = ctx.saved_tensors
        # a reduced value has a 0-dim gradient, the same for every row; per-sample values an (N,) one
        col = grad.view(-1, 1) if ctx.scale is None else grad if ctx.scale == 1.0 else grad * ctx.scale
        if t is None:  # p holds the gradient already
            return p * col, None, None, None, None, None, None
        g = p * torch.div(col, s)
        g.scatter_(1, t, gy * col)
        return g, None, None, None, None, None, None
