"""Non-conformity scores for classification: ``thr``, ``aps``, ``raps`` (larger = less conforming)."""

from __future__ import annotations

from typing import Any

import torch

from .._registry import Registry
from .._validation import check_bool, check_finite, check_in_range, check_int, check_labels

__all__ = ["SCORES", "APSScore", "RAPSScore", "Score", "THRScore", "check_probs", "get_score", "register_score"]

SCORES: Registry[Score] = Registry("conformal score", checks="robustlab.testing._conformal")
register_score = SCORES.register


def check_probs(probs: Any, name: str = "probs", *, owner: str | None = None) -> None:
    """Check ``probs`` is a finite floating (N, C) tensor of probabilities (rows in [0, 1] summing to 1)."""
    where = f" of {owner}" if owner else ""
    if not isinstance(probs, torch.Tensor) or not probs.dtype.is_floating_point:
        raise TypeError(f"'{name}'{where} must be a floating-point tensor of probabilities. Got {getattr(probs, 'dtype', type(probs))}.")
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"'{name}'{where} must have shape (N, C) with C >= 2. Got shape {tuple(probs.shape)}.")
    check_finite(probs, name, owner=owner)
    if probs.numel():
        lo, hi = float(probs.min()), float(probs.max())
        sums = probs.sum(1)
        if lo < -1e-6 or hi > 1 + 1e-6 or float((sums - 1).abs().max()) > 1e-3:
            raise ValueError(
                f"'{name}'{where} must hold probabilities (rows in [0, 1] summing to 1); got min {lo:.4g}, max "
                f"{hi:.4g}, row sums up to {float(sums.max()):.4g}. Pass logits.softmax(1), not logits."
            )


def _uniform(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) draws from ``generator`` (drawn on the generator's device, then moved: never the global RNG)."""
    if generator is None or generator.device == like.device:
        return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return torch.rand(n, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


class Score:
    """Base score: ``score(probs, labels=None, *, generator=None)``.

    Returns the (N, C) scores of every label, or the (N,) scores of ``labels``; both use the same
    random draws for the same generator state. ``upper(C)`` is the largest possible value.
    """

    randomized: bool = False

    def all_labels(self, probs: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def upper(self, num_classes: int) -> float:
        return 1.0

    def __call__(self, probs: torch.Tensor, labels: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        check_probs(probs, owner=type(self).__name__)
        u = _uniform(probs.shape[0], probs, generator) if self.randomized else None
        s = self.all_labels(probs, u)
        if labels is None:
            return s
        if not isinstance(labels, torch.Tensor) or labels.shape != (probs.shape[0],):
            raise ValueError(f"'labels' must have shape ({probs.shape[0]},). Got {getattr(labels, 'shape', labels)}.")
        check_labels(labels, probs.shape[1], "labels", owner=type(self).__name__)
        return s.gather(1, labels.to(s.device).long()[:, None]).squeeze(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


@register_score("thr", tags={"deterministic"}, reference="Sadinle, Lei & Wasserman 2019 (LAC / THR)", example_kwargs={})
class THRScore(Score):
    """Threshold score ``1 − p_y`` (LAC; Sadinle et al. 2019): the smallest average sets."""

    def all_labels(self, probs: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        return 1.0 - probs


def _aps_parts(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive cumulative mass of the classes ranked above each label, and each label's 1-based rank."""
    sorted_p, order = probs.sort(dim=1, descending=True, stable=True)
    excl = sorted_p.cumsum(1) - sorted_p
    above = torch.empty_like(probs).scatter_(1, order, excl)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(1, probs.shape[1] + 1, device=probs.device).expand_as(order))
    return above, ranks


@register_score("aps", tags={"randomized", "adaptive"}, reference="Romano, Sesia & Candès 2020, arXiv:2006.02544",
                example_kwargs={})
class APSScore(Score):
    """Adaptive prediction sets: mass of the classes ranked above ``y`` plus ``u·p_y`` (``u ~ U[0, 1]``).

    ``randomized=False`` uses the full ``p_y`` (inclusive cumulative mass). Romano et al. 2020.
    """

    def __init__(self, *, randomized: bool = True) -> None:
        self.randomized = check_bool(randomized, "randomized", owner="APSScore")

    def all_labels(self, probs: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        above, _ = _aps_parts(probs)
        return (above + (u[:, None] * probs if u is not None else probs)).clamp(0.0, 1.0)


@register_score("raps", tags={"randomized", "adaptive", "regularized"},
                reference="Angelopoulos, Bates, Malik & Jordan 2021, arXiv:2009.14193",
                example_kwargs={"penalty": 0.1, "k_reg": 1})
class RAPSScore(APSScore):
    """Regularized APS: APS + ``penalty · max(rank_y − k_reg, 0)`` (rank 1 = most likely class).

    Angelopoulos et al. 2021; the penalty discourages large sets. Upper value ``1 + penalty·(C − k_reg)``.
    """

    def __init__(self, *, penalty: float = 0.1, k_reg: int = 1, randomized: bool = True) -> None:
        super().__init__(randomized=randomized)
        self.penalty = float(check_in_range(penalty, "penalty", 0.0, None, owner="RAPSScore"))
        self.k_reg = check_int(k_reg, "k_reg", 0, None, owner="RAPSScore")

    def all_labels(self, probs: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        above, ranks = _aps_parts(probs)
        base = (above + (u[:, None] * probs if u is not None else probs)).clamp(0.0, 1.0)
        return base + self.penalty * (ranks - self.k_reg).clamp(min=0).to(probs.dtype)

    def upper(self, num_classes: int) -> float:
        return 1.0 + self.penalty * max(num_classes - self.k_reg, 0)


def get_score(score: str | Score, **kwargs: Any) -> Score:
    """A registry name becomes a score object; a :class:`Score` is returned as is."""
    if isinstance(score, Score):
        if kwargs:
            raise ValueError("Score keyword arguments are only used with a registry name.")
        return score
    if isinstance(score, str):
        return SCORES.get(score, **kwargs)
    raise TypeError(f"The 'score' parameter must be a registry name ({', '.join(SCORES)}) or a Score. Got {type(score).__name__}.")
