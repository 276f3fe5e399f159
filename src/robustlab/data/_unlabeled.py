"""Unlabeled data from a shifted source: ``unlabeled_shifted(d, kind=..., severity=..., n=...)`` and the
two-Gaussian setting of Saberi et al., "Out-Of-Domain Unlabeled Data Improves Generalization" (ICLR 2024):
``gaussian_mixture_shift(...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .._validation import InvalidParameterError, check_in_range, check_int
from ._base import ClassificationData

__all__ = ["GaussianMixtureShift", "Unlabeled", "gaussian_mixture_shift", "shift_inputs", "unlabeled_shifted"]

#: shift kinds that work on any input shape (the corruptions of ``robustlab.shift`` need images)
FLAT_KINDS = ("none", "feature_noise")


@dataclass
class Unlabeled:
    """Unlabeled inputs ``x`` (in [0, 1]) drawn from a shifted source.

    ``y_hidden`` are the true labels, kept for diagnostics (pseudo-label accuracy) only: training code
    never reads them. ``kind``/``severity`` name the shift.
    """

    x: torch.Tensor
    y_hidden: torch.Tensor
    kind: str
    severity: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _shift(x: torch.Tensor, kind: str, severity: float, g: torch.Generator) -> torch.Tensor:
    if kind == "none" or severity == 0:
        return x.clone()
    if kind == "feature_noise":  # severity s: Gaussian noise of std 0.1 s, clipped to [0, 1]
        return (x + 0.1 * severity * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp_(0.0, 1.0)
    from .. import shift

    if kind not in shift.CORRUPTIONS:
        shift.CORRUPTIONS.spec(kind)  # "Did you mean" + the list
    if x.dim() != 4:
        raise InvalidParameterError(
            f"The shift kind {kind!r} of unlabeled_shifted is an image corruption and needs inputs of shape "
            f"(N, C, H, W). Got sample shape {tuple(x.shape[1:])}; use kind in {FLAT_KINDS} for flat inputs.")
    sev = check_int(severity, "severity", 0, 5, owner="unlabeled_shifted")
    return shift.corrupt(x, kind, severity=sev, generator=g)


def shift_inputs(x: torch.Tensor, kind: str, severity: float, generator: torch.Generator) -> torch.Tensor:
    """The inputs ``x`` under the shift ``kind`` at ``severity`` (the shifts of :func:`unlabeled_shifted`), as a
    new tensor; ``generator`` draws its random numbers."""
    return _shift(x, kind, severity, generator)


def unlabeled_shifted(d: ClassificationData, *, kind: str = "rotate", severity: float = 3, n: int | None = None,
                      seed: int = 0) -> tuple[ClassificationData, Unlabeled]:
    """Split ``n`` training examples off ``d``, shift their inputs and drop their labels.

    Returns ``(labelled, unlabeled)``: ``labelled`` is ``d`` without those examples (disjoint from the
    unlabeled pool); ``unlabeled.x`` are their inputs after the shift ``kind`` at ``severity``: any
    corruption of :mod:`robustlab.shift` (``rotate``, ``translate``, ``gaussian_noise``, ..., severity
    0..5) for images, or ``feature_noise`` (Gaussian noise of std ``0.1 * severity``) / ``none`` (in-domain)
    for any shape. ``n`` defaults to half of the train split; ``seed`` picks the examples and the shift's
    random numbers.

    Example::

        >>> from robustlab import data
        >>> lab, unl = data.unlabeled_shifted(data.load("digits"), kind="rotate", severity=2, n=500)
        >>> unl.x.shape, lab.x_train.shape[0] + 500 == data.load("digits").x_train.shape[0]
        (torch.Size([500, 1, 8, 8]), True)
    """
    owner = "unlabeled_shifted"
    if not isinstance(d, ClassificationData):
        raise InvalidParameterError(f"The 'd' parameter of {owner} must be a ClassificationData. Got {type(d).__name__}.")
    if not isinstance(kind, str):
        raise InvalidParameterError(f"The 'kind' parameter of {owner} must be a str. Got {kind!r} instead.")
    severity = check_in_range(severity, "severity", 0.0, None, owner=owner)
    total = int(d.x_train.shape[0])
    n = total // 2 if n is None else check_int(n, "n", 1, total - 1, owner=owner)
    seed = check_int(seed, "seed", 0, None, owner=owner)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)
    lab_idx, unl_idx = perm[: total - n].sort().values, perm[total - n:].sort().values
    x = _shift(d.x_train[unl_idx], kind, severity, g)
    meta = {"source": d.name, "kind": kind, "severity": severity, "seed": seed}
    labelled = replace(d, x_train=d.x_train[lab_idx], y_train=d.y_train[lab_idx],
                       meta={**d.meta, "unlabeled_split": meta})
    return labelled, Unlabeled(x=x, y_hidden=d.y_train[unl_idx], kind=kind, severity=float(severity), meta=meta)


@dataclass
class GaussianMixtureShift:
    r"""The two-Gaussian setting: labels :math:`y \in \{0, 1\}`, :math:`x = s_y\mu + \sigma\varepsilon`
    (:math:`s_0 = -1, s_1 = +1`) in-domain; the unlabeled pool uses the shifted mean
    :math:`\mu' = \mu + \delta v` (:math:`v \perp \mu`, unit). Inputs are not scaled to [0, 1].

    ``bayes_error`` = :math:`\Phi(-\|\mu\|/\sigma)`, the error of the best (linear) in-domain classifier.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_unlabeled: torch.Tensor
    y_unlabeled_hidden: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mu: torch.Tensor
    mu_shifted: torch.Tensor
    sigma: float
    shift: float

    @property
    def bayes_error(self) -> float:
        r = float(self.mu.norm()) / self.sigma
        return 0.5 * math.erfc(r / math.sqrt(2.0))

    def error(self, w: torch.Tensor, b: float | torch.Tensor = 0.0) -> float:
        """Test error of the linear classifier :math:`1[w^\\top x + b > 0]` (class 1)."""
        pred = (self.x_test @ w.to(self.x_test) + b > 0).long()
        return float((pred != self.y_test).float().mean())


def gaussian_mixture_shift(*, dim: int = 50, n_labelled: int = 20, n_unlabeled: int = 1000, n_test: int = 5000,
                           snr: float = 1.5, shift: float = 0.0, sigma: float = 1.0,
                           seed: int = 0) -> GaussianMixtureShift:
    r"""Sample the Gaussian-mixture setting of Saberi et al. (ICLR 2024) with a controllable shift.

    :math:`\mu` is a random direction of norm ``snr * sigma``; the unlabeled pool's mean is
    :math:`\mu + \delta v` with :math:`\delta` = ``shift * ||mu||`` (``shift`` is relative: 0 = in-domain,
    1 = moved sideways by the signal's own length), :math:`v \perp \mu` random. Balanced classes.
    With ``n_labelled`` << ``dim`` the labelled-only estimate is poor (error ~ :math:`(d/m)^{1/2}` above
    Bayes); unlabeled data reduce it as long as the shift keeps the cluster structure.
    """
    owner = "gaussian_mixture_shift"
    dim = check_int(dim, "dim", 2, None, owner=owner)
    n_labelled = check_int(n_labelled, "n_labelled", 2, None, owner=owner)
    n_unlabeled = check_int(n_unlabeled, "n_unlabeled", 0, None, owner=owner)
    n_test = check_int(n_test, "n_test", 1, None, owner=owner)
    snr = float(check_in_range(snr, "snr", 0.0, None, closed="neither", owner=owner))
    shift = float(check_in_range(shift, "shift", 0.0, None, owner=owner))
    sigma = float(check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner=owner))
    seed = check_int(seed, "seed", 0, None, owner=owner)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(dim, generator=g, dtype=torch.float64)
    u /= u.norm()
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    v -= (v @ u) * u
    v /= v.norm()
    mu = snr * sigma * u
    mu_s = mu + shift * float(mu.norm()) * v

    def draw(n: int, mean: torch.Tensor, balanced: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 2) if balanced else torch.randint(0, 2, (n,), generator=g)
        y = y[torch.randperm(n, generator=g)]
        x = (2 * y - 1).to(torch.float64)[:, None] * mean + sigma * torch.randn(n, dim, generator=g, dtype=torch.float64)
        return x.float(), y.long()

    xl, yl = draw(n_labelled, mu, True)
    xt, yt = draw(n_test, mu, False)
    g = torch.Generator().manual_seed(seed + 7919)  # the pool's own stream: labelled/test samples do not move
    xu, yu = draw(n_unlabeled, mu_s, False)          # with n_unlabeled or shift (paired comparisons)
    return GaussianMixtureShift(xl, yl, xu, yu, xt, yt, mu.float(), mu_s.float(), sigma, shift)
