"""IBP soundness check for every model tagged ``ibp`` in ``models.MODELS``.

On random points inside the ε-ball (corners and uniform draws, clipped to [0, 1]) the logits must
lie inside ``interval_bounds``; for models CROWN supports, the CROWN-IBP bounds must too, and be
no looser than IBP. BatchNorm statistics are randomised and the model is put in eval mode first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._registry import Spec
from . import check

__all__: list[str] = []


def _model(spec: Spec[Any]) -> nn.Module:
    torch.manual_seed(0)  # model initialisation only
    model = spec.create(**spec.example_kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


def _samples(x: torch.Tensor, eps: float, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` points per input in the clipped L∞ ball: half corners, half uniform."""
    shape = (k, *x.shape)
    signs = torch.randint(0, 2, shape, generator=g).to(x.dtype) * 2 - 1
    unif = torch.rand(shape, generator=g) * 2 - 1
    d = torch.cat([signs[: k // 2], unif[k // 2:]]) * eps
    return (x.unsqueeze(0) + d).clamp(0.0, 1.0)


@check(requires={"ibp"})
def check_ibp_bounds_contain_samples(spec: Spec[Any]) -> None:
    """Logits of points sampled in the ε-ball lie inside the IBP (and CROWN-IBP) bounds."""
    from ..certify.ibp import interval_bounds

    model = _model(spec)
    shape = tuple(spec.example_kwargs["input_shape"])
    g = torch.Generator().manual_seed(2)
    x = torch.rand((2, *shape), generator=g)
    eps, k = 0.02, 32
    xs = _samples(x, eps, k, g)
    with torch.no_grad():
        z = model(xs.reshape(-1, *shape)).reshape(k, 2, -1)
        lower, upper = interval_bounds(model, x, eps=eps)
        assert lower.shape == upper.shape == z.shape[1:], f"bounds {tuple(lower.shape)} vs logits {tuple(z.shape[1:])}"
        assert bool(torch.isfinite(lower).all() and torch.isfinite(upper).all()), "non-finite bounds"
        tol = 1e-4 * (1 + z.abs())
        assert bool((z >= lower - tol).all()), f"{spec.name}: a logit is below its IBP lower bound"
        assert bool((z <= upper + tol).all()), f"{spec.name}: a logit is above its IBP upper bound"
        # the clean point itself is inside and the bounds are ordered
        z0 = model(x)
        assert bool((lower <= z0 + 1e-4 * (1 + z0.abs())).all() and (z0 <= upper + 1e-4 * (1 + z0.abs())).all())
        try:
            lc, uc = interval_bounds(model, x, eps=eps, method="crown_ibp")
        except TypeError as e:
            assert "CROWN" in str(e), str(e)
            return
        assert bool((z >= lc - tol).all() and (z <= uc + tol).all()), f"{spec.name}: a logit escapes CROWN-IBP"
        assert bool((uc - lc <= upper - lower + 1e-5).all()), "CROWN-IBP looser than IBP"
