"""Layer-wise L2 Lipschitz bound of a model: one rule per layer type, composed along the module tree."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
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
    def __init__(self, shapes: dict[str, tuple[int, ...]], method: str, n_iter: int, seed: int) -> None:
        self.shapes, self.method, self.n_iter = shapes, method, n_iter
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

    def factor(self, name: str, m: nn.Module, value: float) -> float:
        self.layers.append((name, type(m).__name__, float(value)))
        return float(value)

    def bound(self, m: nn.Module, name: str) -> float:
        from ..models import Normalize, Residual

        declared = getattr(m, "lipschitz_constant", None)
        if callable(declared):
            return self.factor(name, m, float(declared()))
        if isinstance(m, (nn.Sequential, Residual)) and type(m).forward not in (nn.Sequential.forward, Residual.forward):
            return self.unsupported(m, name, f"{type(m).__name__} overrides forward(); its graph is not the chain")
        if isinstance(m, nn.Sequential):
            value = 1.0
            for child_name, child in m.named_children():
                value *= self.bound(child, f"{name}.{child_name}" if name else child_name)
            return value
        if isinstance(m, Residual):
            body = self.bound(m.body, f"{name}.body")
            short = self.bound(m.shortcut, f"{name}.shortcut")
            return body + short
        if name not in self.shapes:
            return self.factor(name, m, 1.0) if type(m) in _CONSTANT else self.unsupported(m, name)
        if type(m) in _CONSTANT:
            return self.factor(name, m, _CONSTANT[type(m)](m))
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return self.factor(name, m, self.sigma(m, self.shapes[name]))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return self.factor(name, m, _batchnorm(m, name))
        if isinstance(m, Normalize):
            return self.factor(name, m, float(1.0 / m.std.abs().min()))
        if isinstance(m, nn.AvgPool2d):
            return self.factor(name, m, self.avgpool(m, name))
        if isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1):
            h, w = self.shapes[name][-2:]
            return self.factor(name, m, 1.0 / math.sqrt(h * w))
        if isinstance(m, nn.MaxPool2d) and _pair(m.dilation) == (1, 1):
            (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            # each input lies in at most ceil(k/s)^2 windows; |max a - max b| <= ||a - b||_inf per window
            return self.factor(name, m, math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw)))
        return self.unsupported(m, name)

    def avgpool(self, m: nn.AvgPool2d, name: str) -> float:
        (kh, kw), (sh, sw), (ph, pw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if (ph, pw) != (0, 0) and not m.count_include_pad:
            return self.unsupported(m, name, "AvgPool2d with padding and count_include_pad=False")
        if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0):
            return 1.0 / math.sqrt(kh * kw)  # disjoint windows: mean^2 <= sum(x^2)/k
        conv = nn.Conv2d(1, 1, (kh, kw), stride=(sh, sw), padding=(ph, pw), bias=False)  # same on every channel
        with torch.no_grad():
            conv.weight.fill_(1.0 / (kh * kw))
        return self.sigma(conv, (1, *self.shapes[name][-2:]))

    def unsupported(self, m: nn.Module, name: str, why: str = "") -> float:
        supported = sorted({t.__name__ for t in _CONSTANT} | {"Sequential", "Residual", "Linear", "Conv2d", "BatchNorm",
                                                             "Normalize", "AvgPool2d", "AdaptiveAvgPool2d(1)",
                                                             "MaxPool2d", "any module with lipschitz_constant()"})
        raise TypeError(f"certify.lipschitz has no Lipschitz rule for the layer '{name or '<model>'}' "
                        f"({why or type(m).__name__}). Supported: {', '.join(supported)}.")


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

    Product over the layers of their constants (composition), ``L(body) + L(shortcut)`` for residual blocks.
    Modules with ``lipschitz_constant()`` (Lipschitz-by-construction layers and models) use it. Linear/Conv2d:
    :func:`~robustlab.certify._spectral.spectral_norm` with ``method`` ("svd": exact/upper bound; "power":
    at most ``n_iter`` power-iteration steps from a ``seed``-ed start, a lower estimate). BatchNorm (eval):
    ``max |γ/√(var+ε)|``; Normalize: ``1/min σ``; ReLU/Tanh/GroupSort: 1; Sigmoid: 1/4. Any other layer: TypeError
    naming it.
    """
    shapes = layer_input_shapes(model, input_shape)
    walker = _Walker(shapes, method, n_iter, seed)
    was = model.training
    model.eval()
    try:
        value = walker.bound(model, "")
    finally:
        model.train(was)
    return LipschitzBound(value, method if walker.spectral else "by_construction", tuple(walker.layers),
                          walker.converged)
