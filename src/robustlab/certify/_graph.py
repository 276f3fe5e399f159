"""Bounds for any model ``torch.fx`` can trace: a small interpreter over the fx graph.

IBP walks the nodes in order and maps every node that depends on the input to an interval
(:class:`Box`), using the one rule table ``IBP_RULES`` (layer types, and op names for functions and
methods: ``"add"``, ``"cat"``, ``"reshape"``, ...). Nodes that do not depend on the input (shapes,
constants) are evaluated as usual. Under an L2/L1 ball the input stays a :class:`Ball` through
Flatten/reshape/Normalize until the first Linear or Conv2d, which is bounded exactly by the dual norm.

CROWN back-substitutes a linear specification through the DAG: nodes are visited in reverse
topological order, each hands its coefficient matrix ``Λ`` to its inputs (affine ops through their
transpose, nonlinear ops through the relaxations of :mod:`._relax`), and the matrices arriving at a
fan-in point (a residual add, a concatenation's inputs, a tensor used twice) are summed.

Modules with a rule are leaves of the trace (a custom module's ``forward`` is traced through unless a
rule is registered for its type); plain ``nn.Sequential`` and ``models.Residual`` are traced through.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from ._crown import Bounds, _input_box
from ._norms import affine_ball, ball_step


@dataclass
class Box:
    """Interval bounds of a tensor node."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.lower.shape


@dataclass
class Ball:
    """An L2/L1 ball (``centre``, ``radius``) not yet through an affine layer."""

    centre: torch.Tensor
    radius: float
    norm: str

    @property
    def shape(self) -> torch.Size:
        return self.centre.shape

    def box(self) -> Box:
        return Box(self.centre - self.radius, self.centre + self.radius)  # |d_i| <= ||d||_p


# ----------------------------------------------------------------------------------------------
# Op names of call_function / call_method nodes
# ----------------------------------------------------------------------------------------------
_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
    torch.mul: "mul", operator.truediv: "div", torch.div: "div", operator.neg: "neg", torch.neg: "neg",
    torch.cat: "cat", torch.concat: "cat", torch.flatten: "reshape", torch.reshape: "reshape",
    torch.squeeze: "reshape", torch.unsqueeze: "reshape", operator.getitem: "getitem",
    F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu", torch.tanh: "tanh", F.tanh: "tanh",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
    F.adaptive_avg_pool2d: "avg_pool2d", F.linear: "linear", torch.sum: "sum", torch.mean: "sum",
    torch.permute: "permute", torch.transpose: "permute",
}
_METHODS: dict[str, str] = {
    "add": "add", "sub": "sub", "mul": "mul", "div": "div", "neg": "neg", "view": "reshape", "reshape": "reshape",
    "flatten": "reshape", "squeeze": "reshape", "unsqueeze": "reshape", "contiguous": "reshape", "relu": "relu",
    "tanh": "tanh", "sigmoid": "sigmoid", "sum": "sum", "mean": "sum", "permute": "permute", "transpose": "permute",
}
#: shape queries: evaluated on the lower bound, never bounded.
_SHAPE_METHODS = ("size", "dim")
#: ops whose CROWN rule needs the bounds of their input (a relaxation).
NONLINEAR = ("relu", "leaky_relu", "tanh", "sigmoid", "max_pool2d")
_NONLINEAR_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.MaxPool2d)
#: affine ops with CROWN rules (transpose through one vector-Jacobian product).
_AFFINE_FNS = ("add", "sub", "mul", "div", "neg", "cat", "reshape", "getitem", "avg_pool2d", "linear", "sum", "permute")
_AFFINE_MODULES = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                   nn.Flatten, nn.Identity, nn.Dropout, Normalize)


def op_name(node: fx.Node) -> str:
    """Canonical op of a call_function / call_method node (its own name when unknown)."""
    if node.op == "call_method":
        return _METHODS.get(str(node.target), str(node.target))
    return _FUNCTIONS.get(node.target, getattr(node.target, "__name__", str(node.target)))


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """``op 'X' at fx node 'name'`` for error messages."""
    if node.op == "call_module":
        what = type(gm.get_submodule(str(node.target))).__name__
    elif node.op == "call_method":
        what = f"Tensor.{node.target}"
    else:
        what = getattr(node.target, "__name__", str(node.target))
    return f"the op {what} at fx node '{node.name}'"


# ----------------------------------------------------------------------------------------------
# Tracing (cached per model, invalidated when its module structure changes)
# ----------------------------------------------------------------------------------------------
class _Tracer(fx.Tracer):
    def __init__(self, has_rule: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self._has_rule = has_rule

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if _is_container(m):
            return False
        return self._has_rule(m) or super().is_leaf_module(m, qualname)


def _is_container(m: nn.Module) -> bool:
    from ..models import Residual

    plain_seq = isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
    return plain_seq or type(m) is Residual


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], fx.GraphModule]] = weakref.WeakKeyDictionary()


def trace(model: nn.Module, has_rule: Callable[[nn.Module], bool]) -> fx.GraphModule:
    """The fx graph of ``model`` with ruled modules as leaves; a clear error when fx cannot trace it."""
    key = tuple((name, id(m)) for name, m in model.named_modules())  # a replaced submodule retraces
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    root = nn.Sequential(model) if has_rule(model) else model  # a ruled layer bounded on its own: one leaf
    try:
        graph = _Tracer(has_rule).trace(root)
    except Exception as e:  # fx raises many types (TraceError, TypeError on data-dependent control flow, ...)
        raise TypeError(
            f"Bounds for {type(model).__name__} need a model torch.fx can trace, but tracing failed: {e}. Register a rule "
            "for the untraceable module with robustlab.certify.ibp.register_ibp_rule.") from e
    gm = fx.GraphModule(root, graph)
    _CACHE[model] = (key, gm)
    return gm


# ----------------------------------------------------------------------------------------------
# Forward interval propagation
# ----------------------------------------------------------------------------------------------
def _map(a: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(a, list):  # fx's immutable_list too
        return [_map(v, fn) for v in a]
    if isinstance(a, tuple) and not isinstance(a, torch.Size) and not hasattr(a, "_fields"):  # Size, named tuples: values
        return tuple(_map(v, fn) for v in a)
    if isinstance(a, dict):
        return {k: _map(v, fn) for k, v in a.items()}
    return fn(a)


def _leaves(a: Any) -> list[Any]:
    out: list[Any] = []
    _map(a, out.append)
    return out


def _call(gm: fx.GraphModule, node: fx.Node, args: Any, kwargs: Any) -> Any:
    """Evaluate ``node`` on concrete values."""
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    if node.op == "get_attr":
        obj: Any = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        return obj
    return node.target(*args, **kwargs)  # type: ignore[operator]


@dataclass
class Trace:
    """Result of a forward pass: interval bounds of every input-dependent node, concrete values of the others."""

    gm: fx.GraphModule
    nodes: list[fx.Node]
    boxes: dict[fx.Node, Box]
    values: dict[fx.Node, Any]
    output: fx.Node
    relax: dict[fx.Node, Any] = field(default_factory=dict)  # CROWN relaxations by node (see _graph_crown)


def output_node(gm: fx.GraphModule) -> fx.Node:
    """The single tensor node the model returns."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    res = out.args[0]
    if not isinstance(res, fx.Node):
        raise TypeError(f"Bounds need a model returning one tensor; it returns {type(res).__name__} (fx node 'output').")
    return res


class _Owned:
    """Pure IBP without autograd: which nodes' bounds are fresh tensors that only the graph holds, so that
    their one user may overwrite them, as :func:`._rules.propagate_owned` does in a chain (the bounds stay
    referenced until the end of the pass: releasing them early made glibc return and page in more memory).
    ``module_kind(m)`` is ``._rules.out_kind``."""

    FRESH_FNS = frozenset(("relu", "tanh", "sigmoid", "max_pool2d", "avg_pool2d", "leaky_relu", "cat", "sum", "add",
                           "sub", "mul", "div", "neg", "linear"))
    VIEW_FNS = frozenset(("reshape", "getitem", "permute"))

    def __init__(self, module_kind: Callable[[nn.Module], str]) -> None:
        self.module_kind = module_kind
        self.owned: set[fx.Node] = set()

    def sole_input(self, node: fx.Node, env: dict[fx.Node, Any]) -> bool:
        """Whether ``node`` has one bounded input, used once, owned, and by ``node`` only."""
        ins = [a for a in node.all_input_nodes if isinstance(env.get(a), (Box, Ball))]
        return (len(ins) == 1 and ins[0] in self.owned and len(ins[0].users) == 1
                and sum(1 for v in _leaves((node.args, node.kwargs)) if v is ins[0]) == 1)

    def after(self, gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any], sole: bool, builtin_fn: bool) -> None:
        """Record whether ``node``'s bounds are owned (``sole``: its one input was, and only it used that)."""
        if isinstance(env[node], Box):
            if node.op == "placeholder":
                kind = "fresh"
            elif node.op == "call_module":
                kind = self.module_kind(gm.get_submodule(str(node.target)))
            else:
                name = op_name(node)
                kind = "other" if not builtin_fn else "fresh" if name in self.FRESH_FNS else \
                    "view" if name in self.VIEW_FNS else "other"
            if kind == "fresh" or (kind == "view" and sole):
                self.owned.add(node)


def forward(
    gm: fx.GraphModule, x: torch.Tensor, eps: float, norm: str, clip: tuple[float, float] | None,
    module_rule: Callable[[nn.Module], Any], fn_rule: Callable[[fx.Node], Any], *,
    stop: fx.Node | None = None, tighten: Callable[[Trace, fx.Node], Bounds] | None = None,
    in_place: tuple[Callable[[nn.Module], Any], Callable[[nn.Module], str]] | None = None,
) -> Trace:
    """Interval bounds of every node up to ``stop`` (default: the output).

    ``tighten(trace, node)`` (full CROWN) returns tighter bounds for every node that feeds a relaxation.
    ``in_place=(owned_twin, out_kind)`` (pure IBP, no autograd): only the bounds of ``stop`` are kept in the
    trace, and a node that alone uses an owned input overwrites it (same bounds, bit for bit).
    """
    out = output_node(gm)
    stop = out if stop is None else stop
    nodes = list(gm.graph.nodes)
    t = Trace(gm, [], {}, {}, out)
    env: dict[fx.Node, Any] = {}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise TypeError(f"Bounds need a model with one input tensor; its forward takes {len(placeholders)} inputs.")
    owner = None if in_place is None or tighten is not None else _Owned(in_place[1])
    for node in nodes:
        if node.op == "output":
            break
        sole = False
        if node.op == "placeholder":
            if norm == "linf":
                env[node] = Box(*_input_box(x, eps, clip))
            else:
                env[node] = Ball(x, eps, norm)
        else:
            sole = owner is not None and owner.sole_input(node, env)
            env[node] = _forward_node(gm, node, env, module_rule, fn_rule, in_place[0] if sole else None)  # type: ignore[index]
        val = env[node]
        t.nodes.append(node)
        if owner is not None:
            builtin = node.op in ("call_function", "call_method") and isinstance(val, Box) and \
                fn_rule(node) is FUNCTION_RULES.get(op_name(node))
            owner.after(gm, node, env, sole, builtin)
            if node is not stop:
                continue
        if isinstance(val, (Box, Ball)):
            box = val if isinstance(val, Box) else val.box()
            t.boxes[node] = box
            if tighten is not None and node.op != "placeholder" and _feeds_relaxation(gm, node):
                lc, uc = tighten(t, node)
                box = Box(torch.maximum(box.lower, lc), torch.minimum(box.upper, uc))
                t.boxes[node] = env[node] = box
        else:
            t.values[node] = val
        if node is stop:
            break
    if stop not in t.boxes:
        raise TypeError(f"The output of {type(gm).__name__} (fx node '{stop.name}') does not depend on the input.")
    return t


def _feeds_relaxation(gm: fx.GraphModule, node: fx.Node) -> bool:
    for user in node.users:
        if user.op == "call_module" and isinstance(gm.get_submodule(str(user.target)), _NONLINEAR_MODULES):
            return True
        if user.op in ("call_function", "call_method") and op_name(user) in NONLINEAR:
            return True
    return False


def _forward_node(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any],
                  module_rule: Callable[[nn.Module], Any], fn_rule: Callable[[fx.Node], Any],
                  twin_of: Callable[[nn.Module], Any] | None = None) -> Any:
    """Bounds (or the value) of ``node``; with ``twin_of`` its one bounded input may be overwritten."""
    args = _map(node.args, lambda a: env[a] if isinstance(a, fx.Node) else a)
    kwargs = _map(dict(node.kwargs), lambda a: env[a] if isinstance(a, fx.Node) else a)
    bounded = [v for v in _leaves((args, kwargs)) if isinstance(v, (Box, Ball))]
    if not bounded:
        return _call(gm, node, args, kwargs)
    if node.op == "call_function" and node.target is getattr:  # x.shape, x.ndim, x.dtype ...
        return getattr(bounded[0].lower if isinstance(bounded[0], Box) else bounded[0].centre, args[1])
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return getattr(bounded[0].lower if isinstance(bounded[0], Box) else bounded[0].centre,
                       str(node.target))(*args[1:], **kwargs)
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if len(args) != 1 or kwargs or not isinstance(args[0], (Box, Ball)):
            raise TypeError(f"Bounds support modules called on one tensor only: {describe(node, gm)}.")
        a = args[0]
        if isinstance(a, Ball):
            step = ball_step(m, a.centre, a.radius)
            if step is not None:
                return Ball(step[0], step[1], a.norm)
            got = affine_ball(m, a.centre, a.radius, a.norm)
            if got is not None:
                return Box(*got)
            a = a.box()
        try:
            rule = module_rule(m)
        except TypeError as e:
            raise TypeError(f"{e} (fx node '{node.name}', module '{node.target}')") from None
        twin = twin_of(m) if twin_of is not None else None
        got = twin(m, a.lower, a.upper) if twin is not None else None
        return Box(*got) if got is not None else Box(*rule(m, a.lower, a.upper))
    name = op_name(node)
    if len(bounded) == 1 and isinstance(bounded[0], Ball) and name in ("reshape", "linear"):
        a = bounded[0]
        if name == "reshape" and isinstance(args[0], Ball):
            return Ball(_call(gm, node, (a.centre, *args[1:]), kwargs), a.radius, a.norm)
        if name == "linear" and isinstance(args[0], Ball) and not isinstance(args[1], (Box, Ball)):
            lin = nn.Linear(1, 1)
            lin.weight, lin.bias = args[1], args[2] if len(args) > 2 else kwargs.get("bias")  # type: ignore[assignment]
            return Box(*affine_ball(lin, a.centre, a.radius, a.norm))  # type: ignore[misc]
    args = _map(args, lambda v: v.box() if isinstance(v, Ball) else v)
    kwargs = _map(kwargs, lambda v: v.box() if isinstance(v, Ball) else v)
    rule = fn_rule(node)
    if twin_of is not None and name == "relu" and rule is FUNCTION_RULES["relu"] and len(args) == 1 and not kwargs:
        return Box(args[0].lower.relu_(), args[0].upper.relu_())

    def fn(*a: Any, **k: Any) -> Any:
        return _call(gm, node, a, k)

    lo, up = rule(fn, args, kwargs)
    return Box(lo, up)


# ----------------------------------------------------------------------------------------------
# IBP rules of function / method ops: rule(fn, args, kwargs) -> (lower, upper); Box marks bounded args
# ----------------------------------------------------------------------------------------------
def _pick(args: Any, which: str) -> Any:
    return _map(args, lambda v: getattr(v, which) if isinstance(v, Box) else v)


def monotone_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """Non-decreasing in every bounded argument (add, cat, reshape, pooling, ReLU, ...): ``fn(lower), fn(upper)``."""
    return fn(*_pick(args, "lower"), **_pick(kwargs, "lower")), fn(*_pick(args, "upper"), **_pick(kwargs, "upper"))


def add_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """``a + alpha * b`` with ``alpha >= 0`` (the default 1) is non-decreasing in both."""
    if kwargs.get("alpha", 1) < 0:
        raise TypeError("IBP through add supports alpha >= 0 only.")
    return monotone_rule(fn, args, kwargs)


def sub_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """``a - b``: ``[l_a - u_b, u_a - l_b]``."""
    a, b = args[0], args[1]
    alpha = kwargs.get("alpha", 1)
    if alpha < 0:
        raise TypeError("IBP through sub supports alpha >= 0 only.")
    lo = fn(a.lower if isinstance(a, Box) else a, b.upper if isinstance(b, Box) else b, **kwargs)
    up = fn(a.upper if isinstance(a, Box) else a, b.lower if isinstance(b, Box) else b, **kwargs)
    return lo, up


def _scaled(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any, i: int) -> Bounds:
    ends = []
    for which in ("lower", "upper"):
        a = list(args)
        a[i] = getattr(args[i], which)
        ends.append(fn(*a, **kwargs))
    return torch.minimum(*ends), torch.maximum(*ends)


def mul_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """One bounded tensor times a constant (either sign): the min / max of the two ends."""
    boxes = [i for i, v in enumerate(args) if isinstance(v, Box)]
    if len(boxes) != 1:
        raise TypeError("IBP supports multiplying one bounded tensor by a constant, not two bounded tensors.")
    return _scaled(fn, args, kwargs, boxes[0])


def div_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """A bounded tensor divided by a constant (either sign)."""
    if not isinstance(args[0], Box) or any(isinstance(v, Box) for v in args[1:]) or kwargs.get("rounding_mode"):
        raise TypeError("IBP supports dividing a bounded tensor by a constant only.")
    return _scaled(fn, args, kwargs, 0)


def neg_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """``-a``: ``[-u, -l]``."""
    return -args[0].upper, -args[0].lower


def leaky_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """F.leaky_relu with a non-negative slope is monotone."""
    slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
    if slope < 0:
        raise TypeError("The IBP rule for leaky_relu needs negative_slope >= 0 (a monotone activation).")
    return monotone_rule(fn, args, kwargs)


def linear_fn_rule(fn: Callable[..., torch.Tensor], args: Any, kwargs: Any) -> Bounds:
    """``F.linear(x, W, b)`` with constant ``W``: centre and radius as for nn.Linear."""
    a, w = args[0], args[1]
    if not isinstance(a, Box) or isinstance(w, Box):
        raise TypeError("IBP through F.linear needs a constant weight.")
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    c, r = (a.upper + a.lower) / 2, (a.upper - a.lower) / 2
    z, rad = F.linear(c, w, b), F.linear(r, w.abs())
    return z - rad, z + rad


FUNCTION_RULES: dict[str, Callable[..., Bounds]] = {
    **{k: monotone_rule for k in ("cat", "reshape", "getitem", "relu", "tanh", "sigmoid", "max_pool2d",
                                  "avg_pool2d", "sum", "permute")},
    "add": add_rule, "sub": sub_rule, "mul": mul_rule, "div": div_rule, "neg": neg_rule, "leaky_relu": leaky_rule,
    "linear": linear_fn_rule,
}
