"""L2 Lipschitz bound of any ``torch.fx``-traceable model: one rule per layer or op, propagated through the graph.

Every node gets a bound ``L(node)`` on the Lipschitz constant of its output as a function of the model input:
the input has 1, constants 0; a layer multiplies its input's bound by its own constant (Linear/Conv2d: spectral
norm; BatchNorm in eval: ``max |γ/√(var+ε)|``; ReLU/Tanh/GroupSort: 1; pools by their window overlap); ``a + b``
and ``a − b`` add their bounds, ``cat`` takes ``√(Σ Lᵢ²)``, a product with a constant multiplies by its largest
magnitude, reshapes and slices keep the bound (broadcasting multiplies by √(copies)). Modules with
``lipschitz_constant()`` are leaves that use it. Any other op: a TypeError naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._spectral import power_iteration, spectral_norm

__all__ = ["LipschitzBound", "layer_input_shapes", "lipschitz_bound"]

# parameter-free layers and their L2 Lipschitz constants (activations: sup of |derivative|)
_CONSTANT: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0, nn.ReLU6: lambda m: 1.0, nn.Tanh: lambda m: 1.0, nn.Hardtanh: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25, nn.Identity: lambda m: 1.0, nn.Flatten: lambda m: 1.0,
    nn.Dropout: lambda m: 1.0,  # eval mode: the identity
    nn.PixelUnshuffle: lambda m: 1.0, nn.PixelShuffle: lambda m: 1.0,  # permutations
    nn.LeakyReLU: lambda m: max(1.0, abs(float(getattr(m, "negative_slope", 1.0)))),
}


@dataclass(frozen=True)
class LipschitzBound:
    """An upper bound ``value`` on the L2 Lipschitz constant of a model's logits.

    ``method``: "by_construction" when every factor is a layer's declared ``lipschitz_constant()`` or an exact
    rule, else the spectral method used ("svd" or "power"). ``layers``: ``(module path, type, factor)`` for
    each factor of the product (residual blocks contribute ``L(body) + L(shortcut)``). ``converged``: False when
    a power iteration stopped at ``n_iter`` steps before converging (the value may then be too small: not sound).
    """

    value: float
    method: str
    layers: tuple[tuple[str, str, float], ...]
    converged: bool = True


def layer_input_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Input shape (no batch dim) of every submodule, recorded with forward hooks on one zero input."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in model.named_modules():
        def hook(mod: nn.Module, args: tuple[object, ...], name: str = name) -> None:
            if args and isinstance(args[0], torch.Tensor):
                shapes.setdefault(name, tuple(args[0].shape[1:]))
        hooks.append(m.register_forward_pre_hook(hook))
    was = model.training
    model.eval()
    try:
        p = next(iter(model.parameters()), None)
        dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
        device = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return shapes


class _Walker:
    """Per-layer factors (spectral norms and the rule table) for the leaves of the graph."""

    def __init__(self, method: str, n_iter: int, seed: int) -> None:
        self.method, self.n_iter = method, n_iter
        self.generator = torch.Generator().manual_seed(seed)
        self.layers: list[tuple[str, str, float]] = []
        self.spectral = False
        self.converged = True

    def sigma(self, m: nn.Module, shape: Sequence[int]) -> float:
        self.spectral = True
        if self.method == "power":
            value, ok = power_iteration(m, shape, self.n_iter, self.generator)
            self.converged &= ok
            return value
        return spectral_norm(m, shape, method="svd")

    def factor(self, name: str, m: nn.Module | str, value: float) -> float:
        self.layers.append((name, m if isinstance(m, str) else type(m).__name__, float(value)))
        return float(value)

    def leaf(self, m: nn.Module, name: str, shape: Sequence[int]) -> float:
        """The L2 Lipschitz constant of the leaf module ``m`` on inputs of ``shape`` (no batch dim)."""
        from ..models import Normalize

        declared = getattr(m, "lipschitz_constant", None)
        if callable(declared):
            return self.factor(name, m, float(declared()))
        if type(m) in _CONSTANT:
            return self.factor(name, m, _CONSTANT[type(m)](m))
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return self.factor(name, m, self.sigma(m, shape))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return self.factor(name, m, _batchnorm(m, name))
        if isinstance(m, Normalize):
            return self.factor(name, m, float(1.0 / m.std.abs().min()))
        if isinstance(m, nn.AvgPool2d):
            return self.factor(name, m, self.avgpool(m, name, shape))
        if isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1):
            h, w = shape[-2:]
            return self.factor(name, m, 1.0 / math.sqrt(h * w))
        if isinstance(m, nn.MaxPool2d) and _pair(m.dilation) == (1, 1):
            (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            # each input lies in at most ceil(k/s)^2 windows; |max a - max b| <= ||a - b||_inf per window
            return self.factor(name, m, math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw)))
        return self.unsupported(name, type(m).__name__)

    def avgpool(self, m: nn.AvgPool2d, name: str, shape: Sequence[int]) -> float:
        (kh, kw), (sh, sw), (ph, pw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if (ph, pw) != (0, 0) and not m.count_include_pad:
            return self.unsupported(name, "AvgPool2d with padding and count_include_pad=False")
        if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0):
            return 1.0 / math.sqrt(kh * kw)  # disjoint windows: mean^2 <= sum(x^2)/k
        conv = nn.Conv2d(1, 1, (kh, kw), stride=(sh, sw), padding=(ph, pw), bias=False)  # same on every channel
        with torch.no_grad():
            conv.weight.fill_(1.0 / (kh * kw))
        return self.sigma(conv, (1, *shape[-2:]))

    @staticmethod
    def unsupported(name: str, what: str) -> float:
        raise TypeError(f"certify.lipschitz has no Lipschitz rule for the layer '{name or '<model>'}' ({what}). "
                        f"Supported: {', '.join(SUPPORTED)}.")


class _Tracer(fx.Tracer):
    """Leaves: torch.nn layers, robustlab's Normalize and any module with ``lipschitz_constant()``."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from ..models import Normalize

        return (callable(getattr(m, "lipschitz_constant", None)) or isinstance(m, Normalize)
                or super().is_leaf_module(m, module_qualified_name))


def _fn_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


# ops by rule; call_function targets are matched by name (torch.relu, F.relu, Tensor.relu all "relu")
_KEEP = {"flatten", "reshape", "view", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "clone", "t",
         "chunk", "split", "unbind", "detach", "pad", "dropout", "identity", "pos", "neg", "float", "double", "to",
         "relu", "relu6", "tanh", "hardtanh", "clamp", "clip", "getattr"}
_SCALE = {"sigmoid": 0.25}
_ADD = {"add", "iadd", "sub", "isub"}
_MUL = {"mul", "imul", "truediv", "div", "itruediv"}
_CAT = {"cat", "concat", "concatenate", "stack", "hstack", "vstack"}
_COPY = {"expand", "expand_as", "repeat"}
_REDUCE = {"mean": -0.5, "sum": 0.5}
_POOL = {"avg_pool2d": nn.AvgPool2d, "max_pool2d": nn.MaxPool2d, "adaptive_avg_pool2d": nn.AdaptiveAvgPool2d}
_AFFINE = {"linear", "conv2d"}
SUPPORTED = sorted({t.__name__ for t in _CONSTANT} | {
    "Linear", "Conv2d", "BatchNorm (eval)", "Normalize", "AvgPool2d", "AdaptiveAvgPool2d(1)", "MaxPool2d",
    "any module with lipschitz_constant()", "+/- of branches", "cat/stack", "* or / by a constant",
    "reshapes and basic slicing", "leaky_relu", "sigmoid", "mean/sum", "F.linear/F.conv2d with constant weights",
    "F.avg_pool2d/max_pool2d/adaptive_avg_pool2d"})


def _numel(v: Any) -> int:
    return int(v.numel()) if isinstance(v, torch.Tensor) else 1


class _Propagate(fx.Interpreter):
    """Runs the traced graph once on a zero input, keeping ``L(node)`` beside each value."""

    def __init__(self, gm: fx.GraphModule, walker: _Walker) -> None:
        super().__init__(gm)
        self.walker = walker
        self.lip: dict[fx.Node, float] = {}
        self.first_input = True

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.lip[n] = self.rule(n, value)
        return value

    def dep(self, a: Any) -> float:
        """L of an argument: a node's bound, 0 for constants; the root-sum-square over a list (cat)."""
        if isinstance(a, fx.Node):
            return self.lip.get(a, 0.0)
        if isinstance(a, (list, tuple)):
            return math.sqrt(sum(self.dep(x) ** 2 for x in a))
        return 0.0

    def rule(self, n: fx.Node, value: Any) -> float:
        if n.op == "placeholder":
            first, self.first_input = self.first_input, False
            return 1.0 if first else 0.0
        if n.op == "get_attr":
            return 0.0
        if n.op == "output":
            return self.dep(n.args[0])
        deps = [self.dep(a) for a in (*n.args, *n.kwargs.values())]
        if not any(deps):
            return 0.0  # a constant (computed from parameters or shapes only)
        if not isinstance(value, (torch.Tensor, list, tuple)):
            return 0.0  # shapes and sizes: fixed for a fixed input shape
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            m = self.module.get_submodule(str(n.target))
            if any(deps[1:]) or not isinstance(args[0], torch.Tensor):
                return self.walker.unsupported(str(n.target), f"{type(m).__name__} with several input-dependent arguments")
            return deps[0] * self.walker.leaf(m, str(n.target), tuple(args[0].shape[1:]))
        name = _fn_name(n.target).strip("_")
        what = f"{n.op} {name!r} at graph node {n.name!r}"
        if name == "getitem":
            index = n.args[1]
            basic = all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in
                        (index if isinstance(index, tuple) else (index,)))
            if not isinstance(args[0], torch.Tensor) or basic:
                return deps[0]
            return self.walker.unsupported(n.name, f"{what}: advanced indexing may copy entries")
        if name == "dropout" and kwargs.get("training", args[2] if len(args) > 2 else True):
            return self.walker.unsupported(n.name, f"{what} with training=True (random, scaled by 1/(1-p))")
        if name == "pad" and kwargs.get("mode", args[2] if len(args) > 2 else "constant") != "constant":
            return self.walker.unsupported(n.name, f"{what} with a copying mode (reflect/replicate/circular)")
        if name in _KEEP:
            return self.single(n, deps, what)
        if name in _SCALE:
            return self.single(n, deps, what) * self.walker.factor(n.name, name, _SCALE[name])
        if name == "leaky_relu":
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            return self.single(n, deps, what) * max(1.0, abs(float(slope)))
        if name in _ADD:
            alpha = abs(float(kwargs.get("alpha", 1.0)))
            terms = [d * math.sqrt(_numel(value) / _numel(a)) for d, a in zip(deps, args)]
            return terms[0] + alpha * sum(terms[1:])
        if name in _CAT:
            return self.dep(n.args[0])
        if name in _MUL:
            return self.scaled(n, deps, args, value, name, what)
        if name in _COPY:
            return self.single(n, deps, what) * math.sqrt(_numel(value) / _numel(args[0]))
        if name in _REDUCE:
            return self.single(n, deps, what) * (_numel(args[0]) / _numel(value)) ** _REDUCE[name]
        if name in _POOL:
            return self.single(n, deps, what) * self.walker.leaf(_POOL[name](*args[1:], **kwargs), n.name,
                                                                 tuple(args[0].shape[1:]))
        if name in _AFFINE and not any(deps[1:]):
            return self.single(n, deps, what) * self.affine(name, n.name, args, kwargs)
        return self.walker.unsupported(n.name, what)

    def single(self, n: fx.Node, deps: list[float], what: str) -> float:
        if any(deps[1:]):
            return self.walker.unsupported(n.name, f"{what} with several input-dependent arguments")
        return deps[0]

    def scaled(self, n: fx.Node, deps: list[float], args: tuple[Any, ...], value: Any, name: str, what: str) -> float:
        """``x * c``, ``c * x`` or ``x / c`` with ``c`` a constant: ``L·max|c|`` (``L/min|c|``), times √(copies)."""
        if len(deps) != 2 or (deps[0] > 0) == (deps[1] > 0) or (name in ("truediv", "div", "itruediv") and deps[1] > 0):
            return self.walker.unsupported(n.name, f"{what}: only a product with, or a division by, a constant")
        i = 0 if deps[0] > 0 else 1
        c = torch.as_tensor(args[1 - i]).detach().double().abs()
        factor = float(c.max()) if name in ("mul", "imul") else float(1.0 / c.min()) if float(c.min()) > 0 else math.inf
        return deps[i] * self.walker.factor(n.name, name, factor) * math.sqrt(_numel(value) / _numel(args[i]))

    def affine(self, name: str, node: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
        """σ_max of ``F.linear``/``F.conv2d`` with constant weights, as the equivalent layer."""
        w = kwargs.get("weight", args[1])
        if name == "linear":
            layer: nn.Module = nn.Linear(w.shape[1], w.shape[0], bias=False)
        else:
            extra = dict(zip(("stride", "padding", "dilation", "groups"), args[3:]))
            extra.update({k: v for k, v in kwargs.items() if k in ("stride", "padding", "dilation", "groups")})
            groups = int(extra.get("groups", 1))
            layer = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), bias=False, **extra)
        with torch.no_grad():
            layer.weight.copy_(w)
        return self.walker.factor(node, f"F.{name}", self.walker.sigma(layer, tuple(args[0].shape[1:])))


def _pair(v: object) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))  # type: ignore[index]


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, name: str) -> float:
    if m.running_var is None:
        raise TypeError(f"certify.lipschitz: BatchNorm '{name}' has no running statistics "
                        "(track_running_stats=False); its eval-mode map is not fixed.")
    scale = 1.0 / torch.sqrt(m.running_var.detach().double() + m.eps)
    if m.weight is not None:
        scale = scale * m.weight.detach().double().abs()
    return float(scale.max())


def lipschitz_bound(model: nn.Module, input_shape: Sequence[int], *, method: str = "svd", n_iter: int = 100,
                    seed: int = 0) -> LipschitzBound:
    """Upper bound on the L2 Lipschitz constant of ``model`` (eval mode) on inputs of ``input_shape``.

    The model is traced with ``torch.fx`` and the bound propagated node by node (module docstring): products
    along chains, sums over the branches of an add (residual blocks: ``L(body) + L(shortcut)``). A module with
    ``lipschitz_constant()`` (Lipschitz-by-construction layers and models) uses it. Linear/Conv2d:
    :func:`~robustlab.certify._spectral.spectral_norm` with ``method`` ("svd": exact/upper bound; "power":
    at most ``n_iter`` power-iteration steps from a ``seed``-ed start, a lower estimate). BatchNorm (eval):
    ``max |γ/√(var+ε)|``; Normalize: ``1/min σ``; ReLU/Tanh/GroupSort: 1; Sigmoid: 1/4. A model torch.fx cannot
    trace, or an op without a rule: TypeError naming it.
    """
    walker = _Walker(method, n_iter, seed)
    was = model.training
    model.eval()
    try:
        declared = getattr(model, "lipschitz_constant", None)
        if callable(declared):
            value = walker.factor("", model, float(declared()))
        else:
            value = _propagate(model, input_shape, walker)
    finally:
        model.train(was)
    return LipschitzBound(value, method if walker.spectral else "by_construction", tuple(walker.layers),
                          walker.converged)


def _propagate(model: nn.Module, input_shape: Sequence[int], walker: _Walker) -> float:
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - any tracing failure is reported the same way
        raise TypeError(f"certify.lipschitz could not trace {type(model).__name__} with torch.fx ({type(e).__name__}: "
                        f"{e}); it needs a traceable model whose every layer has a rule. Supported: "
                        f"{', '.join(SUPPORTED)}.") from e
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    prop = _Propagate(gm, walker)
    with torch.no_grad():
        prop.run(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    out = next(n for n in gm.graph.nodes if n.op == "output")
    return prop.lip[out]
