"""``fit_regression``: train a model with one output on a :class:`~robustlab.data.RegressionData`.

``fit`` is classification-specific in many places (accuracy, output width = number of classes, label checks,
collapse monitor, PGD selection), so regression has its own loop that shares ``fit``'s optimizer, learning-rate
schedule, precision and non-finite-loss code (``_fit_setup``) instead of bending ``fit``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import metrics as M
from .._validation import InvalidParameterError, check_in_range, check_int, check_option
from ._checkpoint import save_checkpoint
from ._fit_setup import (
    _AMP_DTYPES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    _lr_factor,
    _make_optimizer,
    _raise_non_finite,
)

__all__ = ["fit_regression", "predict_regression", "regression_metrics", "regression_model", "resolve_regression_loss"]


def regression_model(name: str = "mlp", *, input_shape: Any, **kwargs: Any) -> nn.Module:
    """The registered model ``name`` with one output (``models.create`` insists on >= 2 classes).

    Its ``robustlab_config`` records ``num_classes=1`` and ``task="regression"``.
    """
    from ..models import MODELS

    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
    model = MODELS.get(name, input_shape=shape, num_classes=1, **kwargs)
    model.robustlab_config = {"name": name, "input_shape": list(shape), "num_classes": 1,  # type: ignore[assignment]
                              "normalize": None, "kwargs": kwargs, "task": "regression"}
    return model


def resolve_regression_loss(loss: Any, loss_kw: dict[str, Any] | None = None) -> Any:
    """A regression-loss registry name becomes a module (``REGRESSION_LOSSES``); a callable is used as is."""
    if isinstance(loss, str):
        from ..losses import regression

        return regression(loss, **(loss_kw or {}))
    if callable(loss):
        if loss_kw:
            raise InvalidParameterError("The 'loss_kw' parameter of fit_regression is only used with a registry name.")
        return loss
    raise TypeError(f"The 'loss' parameter of fit_regression must be a regression-loss name or a callable. "
                    f"Got {type(loss).__name__}.")


@torch.no_grad()
def predict_regression(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Predictions (N,) of a one-output ``model`` on ``x`` in eval mode, batched; restores the model's mode."""
    was = model.training
    model.eval()
    try:
        dev = next((p.device for p in model.parameters()), x.device)
        out = [model(x[i:i + batch_size].to(dev)).reshape(-1).float().cpu() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out) if out else torch.empty(0)
    finally:
        model.train(was)


def regression_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``{"mse", "mae", "r2"}`` of ``model`` on ``(x, y)``."""
    p = predict_regression(model, x)
    return {"mse": M.mean_squared_error(p, y), "mae": M.mean_absolute_error(p, y), "r2": M.r2_score(p, y)}


def _check_one_output(model: nn.Module, x1: torch.Tensor, owner: str) -> None:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x1)
    model.train(was)
    if out.dim() not in (1, 2) or out.reshape(out.shape[0], -1).shape[1] != 1:
        raise InvalidParameterError(
            f"{owner} needs a model with one output per sample (shape (N,) or (N, 1)); it gave {tuple(out.shape)}. "
            "Build the model with num_classes=1.")


def fit_regression(
    model: nn.Module,
    data: Any,
    *,
    loss: Any = "mse",
    loss_kw: dict[str, Any] | None = None,
    epochs: int = 20,
    batch_size: int = 64,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    eval_every: int = 1,
    precision: str = "fp32",
    progress: bool = False,
    device: str | torch.device | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> Any:
    """Train a one-output ``model`` on ``data.x_train, data.y_train`` (a ``RegressionData``); return ``(model, history)``.

    Mini-batches come from a seeded permutation (same seed, same weights). ``loss`` is a name of
    ``robustlab.losses.REGRESSION_LOSSES`` (``mse``, ``huber``, ``quantile``, ``cs_divergence``, ...) with
    ``loss_kw``, or a callable ``loss(pred (N,), target (N,))``. History per evaluated epoch: ``loss``,
    ``test_mse``, ``test_mae``, ``test_r2``, ``lr``, ``time_s``. ``precision`` ``bf16``/``fp16`` runs the
    forward pass under autocast (fp16 with a gradient scaler). Returns a ``FitResult``.

    Example::

        d = data.load("friedman")
        model = regression_model("mlp", input_shape=d.input_shape)
        fit_regression(model, d, loss="huber", loss_kw={"delta": 1.0}, epochs=30)
    """
    from ..data import RegressionData
    from ._fit import FitResult

    owner = "fit_regression"
    if not isinstance(data, RegressionData):
        raise InvalidParameterError(f"The 'data' parameter of {owner} must be a RegressionData (data.load('friedman'), "
                                    f"csv:PATH with target=...). Got {type(data).__name__}.")
    check_int(epochs, "epochs", 1, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_int(eval_every, "eval_every", 0, None, owner=owner)
    check_option(optimizer, "optimizer", OPTIMIZERS, owner=owner)
    check_option(schedule, "schedule", SCHEDULES, owner=owner)
    check_option(precision, "precision", PRECISIONS, owner=owner)
    check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner)
    check_in_range(momentum, "momentum", 0.0, 1.0, closed="left", owner=owner)
    check_in_range(weight_decay, "weight_decay", 0.0, None, owner=owner)
    loss_fn = resolve_regression_loss(loss, loss_kw)
    dev = torch.device(device) if device is not None else next((p.device for p in model.parameters()),
                                                               torch.device("cpu"))
    model.to(dev)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(dev)
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    n = int(y.shape[0])
    if n == 0:
        raise InvalidParameterError(f"{owner}: the data set '{data.name}' has no training samples.")
    _check_one_output(model, x[:1], owner)
    torch.manual_seed(int(seed))  # dropout etc. inside the model
    gen = torch.Generator().manual_seed(int(seed))
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    amp = _AMP_DTYPES[precision]
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    steps = max(1, math.ceil(n / batch_size))
    total, step = epochs * steps, 0
    history: dict[str, list[float]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=owner, unit="epoch", leave=False, disable=None)
    model.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(dev)
        seen: list[torch.Tensor] = []
        sizes: list[int] = []
        for j in range(steps):
            idx = perm[j * batch_size:(j + 1) * batch_size]
            for g in opt.param_groups:
                g["lr"] = lr * _lr_factor(schedule, step, total)
            if amp is None:
                value = loss_fn(model(x[idx]).reshape(-1), y[idx])
            else:
                with torch.autocast(dev.type, dtype=amp):
                    pred = model(x[idx]).reshape(-1)
                value = loss_fn(pred, y[idx].to(pred.dtype))
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                value.backward()
                opt.step()
            else:
                scaler.scale(value).backward()
                scaler.step(opt)
                scaler.update()
            seen.append(value.detach().float())
            sizes.append(int(idx.shape[0]))
            step += 1
        w = torch.tensor(sizes, dtype=torch.float32, device=dev)
        loss_sum = (torch.stack(seen) * w).sum()
        if not bool(torch.isfinite(loss_sum)):
            _raise_non_finite(seen, epoch, steps, lr, owner)
        if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            row = {"epoch": float(epoch + 1), "loss": float(loss_sum) / n}
            row.update({f"test_{k}": v for k, v in regression_metrics(model, data.x_test, data.y_test).items()})
            row["lr"] = lr * _lr_factor(schedule, step, total)
            row["time_s"] = time.perf_counter() - t0
            for k, v in row.items():
                history.setdefault(k, []).append(float(v))
            if callback is not None:
                callback(epoch + 1, row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", test_r2=f"{row['test_r2']:.3f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    if checkpoint is not None:
        save_checkpoint(model, checkpoint, extra={"history": history})
    return FitResult(model, history)
