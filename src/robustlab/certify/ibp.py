"""Interval bound propagation (IBP) and CROWN-IBP bounds on the logits of a network.

IBP (Gowal et al. 2018, arXiv:1810.12715): for an affine layer ``z = W x + b`` with ``x`` in
``[l, u]``, centre ``c = (u + l) / 2`` and radius ``r = (u - l) / 2`` give
``z in [W c + b - |W| r, W c + b + |W| r]``; monotone activations map the bounds elementwise.
CROWN-IBP (Zhang et al. 2020, arXiv:1906.06316) propagates a linear specification backwards
through the network with linear ReLU relaxations built from the IBP pre-activation bounds.

Each layer type has a rule in a table filled with :func:`register_ibp_rule`; an unsupported layer
fails with a message listing the supported ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_in_range, check_option
from ..models import Normalize

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

Bounds = tuple[torch.Tensor, torch.Tensor]
Rule = Callable[[Any, torch.Tensor, torch.Tensor], Bounds]

#: layer type -> rule ``(module, lower, upper) -> (lower, upper)``.
IBP_RULES: dict[type, Rule] = {}

METHODS = ("ibp", "crown_ibp", "crown")
NORMS = ("linf", "l2")


def register_ibp_rule(*types: type) -> Callable[[Rule], Rule]:
    """Decorator registering ``rule(module, lower, upper) -> (lower, upper)`` for layer ``types``.

    The rule must be sound: every output of the layer on an input in ``[lower, upper]`` lies in the
    returned interval. Subclasses of a registered type use its rule.
    """
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError("register_ibp_rule takes one or more nn.Module subclasses, e.g. register_ibp_rule(nn.Linear).")

    def deco(rule: Rule) -> Rule:
        for t in types:
            if t in IBP_RULES:
                raise ValueError(f"An IBP rule for {t.__name__} is already registered.")
            IBP_RULES[t] = rule
        return rule

    return deco


def supported_layers() -> list[str]:
    """Names of the layer types that have an IBP rule."""
    _register_zoo_rules()
    return sorted({t.__name__ for t in IBP_RULES})


# ----------------------------------------------------------------------------------------------
# Per-layer rules
# ----------------------------------------------------------------------------------------------
def _cr(lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    return (upper + lower) / 2, (upper - lower) / 2


def _lu(c: torch.Tensor, r: torch.Tensor) -> Bounds:
    return c - r, c + r


@register_ibp_rule(nn.Sequential)
def _sequential_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    for child in m:  # type: ignore[attr-defined]
        lower, upper = _propagate(child, lower, upper)
    return lower, upper


@register_ibp_rule(nn.Linear)
def _linear_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    c, r = _cr(lower, upper)
    return _lu(F.linear(c, m.weight, m.bias), F.linear(r, m.weight.abs()))


@register_ibp_rule(nn.Conv2d)
def _conv2d_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    if m.padding_mode != "zeros":
        raise TypeError(f"The IBP rule for Conv2d supports padding_mode='zeros' only. Got {m.padding_mode!r}.")
    c, r = _cr(lower, upper)
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
    return _lu(F.conv2d(c, m.weight, m.bias, **kw), F.conv2d(r, m.weight.abs(), None, **kw))


def _monotone(fn: Callable[[Any, torch.Tensor], torch.Tensor]) -> Rule:
    def rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
        return fn(m, lower), fn(m, upper)

    return rule


register_ibp_rule(nn.ReLU)(_monotone(lambda m, t: torch.relu(t)))  # type: ignore[arg-type]
register_ibp_rule(nn.Tanh)(_monotone(lambda m, t: torch.tanh(t)))  # type: ignore[arg-type]
register_ibp_rule(nn.Sigmoid)(_monotone(lambda m, t: torch.sigmoid(t)))  # type: ignore[arg-type]
register_ibp_rule(nn.Flatten, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)(_monotone(lambda m, t: m(t)))  # type: ignore[arg-type]
register_ibp_rule(Normalize)(_monotone(lambda m, t: m(t)))  # std > 0: increasing
register_ibp_rule(nn.Identity)(lambda m, lower, upper: (lower, upper))


@register_ibp_rule(nn.LeakyReLU)
def _leaky_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    if m.negative_slope < 0:
        raise TypeError("The IBP rule for LeakyReLU needs negative_slope >= 0 (a monotone activation).")
    return m(lower), m(upper)


@register_ibp_rule(nn.Dropout)
def _dropout_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    if m.training and m.p > 0:
        raise TypeError("IBP through Dropout needs the model in eval mode (model.eval()).")
    return lower, upper


def _bn_affine(m: Any, center: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` of a BatchNorm; batch statistics of ``center`` in train mode."""
    dims = [0] + list(range(2, center.dim()))
    if m.training or m.running_mean is None:
        mean = center.mean(dims)
        var = center.var(dims, unbiased=False)
    else:
        mean, var = m.running_mean, m.running_var
    scale = torch.rsqrt(var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -mean * scale + (m.bias if m.bias is not None else 0.0)
    shape = [1, -1] + [1] * (center.dim() - 2)
    return scale.view(shape), shift.view(shape)


@register_ibp_rule(nn.BatchNorm1d, nn.BatchNorm2d)
def _batchnorm_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """Eval mode: running statistics; train mode: the statistics of the box centres (not updated)."""
    c, r = _cr(lower, upper)
    scale, shift = _bn_affine(m, c)
    return _lu(c * scale + shift, r * scale.abs())


def _residual_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """``body(x) + shortcut(x)``: interval sums (both branches see the same input box)."""
    lb, ub = _propagate(m.body, lower, upper)
    shortcut = getattr(m, "shortcut", None)
    ls, us = (lower, upper) if shortcut is None else _propagate(shortcut, lower, upper)
    return lb + ls, ub + us


def _register_zoo_rules() -> None:
    """Register the rule for ``models.Residual`` once the model zoo defines it."""
    from .. import models

    res = getattr(models, "Residual", None)
    if isinstance(res, type) and res not in IBP_RULES:
        IBP_RULES[res] = _residual_rule


def _rule_for(m: nn.Module) -> Rule:
    for _ in range(2):
        for cls in type(m).__mro__:
            if cls in IBP_RULES:
                if cls is nn.Sequential and type(m).forward is not nn.Sequential.forward:
                    break  # a Sequential subclass with its own forward is not a plain chain
                return IBP_RULES[cls]
        _register_zoo_rules()
    if type(m).__name__ == "Residual" and isinstance(getattr(m, "body", None), nn.Module):
        return _residual_rule
    raise TypeError(
        f"interval_bounds does not support the layer {type(m).__name__}. Supported layers: "
        f"{', '.join(supported_layers())}. Register a rule with robustlab.certify.ibp.register_ibp_rule."
    )


def _propagate(m: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    return _rule_for(m)(m, lower, upper)


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


def _validate(model: Any, x: Any, eps: Any, norm: Any, method: Any, owner: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__}.")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise TypeError(f"The 'x' parameter of {owner} must be a floating-point batch (N, ...). Got {getattr(x, 'shape', type(x))}.")
    check_in_range(eps, "eps", 0.0, None, owner=owner)
    check_option(norm, "norm", NORMS, owner=owner)
    check_option(method, "method", METHODS, owner=owner)


def _check_clip(x: torch.Tensor, clip: Any, norm: str, owner: str) -> None:
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
    lo, hi = float(x.min()), float(x.max())
    if lo < float(clip[0]) - 1e-6 or hi > float(clip[1]) + 1e-6:
        raise ValueError(
            f"'x' of {owner} must lie in clip={tuple(clip)} (got min {lo:.4g}, max {hi:.4g}); put input "
            "normalization inside the model (robustlab.models.Normalize), or pass clip=None for an unclipped box.")


def _input_box(x: torch.Tensor, eps: float, clip: tuple[float, float] | None) -> Bounds:
    lower, upper = x - eps, x + eps
    if clip is not None:
        lower, upper = lower.clamp(clip[0], clip[1]), upper.clamp(clip[0], clip[1])
    return lower, upper


def _forward_l2_start(layers: list[nn.Module], x: torch.Tensor, eps: float) -> tuple[int, Bounds] | None:
    """For an L2 ball: skip leading Flatten/Identity/Normalize, then bound a Linear layer exactly.

    Returns ``(index of the next layer, bounds)`` or ``None`` when the network does not start that way.
    """
    c, radius = x, float(eps)
    for i, m in enumerate(layers):
        if isinstance(m, (nn.Flatten, nn.Identity)):
            c = m(c)
        elif isinstance(m, Normalize):
            c = m(c)
            radius = radius / float(m.std.min())  # ||(d)/std||_2 <= ||d||_2 / min(std)
        elif isinstance(m, nn.Linear) and c.dim() == 2:
            z = F.linear(c, m.weight, m.bias)
            rad = radius * m.weight.norm(dim=1)
            return i + 1, (z - rad, z + rad)
        else:
            return None
    return None


def _ibp_forward(
    layers: list[nn.Module], x: torch.Tensor, eps: float, norm: str, clip: tuple[float, float] | None,
    *, crown: bool = False,
) -> tuple[Bounds, list[Bounds]]:
    """IBP through ``layers``; ``records[i]`` = input bounds of layer ``i``.

    With ``crown=True`` the input bounds of every ReLU are tightened by a CROWN backward pass
    (full CROWN) before the ReLU is applied.
    """
    start = 0
    box = _input_box(x, eps, clip if norm == "linf" else None)
    lower, upper = box
    records: list[Bounds] = []
    if norm == "l2":
        got = _forward_l2_start(layers, x, eps)
        if got is not None:
            start, (lower, upper) = got
            records = [box] * start  # not used by CROWN's backward before the first linear layer
    for i in range(start, len(layers)):
        m = layers[i]
        if crown and isinstance(m, nn.ReLU) and i > 0:
            lc, uc = _crown_bounds_at(layers[:i], records, x, eps, norm, clip, lower.shape[1:])
            lower, upper = torch.maximum(lower, lc), torch.minimum(upper, uc)
        records.append((lower, upper))
        lower, upper = _propagate(m, lower, upper)
    return (lower, upper), records


# ----------------------------------------------------------------------------------------------
# CROWN backward pass
# ----------------------------------------------------------------------------------------------
_CROWN_AFFINE = (nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_CROWN_NAMES = "Sequential, Linear, ReLU, Flatten, Identity, Dropout (eval), Normalize, Conv2d, BatchNorm (eval), AvgPool2d"


def _crown_backward(
    layers: list[nn.Module], records: list[Bounds], lam: torch.Tensor, x: torch.Tensor, eps: float,
    norm: str, clip: tuple[float, float] | None, *, relu_slopes: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Lower bound of ``lam @ f(x')`` over the input set, ``lam`` of shape (N, S, *out_shape) -> (N, S).

    ``relu_slopes[i]`` (optional) replaces the relaxation of ReLU ``i`` by a fixed slope (the
    linearisation used by :func:`tightness`).
    """
    n, s = lam.shape[:2]
    bias = lam.new_zeros(n, s)
    for i in reversed(range(len(layers))):
        m = layers[i]
        in_shape = records[i][0].shape[1:]
        if isinstance(m, nn.Linear):
            if m.bias is not None:
                bias = bias + lam @ m.bias
            lam = lam @ m.weight
        elif isinstance(m, nn.ReLU):
            lo, up = records[i]
            if relu_slopes is not None and relu_slopes[i] is not None:
                lam = lam * relu_slopes[i].unsqueeze(1)  # type: ignore[union-attr]
                continue
            lo, up = lo.unsqueeze(1), up.unsqueeze(1)
            act, unstable = lo >= 0, (lo < 0) & (up > 0)
            s_up = torch.where(act, torch.ones_like(up), torch.where(unstable, up / (up - lo).clamp_min(1e-12), torch.zeros_like(up)))
            t_up = torch.where(unstable, -s_up * lo, torch.zeros_like(up))
            s_lo = torch.where(act, torch.ones_like(up), torch.where(unstable, (up > -lo).to(up.dtype), torch.zeros_like(up)))
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            bias = bias + (neg * t_up).flatten(2).sum(-1)
            lam = pos * s_lo + neg * s_up
        elif isinstance(m, nn.Flatten):
            lam = lam.reshape(n, s, *in_shape)
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
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.training:
                raise TypeError("CROWN through BatchNorm needs the model in eval mode (model.eval()).")
            lam, b = _affine_vjp(m, lam, in_shape)
            bias = bias + b
        else:
            raise TypeError(
                f"CROWN bounds do not support the layer {type(m).__name__}. CROWN supports: {_CROWN_NAMES} "
                "(use method='ibp' for other layers, e.g. residual blocks)."
            )
    flat = lam.flatten(2)
    if norm == "l2":
        return bias + (flat * x.flatten(1).unsqueeze(1)).sum(-1) - eps * flat.norm(dim=-1)
    c, r = _cr(*_input_box(x, eps, clip))
    # Λ⁺ l + Λ⁻ u = Λ c − |Λ| r, as two batched matrix-vector products
    return bias + (flat @ c.flatten(1).unsqueeze(-1)).squeeze(-1) - (flat.abs() @ r.flatten(1).unsqueeze(-1)).squeeze(-1)


def _conv2d_backward(m: Any, lam: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam @ A`` for a Conv2d as one transposed convolution (no forward pass), and ``lam @ bias``."""
    n, s = lam.shape[:2]
    oh, ow = lam.shape[-2:]
    h, w = in_shape[-2:]
    kh, kw = m.kernel_size
    pads = [h - ((oh - 1) * m.stride[0] - 2 * m.padding[0] + m.dilation[0] * (kh - 1) + 1),
            w - ((ow - 1) * m.stride[1] - 2 * m.padding[1] + m.dilation[1] * (kw - 1) + 1)]
    flat = lam.reshape(n * s, *lam.shape[2:])
    g = F.conv_transpose2d(flat, m.weight, None, m.stride, m.padding, tuple(pads), m.groups, m.dilation)
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


def _crown_bounds_at(
    layers: list[nn.Module], records: list[Bounds], x: torch.Tensor, eps: float, norm: str,
    clip: tuple[float, float] | None, out_shape: torch.Size,
) -> Bounds:
    """Element-wise CROWN bounds of the output of ``layers`` (shape ``out_shape``)."""
    k = math.prod(out_shape)
    eye = torch.eye(k, dtype=x.dtype, device=x.device).expand(x.shape[0], k, k).reshape(x.shape[0], k, *out_shape)
    lo = _crown_backward(layers, records, eye, x, eps, norm, clip)
    up = -_crown_backward(layers, records, -eye, x, eps, norm, clip)
    return lo.view(x.shape[0], *out_shape), up.view(x.shape[0], *out_shape)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def interval_bounds(
    model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf", method: str = "ibp",
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> Bounds:
    """Element-wise ``(lower, upper)`` bounds on ``model``'s logits over the ε-ball around each ``x``.

    ``norm``: ``linf`` (box ``[x - eps, x + eps]`` intersected with ``clip``) or ``l2`` (the first
    Linear layer is bounded exactly by ``eps * ||W_i||_2``, later layers by intervals; ``clip`` is
    ignored). ``method``: ``ibp``, ``crown_ibp`` (backward linear bounds with IBP intermediate
    bounds, Zhang et al. 2020) or ``crown`` (intermediate bounds by CROWN too; MLP-sized models).
    The model is used in its current mode (call ``model.eval()`` for BatchNorm/Dropout).
    """
    _validate(model, x, eps, norm, method, "interval_bounds")
    _check_clip(x, clip, norm, "interval_bounds")
    layers = _layers(model)
    (lower, upper), records = _ibp_forward(layers, x, float(eps), norm, clip, crown=method == "crown")
    if method == "ibp":
        return lower, upper
    lo, up = _crown_bounds_at(layers, records, x, float(eps), norm, clip, lower.shape[1:])
    return torch.maximum(lo, lower), torch.minimum(up, upper)


def _spec_matrix(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``C[n, j] = e_{y_n} - e_j`` of shape (N, C, C); row ``j = y_n`` is zero."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margin_bounds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
    method: str = "ibp", clip: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Lower bounds (N, C) on the margins ``z_y - z_j`` over the ε-ball (entry ``j = y`` is 0).

    The specification matrix ``C = e_y - e_j`` is folded into the last Linear layer before taking
    absolute values (tighter than ``l_y - u_j``). A point is verified iff all entries ``j != y`` are
    positive. ``-margin_bounds`` are the worst-case logits used by certified training.
    """
    _validate(model, x, eps, norm, method, "margin_bounds")
    _check_clip(x, clip, norm, "margin_bounds")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"The 'y' parameter of margin_bounds must have shape ({x.shape[0]},). Got {getattr(y, 'shape', y)}.")
    layers = _layers(model)
    if norm == "l2" and method == "ibp" and all(isinstance(m, (nn.Flatten, nn.Identity, Normalize, nn.Linear)) for m in layers):
        method = "crown_ibp"  # an affine network: the backward bound with the dual norm is exact
    last: Any = layers[-1]
    elide = isinstance(last, nn.Linear)  # a bare Linear too: its body is empty and the input box is used
    body = layers[:-1] if elide else layers
    (lower, upper), records = _ibp_forward(body, x, float(eps), norm, clip, crown=method == "crown")
    if elide:
        c, r = _cr(lower, upper)
        w = last.weight
        num_classes, hidden = w.shape
        z = F.linear(c, w, last.bias)
        centre = z.gather(1, y[:, None]) - z  # C (W c + b) = z_y - z
        # |C W| r for every possible true class in one GEMM: A[k, j] = |w_k - w_j|, (N, H) x (H, C*C)
        a = (w.unsqueeze(1) - w.unsqueeze(0)).abs().reshape(num_classes * num_classes, hidden)
        rad = (r @ a.T).view(-1, num_classes, num_classes)
        lb = centre - rad.gather(1, y.view(-1, 1, 1).expand(-1, 1, num_classes)).squeeze(1)
    else:
        num_classes = lower.shape[1]
        lb = lower.gather(1, y[:, None]) - upper
    if method != "ibp":
        spec = _spec_matrix(y, num_classes, x.dtype)
        if elide:
            records = records + [(lower, upper)]
        crown = _crown_backward(layers, records, spec, x, float(eps), norm, clip)
        lb = torch.maximum(lb, crown)
    return lb.masked_fill(torch.nn.functional.one_hot(y, num_classes).bool(), 0.0)


def certified_accuracy(
    model: nn.Module, data: Any, *, eps: float, norm: str = "linf", method: str = "ibp",
    batch_size: int = 256, clip: tuple[float, float] | None = (0.0, 1.0),
) -> float:
    """Fraction of test points whose margin lower bounds are all positive over the ε-ball.

    ``data`` is a :class:`~robustlab.data.ClassificationData` (its test split) or a pair ``(x, y)``.
    Runs the model in eval mode (restored afterwards) without gradients.
    """
    x, y = _xy(data, "certified_accuracy")
    ok = verified(model, x, y, eps=eps, norm=norm, method=method, batch_size=batch_size, clip=clip)
    return float(ok.float().mean()) if ok.numel() else float("nan")


def verified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
    method: str = "ibp", batch_size: int = 256, clip: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Boolean (N,) mask of points certified at ``eps`` (eval mode, batched, no gradients)."""
    was = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), x.device)
    out = []
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
                lb = margin_bounds(model, xb, yb, eps=eps, norm=norm, method=method, clip=clip)
                lb = lb.masked_fill(F.one_hot(yb, lb.shape[1]).bool(), float("inf"))
                out.append((lb > 0).all(1).cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _xy(data: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import ClassificationData

    if isinstance(data, ClassificationData):
        return data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"The 'data' parameter of {owner} must be a ClassificationData or a pair (x, y). Got {type(data).__name__}.")


@torch.no_grad()
def tightness(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1.0) -> torch.Tensor:
    """Mean IBP tightness (Mao et al. 2024, "Understanding certified training with IBP").

    Tightness = (radius of the optimal box of the network's linearisation at ``x``) / (IBP radius of
    the same linearisation), per margin ``z_y - z_j`` (per logit when ``y`` is None), averaged;
    in (0, 1]. For a deep linear network it is ``|W_L...W_1| 1 / (|W_L|...|W_1| 1)``. Supports the
    layers of the CROWN backward pass with ReLU activations; the radius scales out (``eps`` only
    sets the box used for both numerator and denominator).
    """
    layers = _layers(model)
    # forward pass at x recording layer inputs and ReLU slopes
    records: list[Bounds] = []
    slopes: list[torch.Tensor | None] = []
    h = x
    for m in layers:
        records.append((h, h))
        slopes.append((h > 0).to(h.dtype) if isinstance(m, nn.ReLU) else None)
        h = m(h)
    num_classes = h.shape[1]
    if y is None:
        spec = torch.eye(num_classes, dtype=x.dtype, device=x.device).expand(x.shape[0], num_classes, num_classes)
    else:
        spec = _spec_matrix(y, num_classes, x.dtype)
    # optimal box radius of the linearisation: |C J| r  (r = eps on every input coordinate)
    lam = _jacobian_rows(layers, records, slopes, spec)
    optimal = eps * lam.abs().flatten(2).sum(-1)
    # IBP radius of the same linearisation: |C W_L| D |W_{L-1}| ... r
    r = torch.full_like(x, float(eps))
    for i, m in enumerate(layers[:-1] if isinstance(layers[-1], nn.Linear) else layers):
        r = _abs_forward(m, r, records[i][0], slopes[i])
    if isinstance(layers[-1], nn.Linear):
        w = layers[-1].weight
        cw = spec @ w
        ibp = (cw.abs() @ r.flatten(1).unsqueeze(-1)).squeeze(-1)
    else:
        ibp = (spec.abs() @ r.flatten(1).unsqueeze(-1)).squeeze(-1)
    keep = ibp > 0
    if y is not None:
        keep &= ~F.one_hot(y, num_classes).bool()
    return (optimal[keep] / ibp[keep]).mean()


def _jacobian_rows(layers: list[nn.Module], records: list[Bounds], slopes: list[torch.Tensor | None],
                   spec: torch.Tensor) -> torch.Tensor:
    lam = spec
    n, s = lam.shape[:2]
    for i in reversed(range(len(layers))):
        m = layers[i]
        in_shape = records[i][0].shape[1:]
        if isinstance(m, nn.ReLU):
            lam = lam * slopes[i].unsqueeze(1)  # type: ignore[union-attr]
        elif isinstance(m, nn.Linear):
            lam = lam @ m.weight
        elif isinstance(m, nn.Flatten):
            lam = lam.reshape(n, s, *in_shape)
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            pass
        elif isinstance(m, Normalize):
            lam = lam / m.std
        elif isinstance(m, _CROWN_AFFINE):
            lam, _ = _affine_vjp(m, lam, in_shape)
        else:
            raise TypeError(f"tightness does not support the layer {type(m).__name__}. Supported: {_CROWN_NAMES}.")
    return lam


def _abs_forward(m: nn.Module, r: torch.Tensor, h: torch.Tensor, slope: torch.Tensor | None) -> torch.Tensor:
    """Radius through the linearised layer: ``|A| r`` (``D r`` for a ReLU with slopes ``D``)."""
    if isinstance(m, nn.ReLU):
        return r * slope  # type: ignore[operator]
    if isinstance(m, nn.Linear):
        return F.linear(r, m.weight.abs())
    if isinstance(m, nn.Conv2d):
        return F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale, _ = _bn_affine(m, h)
        return r * scale.abs()
    if isinstance(m, Normalize):
        return r / m.std
    if isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return m(r) if not isinstance(m, nn.Dropout) else r
    raise TypeError(f"tightness does not support the layer {type(m).__name__}. Supported: {_CROWN_NAMES}.")
