"""One run, one pipeline: config -> data (+ noise) -> model -> ``fit`` -> evaluations -> a result record.

``robustlab train`` and every bench worker call :func:`run`; nothing else assembles a run, so the
two cannot disagree. A run is described by a :class:`Config` (built and validated from a plain dict
with :meth:`Config.from_dict`; :meth:`Config.to_dict` is the normalized form a bench hashes into its
run id). Everything random is seeded from ``seed``: noise (its own generator), model initialisation
(``torch.manual_seed(seed)``), training order (``fit(seed=seed)``) and each evaluation.

Rules that live here and nowhere else:

* noise strings are parsed by :func:`robustlab.noise.parse` only; a zero rate (``"none"``, ``"clean"``,
  ``"symmetric:0"``) is the clean run, ``{"kind": "none", "rate": 0.0}``;
* the asymmetric-noise map is chosen from the data set's name when the config gives none;
* per-sample loss state (``num_samples``) is sized by ``fit`` alone;
* options that fetch or write (:data:`FETCH_OPTIONS`: ``download``, ``mirror``) are taken from the
  caller (``fetch=``) only; they are never part of a config, a run id, a checkpoint or a result file;
* the axes of a run (:data:`AXES`) and the train options with their ranges (:data:`TRAIN_OPTIONS`) are
  declared once; the bench spec, the results store, the report and the CLI read them;
* defaults that matter to a result (an objective's ``eps``/``steps``/``step_size``, a loss's
  hyper-parameters, the noise map) are resolved into :attr:`RunResult.resolved`, printed and stored.

Example::

    from robustlab import pipeline
    res = pipeline.run({"data": {"name": "digits"}, "noise": "symmetric:0.4", "model": {"name": "mlp"},
                        "train": {"epochs": 5}, "evaluations": [{"name": "clean"}]})
    res.metrics[-1]   # ('acc/clean', 0.9..., -1)
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._regression_run import check_classification_evaluations, run_regression, task_of
from ._runconfig import (  # noqa: F401  (re-exported: the config half of the pipeline)
    AXES,
    COLLAB_AXES,
    FETCH_OPTIONS,
    SCHEMA_VERSION,
    TRAIN_OPTIONS,
    Component,
    Config,
    DataConfig,
    NoiseConfig,
    accepted_kwargs,
    check_kwargs,
    check_train_options,
    resolved_kwargs,
    train_defaults,
)
from ._validation import InvalidParameterError

__all__ = [
    "AXES", "COLLAB_AXES", "FETCH_OPTIONS", "SCHEMA_VERSION", "TRAIN_OPTIONS", "Component", "Config", "DataConfig",
    "NoiseConfig",
    "RunResult", "accepted_kwargs", "asymmetric_map_for", "build_model", "check_kwargs", "check_train_options",
    "check_writable", "data_ref", "history_metrics", "load_data", "noise_options", "record", "resolve", "resolved_kwargs", "run",
    "train_defaults",
]


# -- the steps ----------------------------------------------------------------------------------
def data_ref(data: DataConfig | Mapping[str, Any] | str, *, fetch: Mapping[str, Any] | None = None) -> Any:
    """The :class:`robustlab.data.DataRef` of a data config (``root`` is one of its options here) plus ``fetch``."""
    from .data._ref import DataRef

    dc = DataConfig.from_value(data)
    fetch = dict(fetch or {})
    bad = sorted(set(fetch) - set(FETCH_OPTIONS))
    if bad:
        raise InvalidParameterError(f"The 'fetch' parameter takes only {list(FETCH_OPTIONS)}. Got {bad}.")
    opts = dict(dc.options)
    root = opts.pop("root", None)
    return DataRef(dc.name, root=root, options={**opts, **fetch})


def load_data(data: DataConfig | Mapping[str, Any] | str, *, fetch: Mapping[str, Any] | None = None) -> Any:
    """Load a data set by its config; ``fetch`` (``download``/``mirror``) comes from the caller only.

    A streamed set (``imagefolder:PATH``) is read into memory after ``n_train``/``n_test`` (the run pipeline
    adds label noise and statistics to tensors); Python callers stream it with ``fit`` and the evaluations.
    """
    from .data import StreamingData

    dc = DataConfig.from_value(data)
    d = data_ref(dc, fetch=fetch).load()
    if dc.n_train or dc.n_test:
        d = d.subset(n_train=dc.n_train, n_test=dc.n_test)
    return d.to_memory() if isinstance(d, StreamingData) else d


def asymmetric_map_for(data: Any) -> str | None:
    """The literature's asymmetric map for ``data`` (by its name), when one exists and fits its classes."""
    from .noise import ASYMMETRIC_MAPS

    m = ASYMMETRIC_MAPS.get(str(getattr(data, "name", "")))
    if m is None or max((max(a, b) for a, b in m.items()), default=-1) >= int(data.num_classes):
        return None
    return str(data.name)


def noise_options(nc: NoiseConfig, data: Any) -> dict[str, Any]:
    """The noise kind's options as used: the asymmetric map chosen from the data set's name when none is given."""
    opts = dict(nc.options)
    if nc.kind == "asymmetric" and "dataset" not in opts and "mapping" not in opts:
        name = asymmetric_map_for(data)
        if name is not None:
            opts["dataset"] = name
    return opts


def _model_kwargs(mc: Component, data: Any) -> dict[str, Any]:
    from .models import MODELS

    params = inspect.signature(MODELS.spec(mc.name).factory).parameters
    out: dict[str, Any] = {}
    for k, v in mc.kwargs.items():
        if isinstance(v, list):
            v = tuple(v)
        ann = str(params[k].annotation) if k in params else ""
        if isinstance(v, (int, float)) and not isinstance(v, bool) and ("Sequence" in ann or "tuple" in ann):
            v = (v,)  # hidden=64 -> (64,)
        out[k] = v
    if out.get("normalize") == "data":  # statistics of the (clean) training inputs; labels play no part
        out["normalize"] = (float(data.x_train.mean()), float(data.x_train.std().clamp_min(1e-6)))
    return out


def build_model(mc: Component, data: Any) -> torch.nn.Module:
    """A registry model sized to ``data``, or any other model reference (checkpoint, TorchScript file,
    ``module:attribute``, ``timm:NAME``) through :func:`robustlab.models.resolve`."""
    from . import models

    if task_of(data) == "regression" and mc.name in models.MODELS:  # one output
        from .training import regression_model

        return regression_model(mc.name, input_shape=data.input_shape, **dict(mc.kwargs))
    if mc.name in models.MODELS:
        return models.create(mc.name, input_shape=data.input_shape, num_classes=data.num_classes,
                             **_model_kwargs(mc, data))
    from .models._ref import resolve as resolve_model

    return resolve_model(mc.name, input_shape=data.input_shape, num_classes=data.num_classes, **dict(mc.kwargs))


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameterError(f"Unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"Device {str(device)!r}: CUDA is not available on this machine; use 'cpu'.")
    return dev


def check_writable(out: str | os.PathLike[str]) -> Path:
    """Prove ``out`` (a run folder) writable before any work, creating nothing: a temp file is made and
    removed in the nearest existing folder, so a read-only target fails now, not after training."""
    import tempfile

    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise InvalidParameterError(f"Output folder '{p}' exists and is not a folder; choose a folder path.")
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".robustlab-write-check.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InvalidParameterError(f"Output folder '{p}' cannot be written ({e.strerror or e} in '{probe}'); "
                                    "choose a writable location.") from None
    return p


@dataclass
class RunResult:
    """What a run produced: the trained model (eval mode), its data, and the result record.

    ``metrics`` are ``(name, value, step)`` rows (step -1 when none): ``noise/realized_rate``, ``train/*``
    per evaluated epoch, ``acc/final_epoch_test`` and each evaluation's metrics. ``resolved`` holds every
    hyper-parameter the run used, defaults included.
    """

    config: Config
    model: torch.nn.Module
    data: Any  # ClassificationData, clean labels
    train_data: Any  # the labels it trained on
    noisy: Any  # NoisyLabels or None for a clean run
    history: dict[str, list[float]]
    metrics: list[tuple[str, float, int]]
    curves: dict[str, Any]
    resolved: dict[str, Any]
    timings: dict[str, float]
    artifacts: list[tuple[str, str]] = field(default_factory=list)


def _as_built(obj: Any, declared: dict[str, Any]) -> dict[str, Any]:
    """``declared`` with the values the built object holds (e.g. a ``step_size=None`` default made concrete)."""
    out = dict(declared)
    for k in declared:
        v = getattr(obj, k, None)
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


def resolve(config: Config, data: Any, noise_opts: dict[str, Any], objective: Any = None) -> dict[str, Any]:
    """Every hyper-parameter a run uses, defaults included (printed by the CLI, stored in the result)."""
    from .losses import LOSSES
    from .models import MODELS
    from .training import OBJECTIVES

    obj = resolved_kwargs(OBJECTIVES.spec(config.objective.name).factory, config.objective.kwargs)
    return {
        "noise": {"kind": config.noise.kind, "rate": config.noise.rate, **noise_opts},
        "model": (resolved_kwargs(MODELS.spec(config.model.name).factory, config.model.kwargs,
                                  skip=("input_shape", "num_classes"))
                  if config.model.name in MODELS else dict(config.model.kwargs)),
        "loss": resolved_kwargs(LOSSES.spec(config.loss.name).factory, config.loss.kwargs, skip=("num_samples",)),
        "objective": obj if objective is None else _as_built(objective, obj),
        "train": dict(config.train),
        **({"collab": config.collab.setup().to_dict()} if config.collab is not None else {}),
        "data": {"name": getattr(data, "name", config.data.name), "num_train": int(data.x_train.shape[0]),
                 "num_test": int(data.x_test.shape[0]), "num_classes": int(data.num_classes),
                 "input_shape": list(data.input_shape)},
    }


def record(config: Config) -> dict[str, Any]:
    """The flat config recorded with a checkpoint and in ``metrics.json`` (what later commands read to
    find the data: ``data``/``data_args``, with ``root`` among the args). Never holds ``download``/``mirror``."""
    c = config
    return {
        "data": c.data.name, "data_args": dict(c.data.options), "data_subset": {"n_train": c.data.n_train,
                                                                             "n_test": c.data.n_test},
        "noise": c.noise.label, "noise_kind": c.noise.kind, "noise_rate": c.noise.rate, "noise_args": dict(c.noise.options),
        "model": c.model.name, "model_args": dict(c.model.kwargs), "loss": c.loss.name, "loss_args": dict(c.loss.kwargs),
        "objective": c.objective.name, "objective_args": dict(c.objective.kwargs), **c.train, "seed": c.seed,
        **({"collab": c.collab.to_dict()} if c.collab is not None else {}),
    }


def history_metrics(hist: Mapping[str, list[float]]) -> list[tuple[str, float, int]]:
    """``train/<key>`` metric rows of a fit history: per ``epoch``; ``val_*`` per ``val_epoch``; ``selected_epoch``
    and ``stopped_epoch`` once (step -1). Used by classification and regression runs."""
    once = ("selected_epoch", "stopped_epoch")  # fit(select=...): one value each; val_* have their own epochs
    rows: list[tuple[str, float, int]] = []
    for axis, keys in (("epoch", [k for k in hist if k not in once and not k.startswith("val_")]),
                       ("val_epoch", [k for k in hist if k.startswith("val_")])):
        for i, ep in enumerate(hist.get(axis, [])):
            for k in keys:
                if k != axis and i < len(hist[k]):
                    rows.append((f"train/{k}", float(hist[k][i]), int(ep)))
    rows.extend((f"train/{k}", float(hist[k][0]), -1) for k in once if hist.get(k))
    return rows


def run(config: Config | Mapping[str, Any], *, out: str | os.PathLike[str] | None = None, checkpoint: bool = True,
        device: str | torch.device | None = None, progress: bool | None = None,
        fetch: Mapping[str, Any] | None = None, checkpoint_extra: Mapping[str, Any] | None = None,
        resume: bool = False, fit_kw: Mapping[str, Any] | None = None) -> RunResult:
    """Train and evaluate one run; write ``model.pt`` (when ``checkpoint``) and ``curves.json`` into ``out``.

    ``resume``: training keeps its resumable state in ``<out>/train_state`` after every epoch and continues
    from it when present (``fit(checkpoint_dir=..., resume=True)``; needs ``out``).
    ``fit_kw``: ``fit`` options that say how the run is launched, not what it computes, so they are not in the
    config (``distributed``, ``sync_bn``, ``dist_timeout``); under torchrun only rank 0 writes files.

    ``progress``: a bar over the training epochs; ``None`` shows it when stderr is a terminal.
    ``fetch``: ``download``/``mirror`` for the data (never recorded). ``checkpoint_extra`` is stored
    with the checkpoint next to the run's config (``extra["run_config"]``).
    """
    from ._progress import progress_enabled
    from .bench.evaluations import EvalContext, run_evaluation
    from .training import OBJECTIVES, fit

    cfg = Config.from_dict(config)
    dev = _device(device)
    out_dir = None if out is None else check_writable(out)
    timings: dict[str, float] = {}
    metrics: list[tuple[str, float, int]] = []

    t = time.perf_counter()
    d = load_data(cfg.data, fetch=fetch)
    if task_of(d) == "regression":  # a RegressionData: target noise, regression loss, fit_regression
        timings["load_s"] = time.perf_counter() - t
        return run_regression(cfg, d, out_dir=out_dir, checkpoint=checkpoint, device=dev, progress=progress,
                              checkpoint_extra=checkpoint_extra, timings=timings, resume=resume, fit_kw=fit_kw)
    check_classification_evaluations(cfg, d)  # regression evaluations refused before training
    nopts = noise_options(cfg.noise, d)
    noisy, train_data, is_noisy = None, d, None
    if cfg.noise.kind != "none":
        from . import noise

        noisy = noise.inject(d.y_train, kind=cfg.noise.kind, rate=cfg.noise.rate, num_classes=d.num_classes,
                             generator=torch.Generator().manual_seed(cfg.seed), x=d.x_train, **nopts)
        is_noisy = noisy.is_noisy
        train_data = d.with_train_labels(noisy.labels, noise=cfg.noise.label)
        metrics.append(("noise/realized_rate", float(noisy.realized_rate), -1))
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(cfg.seed)  # weight initialisation
    model = build_model(cfg.model, d)
    objective = OBJECTIVES.get(cfg.objective.name, **cfg.objective.kwargs)
    trainer: Any = fit if cfg.collab is None else cfg.collab.fit  # a collaborative run: robustlab.collab.fit
    res = trainer(model, train_data, loss=cfg.loss.name, loss_kw=dict(cfg.loss.kwargs) or None, objective=objective,
              seed=cfg.seed, progress=progress_enabled(progress), device=dev, **cfg.train,
              **({"checkpoint_dir": out_dir / "train_state", "resume": True} if resume and out_dir else {}),
              **dict(fit_kw or {}))
    model = res.model.eval()
    timings["train_s"] = time.perf_counter() - t
    hist = res.history
    metrics.extend(history_metrics(hist))
    if hist.get("test_acc"):
        metrics.append(("acc/final_epoch_test", float(hist["test_acc"][-1]), -1))

    t = time.perf_counter()
    ctx = EvalContext(model=model, data=d, train_labels=train_data.y_train, is_noisy=is_noisy, seed=cfg.seed, device=dev)
    curves: dict[str, Any] = {}
    for ev in cfg.evaluations:
        te = time.perf_counter()
        eo = run_evaluation(ev, ctx)
        metrics.extend((str(n), float(v), int(s)) for n, v, s in eo.metrics)
        curves.update(eo.curves)
        timings[f"eval_{ev['name']}_s"] = time.perf_counter() - te
    timings["eval_s"] = time.perf_counter() - t

    result = RunResult(config=cfg, model=model, data=d, train_data=train_data, noisy=noisy, history=hist,
                       metrics=metrics, curves=curves, resolved=resolve(cfg, d, nopts, objective), timings=timings)
    from .training import is_main_process

    if out_dir is not None and is_main_process():
        from .training import atomic_write_text, save_checkpoint

        out_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint:
            extra = {**dict(checkpoint_extra or {}), "config": record(cfg), "run_config": cfg.to_dict()}
            result.artifacts.append(("checkpoint", str(save_checkpoint(model, out_dir / "model.pt", extra=extra))))
        if curves:
            cp = out_dir / "curves.json"
            atomic_write_text(cp, json.dumps(curves, sort_keys=True))
            result.artifacts.append(("curves", str(cp)))
    return result
