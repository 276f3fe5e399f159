"""Certificate soundness checks for every model tagged ``ibp`` in ``models.MODELS``, and for graph models.

On random points inside the ε-ball (L∞ corners and uniform draws clipped to [0, 1]; L2 and L1 points on
and inside the sphere) the logits must lie inside ``interval_bounds`` for IBP, CROWN-IBP and CROWN, and
the margins above ``margin_bounds``; CROWN-IBP and CROWN no looser than IBP. BatchNorm statistics are
randomised and the model is put in eval mode first. :data:`GRAPH_MODELS` (residual, concatenation,
MaxPool, Tanh/Sigmoid/LeakyReLU, functional ops; models that are not ``nn.Sequential`` stacks) run the
same :func:`check_bounds_sound` (``tests/test_certify_graph_battery.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
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


def _ball_samples(x: torch.Tensor, eps: float, k: int, g: torch.Generator, norm: str) -> torch.Tensor:
    """``k`` points per input in the ``norm`` ball (L∞: clipped to [0, 1], half corners; L2/L1: on and inside the sphere)."""
    if norm == "linf":
        return _samples(x, eps, k, g)
    shape = (k, *x.shape)
    d = torch.randn(shape, generator=g)
    if norm == "l1":
        d = d * (torch.rand(shape, generator=g) < 0.1)  # sparse directions reach the L1 ball's corners
        size = d.flatten(2).abs().sum(-1)
    else:
        size = d.flatten(2).norm(dim=-1)
    scale = torch.rand((k, x.shape[0]), generator=g).sqrt()
    scale[: k // 2] = 1.0  # half on the sphere
    return x + d / size.clamp_min(1e-12).view(k, x.shape[0], *[1] * (x.dim() - 1)) * (eps * scale).view(
        k, x.shape[0], *[1] * (x.dim() - 1))


def check_bounds_sound(model: nn.Module, shape: tuple[int, ...], name: str, *, crown: bool = True) -> None:
    """Every certificate of ``model`` contains the logits of points sampled in the ball.

    IBP, CROWN-IBP and (``crown=True``) CROWN, for the L∞ box and the L2 and L1 balls; bounds finite,
    ordered, containing the clean logits, and CROWN-IBP / CROWN no looser than IBP. Margin lower bounds
    are checked against the sampled margins too. A model CROWN cannot bound must say so ("CROWN").
    """
    from ..certify.ibp import interval_bounds, margin_bounds

    g = torch.Generator().manual_seed(2)
    x = torch.rand((2, *shape), generator=g)
    eps, k = 0.02, 32
    with torch.no_grad():
        z0 = model(x)
        y = z0.argmax(1)
        for norm in ("linf", "l2", "l1"):
            xs = _ball_samples(x, eps, k, g, norm)
            z = model(xs.reshape(-1, *shape)).reshape(k, 2, -1)
            zm = z.gather(2, y.view(1, 2, 1).expand(k, 2, 1)) - z
            tol = 1e-4 * (1 + z.abs())
            box = None
            for method in ("ibp", "crown_ibp", "crown") if crown else ("ibp", "crown_ibp"):
                try:
                    lower, upper = interval_bounds(model, x, eps=eps, norm=norm, method=method)
                    mb = margin_bounds(model, x, y, eps=eps, norm=norm, method=method)
                except TypeError as e:
                    assert method != "ibp" and "CROWN" in str(e), f"{name}: {e}"
                    break
                what = f"{name}: {method} ({norm})"
                assert lower.shape == upper.shape == z.shape[1:], f"{what}: bounds {tuple(lower.shape)} vs logits {tuple(z.shape[1:])}"
                assert bool(torch.isfinite(lower).all() and torch.isfinite(upper).all()), f"{what}: non-finite bounds"
                assert bool((z >= lower - tol).all()), f"{what}: a logit is below its lower bound"
                assert bool((z <= upper + tol).all()), f"{what}: a logit is above its upper bound"
                assert bool((zm >= mb - 1e-4 * (1 + zm.abs())).all()), f"{what}: a margin is below its lower bound"
                t0 = 1e-4 * (1 + z0.abs())
                assert bool((lower <= z0 + t0).all() and (z0 <= upper + t0).all()), f"{what}: clean logits outside"
                if box is None:
                    box = upper - lower
                else:
                    assert bool((upper - lower <= box + 1e-5).all()), f"{what}: looser than IBP"


class _ResidualNet(nn.Module):
    """Normalize - conv - ReLU - [h + conv(tanh(BN(h)))] - MaxPool(3, 2, 1) - view - Linear - LeakyReLU - Linear."""

    def __init__(self) -> None:
        super().__init__()
        from ..models import Normalize

        self.norm = Normalize([0.5], [0.3], (1, 8, 8))
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc, self.out = nn.Linear(4 * 4 * 4, 12), nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(self.norm(x)))
        h = self.pool(h + self.c2(torch.tanh(self.bn(h))))
        h = F.leaky_relu(self.fc(h.view(h.size(0), -1)), 0.1)
        return self.out(h)


class _CatNet(nn.Module):
    """Two branches (conv-Sigmoid, conv-ReLU-scaled) concatenated, avg_pool2d, max_pool2d, flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.out = nn.Linear(5 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.sigmoid(self.a(x)) * 2 - 1, 0.5 * F.relu(self.b(x)) - x[:, :2] / 4], dim=1)
        h = F.max_pool2d(F.avg_pool2d(h, 2), 2)
        return self.out(torch.flatten(h, 1))


def _maxpool_stack() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 8),
                         nn.Sigmoid(), nn.Linear(8, 3))


#: name -> (factory, input shape): models that are not plain stacks of supported layers.
GRAPH_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "residual_maxpool_fx": (_ResidualNet, (1, 8, 8)),
    "concat_functional_fx": (_CatNet, (2, 8, 8)),
    "maxpool_sigmoid_stack": (_maxpool_stack, (1, 8, 8)),
}


def graph_model(name: str) -> nn.Module:
    """A :data:`GRAPH_MODELS` model with seeded weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = GRAPH_MODELS[name][0]()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)  # type: ignore[union-attr]
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)  # type: ignore[union-attr]
    return model.eval()


@check(requires={"ibp"})
def check_ibp_bounds_contain_samples(spec: Spec[Any]) -> None:
    """Logits of points sampled in the L∞/L2/L1 ball lie inside the IBP, CROWN-IBP and CROWN bounds."""
    check_bounds_sound(_model(spec), tuple(spec.example_kwargs["input_shape"]), spec.name)


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
