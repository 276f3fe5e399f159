"""CROWN / CROWN-IBP back-substitution through an fx graph, and the graph entry points of ``certify.ibp``.

See :mod:`._graph` for the forward pass. The backward pass accumulates one coefficient tensor
``Λ`` (N, S, *node shape) per node; a node used by several others (a residual input, a tensor
concatenated with itself) receives the sum of their ``Λ``. Memory: ``max_memory`` bytes bound the
working set by chunking the specification rows, as for sequential models (same results).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..models import MoEConv2d, Normalize
from . import _crown, _patches, _relax
from ._crown import (
    _affine_vjp,
    _conv2d_backward,
    _row_bytes,
    _row_chunks,
    _row_slice,
    _widest,
    both_signs,
    concretize,
    identity_rows,
    identity_spec,
    scatter_rows,
)
from ._graph import (
    _AFFINE_FNS,
    _NONLINEAR_MODULES,
    NONLINEAR,
    Box,
    Trace,
    _call,
    _map,
    describe,
    forward,
    op_name,
    output_node,
    trace,
)
from ._moe_crown import moe_back
from ._patches import Patches

_CROWN_OPS = ("Linear, Conv2d, ReLU, LeakyReLU, Tanh, Sigmoid, MaxPool2d, MoEConv2d, BatchNorm (eval), AvgPool2d, "
              "AdaptiveAvgPool2d, Flatten, Identity, Dropout (eval), Normalize, and the functions add, sub, mul/div "
              "by a constant, neg, cat, reshape/view/flatten, indexing, sum/mean, relu, tanh, sigmoid, leaky_relu, "
              "max_pool2d, avg_pool2d, linear")


def _unsupported(t: Trace, node: fx.Node) -> TypeError:
    return TypeError(f"CROWN bounds do not support {describe(node, t.gm)}. CROWN supports: {_CROWN_OPS}; "
                     "use method='ibp' (IBP has a rule for every op of this model).")


def _elementwise_relaxation(t: Trace, node: fx.Node) -> _relax.Relaxation | None:
    """The linear relaxation of an element-wise nonlinear node (ReLU, LeakyReLU with slope in [0, 1], Tanh,
    Sigmoid; modules or functions of one bounded input) on its input bounds; None for any other node.

    Kept in ``t.relax`` while the input's bounds stay the same object (one computation per bound pass set)."""
    first = node.args[0] if node.args else None
    if first not in t.boxes:
        return None
    box = t.boxes[first]  # type: ignore[index]
    hit = t.relax.get(node)
    if hit is not None and hit[0] is box:
        return hit[1]
    relax = _relaxation_on(t, node, box)
    t.relax[node] = (box, relax)
    return relax


def _relaxation_on(t: Trace, node: fx.Node, box: Any) -> _relax.Relaxation | None:
    """:func:`_elementwise_relaxation` on the input bounds ``box`` (not cached)."""
    if node.op == "call_module":
        m = t.gm.get_submodule(str(node.target))
        kind = next((k for c, k in ((nn.ReLU, "relu"), (nn.LeakyReLU, "leaky_relu"), (nn.Tanh, "tanh"),
                                    (nn.Sigmoid, "sigmoid")) if isinstance(m, c)), None)
        slope = getattr(m, "negative_slope", 0.0)
    else:
        kind = op_name(node)
        if kind not in ("relu", "leaky_relu", "tanh", "sigmoid") or len([a for a in node.all_input_nodes if a in t.boxes]) != 1:
            return None
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
    if kind in ("relu", "leaky_relu"):
        slope = 0.0 if kind == "relu" else slope
        if not isinstance(slope, (int, float)) or not 0 <= slope <= 1:
            return None
        return _relax.relu_relaxation(box.lower, box.upper, float(slope))
    if kind in ("tanh", "sigmoid"):
        return (_relax.tanh_relaxation if kind == "tanh" else _relax.sigmoid_relaxation)(box.lower, box.upper)
    return None


def _module_back(t: Trace, node: fx.Node, m: nn.Module, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inp = node.args[0]
    box = t.boxes[inp]  # type: ignore[index]
    in_shape = box.shape[1:]
    n, s = lam.shape[:2]
    zero = lam.new_zeros(n, s)
    if isinstance(m, nn.Linear):
        b = (lam @ m.bias).reshape(n, s, -1).sum(-1) if m.bias is not None else zero
        return lam @ m.weight, b
    if isinstance(m, nn.Conv2d) and not isinstance(m.padding, str) and m.padding_mode == "zeros":
        return _conv2d_backward(m, lam, in_shape)
    if isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
        if isinstance(m, nn.Dropout) and m.training and m.p > 0:
            raise TypeError("CROWN through Dropout needs the model in eval mode (model.eval()).")
        return lam.reshape(n, s, *in_shape), zero
    if isinstance(m, Normalize):
        lam = lam / m.std
        return lam, -(lam * m.mean).flatten(2).sum(-1)
    if isinstance(m, (nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _affine_vjp(m, lam, in_shape)
    relax = _elementwise_relaxation(t, node)
    if relax is not None:
        return _relax.apply_relaxation(lam, relax)
    if isinstance(m, nn.MaxPool2d):
        p = _relax.maxpool_params(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
        return _relax.maxpool_backward(lam, box.lower, box.upper, p)
    if isinstance(m, MoEConv2d):
        return moe_back(m, lam, box.lower, box.upper)
    raise _unsupported(t, node)


def _fn_back(t: Trace, node: fx.Node, lam: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]] | tuple[Any, ...]:
    name = op_name(node)
    n, s = lam.shape[:2]
    ins = [a for a in node.all_input_nodes if a in t.boxes]
    first = node.args[0] if node.args else None
    if name in NONLINEAR:
        if first not in t.boxes or len(ins) != 1:
            raise _unsupported(t, node)
        box = t.boxes[first]  # type: ignore[index]
        if name == "max_pool2d":
            p = _relax.maxpool_params(*node.args[1:], **node.kwargs)  # type: ignore[arg-type]
            return ([(first, None)], *_relax.maxpool_backward(lam, box.lower, box.upper, p))
        relax = _elementwise_relaxation(t, node)
        if relax is None:
            raise _unsupported(t, node)
        return ([(first, None)], *_relax.apply_relaxation(lam, relax))
    if name == "reshape" and first in t.boxes and len(ins) == 1:
        return [(first, lam.reshape(n, s, *t.boxes[first].shape[1:]))], lam.new_zeros(n, s)  # type: ignore[index]
    if _is_plain_add(t, node):
        return [(a, lam) for a in ins], lam.new_zeros(n, s)
    if name in _AFFINE_FNS:
        return _vjp(t, node, lam, ins)
    raise _unsupported(t, node)


def _is_plain_add(t: Trace, node: fx.Node) -> bool:
    """``a + b`` of two bounded tensors of the output's shape (a residual add: Λ goes to both unchanged)."""
    ins = [a for a in node.all_input_nodes if a in t.boxes]
    return (op_name(node) == "add" and len(node.args) == 2 and not node.kwargs and len(ins) == 2
            and all(t.boxes[a].shape == t.boxes[node].shape for a in ins))


def _patches_back(t: Trace, node: fx.Node, p: Patches) -> tuple[list[tuple[fx.Node, Patches]], torch.Tensor] | None:
    """One node of :func:`backward` in patches form; None when the node needs the dense form."""
    first = node.args[0] if node.args else None
    if node.op not in ("call_module", "call_function", "call_method") or first not in t.boxes:
        return None
    if _is_plain_add(t, node):
        return [(a, p) for a in node.all_input_nodes if a in t.boxes], p.data.new_zeros(p.data.shape[:2])
    box = t.boxes[first]  # type: ignore[index]
    if box.lower.dim() != 4 or len([a for a in node.all_input_nodes if a in t.boxes]) != 1:
        return None
    relax = _elementwise_relaxation(t, node)
    if relax is not None:
        got = _patches.relax_back(p, relax)
    elif node.op == "call_module":
        got = _patches.module_back(t.gm.get_submodule(str(node.target)), p,  # type: ignore[assignment]
                                   (int(box.shape[-2]), int(box.shape[-1])))
    else:
        return None
    return None if got is None else ([(first, got[0])], got[1])  # type: ignore[list-item]


def _vjp(t: Trace, node: fx.Node, lam: torch.Tensor, ins: list[fx.Node]) -> tuple[list[tuple[fx.Node, torch.Tensor]], torch.Tensor]:
    """Transpose of an affine op of several bounded inputs via one vector-Jacobian product (and its offset)."""
    n, s = lam.shape[:2]
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        zs = {a: torch.zeros((n * s, *t.boxes[a].shape[1:]), dtype=lam.dtype, device=lam.device, requires_grad=True)
              for a in ins}

        def sub(a: Any) -> Any:
            return (zs[a] if a in zs else t.values[a]) if isinstance(a, fx.Node) else a

        out = _call(t.gm, node, _map(node.args, sub), _map(dict(node.kwargs), sub))
        flat = lam.reshape(n * s, *out.shape[1:])
        grads = torch.autograd.grad(out, list(zs.values()), flat, create_graph=keep, allow_unused=True)
    b = (flat * out).reshape(n, s, -1).sum(-1)
    parts = []
    for a, g in zip(ins, grads):
        g = torch.zeros_like(zs[a]) if g is None else g
        parts.append((a, (g if keep else g.detach()).view(n, s, *t.boxes[a].shape[1:])))
    return parts, (b if keep else b.detach())


def backward(t: Trace, start: fx.Node, lam: torch.Tensor | Patches, x: torch.Tensor, eps: float, norm: str,
             clip: tuple[float, float] | None) -> torch.Tensor:
    """Lower bound (N, S) of ``lam · node(x')`` over the input set, ``lam`` (N, S, *shape of ``start``).

    ``lam`` may be :class:`._patches.Patches` (rows over a feature map): they stay patches through
    convolutions, element-wise relaxations, per-channel affine maps and residual adds, and become dense
    at any other node.
    """
    n, s = lam.shape[:2]
    bias = x.new_zeros(n, s)
    acc: dict[fx.Node, Any] = {start: lam}
    for node in reversed(t.nodes[: t.nodes.index(start) + 1]):
        lam_n = acc.pop(node, None)
        if lam_n is None:
            continue
        if isinstance(lam_n, Patches):
            if node.op == "placeholder":
                return _patches.concretize(lam_n, bias, x, eps, norm, clip)
            got_p = _patches_back(t, node, lam_n)
            if got_p is not None:
                bias = bias + got_p[1]
                for a, la in got_p[0]:
                    acc[a] = _patches.add(acc[a], la) if a in acc else la
                continue
            lam_n = lam_n.to_dense()
        if node.op == "placeholder":
            return concretize(lam_n, bias, x, eps, norm, clip)
        if node.op == "call_module":
            m = t.gm.get_submodule(str(node.target))
            got = _module_back(t, node, m, lam_n)
            parts: Any = [(node.args[0], got[0])]
            b: Any = got[1]
        else:
            res: Any = _fn_back(t, node, lam_n)
            if len(res) == 3:  # a relaxation: ([(input, None)], lam_in, bias)
                parts, b = [(res[0][0][0], res[1])], res[2]
            else:
                parts, b = res
        bias = bias + b
        for a, la in parts:
            acc[a] = _patches.add(acc[a], la) if a in acc else la
    return bias  # the specification does not depend on the input


def _records(t: Trace, upto: fx.Node) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Bounds of the nodes up to ``upto`` (their shapes size the CROWN working set); an MoE layer's coefficients
    are held once per expert, which an extra (1, experts × width) entry accounts for."""
    stop = t.nodes.index(upto) + 1
    out = []
    for a in t.nodes[:stop]:
        if a in t.boxes:
            out.append((t.boxes[a].lower, t.boxes[a].upper))
            moe = t.gm.get_submodule(str(a.target)) if a.op == "call_module" else None
            if isinstance(moe, MoEConv2d):
                wide = t.boxes[a].lower.new_empty((1, moe.num_experts * t.boxes[a].lower[0].numel()))
                out.append((wide, wide))
    return out


def backward_chunked(t: Trace, start: fx.Node, lam: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
                     clip: tuple[float, float] | None, max_memory: int | None) -> torch.Tensor:
    """:func:`backward` over chunks of the specification rows that keep the working set under ``max_memory``."""
    s = lam.shape[1]
    step = _row_chunks(s, x.shape[0], _row_bytes(_records(t, start), x), max_memory)
    return torch.cat([backward_blocks(t, start, lam[:, i:i + step], x, eps, norm, clip) for i in range(0, s, step)], 1)


def backward_blocks(t: Trace, start: fx.Node, lam: torch.Tensor | Patches, x: torch.Tensor, eps: float, norm: str,
                    clip: tuple[float, float] | None) -> torch.Tensor:
    """:func:`backward` over blocks of samples of about ``4 × _crown.BLOCK_BYTES`` of coefficients (same bounds).

    Larger blocks than for chains: each block re-slices the trace and re-derives its relaxations (residual CNN
    of the benchmark, 64 points, CPU time per call: 4 MB blocks 660-820 ms, 16 MB 545-565 ms, before 600 ms).
    """
    n = x.shape[0]
    per = lam.shape[1] * _widest(_records(t, start), x) * x.element_size()
    step = max(1, 4 * _crown.block_bytes(x) // max(1, per))
    if step >= n:
        return backward(t, start, lam, x, eps, norm, clip)
    out = []
    for a in range(0, n, step):
        b = min(n, a + step)
        lam_b = lam.with_data(lam.data[a:b]) if isinstance(lam, Patches) else lam[a:b]
        out.append(backward(_samples(t, a, b), start, lam_b, x[a:b], eps, norm, clip))
    return torch.cat(out)


def _samples(t: Trace, a: int, b: int) -> Trace:
    """The trace of samples ``a:b`` (bounds and cached relaxations sliced; constants shared)."""
    boxes = {k: Box(v.lower[a:b], v.upper[a:b]) for k, v in t.boxes.items()}
    relax = {}
    for node, (box, lines) in t.relax.items():
        src = next((k for k, v in t.boxes.items() if v is box), None)
        if src is not None and lines is not None:
            relax[node] = (boxes[src], tuple(r[a:b] for r in lines))
    return Trace(t.gm, t.nodes, boxes, t.values, t.output, relax)


def bounds_at(t: Trace, node: fx.Node, x: torch.Tensor, eps: float, norm: str, clip: tuple[float, float] | None,
              max_memory: int | None, need: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise CROWN bounds of ``node`` (identity specification, rows chunked under ``max_memory``).

    ``need`` (N, *shape): bound only the neurons it marks for some sample; the others get infinite bounds.
    """
    shape = t.boxes[node].shape[1:]
    k, n = math.prod(shape), x.shape[0]
    idx = identity_rows(need, k)
    step = _row_chunks(max(1, idx.numel()), n, 2 * _row_bytes(_records(t, node), x), max_memory)
    los, ups = [], []
    widest = _widest(_records(t, node), x)
    for i in range(0, idx.numel(), step):  # lower and upper bounds from one pass over the rows [I; -I]
        rows = idx[i:i + step]
        r = rows.numel()
        lam = both_signs(identity_spec(rows, shape, n, x))
        if n * 2 * r * widest * x.element_size() <= _crown.BLOCK_BYTES:
            got = backward_blocks(t, node, lam, x, eps, norm, clip)
        else:  # large coefficients: one pass per sign keeps each temporary half as big
            got = torch.cat([backward_blocks(t, node, _row_slice(lam, a, a + r), x, eps, norm, clip) for a in (0, r)], 1)
        los.append(got[:, :r])
        ups.append(got[:, r:].neg())
    lo, up = scatter_rows(n, k, idx, los, ups, x)
    return lo.view(n, *shape), up.view(n, *shape)


_ELEMENTWISE = (nn.Flatten, nn.Identity, nn.Dropout, Normalize, nn.BatchNorm1d, nn.BatchNorm2d)


def ibp_exact_at(t: Trace, node: fx.Node, norm: str) -> bool:
    """Whether IBP bounds ``node`` exactly: one path from the input with at most one Linear/Conv2d among
    element-wise affine ops (as :func:`._crown.ibp_exact` for chains)."""
    mixing, cur = 0, node
    while cur.op != "placeholder":
        ins = [a for a in cur.all_input_nodes if a in t.boxes]
        if len(ins) != 1:
            return False
        if cur.op == "call_module":
            m = t.gm.get_submodule(str(cur.target))
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                mixing += 1
            elif not isinstance(m, _ELEMENTWISE) or (norm != "linf" and mixing and not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout))):
                return False
        elif op_name(cur) != "reshape":
            return False
        cur = ins[0]
    return mixing <= 1


def _relu_only(t: Trace, node: fx.Node) -> bool:
    """Whether every relaxation fed by ``node`` is a ReLU / LeakyReLU (exact where IBP says it is stable)."""
    for user in node.users:
        if user.op == "call_module":
            if not isinstance(t.gm.get_submodule(str(user.target)), (nn.ReLU, nn.LeakyReLU)) and \
                    isinstance(t.gm.get_submodule(str(user.target)), _NONLINEAR_MODULES):
                return False
        elif op_name(user) in NONLINEAR and op_name(user) not in ("relu", "leaky_relu"):
            return False
    return True


# ----------------------------------------------------------------------------------------------
# Entry points used by certify.ibp for models that are not plain chains of layers
# ----------------------------------------------------------------------------------------------
def graph_forward(model: nn.Module, x: torch.Tensor, eps: float, norm: str, method: str,
                  clip: tuple[float, float] | None, max_memory: int | None, *, stop_before_output: bool = False,
                  keep_boxes: bool = True) -> Trace:
    """Trace ``model`` and bound every node (``method='crown'``: CROWN bounds before every relaxation).

    ``keep_boxes=False`` with ``method='ibp'`` and no autograd: only the last node's bounds are kept, the
    layers overwrite their inputs where they alone use them (``_graph.forward``'s ``in_place``).
    """
    from ._rules import _graph_rules

    has_rule, module_rule, fn_rule = _graph_rules()
    gm = trace(model, has_rule)
    out = output_node(gm)
    stop = None
    if stop_before_output and out.op == "call_module" and isinstance(gm.get_submodule(str(out.target)), nn.Linear) \
            and isinstance(out.args[0], fx.Node):
        stop = out.args[0]

    def tighten(tr: Trace, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
        box = tr.boxes[node]
        if ibp_exact_at(tr, node, norm):
            return box.lower, box.upper
        need = (box.lower < 0) & (box.upper > 0) if _relu_only(tr, node) else None
        return bounds_at(tr, node, x, eps, norm, clip, max_memory, need)

    from ._rules import out_kind, owned_twin

    pure = method == "ibp" and not keep_boxes and not torch.is_grad_enabled()
    t = forward(gm, x, eps, norm, clip, module_rule, fn_rule, stop=stop,
                tighten=tighten if method == "crown" else None, in_place=(owned_twin, out_kind) if pure else None)
    t.output = t.nodes[-1]
    return t


def graph_interval_bounds(model: nn.Module, x: torch.Tensor, eps: float, norm: str, method: str,
                          clip: tuple[float, float] | None, max_memory: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``interval_bounds`` for a traced graph."""
    t = graph_forward(model, x, eps, norm, method, clip, max_memory, keep_boxes=method != "ibp")
    box = t.boxes[t.output]
    if method == "ibp":
        return box.lower, box.upper
    lo, up = bounds_at(t, t.output, x, eps, norm, clip, max_memory)
    return torch.maximum(lo, box.lower), torch.minimum(up, box.upper)


def graph_margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, method: str,
                        clip: tuple[float, float] | None, max_memory: int | None) -> torch.Tensor:
    """``margin_bounds`` for a traced graph: the last Linear is folded into the specification as for chains."""
    from .ibp import _check_y, _elided_margin, _spec_matrix

    t = graph_forward(model, x, eps, norm, method, clip, max_memory, stop_before_output=True,
                      keep_boxes=method != "ibp")
    out = output_node(t.gm)
    box = t.boxes[t.output]
    if t.output is not out:  # stopped before a final Linear
        last: Any = t.gm.get_submodule(str(out.target))
        lb = _elided_margin(last, box.lower, box.upper, y, x)
        num_classes = last.weight.shape[0]
    else:
        if box.lower.dim() != 2:
            raise ValueError(f"margin_bounds needs a model returning (N, C) logits. Got shape {tuple(box.shape)}.")
        num_classes = box.shape[1]
        _check_y(y, x, num_classes, "margin_bounds")
        lb = box.lower.gather(1, y[:, None]) - box.upper
    if method != "ibp":
        spec = _spec_matrix(y, num_classes, x.dtype)
        if t.output is not out:
            spec = spec @ last.weight
            b = spec.new_zeros(spec.shape[:2]) if last.bias is None else _spec_matrix(y, num_classes, x.dtype) @ last.bias
            crown = backward_chunked(t, t.output, spec.view(*spec.shape[:2], *box.shape[1:]), x, eps, norm, clip,
                                     max_memory) + b
        else:
            crown = backward_chunked(t, t.output, spec, x, eps, norm, clip, max_memory)
        lb = torch.maximum(lb, crown)
    return lb


def graph_bytes_per_sample(model: nn.Module, x1: torch.Tensor, norm: str, method: str) -> tuple[int, int | None]:
    """``(estimated peak bytes per sample of method, number of classes)`` for a traced graph (one sample ``x1``)."""
    t = graph_forward(model, x1, 0.0, norm, "ibp", None, None)
    recs = _records(t, t.output)
    widths = [math.prod(lo.shape[1:]) for lo, _ in recs]
    ibp = 4 * sum(widths) * x1.element_size()
    out_shape = t.boxes[t.output].shape[1:]
    num_out, classes = math.prod(out_shape), (out_shape[0] if len(out_shape) == 1 else None)
    if method == "ibp":
        return ibp, classes
    need = num_out * _row_bytes(recs, x1)
    if method == "crown":
        from ._graph import _feeds_relaxation

        for node in t.nodes[1:]:
            if node in t.boxes and _feeds_relaxation(t.gm, node):
                k = math.prod(t.boxes[node].shape[1:])
                need = max(need, k * _row_bytes(_records(t, node), x1))
    return max(ibp, need), classes
