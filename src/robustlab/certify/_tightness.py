"""IBP tightness (Mao et al. 2024, "Understanding certified training with IBP")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from ._crown import _CROWN_AFFINE, _CROWN_NAMES, Bounds, _affine_vjp
from ._rules import _batchnorm_eval, _bn_affine
from .ibp import _check_y, _layers, _spec_matrix, _validate

__all__ = ["tightness"]


@torch.no_grad()
def tightness(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1.0) -> torch.Tensor:
    """Mean IBP tightness (Mao et al. 2024, "Understanding certified training with IBP").

    Tightness = (radius of the optimal box of the network's linearisation at ``x``) / (IBP radius of
    the same linearisation), per margin ``z_y - z_j`` (per logit when ``y`` is None), averaged;
    in (0, 1]. For a deep linear network it is ``|W_L...W_1| 1 / (|W_L|...|W_1| 1)``. Supports the
    layers of the CROWN backward pass with ReLU activations; the radius scales out (``eps`` only
    sets the box used for both numerator and denominator). BatchNorm uses its running statistics.
    """
    _validate(model, x, eps, "linf", "ibp", "tightness")
    if y is not None:
        y = _check_y(y, x, None, "tightness")
    with _batchnorm_eval(model):
        return _tightness(model, x, y, float(eps))


def _tightness(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float) -> torch.Tensor:
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
    if y is not None:
        _check_y(y, x, num_classes, "tightness")
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
