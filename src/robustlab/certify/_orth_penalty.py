"""The orthogonality regulariser of orthogonal CNNs (OCNN, Wang et al. 2020), as analysed by Achour et al. 2022.

For a convolution with kernel ``K`` of shape ``(M, C, k, k)`` and stride ``S``, the circular-padded operator
``𝒦`` on ``N × N`` inputs satisfies ``𝒦𝒦ᵀ − I`` = a circular convolution on the ``N/S`` grid whose kernel is
``conv(K, K, padding=P, stride=S) − I_{r0}`` (``P = ⌊(k−1)/S⌋·S``; ``I_{r0}``: the identity at the centre tap,
zero elsewhere), so

    L_orth(K) = ‖conv(K, K, P, S) − I_{r0}‖²_F                 (row orthogonality, M ≤ C·S²)
    L_orth(K) = ‖conv(K, K, P, S) − I_{r0}‖²_F − (M − C·S²)     (column orthogonality, M ≥ C·S²)

and ``‖𝒦𝒦ᵀ − I‖²_F`` (resp. ``‖𝒦ᵀ𝒦 − I‖²_F``) ``= (N/S)²·L_orth(K)`` once ``N`` is large enough that the
``2k − 1`` taps of ``conv(K, K)`` do not wrap around (Achour, Malgouyres & Mamalet, JMLR 2022). ``L_orth = 0``
exactly when the circular convolution is orthogonal, and it is stable: a small ``L_orth`` means a convolution
close to an isometry. The column case differs from Wang et al.'s term by a constant (same gradient). A Linear
layer is the ``N = 1``, ``k = 1`` case: ``‖WᵀW − I‖²_F`` on the smaller side.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import InvalidParameterError
from ._spectral import _dilated

__all__ = ["conv_orthogonality_penalty", "linear_orthogonality_penalty", "orthogonality_penalty"]


def linear_orthogonality_penalty(weight: torch.Tensor) -> torch.Tensor:
    """``‖WᵀW − I‖²_F`` (out ≥ in) or ``‖WWᵀ − I‖²_F`` (out < in) of an ``(out, in)`` weight, in float32."""
    w = weight.float()
    gram = w.mT @ w if w.shape[0] >= w.shape[1] else w @ w.mT
    return (gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).square().sum()


def conv_orthogonality_penalty(weight: torch.Tensor, stride: int | tuple[int, int] = 1,
                               dilation: int | tuple[int, int] = 1, groups: int = 1) -> torch.Tensor:
    """``L_orth(K)`` of a Conv2d kernel (see the module docstring), summed over groups, in float32.

    Shape: weight ``(M, C/groups, kh, kw)`` -> ``()``. Example::

        >>> import torch
        >>> k = torch.zeros(2, 2, 3, 3); k[:, :, 1, 1] = torch.eye(2)   # the identity convolution
        >>> float(conv_orthogonality_penalty(k))
        0.0
    """
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    k = _dilated(weight.float(), (dh, dw))
    m, cg, kh, kw = k.shape
    if groups < 1 or m % groups:
        raise InvalidParameterError(f"conv_orthogonality_penalty: {m} output channels are not divisible into "
                                    f"groups={groups}.")
    mg = m // groups
    ph, pw = (kh - 1) // sh * sh, (kw - 1) // sw * sw
    # every group's kernel correlated with itself in one grouped convolution: out[a, j, b] = conv(K_j[a], K_j[b])
    x = k.view(groups, mg, cg, kh, kw).transpose(0, 1).reshape(mg, groups * cg, kh, kw)
    out = nn.functional.conv2d(x, k, stride=(sh, sw), padding=(ph, pw), groups=groups)
    out = out.view(mg, groups, mg, *out.shape[-2:])
    eye = torch.eye(mg, dtype=out.dtype, device=out.device)[:, None, :].expand(mg, groups, mg)
    centre = out[..., ph // sh, pw // sw]
    value = out.square().sum() - centre.square().sum() + (centre - eye).square().sum()
    excess = mg - cg * sh * sw  # column-orthogonal case: ‖𝒦ᵀ𝒦 − I‖² = ‖𝒦𝒦ᵀ − I‖² − (rows − columns)
    return value - groups * excess if excess > 0 else value


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of the OCNN orthogonality terms of every Conv2d and Linear layer of ``model`` (differentiable).

    Conv2d: ``L_orth(K)`` (:func:`conv_orthogonality_penalty`; stride, dilation and groups honoured); Linear:
    ``‖WᵀW − I‖²_F`` on the smaller side. Layers that are orthogonal by construction (those declaring
    ``lipschitz_constant()``, e.g. ``CayleyConv2d``/``CayleyLinear``, whose ``weight`` is not the applied matrix)
    are skipped. Use as a regulariser: ``lipschitz_margin(orth_weight=λ)`` adds ``λ·orthogonality_penalty``.
    Raises InvalidParameterError when the model has no such layer (a penalty that would be silently 0).
    """
    total: torch.Tensor | None = None
    for m in model.modules():
        if callable(getattr(m, "lipschitz_constant", None)):
            continue
        if isinstance(m, nn.Conv2d):
            term = conv_orthogonality_penalty(m.weight, m.stride, m.dilation, m.groups)  # type: ignore[arg-type]
        elif isinstance(m, nn.Linear):
            term = linear_orthogonality_penalty(m.weight)
        else:
            continue
        total = term if total is None else total + term
    if total is None:
        raise InvalidParameterError(f"orthogonality_penalty: {type(model).__name__} has no unconstrained Conv2d or "
                                    "Linear layer to regularise (layers orthogonal by construction are skipped).")
    return total
