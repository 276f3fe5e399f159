"""Class-conditional label noise: symmetric, uniform, pairflip, asymmetric, transition.

Each kind is a row-stochastic C x C matrix ``T`` with ``T[i, j] = P(noisy = j | clean = i)``;
each label is redrawn from its row (one vectorised categorical draw per sample).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

from .._validation import InvalidParameterError, check_option
from ._base import NoiseModel, register_noise

__all__ = [
    "ASYMMETRIC_MAPS", "AsymmetricNoise", "PairflipNoise", "SymmetricNoise", "TransitionNoise", "UniformNoise",
]

#: CIFAR-100 fine label (0..99, torchvision/Keras order) -> coarse label (0..19, the 20 superclasses of 5)
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)


def _circular_within(groups: list[list[int]]) -> dict[int, int]:
    """Each group's classes (ascending) flip to the next one, the last back to the first."""
    return {g[i]: g[(i + 1) % len(g)] for g in (sorted(g) for g in groups) for i in range(len(g))}


# Class maps of the literature (0-based class indices). Classes absent from a map are never flipped.
ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {
    # Patrini et al., CVPR 2017: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
    "mnist": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    # Patrini et al., CVPR 2017: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    # LDR paper (Zhu et al.), UCI letter, symmetric swaps; 0, 9, 18, 19, 24, 25 untouched.
    "letter": {a: b for p, q in [(1, 3), (2, 6), (4, 5), (7, 13), (8, 11), (10, 23), (12, 22), (14, 16),
                                  (15, 17), (20, 21)] for a, b in ((p, q), (q, p))},
    # Patrini et al., CVPR 2017 (and GCE/SCE/APL): within each of the 20 superclasses, a circular flip to the
    # next of its 5 classes; superclasses from CIFAR-100's fine -> coarse table.
    "cifar100": _circular_within([[f for f in range(100) if CIFAR100_COARSE[f] == c] for c in range(20)]),
    # The same rule as the reference code (Patrini's, copied by D2L/SCE/APL) implements it: "superclasses" of 5
    # consecutive fine ids (5k..5k+4, i -> i + 1 circularly), which are not CIFAR-100's superclasses; use it to
    # reproduce those papers' published numbers.
    "cifar100_consecutive": _circular_within([list(range(5 * c, 5 * c + 5)) for c in range(20)]),
}


@register_noise("symmetric", tags={"class_conditional"}, reference="van Rooyen et al. 2015; Han et al. 2018 (NeurIPS)",
                example_kwargs={"rate": 0.4, "num_classes": 5})
class SymmetricNoise(NoiseModel):
    """Flip to a uniformly chosen *other* class with probability ``rate``.

    .. math:: T = (1 - r) I + \\frac{r}{C - 1} (\\mathbf{1}\\mathbf{1}^T - I)
    """

    kind = "symmetric"

    def matrix(self) -> torch.Tensor:
        c, r = self.num_classes, self.rate
        t = torch.full((c, c), r / (c - 1), dtype=torch.float64)
        t.fill_diagonal_(1.0 - r)
        return t


@register_noise("uniform", tags={"class_conditional"}, reference="LDR-KL (Zhu et al., 2023) 'uniform' noise",
                example_kwargs={"rate": 0.6, "num_classes": 5})
class UniformNoise(NoiseModel):
    """With probability ``rate`` replace the label by a uniform class over *all* C (maybe the true one).

    .. math:: T = (1 - r) I + \\frac{r}{C} \\mathbf{1}\\mathbf{1}^T

    The expected fraction of changed labels is ``r (C - 1) / C``.
    """

    kind = "uniform"

    def matrix(self) -> torch.Tensor:
        c, r = self.num_classes, self.rate
        t = torch.full((c, c), r / c, dtype=torch.float64)
        t += torch.eye(c, dtype=torch.float64) * (1.0 - r)
        return t


def _map_matrix(mapping: Mapping[int, int], c: int, r: float) -> torch.Tensor:
    t = torch.eye(c, dtype=torch.float64)
    for a, b in mapping.items():
        t[a, a] = 1.0 - r
        t[a, b] += r
    return t


@register_noise("pairflip", tags={"class_conditional"}, reference="Han et al., Co-teaching, NeurIPS 2018",
                example_kwargs={"rate": 0.3, "num_classes": 5})
class PairflipNoise(NoiseModel):
    """With probability ``rate`` flip class ``i`` to class ``(i + 1) mod C``."""

    kind = "pairflip"

    def matrix(self) -> torch.Tensor:
        c = self.num_classes
        return _map_matrix({i: (i + 1) % c for i in range(c)}, c, self.rate)


@register_noise("asymmetric", tags={"class_conditional"}, reference="Patrini et al., CVPR 2017 (arXiv:1609.03683)",
                example_kwargs={"rate": 0.3, "num_classes": 10, "dataset": "mnist"})
class AsymmetricNoise(NoiseModel):
    """With probability ``rate`` map a class to its literature partner; unmapped classes stay clean.

    ``dataset``: ``"mnist"`` (2→7, 3→8, 5↔6, 7→1), ``"cifar10"`` (truck→automobile, bird→airplane,
    deer→horse, cat↔dog; i.e. 9→1, 2→0, 4→7, 3↔5), ``"letter"`` (the LDR paper's swaps, 0-based:
    1↔3, 2↔6, 4↔5, 7↔13, 8↔11, 10↔23, 12↔22, 14↔16, 15↔17, 20↔21), ``"cifar100"`` (within each of the
    20 superclasses, each class flips to the next of its 5 classes in id order, circularly; ``CIFAR100_COARSE``
    is the fine → coarse table), ``"cifar100_consecutive"`` (the reference code's version of that rule,
    with "superclasses" of 5 consecutive ids 5k..5k+4: reproduces GCE/SCE/APL's published numbers), or
    ``None`` for the generic next-class map ``i → (i + 1) mod C`` (then equal to ``pairflip``).
    ``mapping={i: j}`` gives any other map.
    """

    kind = "asymmetric"

    def __init__(self, *, rate: float, num_classes: int, dataset: str | None = None,
                 mapping: Mapping[int, int] | None = None) -> None:
        super().__init__(rate=rate, num_classes=num_classes)
        check_option(dataset, "dataset", [None, *sorted(ASYMMETRIC_MAPS)], owner=self.owner)
        if dataset is not None and mapping is not None:
            raise InvalidParameterError("Pass either 'dataset' or 'mapping' to the asymmetric noise, not both.")
        if mapping is None:
            mapping = ASYMMETRIC_MAPS[dataset] if dataset else {i: (i + 1) % num_classes for i in range(num_classes)}
        if not isinstance(mapping, Mapping) or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for kv in mapping.items() for v in kv):
            raise InvalidParameterError(
                f"The 'mapping' parameter of inject must be a dict {{clean class: noisy class}} of ints. "
                f"Got {mapping!r} instead."
            )
        m = {int(a): int(b) for a, b in mapping.items()}
        bad = [(a, b) for a, b in m.items() if not (0 <= a < num_classes and 0 <= b < num_classes) or a == b]
        if bad:
            raise InvalidParameterError(
                f"The asymmetric map{f' for {dataset!r}' if dataset else ''} needs distinct classes in "
                f"[0, {num_classes}); bad pairs {bad} for num_classes={num_classes}."
            )
        self.dataset = dataset
        self.mapping = m

    def matrix(self) -> torch.Tensor:
        return _map_matrix(self.mapping, self.num_classes, self.rate)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dataset": self.dataset, "mapping": self.mapping}


@register_noise("transition", tags={"class_conditional", "needs_transition"},
                reference="Patrini et al., CVPR 2017 (noise transition matrix T)",
                example_kwargs={"num_classes": 3,
                                "transition": [[0.8, 0.1, 0.1], [0.0, 0.7, 0.3], [0.25, 0.25, 0.5]]})
class TransitionNoise(NoiseModel):
    """Any row-stochastic C x C ``transition`` matrix (``T[i, j] = P(noisy = j | clean = i)``).

    ``rate`` is implied by the matrix and must be left as ``None``; ``self.rate`` is the mean
    off-diagonal mass ``1 - mean(diag(T))``.
    """

    kind = "transition"

    def __init__(self, *, num_classes: int, transition: Any, rate: float | None = None) -> None:
        if rate is not None:
            raise InvalidParameterError(
                f"The 'rate' parameter of inject must be None for kind='transition' (the matrix sets the "
                f"flip rates). Got {rate!r} instead."
            )
        super().__init__(rate=0.0, num_classes=num_classes)
        t = _check_transition(transition, num_classes)
        self.transition = t
        self.rate = float(1.0 - t.diagonal().mean())
        self._identity = bool(torch.equal(t, torch.eye(num_classes, dtype=torch.float64)))

    def matrix(self) -> torch.Tensor:
        return self.transition.clone()

    def is_identity(self) -> bool:
        return self._identity

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "transition": self.transition.tolist()}


def _check_transition(transition: Any, num_classes: int) -> torch.Tensor:
    if transition is None:
        raise InvalidParameterError("kind='transition' needs the 'transition' parameter: a row-stochastic C x C matrix.")
    try:
        t = torch.as_tensor(transition, dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidParameterError(
            f"The 'transition' parameter of inject must be a C x C matrix of floats. Got {transition!r} instead."
        ) from e
    if tuple(t.shape) != (num_classes, num_classes):
        raise InvalidParameterError(
            f"The 'transition' parameter of inject must have shape ({num_classes}, {num_classes}) for "
            f"num_classes={num_classes}. Got shape {tuple(t.shape)} instead."
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise InvalidParameterError("The 'transition' parameter of inject must hold finite, non-negative probabilities.")
    sums = t.sum(1)
    if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-6)):
        raise InvalidParameterError(
            f"The 'transition' parameter of inject must be row-stochastic (each row sums to 1). "
            f"Got row sums {[round(float(s), 6) for s in sums]} instead."
        )
    return t / sums[:, None]
