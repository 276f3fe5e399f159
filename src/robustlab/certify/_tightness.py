"""IBP tightness (Mao et al. 2024, "Understanding certified training with IBP"), for any traceable model.

The network is linearised at ``x`` (each ReLU / LeakyReLU / Tanh / Sigmoid replaced by its derivative there,
each MaxPool by the selection of its maximum). Tightness per specification row ``c`` is
``ε‖c J‖₁ / (IBP radius of c·(linearised network))``: the optimal box radius of the linearisation over the
IBP radius of the same linear map (``|W_L| D |W_{L-1}| ... ε`` for a chain). The numerator comes from
autograd (``J`` = the Jacobian at ``x``), the denominator from one pass over the fx graph that maps every
input-dependent node to a radius: affine ops through their IBP rules on a centred box (``|A| r``; residual
adds and concatenations included), nonlinear ops multiply by their slopes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ._graph import (
    _AFFINE_FNS,
    _AFFINE_MODULES,
    _SHAPE_METHODS,
    NONLINEAR,
    Box,
    _forward_node,
    describe,
    op_name,
    output_node,
    trace,
)
from ._relax import bmv, maxpool_params
from ._rules import _batchnorm_eval, _graph_rules
from .ibp import _check_y, _spec_matrix, _validate

__all__ = ["tightness"]

_SUPPORTED = ("Linear, Conv2d, BatchNorm (eval), AvgPool2d, AdaptiveAvgPool2d, Flatten, Identity, Dropout (eval), "
              "Normalize, ReLU, LeakyReLU, Tanh, Sigmoid, MaxPool2d, and the functions add, sub, mul/div by a constant, "
              "neg, cat, reshape/view/flatten, indexing, sum/mean, permute, avg_pool2d, linear")


@torch.no_grad()
def tightness(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1.0) -> torch.Tensor:
    """Mean IBP tightness (Mao et al. 2024, "Understanding certified training with IBP").

    Tightness = (radius of the optimal box of the network's linearisation at ``x``) / (IBP radius of
    the same linearisation), per margin ``z_y - z_j`` (per logit when ``y`` is None), averaged;
    in (0, 1]. For a deep linear network it is ``|W_L...W_1| 1 / (|W_L|...|W_1| 1)``. ``model``: any
    model torch.fx can trace built from affine ops (Linear, Conv2d, BatchNorm, pooling, residual adds,
    concatenations, reshapes) and ReLU / LeakyReLU / Tanh / Sigmoid / MaxPool2d; the radius scales out
    (``eps`` only sets the box used for both numerator and denominator). BatchNorm uses its running statistics.
    """
    _validate(model, x, eps, "linf", "ibp", "tightness")
    if y is not None:
        y = _check_y(y, x, None, "tightness")
    with _batchnorm_eval(model):
        return _tightness(model, x, y, float(eps))


def _tightness(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float) -> torch.Tensor:
    has_rule, module_rule, fn_rule = _graph_rules()
    gm = trace(model, has_rule)
    values = _values(gm, x)
    out = output_node(gm)
    logits = values[out]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"tightness needs a model returning (N, C) logits. Got {getattr(logits, 'shape', type(logits))}.")
    num_classes = logits.shape[1]
    if y is None:
        spec = torch.eye(num_classes, dtype=x.dtype, device=x.device).expand(x.shape[0], num_classes, num_classes)
    else:
        _check_y(y, x, num_classes, "tightness")
        spec = _spec_matrix(y, num_classes, x.dtype)
    radius = _radii(gm, values, x, eps, module_rule, fn_rule)
    fold = out.op == "call_module" and isinstance(gm.get_submodule(str(out.target)), nn.Linear)
    if fold:  # the specification folded into the last Linear, as margin_bounds does: |C W| r
        w: torch.Tensor = gm.get_submodule(str(out.target)).weight  # type: ignore[assignment]
        rows, r = spec @ w, radius[out.args[0]]  # type: ignore[index]
    else:
        rows, r = spec, radius[out]
    ibp = bmv(rows.abs(), r.flatten(1))
    optimal = eps * _jacobian_rows(gm, x, spec).abs().flatten(2).sum(-1)
    keep = ibp > 0
    if y is not None:
        keep &= ~F.one_hot(y, num_classes).bool()
    return (optimal[keep] / ibp[keep]).mean()


def _values(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, Any]:
    """Every node's value at ``x``."""
    values: dict[fx.Node, Any] = {}

    class _Record(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            values[n] = super().run_node(n)
            return values[n]

    _Record(gm).run(x)
    return values


def _jacobian_rows(gm: fx.GraphModule, x: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """``spec @ J`` (N, S, *x) with ``J`` the Jacobian of the logits at ``x`` (one vector-Jacobian product per row)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = gm(xg)
        rows = [torch.autograd.grad(out, xg, spec[:, s], retain_graph=s + 1 < spec.shape[1])[0]
                for s in range(spec.shape[1])]
    return torch.stack(rows, 1)


def _slope(gm: fx.GraphModule, node: fx.Node, h: torch.Tensor) -> torch.Tensor | None:
    """Derivative at ``h`` of an element-wise nonlinear node (None for other nodes)."""
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        kind = next((k for c, k in ((nn.ReLU, "relu"), (nn.LeakyReLU, "leaky_relu"), (nn.Tanh, "tanh"),
                                    (nn.Sigmoid, "sigmoid")) if isinstance(m, c)), None)
        neg = float(getattr(m, "negative_slope", 0.0))
    else:
        kind = op_name(node) if op_name(node) in NONLINEAR else None
        slope: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        neg = float(slope) if kind == "leaky_relu" else 0.0
    if kind in ("relu", "leaky_relu"):
        return torch.where(h > 0, 1.0, 0.0 if kind == "relu" else neg).to(h.dtype)
    if kind == "tanh":
        return 1 - torch.tanh(h) ** 2
    if kind == "sigmoid":
        s = torch.sigmoid(h)
        return s * (1 - s)
    return None


def _maxpool_radius(gm: fx.GraphModule, node: fx.Node, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor | None:
    """The radius at the maximum of each window (MaxPool linearised at ``h``); None for other nodes."""
    if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.MaxPool2d):
        m = gm.get_submodule(str(node.target))
        p = maxpool_params(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, False)  # type: ignore[arg-type]
    elif node.op != "call_module" and op_name(node) == "max_pool2d":
        p = maxpool_params(*node.args[1:], **{k: v for k, v in node.kwargs.items() if k != "return_indices"})  # type: ignore[arg-type]
    else:
        return None
    _, idx = F.max_pool2d(h, p["kernel_size"], p["stride"], p["padding"], p["dilation"],  # type: ignore[call-overload, misc]
                          p["ceil_mode"], return_indices=True)
    return r.flatten(2).gather(2, idx.flatten(2)).view_as(idx)


def _radii(gm: fx.GraphModule, values: dict[fx.Node, Any], x: torch.Tensor, eps: float,
           module_rule: Any, fn_rule: Any) -> dict[fx.Node, torch.Tensor]:
    """IBP radius of every input-dependent node of the network linearised at ``x``."""
    env: dict[fx.Node, Any] = {}
    radius: dict[fx.Node, torch.Tensor] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        if node.op == "placeholder":
            r = torch.full_like(x, eps)
        else:
            ins = [a for a in node.all_input_nodes if a in radius]
            if not ins or (node.op == "call_function" and node.target is getattr) \
                    or (node.op == "call_method" and node.target in _SHAPE_METHODS):
                env[node] = values[node]
                continue
            r = _node_radius(gm, node, ins, values, radius, env, module_rule, fn_rule)
        radius[node] = r
        env[node] = Box(-r, r)
    return radius


def _node_radius(gm: fx.GraphModule, node: fx.Node, ins: list[fx.Node], values: dict[fx.Node, Any],
                 radius: dict[fx.Node, torch.Tensor], env: dict[fx.Node, Any], module_rule: Any, fn_rule: Any) -> torch.Tensor:
    first = node.args[0] if node.args else None
    if len(ins) == 1 and first is ins[0]:
        slope = _slope(gm, node, values[first])
        if slope is not None:
            return slope * radius[first]
        pooled = _maxpool_radius(gm, node, values[first], radius[first])
        if pooled is not None:
            return pooled
    if node.op == "call_module":
        affine = isinstance(gm.get_submodule(str(node.target)), _AFFINE_MODULES)
    else:
        affine = op_name(node) in _AFFINE_FNS and not (op_name(node) in ("mul", "div") and len(ins) > 1)
    if not affine:
        raise TypeError(f"tightness does not support {describe(node, gm)}. Supported: {_SUPPORTED}.")
    box = _forward_node(gm, node, env, module_rule, fn_rule)  # an affine op maps a centred box to radius |A| r
    return (box.upper - box.lower) / 2
