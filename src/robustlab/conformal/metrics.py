"""Metrics of prediction sets: coverage, average size, size-stratified and class-conditional coverage."""

from __future__ import annotations

import torch

from .._validation import check_labels

__all__ = ["average_set_size", "class_conditional_coverage", "coverage", "size_stratified_coverage"]


def _check(sets: torch.Tensor, y: torch.Tensor | None = None) -> None:
    if not isinstance(sets, torch.Tensor) or sets.dtype != torch.bool or sets.dim() != 2:
        raise TypeError(f"'sets' must be a boolean (N, C) mask. Got {getattr(sets, 'dtype', type(sets))} {getattr(sets, 'shape', '')}.")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (sets.shape[0],)):
        raise ValueError(f"'y' must have shape ({sets.shape[0]},). Got {getattr(y, 'shape', y)}.")
    if y is not None:
        check_labels(y, sets.shape[1])


def coverage(sets: torch.Tensor, y: torch.Tensor) -> float:
    """Share of points whose true label is in its set."""
    _check(sets, y)
    return float(sets.gather(1, y.long().to(sets.device)[:, None]).float().mean())


def average_set_size(sets: torch.Tensor) -> float:
    """Mean number of labels per set."""
    _check(sets)
    return float(sets.sum(1).float().mean())


def size_stratified_coverage(sets: torch.Tensor, y: torch.Tensor) -> dict[int, tuple[float, int]]:
    """``{set size: (coverage among sets of that size, count)}`` (Angelopoulos et al. 2021, SSC)."""
    _check(sets, y)
    sizes = sets.sum(1)
    hit = sets.gather(1, y.long().to(sets.device)[:, None]).squeeze(1)
    out: dict[int, tuple[float, int]] = {}
    for s in sorted(set(sizes.tolist())):
        m = sizes == s
        out[int(s)] = (float(hit[m].float().mean()), int(m.sum()))
    return out


def class_conditional_coverage(sets: torch.Tensor, y: torch.Tensor) -> dict[int, float]:
    """``{class: coverage among points of that class}``."""
    _check(sets, y)
    hit = sets.gather(1, y.long().to(sets.device)[:, None]).squeeze(1)
    return {int(c): float(hit[y == c].float().mean()) for c in torch.unique(y).tolist()}
