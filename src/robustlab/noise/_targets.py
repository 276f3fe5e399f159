"""Target noise for regression: ``inject_targets(y, *, kind, rate, scale, generator, **options)``.

Kinds (registry ``TARGET_NOISES``, separate from the label-noise ``NOISES`` whose processes are
C x C transition matrices). ``scale`` is in units of the clean targets' standard deviation ``s``:

- ``gaussian``: every target gets :math:`+\\text{scale}\\cdot s\\cdot\\epsilon`, :math:`\\epsilon \\sim N(0, 1)`
  (``rate`` is the fraction of targets perturbed, default 1).
- ``student_t``: the same with heavy-tailed :math:`\\epsilon \\sim t_{df}` (``df`` > 0, default 2).
- ``outliers``: a ``rate`` fraction is replaced by :math:`\\bar y \\pm \\text{magnitude}\\cdot s` (random sign).
- ``adversarial``: the ``rate`` fraction with the largest :math:`|y - \\bar y|` (the most informative targets)
  is reflected through the mean and amplified, :math:`\\bar y - \\text{magnitude}(y - \\bar y)`: every
  corrupted target pulls the fit the wrong way, the direction that hurts a least-squares fit most among
  bounded per-target moves (the analogue of RIQL's adversarial reward/Q-target corruption).

All kinds draw only from ``generator`` (same generator state -> same targets) and return the identity at
rate 0 (no draws). Returns :class:`NoisyTargets` ``(targets, is_noisy, realized_rate)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._registry import Registry
from .._validation import InvalidParameterError, check_finite, check_in_range

__all__ = ["TARGET_NOISES", "NoisyTargets", "inject_targets", "register_target_noise"]

TARGET_NOISES: Registry[Any] = Registry("target noise kind", checks="robustlab.testing._regression_data")
register_target_noise = TARGET_NOISES.register


class NoisyTargets(NamedTuple):
    """Result of :func:`inject_targets`: noisy (N,) targets, the (N,) bool mask of changed ones, their fraction."""

    targets: torch.Tensor
    is_noisy: torch.Tensor
    realized_rate: float


def _chosen(n: int, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """A bool mask of exactly round(rate * n) seeded random rows."""
    k = int(round(rate * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask


@register_target_noise("gaussian", tags={"regression"}, example_kwargs={"rate": 1.0, "scale": 0.5})
def _gaussian(y: torch.Tensor, s: float, g: torch.Generator | None, *, rate: float, scale: float = 0.5) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation ``scale`` x std(y) on a ``rate`` fraction."""
    m = _chosen(y.shape[0], rate, g)
    eps = torch.randn(y.shape[0], generator=g, dtype=torch.float64)
    return torch.where(m, y + scale * s * eps, y)


@register_target_noise("student_t", tags={"regression"}, example_kwargs={"rate": 1.0, "scale": 0.5, "df": 2.0})
def _student_t(y: torch.Tensor, s: float, g: torch.Generator | None, *, rate: float, scale: float = 0.5,
               df: float = 2.0) -> torch.Tensor:
    """Additive heavy-tailed Student-t noise (``df`` degrees of freedom) of scale ``scale`` x std(y)."""
    check_in_range(df, "df", 0.0, None, closed="neither", owner="inject_targets")
    m = _chosen(y.shape[0], rate, g)
    z = torch.randn(y.shape[0], generator=g, dtype=torch.float64)
    chi2 = _gamma(df / 2.0, y.shape[0], g) * 2.0  # chi2(df) = 2 Gamma(df/2), drawn from g only
    return torch.where(m, y + scale * s * z / torch.sqrt(chi2 / df), y)


def _gamma(alpha: float, n: int, g: torch.Generator | None) -> torch.Tensor:
    """Gamma(alpha, 1) draws from ``g`` only (Marsaglia & Tsang 2000; alpha < 1 boosted by U^(1/alpha))."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    out = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while todo.numel():
        k = todo.numel()
        x = torch.randn(k, generator=g, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        u = torch.rand(k, generator=g, dtype=torch.float64)
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = d * v[ok]
        todo = todo[~ok]
    if boost:
        out = out * torch.rand(n, generator=g, dtype=torch.float64).clamp_min(1e-300) ** (1.0 / alpha)
    return out


@register_target_noise("outliers", tags={"regression"}, example_kwargs={"rate": 0.2, "magnitude": 10.0})
def _outliers(y: torch.Tensor, s: float, g: torch.Generator | None, *, rate: float,
              magnitude: float = 10.0) -> torch.Tensor:
    """A ``rate`` fraction replaced by mean(y) +- ``magnitude`` x std(y) (random sign)."""
    m = _chosen(y.shape[0], rate, g)
    sign = torch.where(torch.rand(y.shape[0], generator=g) < 0.5, -1.0, 1.0).double()
    return torch.where(m, y.mean() + sign * magnitude * s, y)


@register_target_noise("adversarial", tags={"regression"}, example_kwargs={"rate": 0.2, "magnitude": 1.0})
def _adversarial(y: torch.Tensor, s: float, g: torch.Generator | None, *, rate: float,
                 magnitude: float = 1.0) -> torch.Tensor:
    """The ``rate`` fraction farthest from the mean reflected through it: mean - ``magnitude`` (y - mean)."""
    k = int(round(rate * y.shape[0]))
    mu = y.mean()
    idx = torch.argsort((y - mu).abs(), descending=True, stable=True)[:k]
    out = y.clone()
    out[idx] = mu - magnitude * (y[idx] - mu)
    return out


def inject_targets(y: torch.Tensor, *, kind: str, rate: float = 1.0, generator: torch.Generator | None = None,
                   **options: Any) -> NoisyTargets:
    """Corrupt the regression targets ``y`` (N,) with the target-noise ``kind`` on a ``rate`` fraction in [0, 1].

    ``options`` go to the kind (``scale``, ``df``, ``magnitude``; all > 0). See the module docstring.
    """
    owner = "inject_targets"
    if not isinstance(kind, str):
        raise InvalidParameterError(f"The 'kind' parameter of {owner} must be a str. Got {kind!r} instead.")
    spec = TARGET_NOISES.spec(kind)
    if not isinstance(y, torch.Tensor) or not y.dtype.is_floating_point or y.dim() != 1:
        raise InvalidParameterError(f"The 'y' parameter of {owner} must be a 1-D floating-point tensor of targets. "
                                    f"Got {getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}.")
    check_finite(y, "y", owner=owner)
    rate = check_in_range(rate, "rate", 0.0, 1.0, owner=owner)
    for k in ("scale", "magnitude", "df"):
        if k in options:
            options[k] = check_in_range(options[k], k, 0.0, None, closed="neither", owner=owner)
    import inspect

    accepted = set(inspect.signature(spec.factory).parameters) - {"y", "s", "g", "rate"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InvalidParameterError(f"inject_targets(kind={kind!r}) got unknown option(s) {unknown}; it accepts "
                                    f"{sorted(accepted)}.")
    if rate == 0.0 or y.numel() == 0:
        return NoisyTargets(y.clone(), torch.zeros_like(y, dtype=torch.bool), 0.0)
    y64 = y.detach().cpu().double()
    s = float(y64.std()) if y.numel() > 1 else 1.0
    s = s if s > 0 else 1.0
    out = spec.factory(y64, s, generator, rate=rate, **options)
    noisy = out != y64
    return NoisyTargets(out.to(y.dtype).to(y.device), noisy.to(y.device), float(noisy.double().mean()))
