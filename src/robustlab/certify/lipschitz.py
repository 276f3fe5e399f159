"""Lipschitz certificates: certified L2 radius ``margin / (√2·L)`` from a bound L on the logits' Lipschitz constant.

If ``‖f(x) − f(x')‖₂ ≤ L‖x − x'‖₂`` then every logit difference ``f_y − f_j`` is ``√2·L``-Lipschitz, so the
prediction ``y`` cannot change within radius ``(f_y(x) − max_{j≠y} f_j(x)) / (√2·L)`` (Tsuzuku, Sato & Sugiyama,
NeurIPS 2018). L is exact by construction for the orthogonal models ``lipschitz_mlp``/``lipschitz_cnn``, and
otherwise a bound propagated through the model's ``torch.fx`` graph from per-layer spectral norms and op rules
(products along chains, sums over the branches of an add; :func:`lipschitz_bound`).

Soundness: ``method="svd"`` (default) uses exact singular values of Linear weights and an FFT upper bound for
convolutions (float64), so the bound is an upper bound up to float rounding; ``method="power"`` uses ``n_iter``
power-iteration steps, which converge to σ_max *from below*: sound only once converged. Either way the
certificate multiplies L by ``1 + tol`` (default 1e-3) to absorb float32 rounding of the orthogonal layers and
the residual error of a converged power iteration.

``orthogonality_penalty(model)`` is the OCNN orthogonality regulariser (Wang et al. 2020; Achour et al. 2022) for
training ordinary networks towards orthogonal layers (``lipschitz_margin(orth_weight=λ)``).

Example::

    >>> import torch
    >>> from robustlab.models import create
    >>> from robustlab.certify import lipschitz
    >>> m = create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    >>> cert = lipschitz(m, torch.rand(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    >>> cert.bound.method, cert.radius.shape
    ('by_construction', torch.Size([5]))
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .._validation import check_finite, check_in_range, check_int, check_labels, check_option
from ._lipschitz import LipschitzBound, lipschitz_bound
from ._orth_penalty import conv_orthogonality_penalty, linear_orthogonality_penalty, orthogonality_penalty
from ._spectral import LayerSpectrum, orthogonality, power_iteration, spectral_norm

__all__ = ["LayerSpectrum", "LipschitzBound", "LipschitzCertificate", "conv_orthogonality_penalty",
           "linear_orthogonality_penalty", "lipschitz", "lipschitz_bound", "orthogonality", "orthogonality_penalty",
           "power_iteration", "spectral_norm"]

METHODS = ("svd", "power")


@dataclass(frozen=True)
class LipschitzCertificate:
    """Result of :func:`lipschitz`.

    ``radius`` (N,): signed certified L2 radius ``margin/(√2·L·(1+tol))`` w.r.t. the label, ≤ 0 where the point
    is misclassified; ``margin`` (N,): ``f_y − max_{j≠y} f_j``; ``lipschitz``: the L used (``(1+tol)`` included);
    ``bound``: the per-layer :class:`LipschitzBound`.
    """

    radius: torch.Tensor
    margin: torch.Tensor
    lipschitz: float
    bound: LipschitzBound

    def certified_accuracy(self, eps: float) -> float:
        """Share of points classified correctly with certified radius > ``eps`` (``eps = 0``: clean accuracy)."""
        check_in_range(eps, "eps", 0.0, None, owner="LipschitzCertificate.certified_accuracy")
        return float((self.radius > eps).float().mean()) if self.radius.numel() else float("nan")


def lipschitz(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str = "svd", n_iter: int = 100, tol: float = 1e-3,
    batch_size: int = 1000, bound: LipschitzBound | None = None,
) -> LipschitzCertificate:
    """Certified L2 radii ``margin/(√2·L)`` of ``model`` (eval mode) at the points ``x`` with labels ``y``.

    ``method``/``n_iter``: how Linear/Conv2d factors are bounded ("svd" sound, "power" a converging lower
    estimate; see the module docstring); by-construction layers use their ``lipschitz_constant()``. ``tol``:
    safety factor ``L·(1+tol)``. ``bound``: a precomputed :func:`lipschitz_bound` to reuse. Shape: x (N, ...),
    y (N,) -> radius (N,).
    """
    owner = "certify.lipschitz"
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__}.")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise TypeError(f"'x' of {owner} must be a floating-point batch of shape (N, ...). Got {getattr(x, 'shape', type(x))}.")
    check_finite(x, "x", owner=owner)
    check_option(method, "method", METHODS, owner=owner)
    check_int(n_iter, "n_iter", 1, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_in_range(tol, "tol", 0.0, None, owner=owner)
    if bound is None:
        bound = lipschitz_bound(model, tuple(x.shape[1:]), method=method, n_iter=n_iter)
    if not bound.converged:
        warnings.warn(f"{owner}: power iteration did not converge in n_iter={n_iter} steps; the Lipschitz estimate "
                      "may be too small and the radii not sound. Raise n_iter or use method='svd'.", stacklevel=2)
    logits = _logits(model, x, batch_size)
    check_labels(y, logits.shape[1], "y", owner=owner)
    if y.shape != (x.shape[0],):
        raise ValueError(f"'y' of {owner} must have shape ({x.shape[0]},). Got {tuple(y.shape)}.")
    y = y.long().to(logits.device)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    margin = (true - other).cpu()
    lip = bound.value * (1.0 + float(tol))
    if lip > 0:
        radius = margin / (math.sqrt(2.0) * lip)
    else:  # a constant model: its prediction never changes
        radius = torch.sign(margin) * math.inf
    return LipschitzCertificate(radius=radius, margin=margin, lipschitz=lip, bound=bound)


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        p = next(iter(model.parameters()), None)
        dev = p.device if p is not None else x.device
        with torch.no_grad():
            out = torch.cat([model(x[i:i + batch_size].to(dev)).double() for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was)
    if out.dim() != 2:
        raise ValueError(f"certify.lipschitz needs (N, C) logits; the model returned shape {tuple(out.shape)}.")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("certify.lipschitz: the model returned NaN or infinite logits.")
    return out

