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


@check(requires={"ibp"})
def check_ibp_rejects_nan_input_and_bad_labels(spec: Spec[Any]) -> None:
    """NaN/Inf inputs and labels out of range, of float dtype or of the wrong shape raise a clear error."""
    from ..certify.ibp import interval_bounds, margin_bounds, verified

    model = _model(spec)
    shape = tuple(spec.example_kwargs["input_shape"])
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        c = model(x).shape[1]
    bad_x = x.clone()
    bad_x.view(-1)[0] = float("nan")
    y = torch.zeros(2, dtype=torch.long)
    for fn in (lambda: interval_bounds(model, bad_x, eps=0.01), lambda: margin_bounds(model, bad_x, y, eps=0.01),
               lambda: verified(model, bad_x, y, eps=0.01)):
        _raises(fn, ValueError, "NaN", spec.name)
    cases: tuple[tuple[torch.Tensor, type[Exception]], ...] = (
        (torch.tensor([0, c]), ValueError), (torch.tensor([-1, 0]), ValueError),
        (torch.zeros(2), TypeError), (torch.zeros(3, dtype=torch.long), ValueError))
    for bad_y, kind in cases:
        _raises(lambda b=bad_y: margin_bounds(model, x, b, eps=0.01), kind, "'y'", spec.name)
        _raises(lambda b=bad_y: verified(model, x, b, eps=0.01), kind, "'y'", spec.name)
    y32 = torch.tensor([0, c - 1], dtype=torch.int32)  # any integer dtype is accepted
    with torch.no_grad():
        torch.testing.assert_close(margin_bounds(model, x, y32, eps=0.01), margin_bounds(model, x, y32.long(), eps=0.01))


@check(requires={"ibp"})
def check_ibp_uses_eval_batchnorm_statistics_in_train_mode(spec: Spec[Any]) -> None:
    """With the model in train mode, the bounds at ε = 0 equal the eval-mode logits; no statistics change."""
    from ..certify.ibp import interval_bounds, margin_bounds

    model = _model(spec)
    shape = tuple(spec.example_kwargs["input_shape"])
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    for m in model.modules():  # BatchNorm is the subject here; dropout in train mode is refused by design
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        lo, up = interval_bounds(model, x, eps=0.0)
        mb = margin_bounds(model, x, y, eps=0.0)
    for got, want in ((lo, z), (up, z), (mb, z.gather(1, y[:, None]) - z)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"{spec.name}: train-mode bounds at eps=0 differ from eval logits: {m}")
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers()), f"{spec.name}: bounds changed a buffer"
    assert model.training, "the bounds changed the model's mode"


def _raises(fn: Any, kind: type[Exception], text: str, name: str) -> None:
    try:
        fn()
    except kind as e:
        assert text in str(e), f"{name}: message {str(e)!r} does not mention {text!r}"
    else:
        raise AssertionError(f"{name}: no {kind.__name__} raised")
