"""Interval bound propagation (IBP) and CROWN-IBP bounds on the logits of a network.

IBP (Gowal et al. 2018, arXiv:1810.12715): for an affine layer ``z = W x + b`` with ``x`` in
``[l, u]``, centre ``c = (u + l) / 2`` and radius ``r = (u - l) / 2`` give
``z in [W c + b - |W| r, W c + b + |W| r]``; monotone activations map the bounds elementwise.
CROWN-IBP (Zhang et al. 2020, arXiv:1906.06316) propagates a linear specification backwards
through the network with linear ReLU relaxations built from the IBP pre-activation bounds.

Each layer type (and each op of an fx graph: ``add``, ``cat``, ``reshape``, ...) has a rule in one table
filled with :func:`register_ibp_rule` (:mod:`._rules`); an unsupported layer fails with a message naming
it (and its fx node) and listing the supported ones. Plain stacks (nested ``nn.Sequential``, ``Residual``)
take a fast path; any other model that ``torch.fx`` can trace goes through the graph interpreter of
:mod:`._graph` (residual adds, concatenations, MaxPool, Tanh/Sigmoid/LeakyReLU relaxations for CROWN).

Norms: ``linf`` (a box, clipped), ``l2`` and ``l1`` (balls; the first Linear or Conv2d is bounded exactly by
the dual norm of each row of its operator, and CROWN concretises with the dual norm at the input).

BatchNorm: every entry point (``interval_bounds``, ``margin_bounds``, ``verified``,
``certified_accuracy``, ``tightness``, and the ``ibp``/``crown_ibp`` training objectives, which call
``margin_bounds``) bounds the network with BatchNorm's eval-mode (running) statistics, whatever the
module's mode, and never updates them: the bounds at ε = 0 equal ``model.eval()(x)``. A BatchNorm
without running statistics (``track_running_stats=False``) raises. Dropout in train mode raises.

Memory: CROWN's backward pass holds ``(N, S, width)`` coefficient tensors (S = neurons bounded at
once). ``max_memory`` (bytes, 1 GiB by default) caps that working set: the spec rows, and in
``verified``/``certified_accuracy`` the batch, are split into chunks sized from the layer widths;
results are identical with and without chunking.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import check_finite, check_in_range, check_int, check_labels, check_option
from ..models import Normalize
from ._crown import (
    DEFAULT_MAX_MEMORY,
    Bounds,
    _cr,
    _crown_backward_chunked,
    _crown_bounds_at,
    _input_box,
    crown_bytes_per_sample,
    ibp_exact,
)
from ._norms import BALL_NORMS, BOUND_NORMS, forward_ball_start
from ._rules import (
    IBP_RULES,
    _batchnorm_eval,
    _is_chain,
    _propagate,
    propagate_owned,
    register_ibp_rule,
    supported_layers,
)

__all__ = [
    "IBP_RULES",
    "certified_accuracy",
    "interval_bounds",
    "margin_bounds",
    "register_ibp_rule",
    "supported_layers",
    "tightness",
    "verified",
]

METHODS = ("ibp", "crown_ibp", "crown")
#: input sets of the bound methods: the L∞ box, the L2 and the L1 ball.
NORMS = BOUND_NORMS


# ----------------------------------------------------------------------------------------------
# Layer lists, input sets, forward IBP with records
# ----------------------------------------------------------------------------------------------
def _layers(model: nn.Module) -> list[nn.Module]:
    """Flatten nested plain ``nn.Sequential`` containers into a list of layers."""
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        out: list[nn.Module] = []
        for child in model:
            out += _layers(child)
        return out
    return [model]


def _validate(model: Any, x: Any, eps: Any, norm: Any, method: Any, owner: str, max_memory: Any = None
              ) -> tuple[float, float] | None:
    """Check the arguments; return ``x``'s (min, max) (``None`` when empty) from one pass and one sync."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__}.")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise TypeError(f"The 'x' parameter of {owner} must be a floating-point batch (N, ...). Got {getattr(x, 'shape', type(x))}.")
    span = None
    if x.numel():
        lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()  # NaN propagates, inf shows: finiteness too
        if not (math.isfinite(lo) and math.isfinite(hi)):
            check_finite(x, "x", owner=owner)
        span = (lo, hi)
    check_in_range(eps, "eps", 0.0, None, owner=owner)
    check_option(norm, "norm", NORMS, owner=owner)
    check_option(method, "method", METHODS, owner=owner)
    if max_memory is not None:
        check_int(max_memory, "max_memory", 1, None, owner=owner)
    return span


def _check_y(y: Any, x: torch.Tensor, num_classes: int | None, owner: str) -> torch.Tensor:
    """Labels: an integer tensor of shape (N,) with classes in ``[0, num_classes)``; returned as int64 on x's device."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"The 'y' parameter of {owner} must have shape ({x.shape[0]},). Got {getattr(y, 'shape', y)}.")
    if num_classes is None:  # dtype only; the range once the class count is known
        check_labels(y[:0], 1, owner=owner)
    else:
        check_labels(y, num_classes, owner=owner)
    return y.to(device=x.device, dtype=torch.long)


def _check_clip(x: torch.Tensor, clip: Any, norm: str, owner: str, span: tuple[float, float] | None = None) -> None:
    """``clip`` is ``None`` or ``(low, high)``; with an L∞ box, ``x`` must lie inside it.

    Otherwise the clipped box ``[x − ε, x + ε] ∩ clip`` would not contain ``x`` and the bounds would not
    hold at ``x`` itself (a silent unsoundness, typically from normalised inputs).
    """
    if clip is None:
        return
    if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and float(clip[0]) < float(clip[1])):
        raise ValueError(f"The 'clip' parameter of {owner} must be None or a pair (low, high) with low < high. "
                         f"Got {clip!r} instead.")
    if norm != "linf" or x.numel() == 0:
        return  # the L2 paths ignore clip
    lo, hi = span if span is not None else (float(x.min()), float(x.max()))
    if lo < float(clip[0]) - 1e-6 or hi > float(clip[1]) + 1e-6:
        raise ValueError(
            f"'x' of {owner} must lie in clip={tuple(clip)} (got min {lo:.4g}, max {hi:.4g}); put input "
            "normalization inside the model (robustlab.models.Normalize), or pass clip=None for an unclipped box.")


def _ibp_forward(
    layers: list[nn.Module], x: torch.Tensor, eps: float, norm: str, clip: tuple[float, float] | None,
    *, crown: bool = False, max_memory: int | None = None, records_needed: bool = True,
) -> tuple[Bounds, list[Bounds]]:
    """IBP through ``layers``; ``records[i]`` = input bounds of layer ``i``.

    With ``crown=True`` the input bounds of every ReLU are tightened by a CROWN backward pass
    (full CROWN, rows chunked under ``max_memory`` bytes) before the ReLU is applied: for the neurons
    unstable under IBP (the only ones whose relaxation depends on the bounds), unless IBP is exact there.
    With ``records_needed=False`` and no autograd, the layers overwrite their fresh input bounds
    (:func:`propagate_owned`, same bounds) and ``records`` is empty.
    """
    start = 0
    box = _input_box(x, eps, clip if norm == "linf" else None)
    lower, upper = box
    records: list[Bounds] = []
    if norm in BALL_NORMS:
        got = forward_ball_start(layers, x, eps, norm)
        if got is not None:
            start, (lower, upper) = got
            records = [box] * start  # not used by CROWN's backward before the first linear layer
    if not (records_needed or crown or torch.is_grad_enabled()):
        return propagate_owned(layers[start:], lower, upper), []
    for i in range(start, len(layers)):
        m = layers[i]
        if crown and isinstance(m, nn.ReLU) and i > 0 and not ibp_exact(layers[:i], norm):
            unstable = (lower < 0) & (upper > 0)  # only these neurons' relaxations depend on the bounds
            lc, uc = _crown_bounds_at(layers[:i], records, x, eps, norm, clip, lower.shape[1:], max_memory, unstable)
            lower, upper = torch.maximum(lower, lc), torch.minimum(upper, uc)
        records.append((lower, upper))
        lower, upper = _propagate(m, lower, upper)
    return (lower, upper), records


def interval_bounds(
    model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf", method: str = "ibp",
    clip: tuple[float, float] | None = (0.0, 1.0), max_memory: int | None = DEFAULT_MAX_MEMORY,
) -> Bounds:
    """Element-wise ``(lower, upper)`` bounds on ``model``'s logits over the ε-ball around each ``x``.

    ``norm``: ``linf`` (box ``[x - eps, x + eps]`` intersected with ``clip``), ``l2`` or ``l1`` (the first
    Linear or Conv2d is bounded exactly by the dual norm of each row of its operator, ``eps * ||W_i||_2``
    resp. ``eps * max_j |W_ij|``, later layers by intervals; ``clip`` is ignored). ``method``: ``ibp``,
    ``crown_ibp`` (backward linear bounds with IBP intermediate bounds, Zhang et al. 2020) or ``crown``
    (intermediate bounds by CROWN too). ``model``: any model torch.fx can trace whose ops have rules.
    BatchNorm uses its running statistics whatever the model's mode (at ε = 0 the bounds equal
    ``model.eval()(x)``); Dropout must be in eval mode. ``max_memory`` (bytes, ``None`` = no cap)
    bounds CROWN's working set by chunking the specification rows (same results).
    """
    span = _validate(model, x, eps, norm, method, "interval_bounds", max_memory)
    _check_clip(x, clip, norm, "interval_bounds", span)
    layers = _layers(model)
    with _batchnorm_eval(model):
        if not _is_chain(layers, method):
            from ._graph_crown import graph_interval_bounds

            return _in_blocks(model, x, method, lambda xb: graph_interval_bounds(
                model, xb, float(eps), norm, method, clip, max_memory))
        if method == "ibp":
            return _in_blocks(model, x, method, lambda xb: _ibp_forward(layers, xb, float(eps), norm, clip,
                                                                        records_needed=False)[0])
        (lower, upper), records = _ibp_forward(layers, x, float(eps), norm, clip, crown=method == "crown",
                                               max_memory=max_memory)
        lo, up = _crown_bounds_at(layers, records, x, float(eps), norm, clip, lower.shape[1:], max_memory)
    return torch.maximum(lo, lower), torch.minimum(up, upper)


#: Bytes of the widest interval bound that IBP propagates at once on the CPU: the batch is cut into blocks of
#: samples of this size, so each layer's temporaries stay in cache and reuse freed heap memory instead of
#: page-faulting fresh memory in. In-process A/B (256 MNIST points, 1 thread, min of 30 rounds): CROWN-IBP's
#: CNN 22 -> 17 ms, the residual CNN of benchmarks/_certify_models.py 83 -> 63 ms, the MLP unchanged (one block).
IBP_BLOCK_BYTES = 1 << 20


_WIDEST: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], int]] = weakref.WeakKeyDictionary()


def _widest_activation(model: nn.Module, x1: torch.Tensor) -> int:
    """Entries of the widest module output for the one sample ``x1`` (a plain forward pass with hooks, once per
    model and input shape: it only sets the block size)."""
    shape = tuple(x1.shape[1:])
    known = _WIDEST.setdefault(model, {})
    if shape not in known:
        known[shape] = _measure_widest(model, x1)
    return known[shape]


def _measure_widest(model: nn.Module, x1: torch.Tensor) -> int:
    widest = x1.numel()

    def hook(m: nn.Module, args: Any, out: Any) -> None:
        nonlocal widest
        if isinstance(out, torch.Tensor):
            widest = max(widest, out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    return widest


def _in_blocks(model: nn.Module, x: torch.Tensor, method: str, fn: Any, *more: torch.Tensor) -> Any:
    """``fn(x, *more)`` for IBP, over blocks of samples of about :data:`IBP_BLOCK_BYTES` on the CPU (each
    sample's bounds depend on that sample only; the outputs, a tensor or a tuple of them, are concatenated).
    Only without autograd (certification, evaluation): certified training keeps its batch whole. CROWN cuts
    its own blocks; an accelerator gets the whole batch."""
    n = x.shape[0]
    small = n * x[0].numel() * x.element_size() <= IBP_BLOCK_BYTES // 8
    if method != "ibp" or torch.is_grad_enabled() or x.device.type != "cpu" or n < 2 or small:
        return fn(x, *more)
    step = max(1, IBP_BLOCK_BYTES // (_widest_activation(model, x[:1]) * x.element_size()))
    if step >= n:
        return fn(x, *more)
    outs = [fn(x[a:a + step], *(t[a:a + step] for t in more)) for a in range(0, n, step)]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    return tuple(torch.cat(parts) for parts in zip(*outs))


def _spec_matrix(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``C[n, j] = e_{y_n} - e_j`` of shape (N, C, C); row ``j = y_n`` is zero."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margin_bounds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
    method: str = "ibp", clip: tuple[float, float] | None = (0.0, 1.0), max_memory: int | None = DEFAULT_MAX_MEMORY,
) -> torch.Tensor:
    """Lower bounds (N, C) on the margins ``z_y - z_j`` over the ε-ball (entry ``j = y`` is 0).

    The specification matrix ``C = e_y - e_j`` is folded into the last Linear layer before taking
    absolute values (tighter than ``l_y - u_j``). A point is verified iff all entries ``j != y`` are
    positive. ``-margin_bounds`` are the worst-case logits used by certified training. ``y``: integer
    class indices of any integer dtype. BatchNorm and ``max_memory`` as in :func:`interval_bounds`.
    """
    owner = "margin_bounds"
    span = _validate(model, x, eps, norm, method, owner, max_memory)
    _check_clip(x, clip, norm, owner, span)
    y = _check_y(y, x, None, owner)
    layers = _layers(model)
    with _batchnorm_eval(model):
        return _in_blocks(model, x, method, lambda xb, yb: _margin_bounds(model, layers, xb, yb, float(eps), norm,
                                                                         method, clip, max_memory), y)


def _margin_bounds(
    model: nn.Module, layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
    method: str, clip: tuple[float, float] | None, max_memory: int | None,
) -> torch.Tensor:
    owner = "margin_bounds"
    if not _is_chain(layers, method):
        from ._graph_crown import graph_margin_bounds

        lb = graph_margin_bounds(model, x, y, eps, norm, method, clip, max_memory)
        return lb.masked_fill(F.one_hot(y, lb.shape[1]).bool(), 0.0)
    if norm in BALL_NORMS and method == "ibp" and all(isinstance(m, (nn.Flatten, nn.Identity, Normalize, nn.Linear)) for m in layers):
        method = "crown_ibp"  # an affine network: the backward bound with the dual norm is exact
    last: Any = layers[-1]
    elide = isinstance(last, nn.Linear)  # a bare Linear too: its body is empty and the input box is used
    body = layers[:-1] if elide else layers
    (lower, upper), records = _ibp_forward(body, x, eps, norm, clip, crown=method == "crown", max_memory=max_memory,
                                           records_needed=method != "ibp")
    if elide:
        num_classes = last.weight.shape[0]
        lb = _elided_margin(last, lower, upper, y, x)
    else:
        if lower.dim() != 2:
            raise ValueError(f"{owner} needs a model returning (N, C) logits. Got shape {tuple(lower.shape)}.")
        num_classes = lower.shape[1]
        _check_y(y, x, num_classes, owner)
        lb = lower.gather(1, y[:, None]) - upper
    if method != "ibp":
        spec = _spec_matrix(y, num_classes, x.dtype)
        if elide:
            records = records + [(lower, upper)]
        crown = _crown_backward_chunked(layers, records, spec, x, eps, norm, clip, max_memory)
        lb = torch.maximum(lb, crown)
    return lb.masked_fill(torch.nn.functional.one_hot(y, num_classes).bool(), 0.0)


def _elided_margin(last: Any, lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """IBP margin bounds with ``C = e_y - e_j`` folded into the final Linear ``last`` (input box ``lower, upper``)."""
    num_classes = last.weight.shape[0]
    _check_y(y, x, num_classes, "margin_bounds")
    c, r = _cr(lower, upper)
    w = last.weight
    hidden = w.shape[1]
    z = F.linear(c, w, last.bias)
    centre = z.gather(1, y[:, None]) - z  # C (W c + b) = z_y - z
    # |C W| r for every possible true class in one GEMM: A[k, j] = |w_k - w_j|, (N, H) x (H, C*C)
    a = (w.unsqueeze(1) - w.unsqueeze(0)).abs().reshape(num_classes * num_classes, hidden)
    rad = (r @ a.T).view(-1, num_classes, num_classes)
    return centre - rad.gather(1, y.view(-1, 1, 1).expand(-1, 1, num_classes)).squeeze(1)


def certified_accuracy(
    model: nn.Module, data: Any, *, eps: float, norm: str = "linf", method: str = "ibp",
    batch_size: int = 256, clip: tuple[float, float] | None = (0.0, 1.0),
    max_memory: int | None = DEFAULT_MAX_MEMORY, progress: bool | None = None,
) -> float:
    """Fraction of test points whose margin lower bounds are all positive over the ε-ball.

    ``data`` is a :class:`~robustlab.data.ClassificationData` (its test split) or a pair ``(x, y)``.
    Runs the model in eval mode (restored afterwards) without gradients; batching, ``max_memory`` and
    ``progress`` as in :func:`verified`. A torch Dataset / DataLoader / StreamingData is read ``batch_size``
    points at a time (same number: the mask does not depend on the batching).
    """
    from ..data._stream import is_streaming

    if is_streaming(data):
        from ._data import certified_accuracy_stream

        return certified_accuracy_stream(model, data, eps=eps, norm=norm, method=method, batch_size=batch_size,
                                         clip=clip, max_memory=max_memory, progress=progress)
    x, y = _xy(data, "certified_accuracy")
    ok = verified(model, x, y, eps=eps, norm=norm, method=method, batch_size=batch_size, clip=clip,
                  max_memory=max_memory, progress=progress)
    return float(ok.float().mean()) if ok.numel() else float("nan")


def verified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
    method: str = "ibp", batch_size: int = 256, clip: tuple[float, float] | None = (0.0, 1.0),
    max_memory: int | None = DEFAULT_MAX_MEMORY, progress: bool | None = None,
) -> torch.Tensor:
    """Boolean (N,) mask of points certified at ``eps`` (eval mode, batched, no gradients).

    Points are bounded ``batch_size`` at a time, fewer when the estimated working set of ``method``
    (from the layer widths, see :func:`robustlab.certify._crown.crown_bytes_per_sample`) would exceed
    ``max_memory`` bytes (1 GiB by default; ``None`` = no cap). The mask does not depend on the chunking.
    ``progress``: a bar over the points (``None``: when stderr is a TTY).

    Example::

        ok = verified(model, x, y, eps=0.1, method="crown", max_memory=2 << 30, progress=True)
    """
    owner = "verified"
    span = _validate(model, x, eps, norm, method, owner, max_memory)
    _check_clip(x, clip, norm, owner, span)
    batch_size = check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    was = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), x.device)
    out = []
    layers = _layers(model)
    try:
        with torch.no_grad():
            chunk = batch_size
            y = _check_y(y, x, None, owner)
            if x.shape[0]:
                x1 = x[:1].to(dev)
                per, num_out = _bytes_per_sample(model, layers, x1, norm, method)
                y = _check_y(y, x, num_out, owner)
                if max_memory is not None:
                    chunk = max(1, min(batch_size, int(max_memory) // max(1, per)))
            with progress_bar(total=x.shape[0], desc=f"certify {method} eps={float(eps):g}", enabled=progress,
                              unit="pt") as bar:
                for i in range(0, x.shape[0], chunk):
                    xb, yb = x[i:i + chunk].to(dev), y[i:i + chunk].to(dev)
                    lb = margin_bounds(model, xb, yb, eps=eps, norm=norm, method=method, clip=clip,
                                       max_memory=max_memory)
                    lb = lb.masked_fill(F.one_hot(yb, lb.shape[1]).bool(), float("inf"))
                    out.append((lb > 0).all(1).cpu())
                    bar.update(xb.shape[0])
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _bytes_per_sample(model: nn.Module, layers: list[nn.Module], x1: torch.Tensor, norm: str,
                      method: str) -> tuple[int, int | None]:
    """Estimated peak bytes per sample of ``method`` and the number of classes (None: not (N, C) logits)."""
    with _batchnorm_eval(model):
        if not _is_chain(layers, method):
            from ._graph_crown import graph_bytes_per_sample

            return graph_bytes_per_sample(model, x1, norm, method)
        (lo1, _), recs = _ibp_forward(layers, x1, 0.0, norm, None)  # shapes only
    per = crown_bytes_per_sample(layers, recs, x1, method, math.prod(lo1.shape[1:]))
    return per, (lo1.shape[1] if lo1.dim() == 2 else None)


def _xy(data: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import ClassificationData

    if isinstance(data, ClassificationData):
        return data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"The 'data' parameter of {owner} must be a ClassificationData or a pair (x, y). Got {type(data).__name__}.")


from ._tightness import tightness  # noqa: E402  (it uses the layer helpers above)
