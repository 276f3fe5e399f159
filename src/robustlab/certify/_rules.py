"""The one IBP rule table (layer types and fx graph ops) and the per-layer rules.

Each layer type has a rule ``(module, lower, upper) -> (lower, upper)`` registered with
:func:`register_ibp_rule`; op names and functions of fx graph nodes (``"add"``, ``"cat"``, ``torch.exp``)
have rules ``(fn, args, kwargs) -> (lower, upper)`` in the same table (see :mod:`._graph`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from ._crown import _CROWN_AFFINE, Bounds, _cr, _lu
from ._graph import FUNCTION_RULES

Rule = Callable[..., Bounds]

#: The one rule table. Layer type -> ``rule(module, lower, upper) -> (lower, upper)``; op name (``"add"``,
#: ``"cat"``, ``"reshape"``, ...) or function (``torch.exp``) of an fx graph node ->
#: ``rule(fn, args, kwargs) -> (lower, upper)``, where the bounded arguments are ``_graph.Box(lower, upper)``
#: and ``fn`` evaluates the node on concrete tensors.
IBP_RULES: dict[Any, Rule] = {}



def register_ibp_rule(*types: Any) -> Callable[[Rule], Rule]:
    """Decorator registering an IBP rule for layer types, fx op names or functions.

    For an ``nn.Module`` subclass: ``rule(module, lower, upper) -> (lower, upper)`` (subclasses use it too,
    and a module with a rule is a leaf of the fx trace). For an op name such as ``"add"`` or a function such
    as ``torch.exp``: ``rule(fn, args, kwargs) -> (lower, upper)`` with bounded arguments given as
    ``Box(lower, upper)`` (see :mod:`robustlab.certify._graph`). The rule must be sound: every output on
    an input in ``[lower, upper]`` lies in the returned interval.
    """
    ok = all((isinstance(t, type) and issubclass(t, nn.Module)) or isinstance(t, str)
             or (callable(t) and not isinstance(t, type)) for t in types)
    if not types or not ok:
        raise TypeError("register_ibp_rule takes nn.Module subclasses, op names or functions, e.g. "
                        f"register_ibp_rule(nn.Linear) or register_ibp_rule(torch.exp). Got {types!r}.")

    def deco(rule: Rule) -> Rule:
        for t in types:
            if t in IBP_RULES:
                raise ValueError(f"An IBP rule for {getattr(t, '__name__', t)} is already registered.")
            IBP_RULES[t] = rule
        return rule

    return deco


def supported_layers() -> list[str]:
    """Names of the layer types and graph ops (functions, tensor methods) that have an IBP rule."""
    _register_zoo_rules()
    return sorted({getattr(t, "__name__", str(t)) for t in IBP_RULES})


# ----------------------------------------------------------------------------------------------
# Per-layer rules
# ----------------------------------------------------------------------------------------------
@register_ibp_rule(nn.Sequential)
def _sequential_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    for child in m:  # type: ignore[attr-defined]
        lower, upper = _propagate(child, lower, upper)
    return lower, upper


#: While a bound computation runs (:func:`_batchnorm_eval`): ``id(layer) -> (layer, value)``, tensors the no-grad
#: rules derive from a layer's weights once per call (the weights cannot change within one computation; an
#: optimizer step between two calls is never seen by a stale entry). ``None`` outside.
_CALL_MEMO: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar(
    "robustlab_ibp_call_memo", default=None)


def _memo(m: nn.Module, make: Callable[[], Any], *weights: torch.Tensor | None) -> Any:
    """``make()`` (without autograd) once per bound computation for layer ``m``; ``None`` outside one or when
    autograd records one of ``weights`` (certified training recomputes them on every call)."""
    memo = _CALL_MEMO.get()
    if memo is None or (torch.is_grad_enabled() and any(w is not None and w.requires_grad for w in weights)):
        return None
    hit = memo.get(id(m))
    if hit is None or hit[0] is not m:
        with torch.no_grad():
            hit = memo[id(m)] = (m, make())
    return hit[1]


def _halves(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(W/2, |W|/2)`` of ``m.weight`` once per bound computation (see :func:`_memo`).

    Scaling by 2⁻¹ is exact, so ``W/2 · (u + l) = W · (u + l)/2`` bit for bit: the rules below give the same
    bounds with two fewer passes over the activations and one ``|W|`` per call instead of one per sample block.
    """
    def make() -> tuple[torch.Tensor, torch.Tensor]:
        half = m.weight * 0.5
        return half, half.abs()

    return _memo(m, make, m.weight)


@register_ibp_rule(nn.Linear)
def _linear_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    if lower.dim() == 2 and m.bias is not None:
        w_abs = _memo(m, m.weight.abs, m.weight, m.bias)
        if w_abs is not None:  # addmm's alpha = 1/2 halves exactly (as above), with no halved weight
            return _lu(torch.addmm(m.bias, upper + lower, m.weight.t(), alpha=0.5),
                       torch.addmm(m.bias, upper - lower, w_abs.t(), beta=0.0, alpha=0.5))  # beta 0: no bias
    halves = _halves(m)
    if halves is None:
        c, r = _cr(lower, upper)
        return _lu(F.linear(c, m.weight, m.bias), F.linear(r, m.weight.abs()))
    return _lu(F.linear(upper + lower, halves[0], m.bias), F.linear(upper - lower, halves[1]))


@register_ibp_rule(nn.Conv2d)
def _conv2d_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    if m.padding_mode != "zeros":
        raise TypeError(f"The IBP rule for Conv2d supports padding_mode='zeros' only. Got {m.padding_mode!r}.")
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
    halves = _halves(m)
    if halves is None:
        c, r = _cr(lower, upper)
        return _lu(F.conv2d(c, m.weight, m.bias, **kw), F.conv2d(r, m.weight.abs(), None, **kw))
    return _lu(F.conv2d(upper + lower, halves[0], m.bias, **kw), F.conv2d(upper - lower, halves[1], None, **kw))


def _monotone(fn: Callable[[Any, torch.Tensor], torch.Tensor]) -> Rule:
    def rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
        return fn(m, lower), fn(m, upper)

    return rule


_relu_rule = register_ibp_rule(nn.ReLU)(_monotone(lambda m, t: torch.relu(t)))  # type: ignore[arg-type]
register_ibp_rule(nn.Tanh)(_monotone(lambda m, t: torch.tanh(t)))  # type: ignore[arg-type]
register_ibp_rule(nn.Sigmoid)(_monotone(lambda m, t: torch.sigmoid(t)))  # type: ignore[arg-type]
_module_rule = register_ibp_rule(nn.Flatten, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)(
    _monotone(lambda m, t: m(t)))  # type: ignore[arg-type]
register_ibp_rule(Normalize)(_monotone(lambda m, t: m(t)))  # std > 0: increasing
_identity_rule = register_ibp_rule(nn.Identity)(lambda m, lower, upper: (lower, upper))


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
    """Per-channel ``(scale, shift)`` of a BatchNorm from its running (eval-mode) statistics."""
    if m.running_mean is None or m.running_var is None:
        raise TypeError(f"Bounds through {type(m).__name__} need its running statistics, but it was built with "
                        "track_running_stats=False (its output depends on the batch); use track_running_stats=True.")
    mean, var = m.running_mean, m.running_var
    scale = torch.rsqrt(var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -mean * scale + (m.bias if m.bias is not None else 0.0)
    shape = [1, -1] + [1] * (center.dim() - 2)
    return scale.view(shape), shift.view(shape)


@register_ibp_rule(nn.BatchNorm1d, nn.BatchNorm2d)
def _batchnorm_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """The affine map of the running statistics (eval mode), whatever the module's mode."""
    def make() -> tuple[torch.Tensor, ...]:
        scale, shift = _bn_affine(m, lower)
        return scale * 0.5, shift, scale.abs().mul_(0.5)

    got = _memo(m, make, m.weight, m.bias)
    if got is not None and got[0].dim() == lower.dim():
        half, shift, half_abs = got
        return _lu((upper + lower).mul_(half).add_(shift), (upper - lower).mul_(half_abs))
    c, r = _cr(lower, upper)
    scale, shift = _bn_affine(m, c)
    return _lu(c * scale + shift, r * scale.abs())


@contextlib.contextmanager
def _batchnorm_eval(model: nn.Module) -> Iterator[None]:
    """Put every BatchNorm of ``model`` in eval mode for the duration (running statistics, no updates).

    Every bound path (IBP rules, CROWN's vector-Jacobian products, tightness) then sees the same
    eval-mode affine map; the modes are restored afterwards. A BatchNorm without running statistics raises.
    For the duration the no-grad rules also reuse what they derive from the weights (:data:`_CALL_MEMO`).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        if m.running_mean is None or m.running_var is None:
            _bn_affine(m, torch.zeros(1, 1))  # raises the track_running_stats message
    modes = [m.training for m in bns]
    token = _CALL_MEMO.set({}) if _CALL_MEMO.get() is None else None
    try:
        for m in bns:
            m.training = False
        yield
    finally:
        for m, mode in zip(bns, modes):
            m.training = mode
        if token is not None:
            _CALL_MEMO.reset(token)


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


def _affine_owned(lower: torch.Tensor, upper: torch.Tensor, centre: Callable[[torch.Tensor], torch.Tensor],
                  radius: Callable[[torch.Tensor], torch.Tensor]) -> Bounds:
    """``W/2 (u + l) + b ∓ |W|/2 (u − l)`` as the rules above compute it, overwriting the owned ``upper``
    with ``u − l`` and the centre with the lower bound: two fresh tensors instead of four."""
    s = upper + lower
    c, r = centre(s), radius(upper.sub_(lower))
    return c - r, r.add_(c)  # r + c == c + r exactly


def _linear_owned(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds | None:
    if lower.dim() != 2 or m.bias is None:
        return None
    w_abs = _memo(m, m.weight.abs, m.weight, m.bias)  # the memo entry of _linear_rule's 2-D path
    if w_abs is None:
        return None
    return _affine_owned(lower, upper, lambda s: torch.addmm(m.bias, s, m.weight.t(), alpha=0.5),
                         lambda d: torch.addmm(m.bias, d, w_abs.t(), beta=0.0, alpha=0.5))


def _conv2d_owned(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds | None:
    halves = _halves(m)
    if halves is None or m.padding_mode != "zeros":
        return None
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
    return _affine_owned(lower, upper, lambda s: F.conv2d(s, halves[0], m.bias, **kw),
                         lambda d: F.conv2d(d, halves[1], None, **kw))


#: Rules with an in-place twin for :func:`propagate_owned` (``None`` from the twin: use the rule), and the rules
#: whose outputs are fresh tensors (then owned) or the input itself or a view of it (owned if the input was).
_OWNED_TWINS: dict[Rule, Callable[..., Bounds | None]] = {
    _linear_rule: _linear_owned, _conv2d_rule: _conv2d_owned,
    _relu_rule: lambda m, lower, upper: (lower.relu_(), upper.relu_()),
}
_FRESH_OUT = (_linear_rule, _conv2d_rule, _relu_rule, _batchnorm_rule)
_PASS_OUT = (_identity_rule, _dropout_rule)


def propagate_owned(layers: list[nn.Module], lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """IBP through a chain of layers without autograd, on a pair of fresh tensors nobody else holds.

    Linear, Conv2d and ReLU then overwrite their input bounds instead of allocating (a ReLU allocates
    nothing, an affine layer two tensors instead of four): less memory to page in and fewer passes, with
    the same bounds bit for bit as :func:`_propagate`. After a rule whose outputs may alias other tensors
    (a registered rule of the user's, say) the chain falls back to the rules until a fresh pair appears.
    """
    owned = True
    for m in layers:
        twin = owned_twin(m) if owned else None
        got = twin(m, lower, upper) if twin is not None else None
        lower, upper = got if got is not None else _propagate(m, lower, upper)
        kind = out_kind(m)
        owned = kind == "fresh" or (owned and kind == "view")
    return lower, upper


def owned_twin(m: nn.Module) -> Callable[..., Bounds | None] | None:
    """The in-place twin of ``m``'s IBP rule (see :func:`propagate_owned`), or ``None``."""
    return _OWNED_TWINS.get(_rule_for(m))


def out_kind(m: nn.Module) -> str:
    """What ``m``'s IBP rule returns: ``"fresh"`` tensors, the input or a ``"view"`` of it, or ``"other"``
    (a rule registered by the user, say: its outputs may alias anything)."""
    rule = _rule_for(m)
    if rule is _module_rule:  # Flatten gives a view of its input, the pools fresh tensors
        return "view" if isinstance(m, nn.Flatten) else "fresh"
    return "fresh" if rule in _FRESH_OUT else "view" if rule in _PASS_OUT else "other"


_CHAIN_CROWN = (nn.Linear, nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout, Normalize, nn.Conv2d, *_CROWN_AFFINE)


def _is_chain(layers: list[nn.Module], method: str) -> bool:
    """Whether the sequential fast path bounds these layers (else the fx graph interpreter does)."""
    try:
        for m in layers:
            _rule_for(m)
    except TypeError:
        return False
    return method == "ibp" or all(type(m) in _CHAIN_CROWN or isinstance(m, _CHAIN_CROWN) for m in layers)


def _graph_rules() -> tuple[Callable[[nn.Module], bool], Callable[[nn.Module], Rule], Callable[[Any], Rule]]:
    """``(has_rule, module_rule, fn_rule)`` over :data:`IBP_RULES` for the fx graph interpreter."""
    from ._graph import _is_container, describe, op_name

    _register_zoo_rules()

    def has_rule(m: nn.Module) -> bool:
        return not _is_container(m) and any(c in IBP_RULES for c in type(m).__mro__ if c is not nn.Sequential)

    def fn_rule(node: Any) -> Rule:
        rule = IBP_RULES.get(node.target) if node.op == "call_function" else None
        rule = rule or IBP_RULES.get(op_name(node))
        if rule is None:
            raise TypeError(f"interval_bounds does not support {describe(node, node.graph.owning_module)}. Supported "
                            f"layers: {', '.join(supported_layers())}. Register a rule with "
                            "robustlab.certify.ibp.register_ibp_rule.")
        return rule

    return has_rule, _rule_for, fn_rule


IBP_RULES.update(FUNCTION_RULES)  # the op-name rules of the fx graph interpreter (add, cat, reshape, ...)



def _moe_gate_bounds(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """Bounds ``(N, E)`` on the renormalised top-k gates of ``models.MoEConv2d`` over the input box.

    Router logits z by IBP (pooling and Linear are affine). Expert e is surely routed when fewer than k
    others can reach its logit, never routed when k others always exceed it. A routed expert's gate is
    ``1 / (1 + Σ_{j in T\\e} exp(z_j - z_e))`` over the chosen set T (the softmax denominator cancels),
    bounded with the k-1 largest (smallest) ``exp(u_j - l_e)`` (``exp(l_j - u_e)``) over the others that
    can be routed. Exact when lower == upper.
    """
    c, r = _cr(lower.mean((2, 3)), upper.mean((2, 3)))
    zl, zu = _lu(F.linear(c, m.router.weight, m.router.bias), F.linear(r, m.router.weight.abs()))
    k, e = m.top_k, m.num_experts
    eye = torch.eye(e, dtype=torch.bool, device=zl.device)
    sure = ((zu[:, None, :] >= zl[:, :, None]) & ~eye).sum(2) < k  # [n, e]: fewer than k others can tie/beat e
    can = ((zl[:, None, :] > zu[:, :, None]) & ~eye).sum(2) < k  # fewer than k others always beat e
    others = can[:, None, :] & ~eye  # [n, e, j]: j != e and j can be routed
    if k > 1:
        hi = (zu[:, None, :] - zl[:, :, None]).masked_fill(~others, float("-inf"))
        lo = (zl[:, None, :] - zu[:, :, None]).masked_fill(~others, float("inf"))
        g_lo = 1.0 / (1.0 + hi.topk(k - 1, dim=2).values.exp().sum(2))
        g_hi = 1.0 / (1.0 + (-(-lo).topk(k - 1, dim=2).values).exp().sum(2))
    else:
        g_lo = g_hi = torch.ones_like(zl)
    return torch.where(sure, g_lo, 0.0), torch.where(can, g_hi.clamp(max=1.0), 0.0)


def _convex_extreme(vals: torch.Tensor, g_lo: torch.Tensor, g_hi: torch.Tensor, largest: bool) -> torch.Tensor:
    """``min`` (``max`` if ``largest``) of ``Σ_e g_e vals_e`` over ``g_lo <= g <= g_hi, Σ g = 1``, along dim 1.

    Fractional knapsack: every expert gets ``g_lo``; the remaining mass goes to the smallest (largest)
    values first, each up to ``g_hi``. ``vals``: (N, E, ...); gates: (N, E).
    """
    order = vals.sort(dim=1, descending=largest).indices
    shape = (*g_lo.shape, *[1] * (vals.dim() - 2))
    lo = g_lo.view(shape).expand_as(vals).gather(1, order)
    slack = (g_hi - g_lo).clamp_min(0.0).view(shape).expand_as(vals).gather(1, order)
    rem = (1.0 - g_lo.sum(1)).clamp_min(0.0).view(-1, *[1] * (vals.dim() - 1))
    extra = torch.minimum((rem - (slack.cumsum(1) - slack)).clamp_min(0.0), slack)
    return ((lo + extra) * vals.gather(1, order)).sum(1)


def _moe_conv_rule(m: Any, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """``models.MoEConv2d``: the output is a convex combination of the experts' outputs.

    The gates are the top-k softmax probabilities renormalised (≥ 0, summing to 1), so the output lies in
    ``[min_e lower_e, max_e upper_e]`` over the experts' IBP bounds whatever the routing. Tightened with
    the gate bounds of :func:`_moe_gate_bounds` (experts that cannot be routed drop out, gate intervals
    limit the weights; exact at eps = 0). Still loose: gates and expert outputs are bounded independently.
    """
    conv = m.experts
    c, r = _cr(lower, upper)
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    lo, up = _lu(F.conv2d(c, conv.weight, conv.bias, **kw), F.conv2d(r, conv.weight.abs(), None, **kw))
    n, _, h, w = lo.shape
    shape = (n, m.num_experts, m.out_channels, h, w)
    g_lo, g_hi = _moe_gate_bounds(m, lower, upper)
    return (_convex_extreme(lo.view(shape), g_lo, g_hi, largest=False),
            _convex_extreme(up.view(shape), g_lo, g_hi, largest=True))


def _register_moe_rule() -> None:
    from ..models import MoEConv2d

    register_ibp_rule(MoEConv2d)(_moe_conv_rule)


_register_moe_rule()
