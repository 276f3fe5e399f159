"""``fit_regression``: train a model with one output on a :class:`~robustlab.data.RegressionData`.

``fit`` is classification-specific in many places (accuracy, output width = number of classes, label checks,
collapse monitor, PGD selection), so regression has its own loop that shares ``fit``'s optimizer, learning-rate
schedule, precision and non-finite-loss code (``_fit_setup``), its resumable state (``_resume``: fingerprint,
capture/restore, ``last.pt``), its best-epoch bookkeeping (``_resume.Selection``) and its weight EMA
(``_select.WeightEMA``) instead of bending ``fit``. Selection is by the lowest MSE on a seeded held-out split.
Augmentations are image/label transforms and are not offered; distributed training is not implemented here.
"""

from __future__ import annotations

import math
import os
import time
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import metrics as M
from .._validation import InvalidParameterError, check_in_range, check_int, check_option
from . import _resume
from ._checkpoint import save_checkpoint, save_train_state
from ._fit_setup import (
    _AMP_DTYPES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    _check_new_options,
    _lr_factor,
    _make_optimizer,
    _raise_non_finite,
)
from ._select import WeightEMA

#: ``select`` values of ``fit_regression``: both mean the lowest held-out MSE (``clean`` is the pipeline's spelling)
REGRESSION_SELECT = ("clean", "mse")

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


def predict_regression(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Predictions (N,) of a one-output ``model`` on ``x`` in eval mode, batched; restores the model's mode."""
    from ._fit import predict_logits

    return predict_logits(model, x, batch_size=batch_size).reshape(-1).float().cpu()


def regression_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``{"mse", "mae", "r2"}`` of ``model`` on ``(x, y)``."""
    p = predict_regression(model, x)
    return {"mse": M.mean_squared_error(p, y), "mae": M.mean_absolute_error(p, y), "r2": M.r2_score(p, y)}


class _MSESelection(_resume.Selection):
    """``fit``'s best-epoch bookkeeping on the held-out MSE (lower is better; stored negated), history ``val_mse``."""

    def update_mse(self, epoch: int, mse: float, model: nn.Module, history: dict[str, list[float]],
                   patience: int | None) -> bool:
        scratch: dict[str, list[float]] = {}
        better = self.update(epoch, -mse, model, scratch, "clean", patience)
        history.setdefault("val_epoch", []).append(float(epoch))
        history.setdefault("val_mse", []).append(float(mse))
        if "stopped_epoch" in scratch:
            history["stopped_epoch"] = scratch["stopped_epoch"]
        return better


def _holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``, both sorted: a seeded ``round(fraction * n)`` of the samples held out (>= 1 each)."""
    k = min(int(round(fraction * n)), n - 1)
    if k < 1:
        raise InvalidParameterError(f"The 'val_fraction' parameter of fit_regression holds out no sample: "
                                    f"val_fraction={fraction:g} of {n} training samples rounds to 0. Use a larger one.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 3))
    return torch.sort(perm[k:]).values, torch.sort(perm[:k]).values


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
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    select: str | None = None,
    select_every: int = 1,
    val_fraction: float | None = None,
    patience: int | None = None,
    ema: float | None = None,
    augment: Any = None,
) -> Any:
    """Train a one-output ``model`` on ``data.x_train, data.y_train`` (a ``RegressionData``); return ``(model, history)``.

    Mini-batches come from a seeded permutation (same seed, same weights). ``loss`` is a name of
    ``robustlab.losses.REGRESSION_LOSSES`` (``mse``, ``huber``, ``quantile``, ``cs_divergence``, ...) with
    ``loss_kw``, or a callable ``loss(pred (N,), target (N,))``. History per evaluated epoch: ``loss``,
    ``test_mse``, ``test_mae``, ``test_r2``, ``lr``, ``time_s``. ``precision`` ``bf16``/``fp16`` runs the
    forward pass under autocast (fp16 with a gradient scaler). Returns a ``FitResult``.

    As in ``fit``: ``checkpoint_dir`` keeps the resumable state (``last.pt`` every ``checkpoint_every`` epochs;
    ``resume=True`` continues from it bit-identically and refuses one written with other settings);
    ``select="clean"`` (or ``"mse"``) keeps the weights with the lowest MSE on a seeded held-out
    ``val_fraction`` of the train split (default 0.1, not trained on), measured every ``select_every`` epochs,
    with early stopping after ``patience`` evaluations without improvement (history ``val_epoch``, ``val_mse``,
    ``selected_epoch``; ``<checkpoint_dir>/best.pt``); ``ema``: decay of a weight average that is evaluated,
    selected and returned. ``augment`` is refused (image/label transforms).

    Example::

        d = data.load("friedman")
        model = regression_model("mlp", input_shape=d.input_shape)
        fit_regression(model, d, loss="huber", loss_kw={"delta": 1.0}, epochs=30)
    """
    from ..data import RegressionData
    from ._fit import FitResult, optimizer_step

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
    if augment not in (None, "none"):
        raise InvalidParameterError(
            f"The 'augment' parameter of {owner} is not supported: augmentations (flips, crops, mixup, ...) act on "
            f"images and class labels, not on regression inputs/targets. Got augment={augment!r}; use None.")
    if select is not None:
        check_option(select, "select", (None, *REGRESSION_SELECT), owner=owner)
    elif patience is not None:
        raise InvalidParameterError(f"The 'patience' parameter of {owner} needs select='clean' (held-out MSE).")
    val_fraction = _check_new_options(owner, precision, checkpoint_dir, checkpoint_every, resume, val_fraction,
                                      None if select is None else "clean", select_every, patience, ema)
    loss_fn = resolve_regression_loss(loss, loss_kw)
    dev = torch.device(device) if device is not None else next((p.device for p in model.parameters()),
                                                               torch.device("cpu"))
    model.to(dev)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(dev)
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    if int(y.shape[0]) == 0:
        raise InvalidParameterError(f"{owner}: the data set '{data.name}' has no training samples.")
    x_val = y_val = None
    if val_fraction > 0:  # held out (not trained on) as in fit, also when only given without select
        train_idx, val_idx = _holdout(int(y.shape[0]), val_fraction, seed)
        x_val, y_val = x[val_idx.to(dev)], y[val_idx.to(dev)]
        x, y = x[train_idx.to(dev)], y[train_idx.to(dev)]
    n = int(y.shape[0])
    _check_one_output(model, x[:1], owner)
    torch.manual_seed(int(seed))  # dropout etc. inside the model
    gen = torch.Generator().manual_seed(int(seed))
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    amp = _AMP_DTYPES[precision]
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    ema_w = WeightEMA(model, ema) if ema is not None else None
    steps = max(1, math.ceil(n / batch_size))
    total, step = epochs * steps, 0
    history: dict[str, list[float]] = {}
    sel, gens, no_objective = _MSESelection(), {"fit": gen}, types.SimpleNamespace()
    fingerprint = _resume.fingerprint(
        task="regression", epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule, seed=seed, n_train=n, loss=loss, loss_kw=loss_kw,
        precision=precision, val_fraction=val_fraction, select=None if select is None else "mse",
        select_every=select_every, patience=patience, ema=ema)
    start_epoch = 0
    if resume:
        assert checkpoint_dir is not None  # checked with the options
        state = _resume.load(checkpoint_dir, fingerprint)
        if state is not None:
            start_epoch, step, _ = _resume.restore(
                state, model=model, opt=opt, scaler=scaler, loss_fn=loss_fn, obj=no_objective, gens=gens,
                ema=ema_w, history=history, selection=sel, device=dev)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc=owner, unit="epoch", leave=False, disable=None)
    model.train()
    for epoch in range(start_epoch, epochs):
        if sel.stopped:
            break
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
            optimizer_step(opt, value, scaler, ema_w)
            seen.append(value.detach().float())
            sizes.append(int(idx.shape[0]))
            step += 1
        w = torch.tensor(sizes, dtype=torch.float32, device=dev)
        loss_sum = (torch.stack(seen) * w).sum()
        if not bool(torch.isfinite(loss_sum)):
            _raise_non_finite(seen, epoch, steps, lr, owner)
        eval_model = model if ema_w is None else ema_w.model
        if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            row = {"epoch": float(epoch + 1), "loss": float(loss_sum) / n}
            row.update({f"test_{k}": v for k, v in regression_metrics(eval_model, data.x_test, data.y_test).items()})
            row["lr"] = lr * _lr_factor(schedule, step, total)
            row["time_s"] = time.perf_counter() - t0
            for k, v in row.items():
                history.setdefault(k, []).append(float(v))
            if callback is not None:
                callback(epoch + 1, row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", test_r2=f"{row['test_r2']:.3f}")
        if select is not None and ((epoch + 1) % select_every == 0 or epoch + 1 == epochs):
            assert x_val is not None and y_val is not None
            val_mse = M.mean_squared_error(predict_regression(eval_model, x_val), y_val)
            if sel.update_mse(epoch + 1, val_mse, eval_model, history, patience) and checkpoint_dir is not None:
                save_checkpoint(eval_model, os.path.join(checkpoint_dir, "best.pt"),
                                extra={"epoch": epoch + 1, "val_mse": val_mse})
        if checkpoint_dir is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs or sel.stopped):
            save_train_state(checkpoint_dir, _resume.capture(
                fingerprint=fingerprint, epoch=epoch + 1, step=step, model=model, opt=opt, scaler=scaler,
                loss_fn=loss_fn, obj=no_objective, gens=gens, ema=ema_w, history=history, selection=sel,
                kept_fraction=1.0))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if sel.best is not None:
        model.load_state_dict(sel.best)
        history["selected_epoch"] = [float(sel.best_epoch)]
    elif ema_w is not None:
        model.load_state_dict(ema_w.model.state_dict())
    model.eval()
    if checkpoint is not None:
        save_checkpoint(model, checkpoint, extra={"history": history})
    return FitResult(model, history)
