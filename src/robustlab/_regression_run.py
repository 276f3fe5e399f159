"""A regression run through the one pipeline (``pipeline.run`` hands a :class:`RegressionData` run here).

The task is inferred from the data set, declared once in :func:`task_of` (a ``RegressionData`` is a regression
run). What differs from a classification run: target noise (``robustlab.noise.TARGET_NOISES``) instead of
label noise, a loss of ``REGRESSION_LOSSES``, a one-output model (``training.regression_model``),
``training.fit_regression`` with the train options it supports, and the metrics ``test/mse``, ``test/mae``,
``test/r2`` (plus ``train/*`` per epoch; a ``clean`` evaluation means these), and the regression evaluations
(``Evaluation.task == "regression"``: ``regression_robust``). Objectives other than ``standard``, classification
evaluations and collaborative training are refused with an error naming them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ._validation import InvalidParameterError

__all__ = ["REGRESSION_TRAIN_OPTIONS", "check_classification_evaluations", "check_regression_config", "config_task",
           "evaluation_task", "regression_evaluations", "resolve_regression", "run_regression", "task_of"]

#: the train options a regression run uses (the rest of TRAIN_OPTIONS are classification-only)
REGRESSION_TRAIN_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                            "eval_every", "precision", "select", "select_every", "val_fraction", "patience", "ema")


def task_of(data: Any) -> str:
    """``"regression"`` for a :class:`~robustlab.data.RegressionData`, else ``"classification"``."""
    return "regression" if getattr(data, "task", None) == "regression" else "classification"


def check_regression_config(cfg: Any, data: Any) -> None:
    """Refuse the parts of a run config a regression run cannot use (classification loss, objective, ...)."""
    from .losses import REGRESSION_LOSSES

    name = getattr(data, "name", cfg.data.name)
    if cfg.loss.name not in REGRESSION_LOSSES:
        raise InvalidParameterError(
            f"The data set '{name}' is a regression set: its loss must be a regression loss "
            f"({', '.join(REGRESSION_LOSSES.available())}). Got loss {cfg.loss.name!r}.")
    if cfg.objective.name != "standard":
        raise InvalidParameterError(f"A regression run ('{name}') trains with objective 'standard' only. "
                                    f"Got {cfg.objective.name!r}.")
    if cfg.collab is not None:
        raise InvalidParameterError(f"A regression run ('{name}') cannot be collaborative (collab section given).")
    other = [e["name"] for e in cfg.evaluations  # clean = test/mse, test/mae, test/r2
             if e["name"] != "clean" and evaluation_task(e["name"]) != "regression"]
    if other:
        raise InvalidParameterError(
            f"A regression run ('{name}') reports test/mse, test/mae and test/r2 itself (its 'clean' evaluation); "
            f"the evaluations {other} are classification evaluations. Drop them (regression evaluations: "
            f"{regression_evaluations()}).")
    if cfg.train.get("augment") not in (None, "none"):
        raise InvalidParameterError(
            f"A regression run ('{name}') cannot augment its inputs: augmentations act on images and class labels. "
            f"Got train option augment={cfg.train['augment']!r}; drop it.")
    if cfg.train.get("select") not in (None, "clean"):
        raise InvalidParameterError(f"A regression run ('{name}') selects on the held-out MSE: train option select "
                                    f"'clean' (or none). Got select={cfg.train['select']!r}.")
    extra = sorted(k for k in cfg.train if k not in REGRESSION_TRAIN_OPTIONS and k != "augment")
    if extra:
        raise InvalidParameterError(f"A regression run ('{name}') does not take the train option(s) {extra}; it "
                                    f"takes {list(REGRESSION_TRAIN_OPTIONS)}.")


def evaluation_task(name: str) -> str:
    """The task an evaluation applies to (``Evaluation.task``: ``classification`` or ``regression``)."""
    from .bench.evaluations import EVALUATIONS

    return getattr(EVALUATIONS.spec(name).factory, "task", "classification") if name in EVALUATIONS else "classification"


def regression_evaluations() -> list[str]:
    """Names of the registered evaluations of regression runs (``task = "regression"``)."""
    from .bench.evaluations import EVALUATIONS

    return [n for n in EVALUATIONS.available() if evaluation_task(n) == "regression"]


def check_classification_evaluations(cfg: Any, data: Any) -> None:
    """Refuse regression evaluations on a classification run, before it trains."""
    bad = [e["name"] for e in cfg.evaluations if evaluation_task(e["name"]) == "regression"]
    if bad:
        raise InvalidParameterError(f"The evaluations {bad} apply to regression runs (a RegressionData: friedman, "
                                    f"csv:PATH with target=...); data set '{getattr(data, 'name', cfg.data.name)}' "
                                    "is a classification set. Drop them.")


def resolve_regression(cfg: Any, data: Any) -> dict[str, Any]:
    """Every hyper-parameter of a regression run, defaults included."""
    from ._runconfig import resolved_kwargs
    from .losses import REGRESSION_LOSSES
    from .models import MODELS

    return {
        "task": "regression",
        "noise": {"kind": cfg.noise.kind, "rate": cfg.noise.rate, **cfg.noise.options},
        "model": (resolved_kwargs(MODELS.spec(cfg.model.name).factory, cfg.model.kwargs,
                                  skip=("input_shape", "num_classes")) if cfg.model.name in MODELS
                  else dict(cfg.model.kwargs)),
        "loss": resolved_kwargs(REGRESSION_LOSSES.spec(cfg.loss.name).factory, cfg.loss.kwargs),
        "objective": {},
        "train": dict(cfg.train),
        "data": {"name": data.name, "num_train": int(data.x_train.shape[0]), "num_test": int(data.x_test.shape[0]),
                 "num_classes": None, "input_shape": list(data.input_shape)},
    }


def run_regression(cfg: Any, d: Any, *, out_dir: Path | None, checkpoint: bool, device: torch.device,
                   progress: bool | None, checkpoint_extra: Any, timings: dict[str, float],
                   resume: bool = False, fit_kw: Any = None) -> Any:
    """Train and evaluate one regression run (called by ``pipeline.run``); returns a ``RunResult``.

    ``resume`` (with ``out_dir``): the resumable state in ``<out>/train_state``, as a classification run.
    ``fit_kw`` (launch options): ``distributed`` is not implemented for regression and is refused."""
    from . import noise
    from ._progress import progress_enabled
    from .pipeline import RunResult, build_model, history_metrics, record
    from .training import fit_regression, is_main_process, regression_metrics

    check_regression_config(cfg, d)
    if dict(fit_kw or {}).get("distributed"):
        raise InvalidParameterError(f"A regression run ('{d.name}') trains in one process: distributed=True "
                                    "(torchrun, --distributed) is not implemented for regression. Launch it plainly.")
    metrics: list[tuple[str, float, int]] = []
    noisy, train_data, t = None, d, time.perf_counter()
    if cfg.noise.kind != "none":
        noisy = noise.inject_targets(d.y_train, kind=cfg.noise.kind, rate=cfg.noise.rate,
                                     generator=torch.Generator().manual_seed(cfg.seed), **cfg.noise.options)
        train_data = d.with_train_targets(noisy.targets, noise=cfg.noise.label)
        metrics.append(("noise/realized_rate", float(noisy.realized_rate), -1))
    timings["load_s"] = timings.get("load_s", 0.0) + time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, d)  # regression_model: one output
    res = fit_regression(model, train_data, loss=cfg.loss.name, loss_kw=dict(cfg.loss.kwargs) or None, seed=cfg.seed,
                         progress=progress_enabled(progress), device=device, **cfg.train,
                         **({"checkpoint_dir": out_dir / "train_state", "resume": True} if resume and out_dir else {}))
    model = res.model.eval()
    timings["train_s"] = time.perf_counter() - t
    hist = res.history
    metrics.extend(history_metrics(hist))
    t = time.perf_counter()
    metrics.extend((f"test/{k}", v, -1) for k, v in regression_metrics(model, d.x_test, d.y_test).items())
    from .bench.evaluations import EvalContext, run_evaluation

    ctx = EvalContext(model=model, data=d, train_labels=train_data.y_train, is_noisy=None, seed=cfg.seed, device=device)
    for spec in cfg.evaluations:
        if spec["name"] != "clean":  # clean = the test/* metrics above
            metrics.extend(run_evaluation(spec, ctx).metrics)
    timings["eval_s"] = time.perf_counter() - t
    result = RunResult(config=cfg, model=model, data=d, train_data=train_data, noisy=noisy, history=hist,
                       metrics=metrics, curves={}, resolved=resolve_regression(cfg, d), timings=timings)
    if out_dir is not None and checkpoint and is_main_process():
        from .training import save_checkpoint

        out_dir.mkdir(parents=True, exist_ok=True)
        extra = {**dict(checkpoint_extra or {}), "config": record(cfg), "run_config": cfg.to_dict()}
        result.artifacts.append(("checkpoint", str(save_checkpoint(model, out_dir / "model.pt", extra=extra))))
    return result


def config_task(name: str, options: Any = None) -> str:
    """The task of a data config before loading: a ``REGRESSION_DATASETS`` name or ``csv:PATH`` with a
    ``target`` option is ``"regression"`` (what :func:`task_of` says of the loaded set)."""
    from .data import REGRESSION_DATASETS

    if name in REGRESSION_DATASETS or (name.startswith("csv:") and "target" in dict(options or {})):
        return "regression"
    return "classification"
