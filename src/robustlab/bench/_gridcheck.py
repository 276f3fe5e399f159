"""``check_spec``: everything a sweep needs, checked before anything is launched.

:func:`~robustlab.bench.spec.load_spec` checks a spec's structure, names and values without loading
data. :func:`check_spec` then loads every data set (fetching it only when the spec itself says
``download``), checks each requested ``n_train``/``n_test`` against the split sizes, builds every noise
process for each data set's classes and every model for each data set's shape, and raises one
:class:`~robustlab.bench.spec.SpecError` listing all problems, so a bad grid fails in seconds, not
mid-sweep. With ``dry_run`` (the default) every distinct (data, model, loss, objective) of the grid also
takes one training step on four examples, which catches what only running shows (a model whose input
width does not fit the data, an objective the model does not support, ...). ``robustlab bench check SPEC`` runs only this; ``robustlab bench run`` runs it first.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .. import pipeline
from .spec import BenchSpec, SpecError, load_spec

__all__ = ["check_spec"]


def _text(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg if isinstance(e, (ValueError, TypeError, OSError, KeyError)) else f"{type(e).__name__}: {msg}"


def check_spec(spec: str | os.PathLike[str] | dict[str, Any] | BenchSpec, *, fetch: bool = True,
               dry_run: bool = True) -> BenchSpec:
    """Validate ``spec`` and its whole grid (see the module docstring); return the :class:`BenchSpec`.

    ``fetch=False`` ignores the spec's ``download``/``mirror`` (a missing data set is then a problem).
    ``dry_run=False`` skips the one-step training of each distinct (data, model, loss, objective).
    """
    bs = load_spec(spec)
    problems: list[str] = []
    loaded: list[tuple[str, Any]] = []
    by_label: dict[str, Any] = {}
    for i, dv in enumerate(bs.axes["data"]):
        where = f"data[{i}] ({dv.label})"
        dc = pipeline.DataConfig.from_value(dv.config)
        try:
            d = pipeline.load_data(dc, fetch=dv.fetch if fetch else None)
        except Exception as e:  # any failure to load is a problem of this spec entry, reported with the rest
            problems.append(f"{where}: cannot be loaded: {_text(e)}")
            continue
        for key, split in (("n_train", d.x_train), ("n_test", d.x_test)):
            want = getattr(dc, key)
            if want is not None and split.shape[0] < want:
                problems.append(f"{where}.{key}: asks for {want} examples but the split has {split.shape[0]}.")
        if d.x_train.shape[0] == 0:
            problems.append(f"{where}: the train split is empty; for a test-set-only folder add "
                            "use_test_split_as_train: 0.8.")
            continue
        loaded.append((where, d))
        by_label[dv.label] = d
    for where, d in loaded:
        for j, nv in enumerate(bs.axes["noise"]):
            nc = pipeline.NoiseConfig.from_value(nv.config)
            if nc.kind == "none":
                continue
            try:
                from .. import noise

                if pipeline.task_of(d) == "regression":  # target noise on a few targets
                    noise.inject_targets(d.y_train[:8], kind=nc.kind, rate=nc.rate, **nc.options)
                else:
                    noise.get(nc.kind, rate=nc.rate, num_classes=d.num_classes, **pipeline.noise_options(nc, d))
            except Exception as e:  # noqa: BLE001
                problems.append(f"noise[{j}] ({nv.label}) on {where}: {_text(e)}")
        for j, mv in enumerate(bs.axes["model"]):
            try:
                with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
                    pipeline.build_model(pipeline.Component.from_value(mv.config, "model"), d)
            except Exception as e:  # noqa: BLE001
                problems.append(f"models[{j}] ({mv.label}) on {where}: {_text(e)}")
    if dry_run and not problems:
        problems += _dry_run(bs, by_label)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n{lines}"
        raise SpecError(f"spec '{bs.name}': {head}", problems)
    return bs


_STEP_OPTIONS = ("optimizer", "lr", "momentum", "weight_decay", "schedule", "augment", "precision")


def _dry_run(bs: BenchSpec, data: dict[str, Any]) -> list[str]:
    """One training step on four examples for every distinct (data, model, loss, objective) of the grid."""
    from ..training import OBJECTIVES, fit
    from .spec import expand

    problems: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for rc in expand(bs):
        key = tuple(str(rc.labels[a]) for a in ("data", "model", "loss", "objective"))
        if key in seen or key[0] not in data:
            continue
        seen.add(key)
        cfg = pipeline.Config.from_dict(rc.config)
        d = data[key[0]]
        tiny = d.subset(n_train=min(4, d.x_train.shape[0]), n_test=min(4, d.x_test.shape[0]))
        # the step itself: options about epochs, held-out selection or early stopping do not apply to 4 examples
        train = {k: v for k, v in cfg.train.items() if k in _STEP_OPTIONS}
        train.update(epochs=1, batch_size=4, eval_every=0)
        try:
            with torch.random.fork_rng(devices=[]):
                model = pipeline.build_model(cfg.model, tiny)
                if pipeline.task_of(tiny) == "regression":
                    from .._regression_run import check_regression_config
                    from ..training import fit_regression

                    check_regression_config(cfg, tiny)
                    fit_regression(model, tiny, loss=cfg.loss.name, loss_kw=dict(cfg.loss.kwargs) or None, **train)
                    continue
                fit(model, tiny, loss=cfg.loss.name, loss_kw=dict(cfg.loss.kwargs) or None,
                    objective=OBJECTIVES.get(cfg.objective.name, **cfg.objective.kwargs), progress=False, **train)
        except Exception as e:  # noqa: BLE001 (reported with the rest)
            what = " ".join(f"{a}={v}" for a, v in zip(("data", "model", "loss", "objective"), key))
            problems.append(f"runs with {what}: one training step fails: {_text(e)}")
    return problems
