"""The CROWN backward pass (Zhang et al. 2018; CROWN-IBP, Zhang et al. 2020) with a bounded working set.

A linear specification ``Λ`` (N, S, *out) is propagated backwards through the layers with linear ReLU
relaxations built from the pre-activation bounds in ``records``; the result is a lower bound of ``Λ f(x')``
over the input set. The coefficient tensors are ``S × width`` per sample, which for full CROWN
(S = a hidden layer's width) reaches gigabytes on a batch: the rows are processed in chunks that keep
the estimate of :func:`_row_bytes` under ``max_memory`` bytes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from . import _patches
from ._patches import Patches
from ._relax import Relaxation, apply_relaxation, bmv, relu_relaxation

Bounds = tuple[torch.Tensor, torch.Tensor]

#: Default cap (bytes) on the working set of a CROWN bound computation.
DEFAULT_MAX_MEMORY = 1 << 30


def _cr(lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    return (upper + lower).mul_(0.5), (upper - lower).mul_(0.5)  # in place on the fresh sums; = / 2 exactly


def _lu(c: torch.Tensor, r: torch.Tensor) -> Bounds:
    return c - r, c + r


def _input_box(x: torch.Tensor, eps: float, clip: tuple[float, float] | None) -> Bounds:
    lower, upper = x - eps, x + eps
    if clip is not None:  # in place on the fresh differences: a clamp into a new tensor costs ~1.7x
        lower, upper = lower.clamp_(clip[0], clip[1]), upper.clamp_(clip[0], clip[1])
    return lower, upper


_CROWN_AFFINE = (nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_CROWN_NAMES = "Sequential, Linear, ReLU, Flatten, Identity, Dropout (eval), Normalize, Conv2d, BatchNorm (eval), AvgPool2d"


def _crown_backward(
    layers: list[nn.Module], records: list[Bounds], lam: torch.Tensor | Patches, x: torch.Tensor, eps: float,
    norm: str, clip: tuple[float, float] | None, *, relax_cache: dict[int, Any] | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lower bound of ``lam @ f(x') + bias`` over the input set, ``lam`` of shape (N, S, *out_shape) -> (N, S).

    ``lam`` may have a batch dimension of 1 (rows shared by all samples, e.g. a folded identity
    specification); it takes the batch size at the first relaxation. ``relax_cache`` (optional, one dict
    per set of ``records``) keeps the ReLU relaxations between the row chunks of one bound computation.
    """
    s = lam.shape[1]
    if bias is None:
        bias = x.new_zeros(1, s)
    for i in reversed(range(len(layers))):
        m = layers[i]
        in_shape = records[i][0].shape[1:]
        if isinstance(lam, Patches):
            got = _patches_step(m, lam, _relu_lines(records, i, relax_cache) if isinstance(m, nn.ReLU) else None,
                                in_shape)
            if got is not None:
                lam, b = got
                bias = bias + b
                continue
            lam = lam.to_dense()
        if isinstance(m, nn.Linear) and len(in_shape) == 1 and _at_input(layers[:i]):
            return _concretize_linear(lam, bias, m, x, eps, norm, clip)
        if isinstance(m, nn.Linear):
            if m.bias is not None:
                bias = bias + lam @ m.bias
            lam = lam @ m.weight
        elif isinstance(m, nn.ReLU):
            lam, b = apply_relaxation(lam, _relu_lines(records, i, relax_cache))
            bias = bias + b
        elif isinstance(m, nn.Flatten):
            lam = lam.reshape(lam.shape[0], s, *in_shape)
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            if isinstance(m, nn.Dropout) and m.training and m.p > 0:
                raise TypeError("CROWN through Dropout needs the model in eval mode (model.eval()).")
        elif isinstance(m, Normalize):
            lam = lam / m.std
            bias = bias - (lam * m.mean).flatten(2).sum(-1)
        elif isinstance(m, nn.Conv2d) and not isinstance(m.padding, str) and m.padding_mode == "zeros":
            lam, b = _conv2d_backward(m, lam, in_shape)
            bias = bias + b
        elif isinstance(m, _CROWN_AFFINE):
            lam, b = _affine_vjp(m, lam, in_shape)
            bias = bias + b
        else:
            raise TypeError(
                f"CROWN bounds do not support the layer {type(m).__name__}. CROWN supports: {_CROWN_NAMES} "
                "(use method='ibp' for other layers, e.g. residual blocks)."
            )
    if isinstance(lam, Patches):
        return _patches.concretize(lam, bias, x, eps, norm, clip)
    if lam.shape[0] != x.shape[0]:
        lam = lam.expand(x.shape[0], *lam.shape[1:])
    return concretize(lam, bias, x, eps, norm, clip)


def _at_input(layers: list[nn.Module]) -> bool:
    """Whether ``layers`` only reshape the input (Flatten, Identity, eval Dropout)."""
    return all(isinstance(m, (nn.Flatten, nn.Identity)) or (isinstance(m, nn.Dropout) and not (m.training and m.p > 0))
               for m in layers)


def _no_grad_needed(*ts: torch.Tensor) -> bool:
    """True when no autograd graph is recorded through ``ts`` (in-place updates are then safe)."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in ts))


def _concretize_linear(lam: torch.Tensor, bias: torch.Tensor, m: Any, x: torch.Tensor, eps: float, norm: str,
                       clip: tuple[float, float] | None) -> torch.Tensor:
    """Lower bound of ``lam · (W x' + b) + bias`` for the first layer, a Linear ``m`` on the flattened input.

    The centre term goes through the layer forwards (``Λ · (W c + b)``: a mat-vec on the layer's outputs),
    so the input-sized coefficients ``Λ W`` are only needed for the radius term (L∞ ``|Λ W| r``, L2
    ``ε ‖Λ W‖₂``, L1 ``ε ‖Λ W‖∞``).
    """
    if norm in ("l2", "l1"):
        centre = x.flatten(1)
    else:
        centre, r = _cr(*_input_box(x.flatten(1), eps, clip))
    bias = bias + bmv(lam, F.linear(centre, m.weight, m.bias))
    a = lam @ m.weight
    if norm == "l2":
        return bias - eps * a.norm(dim=-1)
    a = a.abs_() if _no_grad_needed(a) else a.abs()
    if norm == "l1":
        return bias - eps * a.amax(-1)
    return bias - bmv(a, r)


def _relu_lines(records: list[Bounds], i: int, cache: dict[int, Any] | None) -> Relaxation:
    """The ReLU relaxation on ``records[i]``, computed once per ``cache``."""
    if cache is None:
        return relu_relaxation(*records[i])
    hit = cache.get(i)
    if hit is None or hit[0] is not records[i]:
        hit = cache[i] = (records[i], relu_relaxation(*records[i]))
    return hit[1]


def _patches_step(m: nn.Module, lam: Patches, relax: Relaxation | None, in_shape: torch.Size) -> tuple[Patches, torch.Tensor] | None:
    """One layer of :func:`_crown_backward` in patches form; None when the layer needs the dense form."""
    if len(in_shape) != 3:
        return None
    if relax is not None:
        return _patches.relax_back(lam, relax)
    return _patches.module_back(m, lam, tuple(in_shape[1:]))  # type: ignore[arg-type]


def concretize(lam: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
               clip: tuple[float, float] | None) -> torch.Tensor:
    """Lower bound (N, S) of ``lam · x' + bias`` over the input set: the dual norm of each row of ``lam``.

    L∞ box (clipped): ``Λ c − |Λ| r``; L2 ball: ``Λ x − ε ‖Λ‖₂``; L1 ball: ``Λ x − ε ‖Λ‖∞``.
    """
    flat = lam.flatten(2)
    if norm in ("l2", "l1"):
        dual = flat.norm(dim=-1) if norm == "l2" else flat.abs().amax(-1)
        return bias + (flat * x.flatten(1).unsqueeze(1)).sum(-1) - eps * dual
    c, r = _cr(*_input_box(x, eps, clip))
    # Λ⁺ l + Λ⁻ u = Λ c − |Λ| r, as two batched matrix-vector products
    return bias + bmv(flat, c.flatten(1)) - bmv(flat.abs(), r.flatten(1))


def _conv2d_backward(m: Any, lam: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam @ A`` for a Conv2d as one transposed convolution (no forward pass), and ``lam @ bias``."""
    n, s = lam.shape[:2]
    flat = lam.reshape(n * s, *lam.shape[2:])
    g = _patches.conv_transpose(flat, m.weight, m.stride, m.padding, m.dilation, m.groups,
                                (int(in_shape[-2]), int(in_shape[-1])))
    b = lam.sum((-2, -1)) @ m.bias if m.bias is not None else lam.new_zeros(n, s)
    return g.view(n, s, *in_shape), b


def _affine_vjp(m: nn.Module, lam: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam @ A`` and ``lam @ a`` for an affine layer ``f(x) = A x + a`` via one vector-Jacobian product."""
    n, s = lam.shape[:2]
    z = torch.zeros((n * s, *in_shape), dtype=lam.dtype, device=lam.device, requires_grad=True)
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        out = m(z)
        flat_lam = lam.reshape(n * s, *out.shape[1:])
        (g,) = torch.autograd.grad(out, z, flat_lam, create_graph=keep)
    b = (flat_lam * out).flatten(1).sum(-1).view(n, s)
    if not keep:
        g, b = g.detach(), b.detach()
    return g.view(n, s, *in_shape), b


def _row_bytes(records: list[Bounds], x: torch.Tensor) -> int:
    """Estimated bytes per (sample, specification row) of one CROWN backward pass through ``records``' layers.

    The coefficients ``(N, S, width)`` of the widest layer input, with up to twelve live copies (Λ, Λ⁺,
    Λ⁻, products, a vector-Jacobian product's input and output; measured peaks on CPU: 0.6× this estimate
    for a two-conv MNIST network, 0.9× for LeNet with average pooling); with autograd on, every layer's
    coefficients are kept for the backward pass too.
    """
    widths = [math.prod(lo.shape[1:]) for lo, _ in records] or [math.prod(x.shape[1:])]
    per = 12 * max(widths) + (3 * sum(widths) if torch.is_grad_enabled() else 0)
    return per * x.element_size()


def _row_chunks(num_rows: int, n: int, row_bytes: int, max_memory: int | None) -> int:
    """How many specification rows to bound at once so that ``n`` samples stay under ``max_memory`` bytes."""
    if max_memory is None:
        return num_rows
    return max(1, min(num_rows, int(max_memory) // max(1, n * row_bytes)))


def _crown_backward_chunked(
    layers: list[nn.Module], records: list[Bounds], lam: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
    clip: tuple[float, float] | None, max_memory: int | None,
) -> torch.Tensor:
    """:func:`_crown_backward` over chunks of the specification rows of ``lam`` (N, S, ...) -> (N, S)."""
    s = lam.shape[1]
    step = _row_chunks(s, x.shape[0], _row_bytes(records, x), max_memory)
    cache = _relaxations(layers, records)
    return torch.cat([_backward_blocks(layers, records, lam[:, i:i + step], x, eps, norm, clip, cache)
                      for i in range(0, s, step)], 1)


#: Bytes of coefficients (samples × rows × widest layer) back-substituted at once: the batch is cut into blocks
#: of samples of this size, so that the per-layer temporaries stay small and reuse freed heap memory instead of
#: page-faulting fresh memory in on every op (a (256, 20, 3136) float tensor is 64 MB, above glibc's largest
#: mmap threshold). CPU time per call on 1 thread, before blocks -> with 4 MB blocks: CNN of CROWN-IBP at
#: 256 points 700 -> 570 ms (78k -> 55k minor faults), MLP full CROWN at 32 points 200 -> 64-75 ms
#: (with the folded rows); 16 MB blocks were slower on the CNN (710-800 ms).
BLOCK_BYTES = 4 << 20


def block_bytes(x: torch.Tensor) -> int:
    """:data:`BLOCK_BYTES` on the CPU; an accelerator (caching allocator, kernels that want large batches)
    gets the whole batch as one block."""
    return BLOCK_BYTES if x.device.type == "cpu" else 1 << 62


def _relaxations(layers: list[nn.Module], records: list[Bounds]) -> dict[int, Any]:
    """The ReLU relaxations of ``layers`` on ``records`` (a relaxation cache for :func:`_crown_backward`)."""
    return {i: (records[i], relu_relaxation(*records[i])) for i, m in enumerate(layers) if isinstance(m, nn.ReLU)}


def _backward_blocks(
    layers: list[nn.Module], records: list[Bounds], lam: torch.Tensor | Patches, x: torch.Tensor, eps: float,
    norm: str, clip: tuple[float, float] | None, cache: dict[int, Any], bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`_crown_backward` over blocks of samples of about :data:`BLOCK_BYTES` of coefficients each.

    Every sample's bound depends on its own rows, records and relaxations only, so the result is the same;
    ``cache`` holds the relaxations of the whole batch (:func:`_relaxations`), sliced per block.
    """
    n = x.shape[0]
    step = max(1, block_bytes(x) // max(1, lam.shape[1] * _widest(records[:len(layers)], x) * x.element_size()))
    if step >= n:
        return _crown_backward(layers, records, lam, x, eps, norm, clip, relax_cache=cache, bias=bias)
    out = []
    for a in range(0, n, step):
        b = min(n, a + step)
        recs = [(lo[a:b], up[a:b]) for lo, up in records]
        sub = {i: (recs[i], tuple(t[a:b] for t in hit[1])) for i, hit in cache.items()}
        if isinstance(lam, Patches):
            lam_b: torch.Tensor | Patches = lam.with_data(lam.data[a:b])
        else:
            lam_b = lam if lam.shape[0] == 1 else lam[a:b]
        bias_b = bias if bias is None or bias.shape[0] == 1 else bias[a:b]
        out.append(_crown_backward(layers, recs, lam_b, x[a:b], eps, norm, clip, relax_cache=sub, bias=bias_b))
    return torch.cat(out)


_ELEMENTWISE = (nn.Flatten, nn.Identity, nn.Dropout, Normalize, nn.BatchNorm1d, nn.BatchNorm2d)
_MIXING = (nn.Linear, nn.Conv2d)


def ibp_exact(layers: list[nn.Module], norm: str) -> bool:
    """Whether IBP already bounds the output of ``layers`` exactly, so that CROWN cannot tighten it.

    True for at most one Linear/Conv2d among element-wise affine layers (Flatten, Identity, Dropout,
    Normalize, BatchNorm); under an L2/L1 ball Normalize and BatchNorm must come after the Linear/Conv2d
    (before it the ball is widened to a box). auto_LiRPA skips these layers' intermediate bounds too.
    """
    mixing = 0
    for m in layers:
        if isinstance(m, _MIXING):
            mixing += 1
        elif not isinstance(m, _ELEMENTWISE):
            return False
        elif norm != "linf" and mixing == 0 and isinstance(m, (Normalize, nn.BatchNorm1d, nn.BatchNorm2d)):
            return False
    return mixing <= 1


def identity_rows(need: torch.Tensor | None, k: int) -> torch.Tensor:
    """Indices of the neurons to bound: those ``need`` (N, k) marks for some sample (all when None)."""
    if need is None:
        return torch.arange(k)
    return need.reshape(need.shape[0], k).any(0).nonzero().squeeze(1).cpu()


def scatter_rows(n: int, k: int, idx: torch.Tensor, los: list[torch.Tensor], ups: list[torch.Tensor],
                 like: torch.Tensor) -> Bounds:
    """(N, k) bounds from the rows computed for ``idx``; the other neurons get (-inf, inf)."""
    if idx.numel() == k:
        return torch.cat(los, 1), torch.cat(ups, 1)
    lo = like.new_full((n, k), -float("inf"))
    up = like.new_full((n, k), float("inf"))
    if idx.numel():
        j = idx.to(like.device)
        lo = lo.index_copy(1, j, torch.cat(los, 1))
        up = up.index_copy(1, j, torch.cat(ups, 1))
    return lo, up


def _crown_bounds_at(
    layers: list[nn.Module], records: list[Bounds], x: torch.Tensor, eps: float, norm: str,
    clip: tuple[float, float] | None, out_shape: torch.Size, max_memory: int | None = None,
    need: torch.Tensor | None = None,
) -> Bounds:
    """Element-wise CROWN bounds of the output of ``layers`` (shape ``out_shape``).

    The identity specification (one row per output neuron; only the neurons ``need`` (N, *out_shape)
    marks for some sample when given, the others get infinite bounds) is bounded in chunks of rows that
    keep the working set under ``max_memory`` bytes; each row's bound does not depend on the others.
    Lower and upper bounds come from one backward pass over the rows ``[I; −I]`` (two passes, one per sign,
    when the coefficients of the batch exceed :data:`BLOCK_BYTES`); when the last layer is a Linear, those
    rows are folded into it (``±W``, shared by all samples: no identity matrix is built).
    """
    k = math.prod(out_shape)
    n = x.shape[0]
    idx = identity_rows(need, k)
    step = _row_chunks(max(1, idx.numel()), n, 2 * _row_bytes(records[:len(layers)], x), max_memory)
    los, ups = [], []
    fold = bool(layers) and isinstance(layers[-1], nn.Linear) and len(out_shape) == 1
    cache = _relaxations(layers, records) if idx.numel() else {}
    for i in range(0, idx.numel(), step):
        rows = idx[i:i + step]
        r = rows.numel()
        if fold:
            body, (lam, bias) = layers[:-1], _folded_rows(layers[-1], rows)
        else:
            body, lam, bias = layers, both_signs(identity_spec(rows, out_shape, n, x)), None
        if n * 2 * r * _widest(records[:len(body)], x) * x.element_size() <= BLOCK_BYTES:
            got = _backward_blocks(body, records, lam, x, eps, norm, clip, cache, bias)
        else:  # large coefficients: the two signs in separate passes keep each temporary half as big
            got = torch.cat([_backward_blocks(body, records, _row_slice(lam, a, a + r), x, eps, norm, clip, cache,
                                              None if bias is None else bias[:, a:a + r]) for a in (0, r)], 1)
        los.append(got[:, :r])
        ups.append(got[:, r:].neg())
    lo, up = scatter_rows(n, k, idx, los, ups, x)
    return lo.view(n, *out_shape), up.view(n, *out_shape)


def _folded_rows(last: Any, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[e_k; −e_k]`` (k in ``rows``) folded into the Linear ``last``: ``[W_k; −W_k]`` (1, 2K, in) and biases."""
    j = rows.to(last.weight.device)
    w = last.weight.index_select(0, j)
    lam = torch.cat([w, -w]).unsqueeze(0)
    if last.bias is None:
        return lam, w.new_zeros(1, 2 * j.numel())
    b = last.bias.index_select(0, j)
    return lam, torch.cat([b, -b]).unsqueeze(0)


def _row_slice(lam: torch.Tensor | Patches, a: int, b: int) -> torch.Tensor | Patches:
    """Rows ``a:b`` of a coefficient tensor (dense or patches)."""
    if isinstance(lam, Patches):
        return Patches(lam.data[:, a:b], lam.oi[a:b], lam.oj[a:b], lam.stride, lam.pad, lam.hw, lam.grid)
    return lam[:, a:b]


def _widest(records: list[Bounds], x: torch.Tensor) -> int:
    """The largest per-sample width among ``records`` (the input's when there are none)."""
    return max([math.prod(lo.shape[1:]) for lo, _ in records] or [math.prod(x.shape[1:])])


def both_signs(spec: torch.Tensor | Patches) -> torch.Tensor | Patches:
    """The rows ``[Λ; −Λ]`` (S doubled): one backward pass gives lower bounds and (negated) upper bounds."""
    if isinstance(spec, Patches):
        return Patches(torch.cat([spec.data, -spec.data], 1), spec.oi.repeat(2), spec.oj.repeat(2), spec.stride,
                       spec.pad, spec.hw, spec.grid)
    return torch.cat([spec, -spec], 1)


def identity_spec(idx: torch.Tensor, shape: torch.Size, n: int, x: torch.Tensor) -> torch.Tensor | Patches:
    """The rows ``e_k`` (k in ``idx``) of a node of per-sample ``shape``: 1×1 patches over a feature map, else dense."""
    if _patches.usable(shape):
        return _patches.identity(idx, shape, n, x)
    k = math.prod(shape)
    rows = F.one_hot(idx.to(x.device), k).to(x.dtype)
    return rows.expand(n, rows.shape[0], k).reshape(n, rows.shape[0], *shape)


def crown_bytes_per_sample(layers: list[nn.Module], records: list[Bounds], x: torch.Tensor, method: str,
                           num_outputs: int) -> int:
    """Estimated peak bytes per input sample of ``method`` when all specification rows are bounded at once.

    ``records`` are the layer-input bounds of one sample (only their shapes are read). IBP keeps two
    bounds per layer; CROWN-IBP runs one backward pass with ``num_outputs`` rows; CROWN also bounds every
    ReLU input (``width`` rows through the layers before it).
    """
    widths = [math.prod(lo.shape[1:]) for lo, _ in records]
    ibp = 4 * sum(widths) * x.element_size()
    if method == "ibp":
        return ibp
    need = num_outputs * _row_bytes(records, x)
    if method == "crown":
        for i, m in enumerate(layers):
            if isinstance(m, nn.ReLU) and i > 0:
                need = max(need, widths[i] * _row_bytes(records[:i], x))
    return max(ibp, need)
