"""Long-tailed training splits: ``longtail(d, rho=..., seed=...)`` and ``load(name, longtail=rho)``.

The exponential profile of Cao et al. (LDAM, NeurIPS 2019) and the noisy-long-tail papers (RCAL):
class ``c`` keeps :math:`n_c = \\lfloor n_{max}\\,\\rho^{c/(C-1)} \\rfloor` (at least 1) training examples,
so class 0 is the head and class ``C-1`` the tail with :math:`n_{max}\\rho`. :math:`n_{max}` is the size
of the smallest class of the given train split, so every class can reach its target exactly. Only the
train split is subsampled (seeded, without replacement, the split's order kept); the test split stays
balanced, as in the literature. Label noise is applied *after* subsampling (the pipeline injects it on
the loaded, already long-tailed split; in Python call ``noise.inject`` on the result), so the noise rate is
the rate on the long-tailed split and the tail's clean examples are the ones that survive subsampling.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .._validation import InvalidParameterError
from ._base import ClassificationData

__all__ = ["LONGTAIL_OPTIONS", "longtail", "longtail_counts", "tail_classes"]

#: the data options every in-memory data set accepts through ``load`` (their constraints are declared in
#: ``robustlab._runconfig.data_option_constraints``)
LONGTAIL_OPTIONS = ("longtail", "longtail_seed")


def _constraints() -> dict[str, Any]:
    from .._runconfig import data_option_constraints

    return data_option_constraints()


def longtail_counts(n_max: int, num_classes: int, rho: float) -> list[int]:
    """Per-class sizes :math:`\\max(1, \\lfloor n_{max}\\rho^{c/(C-1)}\\rfloor)` for ``c = 0..C-1``.

    Example::

        >>> longtail_counts(100, 3, 0.1)
        [100, 31, 10]
    """
    if num_classes == 1:
        return [int(n_max)]
    # the small epsilon keeps exact products (100 * 0.1 = 10.000000000000002 or 9.99...) on the intended integer
    return [max(1, int(n_max * rho ** (c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]


def tail_classes(num_classes: int) -> list[int]:
    """The tail half of a long-tailed split: classes ``ceil(C/2) .. C-1`` (the smaller half, class 0 = head)."""
    return list(range((num_classes + 1) // 2, num_classes))


def longtail(d: ClassificationData, *, rho: float, seed: int = 0) -> ClassificationData:
    """A copy of ``d`` whose train split follows the exponential long-tail profile with imbalance ratio ``rho``.

    ``rho`` in (0, 1]: ``n_{C-1} / n_0``; ``seed`` picks which examples of each class are kept. The test
    split is unchanged. ``meta["longtail"]`` records ``rho``, ``seed`` and the per-class ``counts``.

    Example::

        >>> from robustlab import data
        >>> lt = data.longtail(data.load("digits"), rho=0.1, seed=0)
        >>> lt.meta["longtail"]["counts"][0] / lt.meta["longtail"]["counts"][-1]
        10.0
    """
    from .._constraints import validate_params

    if not isinstance(d, ClassificationData):
        raise InvalidParameterError(f"The 'd' parameter of longtail must be a ClassificationData. Got {type(d).__name__}.")
    opts = validate_params(_constraints(), {"longtail": rho, "longtail_seed": seed}, "longtail")
    rho, seed = opts["longtail"], opts["longtail_seed"]
    y = d.y_train
    present = torch.bincount(y, minlength=d.num_classes)
    if int(present.min()) == 0:
        empty = [c for c in range(d.num_classes) if int(present[c]) == 0]
        raise InvalidParameterError(
            f"Data set '{d.name}': longtail needs every class in the train split; classes {empty} have no example.")
    counts = longtail_counts(int(present.min()), d.num_classes, rho)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(d.num_classes):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:counts[c]]])
    kept = torch.cat(keep).sort().values  # the split's (already shuffled) order
    meta = {**d.meta, "longtail": {"rho": rho, "seed": seed, "counts": counts}}
    return replace(d, x_train=d.x_train[kept], y_train=y[kept], meta=meta)


def pop_load_options(options: dict[str, Any]) -> dict[str, Any]:
    """Remove the generic data options (``longtail``, ``longtail_seed``) from ``load``'s keywords; validate them."""
    from .._constraints import validate_params

    generic = {k: options.pop(k) for k in LONGTAIL_OPTIONS if k in options}
    if "longtail_seed" in generic and "longtail" not in generic:
        raise InvalidParameterError("The 'longtail_seed' data option needs 'longtail' (the imbalance ratio rho).")
    return validate_params(_constraints(), generic, "load")


def apply_load_options(d: ClassificationData, options: dict[str, Any]) -> ClassificationData:
    """Apply the generic data options returned by :func:`pop_load_options`."""
    if "longtail" not in options:
        return d
    return longtail(d, rho=options["longtail"], seed=options.get("longtail_seed", 0))
