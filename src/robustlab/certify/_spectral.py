"""Spectral norms of Linear and Conv2d layers: exact SVD, FFT upper bound, power iteration; orthogonality check.

A zero-padded stride-s convolution on an H × W input is a restriction of the *circular* convolution on the
padded grid (H + pad_h) × (W + pad_w) applied to the zero-embedded input (no output position wraps around),
so its operator norm is at most the largest singular value of the per-frequency ``(out, in)`` matrices of
that circular convolution (Sedghi, Gupta & Long, ICLR 2019) — a sound upper bound, computed in float64.
Power iteration (Miyato et al. 2018) on the operator and its adjoint gives a *lower* estimate instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._validation import InvalidParameterError

__all__ = ["LayerSpectrum", "conv_frequency_matrices", "orthogonality", "power_iteration", "spectral_norm"]


def _conv_pads(conv: nn.Conv2d) -> tuple[int, int]:
    """Total zero padding per spatial dim (both sides), ``padding="same"/"valid"`` included."""
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if isinstance(conv.padding, str):
        return (0, 0) if conv.padding == "valid" else (dh * (kh - 1), dw * (kw - 1))
    return 2 * conv.padding[0], 2 * conv.padding[1]


def _dilated(weight: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    if dilation == (1, 1):
        return weight
    cout, cin, kh, kw = weight.shape
    out = weight.new_zeros(cout, cin, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    out[:, :, :: dilation[0], :: dilation[1]] = weight
    return out


def conv_frequency_matrices(conv: nn.Conv2d, input_hw: Sequence[int]) -> list[torch.Tensor]:
    """Per-frequency ``(out/g, in/g)`` complex128 matrices of the circular embedding, one tensor per group.

    For a :class:`~robustlab.models._lipschitz.CayleyConv2d` these are its own orthogonal matrices on
    ``input_hw`` (exact); for a plain Conv2d, those of the circular convolution on the padded grid.
    """
    h, w = int(input_hw[0]), int(input_hw[1])
    freq = getattr(conv, "frequency_matrices", None)
    if callable(freq):
        with torch.no_grad():
            return [freq(h, w).to(torch.complex128)]
    if conv.padding_mode == "circular":
        if _conv_pads(conv) != (conv.dilation[0] * (conv.kernel_size[0] - 1), conv.dilation[1] * (conv.kernel_size[1] - 1)):
            raise TypeError(f"A circular-padded Conv2d is bounded only with 'same' padding; got padding={conv.padding} "
                            f"for kernel {conv.kernel_size}.")
        grid = (h, w)
    elif conv.padding_mode == "zeros":
        ph, pw = _conv_pads(conv)
        grid = (h + ph, w + pw)
    else:
        raise TypeError(f"No spectral bound for Conv2d with padding_mode={conv.padding_mode!r}; "
                        "supported: 'zeros', 'circular'.")
    weight = _dilated(conv.weight.detach().to(torch.float64), (conv.dilation[0], conv.dilation[1]))
    if weight.shape[-2] > grid[0] or weight.shape[-1] > grid[1]:
        raise InvalidParameterError(f"input size {(h, w)} is smaller than the kernel {tuple(weight.shape[-2:])}")
    g, cout = conv.groups, conv.out_channels
    per = cout // g
    out = []
    for i in range(g):
        wf = torch.fft.rfft2(weight[i * per:(i + 1) * per], grid)  # (out/g, in/g, gh, gw//2+1)
        out.append(wf.reshape(per, wf.shape[1], -1).permute(2, 0, 1))
    return out


def _matrix(layer: nn.Module) -> torch.Tensor:
    ortho = getattr(layer, "orthogonal_weight", None)
    if callable(ortho):
        with torch.no_grad():
            return ortho().detach().to(torch.float64)
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]
    return weight.detach().to(torch.float64)


def _operator(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The bias-free linear map of a Linear/Conv2d layer, in float64 (float32 for a Cayley convolution)."""
    if isinstance(layer, nn.Linear):
        w = _matrix(layer)
        return lambda v: v @ w.T
    if isinstance(layer, nn.Conv2d) and hasattr(layer, "frequency_matrices"):
        conv = layer
        bias = 0 if conv.bias is None else conv.bias.detach().double()[:, None, None]
        return lambda v: conv(v.float()).double() - bias
    if isinstance(layer, nn.Conv2d):
        wt, conv = layer.weight.detach().to(torch.float64), layer
        if conv.padding_mode != "zeros":
            return lambda v: conv._conv_forward(v, wt, None)
        return lambda v: nn.functional.conv2d(v, wt, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    raise TypeError(f"power_iteration supports Linear and Conv2d layers. Got {type(layer).__name__}.")


def power_iteration(layer: nn.Module, input_shape: Sequence[int], n_iter: int = 100,
                    generator: torch.Generator | None = None, rtol: float = 1e-7) -> tuple[float, bool]:
    """Power-iteration estimate of ``σ_max`` of a Linear/Conv2d layer on inputs of ``input_shape`` (no batch).

    ``v ← AᵀA v / ‖·‖`` for at most ``n_iter`` steps, the adjoint as the vector-Jacobian product (for a Conv2d
    that is ``conv_transpose2d`` with the output padding of this input shape); returns ``(‖A v‖, converged)``,
    a LOWER estimate of the spectral norm (Miyato et al. 2018). ``converged``: the estimate changed by less
    than ``rtol`` (relative) over the last step — convolutions, whose top singular values cluster, may need
    hundreds of steps. Bias excluded; float64.
    """
    op = _operator(layer)
    v = torch.randn((1, *input_shape), generator=generator, dtype=torch.float64)
    v = v / v.norm()
    sigma, converged = 0.0, False
    for _ in range(int(n_iter)):
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            u = op(v)
            (adj,) = torch.autograd.grad(u, v, grad_outputs=u.detach())
        new = float(u.detach().norm())
        converged = abs(new - sigma) <= rtol * new
        sigma = new
        n = adj.norm()
        if float(n) == 0.0:
            return 0.0, True
        v = adj / n
        if converged:
            break
    with torch.no_grad():
        return max(sigma, float(op(v).norm())), converged


def spectral_norm(layer: nn.Module, input_shape: Sequence[int], *, method: str = "svd", n_iter: int = 100,
                  generator: torch.Generator | None = None) -> float:
    """``σ_max`` of a Linear or Conv2d layer acting on inputs of ``input_shape`` (no batch dim).

    ``method="svd"``: exact singular values of a Linear weight; for a Conv2d the sound upper bound of the
    circular embedding (module docstring), exact for a circular or Cayley convolution. ``method="power"``:
    :func:`power_iteration` with at most ``n_iter`` steps (a lower estimate).
    """
    if method == "power":
        return power_iteration(layer, input_shape, n_iter, generator)[0]
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(_matrix(layer), ord=2))
    if isinstance(layer, nn.Conv2d):
        mats = conv_frequency_matrices(layer, input_shape[-2:])
        return max(float(torch.linalg.svdvals(m)[..., 0].max()) for m in mats)
    raise TypeError(f"spectral_norm supports Linear and Conv2d layers. Got {type(layer).__name__}.")


@dataclass(frozen=True)
class LayerSpectrum:
    """Orthogonality diagnostic of one layer: its singular values and ``‖WᵀW − I‖_F``.

    ``deviation`` is ``‖G − I‖_F`` with ``G`` the Gram matrix of the smaller side (``WᵀW`` when out ≥ in,
    else ``WWᵀ``); for a convolution, the largest such deviation over the frequencies. 0 for an
    orthogonal layer. ``sigma_max``/``sigma_min``: measured (per-frequency for a convolution). A layer with
    ``operator_matrix(h, w)`` (SOCConv2d, zero-padded) is measured by its dense matrix on inputs of at most
    8 × 8 (the construction is orthogonal at every size).
    """

    name: str
    kind: str
    sigma_max: float
    sigma_min: float
    deviation: float

    def as_dict(self) -> dict[str, float | str]:
        return {"name": self.name, "kind": self.kind, "sigma_max": self.sigma_max, "sigma_min": self.sigma_min,
                "deviation": self.deviation}


_DENSE_HW = 8  # a layer measured by its dense matrix is measured on at most 8 x 8 inputs


def _gram_deviation(m: torch.Tensor) -> torch.Tensor:
    g = m.mH @ m if m.shape[-2] >= m.shape[-1] else m @ m.mH
    eye = torch.eye(g.shape[-1], dtype=g.dtype)
    return torch.linalg.matrix_norm(g - eye)


def orthogonality(model: nn.Module, input_shape: Sequence[int]) -> list[LayerSpectrum]:
    """Orthogonality diagnostic of every Linear and Conv2d layer of ``model`` for inputs of ``input_shape``.

    Example::

        >>> from robustlab.models import create
        >>> m = create("lipschitz_mlp", input_shape=(6,), num_classes=3, hidden=(8,))
        >>> max(s.deviation for s in orthogonality(m, (6,))) < 1e-5
        True
    """
    from ._lipschitz import layer_input_shapes

    shapes = layer_input_shapes(model, input_shape)
    out = []
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            mats = [_matrix(layer)]
        elif isinstance(layer, nn.Conv2d):
            mats = conv_frequency_matrices(layer, shapes[name][-2:])
        elif callable(getattr(layer, "operator_matrix", None)):  # e.g. SOCConv2d: its dense matrix, small sizes
            hw = [min(int(s), _DENSE_HW) for s in shapes[name][-2:]]
            mats = [layer.operator_matrix(*hw)]
        else:
            continue
        sv = torch.cat([torch.linalg.svdvals(m).flatten() for m in mats])
        dev = max(float(_gram_deviation(m).max()) for m in mats)
        out.append(LayerSpectrum(name, type(layer).__name__, float(sv.max()), float(sv.min()), dev))
    return out
