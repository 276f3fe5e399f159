"""Noise-model base class, the ``NoisyLabels`` result and the ``NOISES`` registry."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._registry import Registry
from .._validation import InvalidParameterError, check_finite, check_in_range, check_int, check_labels

__all__ = ["MAX_CLASSES", "NOISES", "NoiseModel", "NoisyLabels", "register_noise", "sample_rows"]

#: the largest ``num_classes`` a noise process accepts: its transition matrix is dense C x C float64
#: (800 MB at the limit), so a typo such as num_classes=10**9 is an error, not an out-of-memory kill
MAX_CLASSES = 10_000
#: labels are sampled in blocks of this many rows, so memory is O(block x C), not O(N x C)
_BLOCK_ROWS = 8192

NOISES: Registry[NoiseModel] = Registry("noise kind", checks="robustlab.testing._noise")
register_noise = NOISES.register


class NoisyLabels(NamedTuple):
    """Result of :func:`robustlab.noise.inject`.

    Attributes:
        labels: (N,) int64 noisy labels.
        is_noisy: (N,) bool, ``labels != y``.
        transition: (C, C) float64 matrix, ``T[i, j] = P(noisy = j | clean = i)``. For class-conditional
            kinds this is the declared matrix; for ``instance`` it is the per-class mean of the
            per-sample flip distributions (the expected transition given ``x``; identity rows for
            absent classes).
        realized_rate: fraction of labels that changed.
    """

    labels: torch.Tensor
    is_noisy: torch.Tensor
    transition: torch.Tensor
    realized_rate: float


def sample_rows(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One categorical draw per row of ``probs`` (N, C) by inverse CDF (vectorised, seeded)."""
    cdf = probs.cumsum(dim=1)
    cdf[:, -1] = 1.0 + 1e-9  # guard against rounding: the last class closes the interval
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=probs.dtype, device=probs.device)
    out = torch.searchsorted(cdf, u, right=True).squeeze(1)
    return out.clamp_(max=probs.shape[1] - 1)


def sample_labels(t: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``sample_rows(t[y], generator)`` without materialising the (N, C) rows: same draws, same labels."""
    cdf = t.cumsum(dim=1)
    cdf[:, -1] = 1.0 + 1e-9
    u = torch.rand(y.shape[0], 1, generator=generator, dtype=t.dtype, device=t.device)
    out = torch.empty(y.shape[0], dtype=torch.int64, device=t.device)
    for start in range(0, y.shape[0], _BLOCK_ROWS):
        stop = start + _BLOCK_ROWS
        out[start:stop] = torch.searchsorted(cdf[y[start:stop]], u[start:stop], right=True).squeeze(1)
    return out.clamp_(max=t.shape[1] - 1)


class NoiseModel:
    """A label-noise process for ``num_classes`` classes at flip ``rate``.

    Class-conditional subclasses implement :meth:`matrix` (the C x C row-stochastic transition);
    instance-dependent ones override :meth:`row_probs`. ``__call__(y, x=None, generator=None)``
    samples the noisy labels, one categorical draw per sample from its row (vectorised, in blocks of rows).
    ``num_classes`` is at most ``MAX_CLASSES`` (the matrix is dense).
    """

    needs_x: bool = False
    kind: str = "?"
    owner = "inject"

    def __init__(self, *, rate: float, num_classes: int) -> None:
        check_int(num_classes, "num_classes", 2, MAX_CLASSES, owner=self.owner)
        check_in_range(rate, "rate", 0.0, 1.0, closed="left", owner=self.owner)
        self.rate = float(rate)
        self.num_classes = int(num_classes)

    def is_identity(self) -> bool:
        """True when the process never changes a label (then no random numbers are drawn)."""
        return self.rate == 0.0

    def matrix(self) -> torch.Tensor:
        """The declared (C, C) float64 transition matrix."""
        raise NotImplementedError

    def row_probs(self, y: torch.Tensor, x: torch.Tensor | None,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample noisy-label distributions (N, C) and the (C, C) transition to report."""
        t = self.matrix()
        return t[y], t

    def __call__(self, y: torch.Tensor, *, x: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> NoisyLabels:
        self.check_inputs(y, x)
        device = y.device
        y = y.cpu()  # sampling runs on CPU so that a CPU generator reproduces the labels anywhere
        x = None if x is None else x.cpu()
        if self.is_identity():  # rate 0: exactly the identity, no random draws
            labels = y.clone()
            t = torch.eye(self.num_classes, dtype=torch.float64)
        elif type(self).row_probs is NoiseModel.row_probs:  # class-conditional: rows of T, drawn blockwise
            t = self.matrix()
            labels = sample_labels(t, y, generator)
        else:
            probs, t = self.row_probs(y, x, generator)
            labels = sample_rows(probs, generator)
        is_noisy = labels != y
        realized = float(is_noisy.double().mean()) if y.numel() else 0.0
        return NoisyLabels(labels.to(torch.int64).to(device), is_noisy.to(device), t, realized)

    def check_inputs(self, y: torch.Tensor, x: torch.Tensor | None) -> None:
        """Validate ``y`` (and ``x`` for feature-driven kinds)."""
        check_labels(y, self.num_classes, "y", owner=self.owner)
        if x is None:
            if self.needs_x:
                raise InvalidParameterError(
                    f"kind={self.kind!r} is instance-dependent and needs the features: pass x=(N, ...) to inject."
                )
            return
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise InvalidParameterError(
                f"The 'x' parameter of inject must be a floating-point tensor. Got {getattr(x, 'dtype', type(x))}."
            )
        if x.dim() < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but y has shape {tuple(y.shape)}; x must have one row per label."
            )
        check_finite(x, "x", owner=self.owner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self.rate!r}, num_classes={self.num_classes!r})"

    def describe(self) -> dict[str, Any]:
        """Parameters as a JSON-able dict (for results records)."""
        return {"rate": self.rate, "num_classes": self.num_classes}
