"""Conformance checks for every registered training objective (``training.OBJECTIVES``).

Each check builds the objective from its ``example_kwargs`` on a tiny fixture (a 3-class Gaussian
mixture in 6 dimensions and a 2-layer MLP); objectives tagged ``needs_teacher`` get small MLP teachers
for every ``*teacher`` keyword left as ``None``; ``requires_comp_sum`` objectives are skipped while the
loss zoo has no ``comp_sum``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from .._registry import Spec
from . import check

__all__: list[str] = []

# Keyword -> values every objective taking that keyword must reject (the constructor validates all).
_BAD_VALUES: dict[str, tuple[Any, ...]] = {
    "eps": (-0.1, float("nan"), "0.1"),
    "step_size": (0.0, -1.0),
    "steps": (0, 1.5, -3),
    "norm": ("l7", None),
    "random_start": ("yes", 1),
    "beta": (-1.0,),
    "r": (0.0, -1.0),
    "avg_rate": (0.0, 1.5),
    "mode": ("bogus",),
    "clean_weight": (-0.1, 1.1),
    "tau": (-1.0,),
    "nu": (-1.0,),
    "temperature": (0.0,),
    "teacher_weight": (1.5,),
    "teacher": ("/nonexistent/robustlab-teacher", 3),
    "tau_adv": (0.5, 11.0),
    "tau_nat": (0.5,),
    "weight_lr": (-0.1,),
    "tau_lr": (-1.0,),
    "clean_teacher": (3,),
    "robust_teacher": ("/nonexistent/robustlab-teacher",),
    "balance_entropy": ("yes",),
    "balance_loss": (1,),
    "sigma": (0.0, -1.0, "0.25"),
    "eps_schedule": ("cosine", None),
    "eps_warmup_epochs": (-1, 1.5, "2"),
    "bits": ((), 8, (1,), (8, 40), ("8",), (4.0,)),
    "scheme": ("per_row", None),
    "wdr_weight": (-0.1, float("nan")),
    "kurtosis_target": (0.5,),
    "symmetry": ("affine", None, ()),
    "layerwise": ("yes", 1),
    "skew_weight": (-1.0,),
    "kurtosis_weight": (-1.0,),
    "pretrain_epochs": (-1, 1.5, "2"),
    "pretrain_loss": ("bogus", 3),
    "mixup": (-0.1, float("nan"), "1"),
}


def _fixture(seed: int = 0) -> tuple[Any, nn.Module]:
    from ..data import load
    from ..models import create

    data = load("gaussians", num_classes=3, dim=6, n_train=48, n_test=24, separation=4.0, seed=seed)
    torch.manual_seed(seed)  # only model initialisation; objectives get explicit generators
    model = create("mlp", input_shape=data.input_shape, num_classes=3, hidden=(16,))
    return data, model


def _teacher(data: Any) -> nn.Module:
    from ..models import create

    torch.manual_seed(1)
    return create("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=(8,))


def _kwargs(spec: Spec[Any], data: Any) -> dict[str, Any]:
    if "requires_comp_sum" in spec.tags:
        import pytest

        from ..losses import LOSSES

        if "comp_sum" not in LOSSES:
            pytest.skip("the loss zoo has no 'comp_sum' yet")
    kw = dict(spec.example_kwargs)
    for k, v in kw.items():
        if v is None and k.endswith("teacher"):
            kw[k] = _teacher(data)
    return kw


def _setup(obj: Any, model: nn.Module, data: Any, seed: int) -> None:
    obj.setup(model=model, epochs=1, steps_per_epoch=1, num_classes=data.num_classes,
              num_train=data.x_train.shape[0], generator=torch.Generator().manual_seed(seed))


def _batch(data: Any) -> Any:
    from ..training import Batch

    n = data.x_train.shape[0]
    return Batch(data.x_train, data.y_train, torch.arange(n))


def _value(spec: Spec[Any], obj: Any, model: nn.Module, data: Any, seed: int = 123) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from ..losses import get

    _setup(obj, model, data, seed)
    was = model.training
    model.eval()  # measurement only: balance rules and train-mode layers stay put
    try:
        return obj(model, _batch(data), get("ce"))
    finally:
        model.train(was)


@check()
def check_docstring_reference_and_cost(spec: Spec[Any]) -> None:
    """The objective documents its paper and its per-step cost; ``passes_per_step`` is a number >= 1."""
    doc = inspect.getdoc(spec.factory) or ""
    assert doc, f"{spec.name} has no docstring"
    assert spec.reference, f"{spec.name} has no reference"
    assert "cost" in doc.lower(), f"{spec.name}'s docstring does not document its cost per step"
    data, _ = _fixture()
    obj = spec.create(**_kwargs(spec, data))
    pps = getattr(obj, "passes_per_step", None)
    assert isinstance(pps, (int, float)) and pps >= 1 and math.isfinite(pps), f"passes_per_step={pps!r}"
    assert repr(obj).startswith(type(obj).__name__)


@check()
def check_runs_in_fit(spec: Spec[Any]) -> None:
    """``fit`` with this objective runs on the fixture and logs finite losses and metrics."""
    from ..training import fit

    data, model = _fixture()
    res = fit(model, data, objective=spec.create(**_kwargs(spec, data)), epochs=2, batch_size=16,
              lr=0.05, progress=False, seed=0)
    assert len(res.history["loss"]) == 2
    for k, v in res.history.items():
        if k.startswith("train_") and k != "train_acc":
            assert all(math.isfinite(x) for x in v), f"{k} is not finite: {v}"
    assert all(math.isfinite(x) for x in res.history["loss"])


@check()
def check_metrics_are_scalar_tensors(spec: Spec[Any]) -> None:
    """The objective returns a finite scalar tensor with a graph, and metrics that are detached 0-d tensors."""
    data, model = _fixture()
    value, metrics = _value(spec, spec.create(**_kwargs(spec, data)), model, data)
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.requires_grad
    assert bool(torch.isfinite(value))
    assert isinstance(metrics, dict)
    for k, v in metrics.items():
        assert isinstance(v, torch.Tensor) and v.dim() == 0, f"metric {k!r} is not a scalar tensor: {v!r}"
        assert not v.requires_grad, f"metric {k!r} is attached to the graph"


@check()
def check_no_parameter_grads_and_mode_restored(spec: Spec[Any]) -> None:
    """Computing the objective (attack included) accumulates no parameter gradient and keeps train mode."""
    from ..losses import get

    data, model = _fixture()
    obj = spec.create(**_kwargs(spec, data))
    _setup(obj, model, data, 0)
    model.train()
    obj(model, _batch(data), get("ce"))
    assert model.training, "the objective left the model in eval mode"
    assert all(p.grad is None for p in model.parameters()), "the objective accumulated parameter gradients"


@check()
def check_lowers_its_own_loss(spec: Spec[Any]) -> None:
    """A few optimiser steps with the objective lower its own value on the fixture batch."""
    from ..losses import get

    data, model = _fixture()
    obj = spec.create(**_kwargs(spec, data))
    before = float(_value(spec, obj, model, data)[0].detach())
    _setup(obj, model, data, 7)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    ce = get("ce")
    for _ in range(25):
        value, _ = obj(model, _batch(data), ce)
        opt.zero_grad()
        value.backward()
        opt.step()
    after = float(_value(spec, obj, model, data)[0].detach())
    assert after < before, f"{spec.name}: value {before:.4f} -> {after:.4f} after 25 steps"


@check()
def check_finite_at_large_logits(spec: Spec[Any]) -> None:
    """Value and gradients stay finite when the model's logits reach about 1e4."""
    data, model = _fixture()
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.mul_(3e3)
        last.bias.mul_(3e3)
    value, _ = _value(spec, spec.create(**_kwargs(spec, data)), model, data)
    assert bool(torch.isfinite(value)), f"value {value}"
    value.backward()
    for p in model.parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())


@check()
def check_bad_hyperparameters_raise(spec: Spec[Any]) -> None:
    """Every validated keyword in the constructor rejects bad values with ValueError/TypeError."""
    data, _ = _fixture()
    base = _kwargs(spec, data)
    params = inspect.signature(spec.factory).parameters
    tried = 0
    for name, bad_values in _BAD_VALUES.items():
        if name not in params:
            continue
        for bad in bad_values:
            tried += 1
            try:
                spec.create(**{**base, name: bad})
            except (ValueError, TypeError, FileNotFoundError):
                continue
            raise AssertionError(f"{spec.name}({name}={bad!r}) did not raise")
    # Keywords unknown to the table are not checked here (objectives of other modules may add their own).
    if tried == 0 and any(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()):
        raise AssertionError(f"no hyper-parameter of {spec.name} is covered by the battery's bad-value table")


@check()
def check_eps_schedule(spec: Spec[Any]) -> None:
    """Objectives with an ``eps`` (adversarial, certified) take the shared ε schedule: ``eps_schedule`` in
    {"constant", "linear"} and ``eps_warmup_epochs``; under ``fit``'s hooks a linear ramp over 2 of 4 epochs
    starts below ε, grows, and reaches ε after the warm-up; a constant schedule is ε throughout."""
    from ..training.objectives._schedule import EPS_SCHEDULES

    params = inspect.signature(spec.factory).parameters
    if "eps" not in params:
        return
    assert "eps_schedule" in params and "eps_warmup_epochs" in params, (
        f"{spec.name} has an 'eps' but no 'eps_schedule'/'eps_warmup_epochs' (the shared ε schedule)")
    data, model = _fixture()
    kw = _kwargs(spec, data)
    assert set(EPS_SCHEDULES) == {"constant", "linear"}
    obj = spec.create(**{**kw, "eps_schedule": "linear", "eps_warmup_epochs": 2})
    obj.setup(model=model, epochs=4, steps_per_epoch=5, num_classes=data.num_classes,
              num_train=data.x_train.shape[0], generator=torch.Generator().manual_seed(0))
    seen = []
    for epoch in (0, 1, 2, 3):
        obj.on_epoch_start(epoch)
        seen.append(obj.progress(obj._step))
    assert 0 <= seen[0] < seen[1] < seen[2] == seen[3] == 1.0, f"{spec.name}: ramp factors {seen}"
    # the objective attacks (or bounds) at the scheduled ε and reports it as the metric "eps"
    from ..losses import get

    reported = []
    for epoch in (0, 2):
        obj.on_epoch_start(epoch)
        _, metrics = obj(model, _batch(data), get("ce"))
        assert "eps" in metrics, f"{spec.name} does not report the scheduled 'eps' metric"
        reported.append(float(metrics["eps"]))
    full = float(kw.get("eps", params["eps"].default)) * float(getattr(obj, "eps_train_factor", 1.0))
    assert reported[0] < full and abs(reported[1] - full) <= 1e-6 * max(full, 1.0), (
        f"{spec.name}: eps {reported} at epochs 0 and 2 of a 2-epoch ramp to {full}")
    const = spec.create(**{**kw, "eps_schedule": "constant"})
    const.setup(model=model, epochs=4, steps_per_epoch=5, num_classes=data.num_classes,
                num_train=data.x_train.shape[0], generator=torch.Generator().manual_seed(0))
    const.on_epoch_start(0)
    assert const.progress(const._step) == 1.0


@check()
def check_a_pool_from_the_training_split_is_held_out(spec: Spec[Any]) -> None:
    """Objectives tagged ``unlabeled`` that take their pool as a spec of the training split
    (``unlabeled={"kind": ..., "fraction": ...}``, :func:`robustlab.data.check_pool_spec`) hold it out: after
    ``prepare`` the labels of the pool's rows (:func:`robustlab.data.split_and_shift`, the run's seed) never
    change the objective's value -- the labelled and the unlabeled examples are disjoint."""
    if "unlabeled" not in spec.tags or "unlabeled" not in inspect.signature(spec.factory).parameters:
        return
    from ..data import check_pool_spec, split_and_shift
    from ..losses import get
    from ..training import Batch

    data, model = _fixture()
    pool = {"kind": "none", "fraction": 0.5}
    obj = spec.create(**{**_kwargs(spec, data), "unlabeled": pool})
    obj.prepare(model=model, x=data.x_train, y=data.y_train, num_classes=data.num_classes, seed=3)
    _, held, _ = split_and_shift(data.x_train, data.y_train, check_pool_spec(pool, spec.name), 3)
    assert 0 < held.numel() < data.x_train.shape[0]
    y_other = data.y_train.clone()
    y_other[held] = (y_other[held] + 1) % data.num_classes
    values = []
    for y in (data.y_train, y_other):
        _setup(obj, model, data, 5)
        values.append(obj(model, Batch(data.x_train, y, torch.arange(y.shape[0])), get("ce"))[0].detach())
    assert torch.equal(values[0], values[1]), (
        f"{spec.name}: the labels of the held-out pool's rows change the loss ({values[0]} vs {values[1]})")
