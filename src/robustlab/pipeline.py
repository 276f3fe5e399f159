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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._validation import InvalidParameterError, check_in_range, check_int

__all__ = [
    "AXES", "FETCH_OPTIONS", "TRAIN_OPTIONS", "Component", "Config", "DataConfig", "NoiseConfig", "RunResult",
    "accepted_kwargs", "asymmetric_map_for", "build_model", "check_kwargs", "check_train_options", "check_writable",
    "data_ref", "load_data", "noise_options", "record", "resolve", "resolved_kwargs", "run", "train_defaults",
]

SCHEMA_VERSION = 1
# The axes of a run, in display order: the one table read by the bench spec, the results store,
# the report and the CLI (a bench spec writes the plural form as its top-level key).
AXES = ("data", "noise", "model", "loss", "objective", "seed")
FETCH_OPTIONS = ("download", "mirror")


def _train_constraints() -> dict[str, Any]:
    from numbers import Integral, Real

    from ._constraints import Interval, Options
    from .training._fit import OPTIMIZERS, SCHEDULES

    return {
        "epochs": Interval(Integral, 1, None, closed="left"),
        "batch_size": Interval(Integral, 1, None, closed="left"),
        "optimizer": Options(OPTIMIZERS),
        "lr": Interval(Real, 0.0, None, closed="neither"),
        "momentum": Interval(Real, 0.0, 1.0, closed="left"),
        "weight_decay": Interval(Real, 0.0, None, closed="left"),
        "schedule": Options(SCHEDULES),
        "eval_every": Interval(Integral, 0, None, closed="left"),
    }


#: The train options of a run (``fit``'s keyword arguments) and the constraints they must meet (the same
#: ranges ``fit`` enforces), declared once for the bench spec, the CLI and :class:`Config`.
TRAIN_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "eval_every")


def train_defaults() -> dict[str, Any]:
    """``fit``'s defaults for :data:`TRAIN_OPTIONS`."""
    from .training import fit

    params = inspect.signature(fit).parameters
    return {k: params[k].default for k in TRAIN_OPTIONS}


def check_train_options(options: Mapping[str, Any], *, fill_defaults: bool = True) -> dict[str, Any]:
    """Validate train options against :data:`TRAIN_OPTIONS`; ints become floats where a float is due.

    Raises :class:`~robustlab._validation.InvalidParameterError` naming the option, the value and the
    accepted range. ``fill_defaults`` adds ``fit``'s default for every option not given.
    """
    if not isinstance(options, Mapping):
        raise InvalidParameterError(f"The train options must be a mapping. Got {type(options).__name__} instead.")
    unknown = [k for k in options if k not in TRAIN_OPTIONS]
    if unknown:
        raise InvalidParameterError(_unknown(unknown, list(TRAIN_OPTIONS), "the train options"))
    from ._constraints import validate_params

    out = train_defaults() if fill_defaults else {}
    out.update(validate_params(_train_constraints(), dict(options), "fit"))
    return out


def _unknown(unknown: list[str], accepted: list[str], what: str, spell: Callable[[str], str] = str) -> str:
    import difflib

    hint = ""
    if len(unknown) == 1:
        close = difflib.get_close_matches(unknown[0], accepted, n=1, cutoff=0.5)
        hint = f" Did you mean '{spell(close[0])}'?" if close else ""
    names = ", ".join(f"'{spell(k)}'" for k in unknown)
    return (f"unknown parameter{'s' if len(unknown) > 1 else ''} {names} for {what}.{hint} "
            f"Accepted: {', '.join(spell(a) for a in accepted) or '(none)'}.")


def accepted_kwargs(factory: Any, skip: tuple[str, ...] = ()) -> tuple[list[str], bool] | None:
    """Keyword names ``factory`` accepts (minus ``skip``) and whether it takes ``**kwargs``; None if unknown."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    names = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
             and n not in skip and n != "self"]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    declared = getattr(factory, "parameter_constraints", None)  # a class declaring its **hparams (losses)
    if var_kw and callable(declared):
        try:
            names += [n for n in declared() if n not in names and n not in skip]
            var_kw = False
        except TypeError:
            pass
    return names, var_kw


def check_kwargs(factory: Any, kwargs: Mapping[str, Any], what: str, *, skip: tuple[str, ...] = (),
                 spell: Callable[[str], str] = str) -> None:
    """Refuse keyword arguments ``factory`` does not accept, naming them, a close match and the accepted ones.

    ``what`` names the thing (``"loss 'gce'"``); ``spell`` shows a name (the CLI writes ``--step-size``).
    Used by the bench spec and the CLI alike.
    """
    acc = accepted_kwargs(factory, skip)
    if acc is None or acc[1]:
        return
    unknown = [k for k in kwargs if k not in acc[0]]
    if unknown:
        raise InvalidParameterError(_unknown(unknown, acc[0], what, spell))


def resolved_kwargs(factory: Any, kwargs: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every keyword ``factory`` will see: its JSON-able signature defaults overridden by ``kwargs``."""
    out: dict[str, Any] = {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    for n, p in params.items():
        if n in skip or n == "self" or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            try:
                json.dumps(p.default, allow_nan=False)
            except (TypeError, ValueError):
                continue
            out[n] = list(p.default) if isinstance(p.default, tuple) else p.default
    out.update({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    return out


# -- the config ---------------------------------------------------------------------------------
def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParameterError(f"'{where}' must be a mapping. Got {value!r} instead.")
    return {str(k): v for k, v in value.items()}


@dataclass(frozen=True)
class DataConfig:
    """A data set: registry name or path form (``csv:<path>``) with options, optionally cut to ``n_train``/``n_test``."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    n_train: int | None = None
    n_test: int | None = None

    @classmethod
    def from_value(cls, value: Any) -> DataConfig:
        """``"digits"`` or ``{"name": ..., "options": {...}, "n_train": ..., "n_test": ...}``."""
        if isinstance(value, DataConfig):
            return value
        if isinstance(value, str):
            value = {"name": value}
        d = _mapping(value, "data")
        unknown = [k for k in d if k not in ("name", "options", "n_train", "n_test")]
        if unknown:
            raise InvalidParameterError(_unknown(unknown, ["name", "options", "n_train", "n_test"], "'data'"))
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(f"'data.name' must be a data set name or path form. Got {name!r} instead.")
        opts = _mapping(d.get("options"), "data.options")
        fetch = sorted(set(opts) & set(FETCH_OPTIONS))
        if fetch:
            raise InvalidParameterError(
                f"'data.options' may not hold {fetch}: options that fetch or write are passed as run(..., fetch=...) "
                "and are never part of a recorded config.")
        sizes = {}
        for key in ("n_train", "n_test"):
            v = d.get(key)
            sizes[key] = None if v is None else check_int(v, key, 1, None, owner="data")
        return cls(name, opts, sizes["n_train"], sizes["n_test"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "n_train": self.n_train, "n_test": self.n_test}


@dataclass(frozen=True)
class NoiseConfig:
    """Label noise ``kind`` at ``rate`` with kind ``options``; ``kind="none"`` (rate 0) is the clean run."""

    kind: str = "none"
    rate: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Any) -> NoiseConfig:
        """``None``, ``"none"``, ``"symmetric:0.4"`` (parsed by ``noise.parse``) or ``{"kind", "rate", "options"}``."""
        from . import noise

        if isinstance(value, NoiseConfig):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            kind, rate = noise.parse(value)
            opts: dict[str, Any] = {}
        else:
            d = _mapping(value, "noise")
            unknown = [k for k in d if k not in ("kind", "rate", "options")]
            if unknown:
                raise InvalidParameterError(_unknown(unknown, ["kind", "rate", "options"], "'noise'"))
            kind, rate, opts = d.get("kind", "none"), d.get("rate", 0.0), _mapping(d.get("options"), "noise.options")
            if kind == "none":
                if rate not in (0, 0.0) or opts:
                    raise InvalidParameterError(f"Noise kind 'none' takes rate 0 and no options. Got {value!r}.")
                return cls()
            if not isinstance(kind, str):
                raise InvalidParameterError(f"'noise.kind' must be a str. Got {kind!r} instead.")
            noise.NOISES.spec(kind)  # unknown kind: "Did you mean" + the list
            rate = float(check_in_range(rate, "rate", 0.0, 1.0, closed="left", owner="noise"))
        if rate == 0.0:
            return cls()
        check_kwargs(noise.NOISES.spec(kind).factory, opts, f"noise '{kind}'", skip=("rate", "num_classes"))
        return cls(kind, float(rate), opts)

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.rate:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate, "options": dict(self.options)}


@dataclass(frozen=True)
class Component:
    """A registry name with keyword arguments (model, loss or objective)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Any, what: str) -> Component:
        if isinstance(value, Component):
            return value
        if isinstance(value, str):
            value = {"name": value}
        d = _mapping(value, what)
        unknown = [k for k in d if k not in ("name", "kwargs")]
        if unknown:
            raise InvalidParameterError(_unknown(unknown, ["name", "kwargs"], f"'{what}'"))
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(f"'{what}.name' must be a registry name. Got {name!r} instead.")
        return cls(name, _mapping(d.get("kwargs"), f"{what}.kwargs"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs)}


@dataclass(frozen=True)
class Config:
    """One run: what to train on, how, and what to measure. Build it with :meth:`from_dict`."""

    data: DataConfig
    noise: NoiseConfig = NoiseConfig()
    model: Component = Component("mlp")
    loss: Component = Component("ce")
    objective: Component = Component("standard")
    train: dict[str, Any] = field(default_factory=train_defaults)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | Config) -> Config:
        """Validate a plain dict (the bench's normalized config, or a hand-written one) into a Config.

        ``data``/``model``/``loss``/``objective`` may be names or mappings, ``noise`` a ``noise.parse``
        string; missing train options take ``fit``'s defaults.
        """
        if isinstance(raw, Config):
            return raw
        d = _mapping(raw, "config")
        keys = ["schema", "data", "noise", "model", "loss", "objective", "train", "evaluations", "seed"]
        unknown = [k for k in d if k not in keys]
        if unknown:
            raise InvalidParameterError(_unknown(unknown, keys, "a run config"))
        if d.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise InvalidParameterError(f"Run config schema {d['schema']!r} is not supported (expected {SCHEMA_VERSION}).")
        if "data" not in d:
            raise InvalidParameterError("A run config needs 'data' (a data set name or {name: ..., options: ...}).")
        evals = d.get("evaluations") or []
        if not isinstance(evals, list) or not all(isinstance(e, Mapping) and isinstance(e.get("name"), str) for e in evals):
            raise InvalidParameterError(f"'evaluations' must be a list of mappings with a 'name'. Got {evals!r} instead.")
        return cls(
            data=DataConfig.from_value(d["data"]),
            noise=NoiseConfig.from_value(d.get("noise")),
            model=Component.from_value(d.get("model", "mlp"), "model"),
            loss=Component.from_value(d.get("loss", "ce"), "loss"),
            objective=Component.from_value(d.get("objective", "standard"), "objective"),
            train=check_train_options(_mapping(d.get("train"), "train")),
            evaluations=[dict(e) for e in evals],
            seed=check_int(d.get("seed", 0), "seed", 0, None, owner="run config"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The normalized, JSON-able form (what a bench hashes into the run id)."""
        return {"schema": SCHEMA_VERSION, "data": self.data.to_dict(), "noise": self.noise.to_dict(),
                "model": self.model.to_dict(), "loss": self.loss.to_dict(), "objective": self.objective.to_dict(),
                "train": dict(self.train), "evaluations": [dict(e) for e in self.evaluations], "seed": self.seed}


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
    """Load a data set by its config; ``fetch`` (``download``/``mirror``) comes from the caller only."""
    dc = DataConfig.from_value(data)
    d = data_ref(dc, fetch=fetch).load()
    if dc.n_train or dc.n_test:
        d = d.subset(n_train=dc.n_train, n_test=dc.n_test)
    return d


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
    }


def run(config: Config | Mapping[str, Any], *, out: str | os.PathLike[str] | None = None, checkpoint: bool = True,
        device: str | torch.device | None = None, progress: bool | None = None,
        fetch: Mapping[str, Any] | None = None, checkpoint_extra: Mapping[str, Any] | None = None) -> RunResult:
    """Train and evaluate one run; write ``model.pt`` (when ``checkpoint``) and ``curves.json`` into ``out``.

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
    res = fit(model, train_data, loss=cfg.loss.name, loss_kw=dict(cfg.loss.kwargs) or None, objective=objective,
              seed=cfg.seed, progress=progress_enabled(progress), device=dev, **cfg.train)
    model = res.model.eval()
    timings["train_s"] = time.perf_counter() - t
    hist = res.history
    for i, ep in enumerate(hist.get("epoch", [])):
        for k, vals in hist.items():
            if k != "epoch" and i < len(vals):
                metrics.append((f"train/{k}", float(vals[i]), int(ep)))
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
    if out_dir is not None:
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
