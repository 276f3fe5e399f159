"""Conformance checks for regression data sets (``REGRESSION_DATASETS``) and target-noise kinds (``TARGET_NOISES``).

Both registries name this module; a spec is a target-noise kind when ``TARGET_NOISES`` holds that very spec.
"""

from __future__ import annotations

from typing import Any

import torch

from .._registry import Spec
from . import check

__all__ = ["check_regression_item"]


def _is_noise(spec: Spec[Any]) -> bool:
    from ..noise._targets import TARGET_NOISES

    return spec.name in TARGET_NOISES and TARGET_NOISES.spec(spec.name) is spec


@check()
def check_regression_item(spec: Spec[Any]) -> None:
    """Data sets: valid container, seeded (two builds equal), disjoint non-empty splits. Noise kinds: seeded,
    identity at rate 0, finite, and at rate 0.2 about 20 % of targets changed (all kinds but gaussian/student_t
    at rate 1 change every target)."""
    from ..data._regression import RegressionData
    from ..noise._targets import inject_targets

    if _is_noise(spec):
        y = torch.linspace(-3, 5, 200)
        kw = {k: v for k, v in spec.example_kwargs.items() if k != "rate"}
        a = inject_targets(y, kind=spec.name, rate=0.2, generator=torch.Generator().manual_seed(1), **kw)
        b = inject_targets(y, kind=spec.name, rate=0.2, generator=torch.Generator().manual_seed(1), **kw)
        assert torch.equal(a.targets, b.targets), "same generator state gave different targets"
        assert bool(torch.isfinite(a.targets).all()) and a.targets.dtype == y.dtype
        assert abs(a.realized_rate - 0.2) < 0.011, f"rate 0.2 changed {a.realized_rate:.3f} of the targets"
        assert torch.equal(a.is_noisy, a.targets != y)
        z = inject_targets(y, kind=spec.name, rate=0.0, **kw)
        assert torch.equal(z.targets, y) and z.realized_rate == 0.0
        return
    d = spec.create(**spec.example_kwargs)
    assert isinstance(d, RegressionData), f"{spec.name} built {type(d).__name__}, not RegressionData"
    d2 = spec.create(**spec.example_kwargs)
    assert torch.equal(d.x_train, d2.x_train) and torch.equal(d.y_train, d2.y_train), "not seeded"
    assert d.x_train.shape[0] > 0 and d.x_test.shape[0] > 0
    assert float(d.y_train.std()) > 0, "constant targets"
