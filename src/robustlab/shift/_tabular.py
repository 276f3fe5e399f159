"""Shifts for non-image (feature-vector) data: noise, feature dropout, covariate scaling, prior shift.

Inputs are float tensors (N, ...) (any sample shape); outputs keep shape and dtype. Features of a
robustlab data set live in [0, 1], so ``clip=True`` (the default) clips the result back to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._validation import check_bool, check_in_range, check_labels, check_unit_interval

__all__ = ["covariate_scaling", "feature_dropout", "gaussian_feature_noise", "prior_shift"]


def _check_x(x: torch.Tensor, owner: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"'x' of {owner} must be a floating-point tensor. Got {getattr(x, 'dtype', type(x))}.")
    if x.dim() < 2:
        raise ValueError(f"'x' of {owner} must be a batch of shape (N, ...). Got shape {tuple(x.shape)}.")


def gaussian_feature_noise(x: torch.Tensor, *, std: float, clip: bool = True,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian feature noise ``x + N(0, std^2)`` per element (then clipped to [0, 1] if ``clip``)."""
    owner = "gaussian_feature_noise"
    _check_x(x, owner)
    check_in_range(std, "std", 0.0, None, owner=owner)
    check_bool(clip, "clip", owner=owner)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    out = x + float(std) * noise
    return out.clamp(0.0, 1.0) if clip else out


def feature_dropout(x: torch.Tensor, *, rate: float, fill: float | torch.Tensor = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Missing features: each element is replaced by ``fill`` with probability ``rate``.

    ``fill`` is a scalar or a tensor broadcastable to one sample (e.g. the training means, for mean imputation).
    """
    owner = "feature_dropout"
    _check_x(x, owner)
    check_unit_interval(rate, "rate", owner=owner)
    mask = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) < float(rate)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(mask, fill_t.expand_as(x) if fill_t.dim() else fill_t, x)


def covariate_scaling(x: torch.Tensor, *, scale: float | torch.Tensor = 1.0, shift: float | torch.Tensor = 0.0,
                      center: float | torch.Tensor | None = None, clip: bool = True) -> torch.Tensor:
    """Covariate shift by an affine map per feature: ``(x - center) * scale + center + shift``.

    ``center`` defaults to the batch mean of each feature (so ``scale`` changes the spread around it);
    ``scale``/``shift`` are scalars or per-feature tensors broadcastable to one sample.
    """
    owner = "covariate_scaling"
    _check_x(x, owner)
    check_bool(clip, "clip", owner=owner)
    if not isinstance(scale, torch.Tensor):
        check_in_range(scale, "scale", 0.0, None, owner=owner)
    c = x.mean(dim=0, keepdim=True) if center is None else torch.as_tensor(center, dtype=x.dtype, device=x.device)
    out = (x - c) * torch.as_tensor(scale, dtype=x.dtype, device=x.device) + c + torch.as_tensor(
        shift, dtype=x.dtype, device=x.device)
    return out.clamp(0.0, 1.0) if clip else out


def prior_shift(x: torch.Tensor, y: torch.Tensor, *, priors: Sequence[float] | torch.Tensor, n: int | None = None,
                replace: bool = True, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Label (class-prior) shift by re-sampling: draw ``n`` rows so class k has ``round(n priors_k)`` rows.

    Rows of class k are sampled uniformly from the rows of ``y == k`` (with replacement unless
    ``replace=False``, which then needs enough rows). p(x | y) is unchanged; only p(y) moves.
    Returns ``(x_shifted, y_shifted)`` in a random order.
    """
    owner = "prior_shift"
    _check_x(x, owner)
    p = torch.as_tensor(priors, dtype=torch.float64).flatten()
    k = p.numel()
    check_labels(y, k, owner=owner)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{owner}: x has {x.shape[0]} rows but y has {y.shape[0]} labels.")
    if bool((p < 0).any()) or abs(float(p.sum()) - 1.0) > 1e-6:
        raise ValueError(f"The 'priors' parameter of {owner} must be non-negative and sum to 1. Got {p.tolist()}.")
    total = int(y.shape[0]) if n is None else int(check_in_range(n, "n", 1, None, owner=owner, integer=True))
    counts = torch.floor(p * total).long()
    rest = total - int(counts.sum())  # largest remainders get the leftover rows
    if rest > 0:
        counts[torch.argsort(p * total - counts, descending=True)[:rest]] += 1
    idx = []
    for c in range(k):
        if counts[c] == 0:
            continue
        pool = torch.nonzero(y.cpu() == c).flatten()
        if pool.numel() == 0:
            raise ValueError(f"{owner}: class {c} has prior {float(p[c]):.3g} but no rows to sample from.")
        if replace:
            pick = pool[torch.randint(pool.numel(), (int(counts[c]),), generator=generator)]
        else:
            if pool.numel() < counts[c]:
                raise ValueError(f"{owner}: class {c} needs {int(counts[c])} rows without replacement but has "
                                 f"{pool.numel()}; use replace=True or a smaller n.")
            pick = pool[torch.randperm(pool.numel(), generator=generator)[: int(counts[c])]]
        idx.append(pick)
    order = torch.cat(idx)
    order = order[torch.randperm(order.numel(), generator=generator)]
    return x[order.to(x.device)], y[order.to(y.device)]
