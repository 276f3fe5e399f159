"""Splitting a training set across workers: i.i.d. or Dirichlet(α) label skew."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import InvalidParameterError, check_in_range, check_int

__all__ = ["parse_heterogeneity", "split"]


def parse_heterogeneity(value: str | float | None) -> float | None:
    """``"iid"``/``None`` -> None; ``"dirichlet:1"``, ``"dirichlet:0.5"`` or a positive number -> α.

    >>> parse_heterogeneity("iid"), parse_heterogeneity("dirichlet:1")
    (None, 1.0)
    """
    if value is None or value == "iid":
        return None
    if isinstance(value, str) and value.startswith("dirichlet:"):
        try:
            value = float(value.split(":", 1)[1])
        except ValueError:
            value = None  # type: ignore[assignment]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"The 'heterogeneity' parameter must be 'iid' or 'dirichlet:<alpha>' with alpha > 0 "
                                    f"(e.g. 'dirichlet:1'). Got {value!r} instead.")
    return float(value)


def heterogeneity_label(alpha: float | None) -> str:
    """The canonical string of a split: ``iid`` or ``dirichlet:<alpha>``."""
    return "iid" if alpha is None else f"dirichlet:{alpha:g}"


def split(y: torch.Tensor, workers: int, *, alpha: float | None = None, seed: int = 0,
          min_size: int = 2, max_tries: int = 100) -> list[torch.Tensor]:
    """Indices of each worker's share of a training set with labels ``y``.

    ``alpha=None``: an i.i.d. split (a seeded permutation cut into near-equal parts). Otherwise Dirichlet label
    skew (Hsu, Qi & Brown, 2019): for each class, proportions p ~ Dir(α·1_workers) cut that class's shuffled
    samples among the workers; draws are repeated (up to ``max_tries``) until every worker holds at least
    ``min_size`` samples. Small α: each worker sees few classes; α → ∞: i.i.d. Same inputs -> same split.
    """
    workers = check_int(workers, "workers", 1, None, owner="split")
    if alpha is not None:
        check_in_range(alpha, "alpha", 0.0, None, closed="neither", owner="split")
    seed = check_int(seed, "seed", 0, None, owner="split")
    n = int(y.shape[0])
    if n < workers * min_size:
        raise InvalidParameterError(f"Cannot split {n} training samples across {workers} workers with at least "
                                    f"{min_size} each; use fewer workers or more data.")
    rng = np.random.default_rng(seed)
    if alpha is None:
        perm = torch.from_numpy(rng.permutation(n))
        return [p.sort().values for p in torch.tensor_split(perm, workers)]
    labels = y.cpu().numpy()
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(workers)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(workers, float(alpha)))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for w, chunk in enumerate(np.split(idx, cuts)):
                parts[w].append(chunk)
        out = [np.sort(np.concatenate(ch)) for ch in parts]
        if min(len(o) for o in out) >= min_size:
            return [torch.from_numpy(o).long() for o in out]
    raise InvalidParameterError(f"Dirichlet(alpha={alpha:g}) left a worker with fewer than {min_size} samples in "
                                f"{max_tries} draws; use a larger alpha or fewer workers.")
