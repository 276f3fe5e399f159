"""A run's configuration: :class:`Config` and its parts, train options and keyword checks (``robustlab.pipeline``'s).

Private module; everything here is re-exported by :mod:`robustlab.pipeline`, which documents the rules.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._validation import InvalidParameterError, check_in_range, check_int

SCHEMA_VERSION = 1
# The axes of a run, in display order: the one table read by the bench spec, the results store,
# the report and the CLI (a bench spec writes the plural form as its top-level key).
AXES = ("data", "noise", "model", "loss", "objective", "seed")
FETCH_OPTIONS = ("download", "mirror")
#: The axes of a collaborative run (a config's ``collab`` section, robustlab.collab), in display order: the bench
#: spec's ``collab`` block, the run labels, the report's accuracy-vs-f plots and the CLI read them.
COLLAB_AXES = ("aggregator", "byzantine", "f", "workers", "heterogeneity")


def _train_constraints() -> dict[str, Any]:
    from numbers import Integral, Real

    from ._constraints import AnyOf, Interval, Options
    from .training._fit import OPTIMIZERS, PRECISIONS, SCHEDULES
    from .training._select import SELECT_METRICS
    from .training.augment import AUGMENTATIONS

    return {
        "epochs": Interval(Integral, 1, None, closed="left"),
        "batch_size": Interval(Integral, 1, None, closed="left"),
        "optimizer": Options(OPTIMIZERS),
        "lr": Interval(Real, 0.0, None, closed="neither"),
        "momentum": Interval(Real, 0.0, 1.0, closed="left"),
        "weight_decay": Interval(Real, 0.0, None, closed="left"),
        "schedule": Options(SCHEDULES),
        "eval_every": Interval(Integral, 0, None, closed="left"),
        "augment": Options((None, *AUGMENTATIONS.available())),
        "precision": Options(PRECISIONS),
        "select": Options((None, *SELECT_METRICS)),
        "select_every": Interval(Integral, 1, None, closed="left"),
        "val_fraction": AnyOf(Options((None,)), Interval(Real, 0.0, 1.0, closed="left")),
        "patience": AnyOf(Options((None,)), Interval(Integral, 1, None, closed="left")),
        "ema": AnyOf(Options((None,)), Interval(Real, 0.0, 1.0, closed="neither")),
    }


def data_option_constraints() -> dict[str, Any]:
    """The options every data set takes (``data.load(name, longtail=0.1)``, ``data.options`` in a spec,
    ``--data-arg longtail=0.1``), declared once: ``longtail`` = imbalance ratio rho in (0, 1] of the
    exponential long-tail profile of the train split, ``longtail_seed`` = which examples are kept."""
    from numbers import Integral, Real

    from ._constraints import Interval

    return {"longtail": Interval(Real, 0.0, 1.0, closed="right"),
            "longtail_seed": Interval(Integral, 0, None, closed="left")}


#: The train options of a run (``fit``'s keyword arguments) and the constraints they must meet (the same
#: ranges ``fit`` enforces), declared once for the bench spec, the CLI and :class:`Config`.
TRAIN_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "eval_every",
                 "augment", "precision", "select", "select_every", "val_fraction", "patience", "ema")
#: Options added after run ids were first stored: recorded only when set to something other than ``fit``'s
#: default (``augment: none`` = no augmentation), so the configs and ids of earlier runs are unchanged.
ADDED_TRAIN_OPTIONS = {"augment": (None, "none"), "precision": ("fp32",), "select": (None,), "select_every": (1,),
                       "val_fraction": (None,), "patience": (None,), "ema": (None,)}


def train_defaults() -> dict[str, Any]:
    """``fit``'s defaults for :data:`TRAIN_OPTIONS`."""
    from .training import fit

    params = inspect.signature(fit).parameters
    return {k: params[k].default for k in TRAIN_OPTIONS if k not in ADDED_TRAIN_OPTIONS}


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
    for k, defaults in ADDED_TRAIN_OPTIONS.items():
        if k in out and out[k] in defaults:
            del out[k]
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
        """``"digits"``, a :class:`robustlab.data.DataRef`, or ``{"name": ..., "root": ..., "options": {...},
        "n_train": ..., "n_test": ...}`` (``root`` is kept among the options, as the loader takes it)."""
        if isinstance(value, DataConfig):
            return value
        if isinstance(value, str):
            value = {"name": value}
        elif hasattr(value, "to_config") and hasattr(value, "root"):  # a DataRef
            value = value.to_config()
        d = _mapping(value, "data")
        keys = ["name", "root", "options", "n_train", "n_test"]
        unknown = [k for k in d if k not in keys]
        if unknown:
            raise InvalidParameterError(_unknown(unknown, keys, "'data'"))
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(f"'data.name' must be a data set name or path form. Got {name!r} instead.")
        opts = _mapping(d.get("options"), "data.options")
        if d.get("root") is not None:
            if "root" in opts and opts["root"] != d["root"]:
                raise InvalidParameterError(f"'data.root' ({d['root']!r}) and 'data.options.root' ({opts['root']!r}) "
                                            "disagree; give one.")
            if not isinstance(d["root"], str):
                raise InvalidParameterError(f"'data.root' must be a folder path string. Got {d['root']!r} instead.")
            opts["root"] = d["root"]
        from ._constraints import validate_params

        generic = data_option_constraints()
        opts.update(validate_params(generic, {k: v for k, v in opts.items() if k in generic}, "data.options"))
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
            if kind != "none" and "rate" not in d:
                raise InvalidParameterError(f"Noise {kind!r} needs a 'rate' in [0, 1). Got {value!r}.")
            if kind == "none":
                if rate not in (0, 0.0) or opts:
                    raise InvalidParameterError(f"Noise kind 'none' takes rate 0 and no options. Got {value!r}.")
                return cls()
            if not isinstance(kind, str):
                raise InvalidParameterError(f"'noise.kind' must be a str. Got {kind!r} instead.")
            noise.kind_spec(kind)  # unknown kind: "Did you mean" + the list (label or target noise)
            rate = float(check_in_range(rate, "rate", 0.0, 1.0, closed="left", owner="noise"))
        if rate == 0.0:
            return cls()
        check_kwargs(noise.kind_spec(kind).factory, opts, f"noise '{kind}'", skip=("rate", "num_classes", "y", "s", "g"))
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
    collab: Any = None  # robustlab.collab.CollabConfig: collaborative training (absent from to_dict when None)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | Config) -> Config:
        """Validate a plain dict (the bench's normalized config, or a hand-written one) into a Config.

        ``data``/``model``/``loss``/``objective`` may be names or mappings, ``noise`` a ``noise.parse``
        string; missing train options take ``fit``'s defaults.
        """
        if isinstance(raw, Config):
            return raw
        d = _mapping(raw, "config")
        keys = ["schema", "data", "noise", "model", "loss", "objective", "train", "evaluations", "seed", "collab"]
        unknown = [k for k in d if k not in keys]
        if unknown:
            raise InvalidParameterError(_unknown(unknown, keys, "a run config"))
        collab = _collab(d.get("collab"), d)
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
            collab=collab,
        )

    def to_dict(self) -> dict[str, Any]:
        """The normalized, JSON-able form (what a bench hashes into the run id)."""
        return {"schema": SCHEMA_VERSION, "data": self.data.to_dict(), "noise": self.noise.to_dict(),
                "model": self.model.to_dict(), "loss": self.loss.to_dict(), "objective": self.objective.to_dict(),
                "train": dict(self.train), "evaluations": [dict(e) for e in self.evaluations], "seed": self.seed,
                **({"collab": self.collab.to_dict()} if self.collab is not None else {})}


def _collab(value: Any, d: Mapping[str, Any]) -> Any:
    """The validated ``collab`` section (None for a plain run); refuses objectives/train options it cannot run."""
    if value is None:
        return None
    from .collab import CollabConfig

    cc = CollabConfig.from_value(value)
    assert cc is not None  # value is not None
    obj = d.get("objective", "standard")
    cc.check_compatible(obj if isinstance(obj, str) else _mapping(obj, "objective").get("name", ""),
                        check_train_options(_mapping(d.get("train"), "train"), fill_defaults=False))
    return cc
