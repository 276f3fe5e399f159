"""Spec validation building blocks: the validation context (every problem collected), axis entries, train settings.

Private to :mod:`robustlab.bench.spec`, which re-exports :class:`SpecError`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._registry import Registry
from .._validation import InvalidParameterError
from ..pipeline import FETCH_OPTIONS, TRAIN_OPTIONS, NoiseConfig, check_kwargs, check_train_options

_TRAIN_KEYS = tuple(TRAIN_OPTIONS)


def canonical_json(obj: Any) -> str:
    """Sorted-key, compact JSON with NaN forbidden: the form that is hashed."""
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class SpecError(ValueError):
    """A benchmark spec is invalid; the message names the spec, the place and the fix (``problems``: each one)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


@dataclass(frozen=True)
class _AxisValue:
    label: str
    config: Any
    train: dict[str, Any] = field(default_factory=dict)  # per-data / per-objective train overrides
    fetch: dict[str, Any] = field(default_factory=dict)  # data only: download/mirror (never in the config)
    valid: bool = True  # False: a placeholder for an entry that failed validation (its label keeps rules quiet)


# -- helpers ------------------------------------------------------------------------------------
def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class _Ctx:
    """Where validation is (the spec's name and folder) and every problem found so far."""

    def __init__(self, spec_name: str, base_dir: Path | None = None) -> None:
        self.spec = spec_name
        self.base_dir = base_dir or Path.cwd()
        self.problems: list[str] = []

    def err(self, where: str, msg: str) -> SpecError:
        return SpecError(f"spec '{self.spec}': {where}: {msg}", [f"{where}: {msg}"])

    def collect(self, fn: Any, *args: Any, default: Any = None, **kw: Any) -> Any:
        """``fn(*args)``; a SpecError (or a bad-parameter error) is recorded and ``default`` returned."""
        try:
            return fn(*args, **kw)
        except SpecError as e:
            self.problems.extend(e.problems)
        return default

    def raise_problems(self) -> None:
        if len(self.problems) == 1:
            raise SpecError(f"spec '{self.spec}': {self.problems[0]}", self.problems)
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise SpecError(f"spec '{self.spec}': {len(self.problems)} problems:\n{lines}", self.problems)

    def check_keys(self, d: dict[str, Any], allowed: tuple[str, ...] | list[str], where: str) -> None:
        for k in d:
            if k not in allowed:
                raise self.err(where, f"unknown key '{k}'.{_suggest(k, list(allowed))} Allowed: {', '.join(allowed)}.")

    def expect(self, value: Any, types: type | tuple[type, ...], where: str, what: str) -> Any:
        """Structural type check of a spec value (parameter values are checked by their declarations)."""
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.err(where, f"must be {what}. Got {value!r} instead.")
        if not isinstance(value, types):
            raise self.err(where, f"must be {what}. Got {value!r} ({type(value).__name__}) instead.")
        return value


def _jsonable(value: Any, ctx: _Ctx, where: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v, ctx, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, ctx, where) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ctx.err(where, f"must be a finite number. Got {value!r} instead.")
        return value
    raise ctx.err(where, f"must be a plain YAML value (number, string, list, mapping). Got {type(value).__name__}.")


def _registry(module: str, attr: str, what: str, ctx: _Ctx, where: str) -> Registry[Any]:
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise ctx.err(where, f"{what} needs {module}, which is not available in this installation.") from None


def _lookup(reg: Registry[Any], name: Any, ctx: _Ctx, where: str) -> Any:
    if not isinstance(name, str):
        raise ctx.err(where, f"a {reg.kind} name must be a string. Got {name!r} instead.")
    if name not in reg:
        raise ctx.err(where, reg._unknown_message(name))
    return reg.spec(name)


def _same_as_default(value: Any, default: Any) -> bool:
    """True when ``value`` (a plain JSON value) spells the factory's default (tuples as lists, 1 != 1.0 != True)."""
    if default is inspect.Parameter.empty:
        return False
    try:
        return canonical_json(value) == canonical_json(default)
    except (TypeError, ValueError):  # a default that is not JSON (a module, a nan, ...) is never dropped
        return False


def _check_kwargs(factory: Any, kwargs: dict[str, Any], ctx: _Ctx, where: str, *, skip: tuple[str, ...] = (),
                  what: str = "it") -> dict[str, Any]:
    """Refuse keyword arguments the factory does not accept (:func:`robustlab.pipeline.check_kwargs`, the
    CLI's check too); ints become floats where the default is a float.

    Arguments equal to the factory's default are dropped, so ``gce`` and ``{name: gce, q: <default>}``
    normalize to the same config (and so the same run id).
    """
    try:
        check_kwargs(factory, kwargs, what, skip=skip)
    except InvalidParameterError as e:
        raise ctx.err(where, str(e)) from None
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return kwargs
    out = {}
    for k, v in kwargs.items():
        default = params[k].default if k in params else inspect.Parameter.empty
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if _same_as_default(v, default):
            continue
        out[k] = v
    return out


def _entry(raw: Any, ctx: _Ctx, where: str, name_key: str = "name") -> tuple[str, str | None, dict[str, Any]]:
    """An axis entry is ``name`` or ``{name: ..., label: ..., **kwargs}``."""
    if isinstance(raw, str):
        return raw, None, {}
    if isinstance(raw, dict):
        raw = dict(raw)
        if name_key not in raw:
            raise ctx.err(where, f"a mapping entry needs a '{name_key}' key. Got keys {sorted(raw)}.")
        name = raw.pop(name_key)
        label = raw.pop("label", None)
        if label is not None and not isinstance(label, (str, int, float)):
            raise ctx.err(f"{where}.label", f"must be a string. Got {label!r}.")
        return name, (None if label is None else str(label)), _jsonable(raw, ctx, where)
    raise ctx.err(where, f"must be a name or a mapping with '{name_key}'. Got {raw!r} ({type(raw).__name__}).")


# -- axes ---------------------------------------------------------------------------------------
def _absolute(path: str, ctx: _Ctx) -> str:
    """A relative path is taken from the spec file's folder (the working directory for a dict spec)."""
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else Path(os.path.abspath(ctx.base_dir / p)))


def _data_axis(raw: Any, ctx: _Ctx, where: str) -> _AxisValue:
    name, label, kw = _entry(raw, ctx, where)
    if not isinstance(name, str) or not name:
        raise ctx.err(where, f"a data set name must be a non-empty string. Got {name!r} instead.")
    train = kw.pop("train", {})
    if train:
        ctx.expect(train, dict, f"{where}.train", "a mapping of train settings")
        train = _train(train, ctx, f"{where}.train", defaults=False)
    if "options" in kw:  # loader options spelled apart, e.g. a CSV's 'label' column ('label' is the display label)
        extra = ctx.expect(kw.pop("options"), dict, f"{where}.options", "a mapping of loader options")
        both = sorted(set(extra) & set(kw))
        if both:
            raise ctx.err(f"{where}.options", f"{both} given both here and beside 'name'; keep one.")
        kw.update(extra)
    data_mod = importlib.import_module("robustlab.data")
    prefix, sep, rest = name.partition(":")
    is_path = bool(sep) and prefix in data_mod._PATH_LOADERS
    fetch = {k: kw.pop(k) for k in FETCH_OPTIONS if k in kw}
    if "download" in fetch and not isinstance(fetch["download"], bool):
        raise ctx.err(f"{where}.download", f"must be true or false. Got {fetch['download']!r} instead.")
    if "mirror" in fetch and not isinstance(fetch["mirror"], str):
        raise ctx.err(f"{where}.mirror", f"must be a base URL string. Got {fetch['mirror']!r} instead.")
    sub = {}
    for key in ("n_train", "n_test"):
        if key in kw:
            v = kw.pop(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ctx.err(f"{where}.{key}", f"must be a positive int or null. Got {v!r} instead.")
            sub[key] = v
    if "root" in kw:
        root = kw.pop("root")
        if is_path:
            raise ctx.err(f"{where}.root", f"data '{name}' is named by its path; a root folder does not apply.")
        if not isinstance(root, str) or not root:
            raise ctx.err(f"{where}.root", f"must be a folder path string. Got {root!r} instead.")
        kw["root"] = _absolute(root, ctx)
    generic = _generic_data_options(kw, ctx, where)  # longtail: every data set takes it (declared in _runconfig)
    if is_path:
        if fetch:
            raise ctx.err(where, f"data '{name}' is read from its path; {sorted(fetch)} do not apply.")
        factory = data_mod._PATH_LOADERS[prefix]
        what = f"the {prefix}: loader"
        if prefix == "csv" and "target" in kw:  # a numeric target column: the regression CSV loader (data.load's rule)
            factory, what = data_mod.load_regression_csv, "the csv: regression loader (target=COLUMN)"
            if generic:
                raise ctx.err(where, f"{sorted(generic)} apply to classification sets; a regression CSV takes none.")
            if not isinstance(kw["target"], str) or not kw["target"]:
                raise ctx.err(f"{where}.target", f"must be a column name string. Got {kw['target']!r} instead.")
        options = _check_kwargs(factory, kw, ctx, where, skip=("path",), what=what)
        name = f"{prefix}:{_absolute(rest, ctx)}"
    else:
        reg = _registry("robustlab.data", "DATASETS", "data", ctx, where)
        if name not in reg and name in data_mod.REGRESSION_DATASETS:  # a regression set (own registry)
            reg = data_mod.REGRESSION_DATASETS
        spec = _lookup(reg, name, ctx, where)
        root = kw.pop("root", None)
        options = _check_kwargs(spec.factory, kw, ctx, where, skip=FETCH_OPTIONS, what=f"data set '{name}'")
        if root is not None:
            options["root"] = root
    options.update(generic)
    cfg = {"name": name, "options": options, "n_train": sub.get("n_train"), "n_test": sub.get("n_test")}
    return _AxisValue(label or str(raw.get("name") if isinstance(raw, dict) else raw), cfg, train, fetch)


def _generic_data_options(kw: dict[str, Any], ctx: _Ctx, where: str) -> dict[str, Any]:
    """Pop and validate the options every data set takes (``robustlab._runconfig.data_option_constraints``)."""
    from .._constraints import validate_params
    from .._runconfig import data_option_constraints

    declared = data_option_constraints()
    generic = {k: kw.pop(k) for k in list(kw) if k in declared}
    try:
        return validate_params(declared, generic, "data.options")
    except InvalidParameterError as e:
        raise ctx.err(where, str(e)) from None


def _noise_axis(raw: Any, ctx: _Ctx, where: str) -> _AxisValue:
    """``none``, ``kind:rate`` (parsed by ``noise.parse``) or ``{kind, rate, label, **options}``; rate 0 is the clean run."""
    label = None
    try:
        if raw is None or isinstance(raw, str):
            nc = NoiseConfig.from_value(raw)
        else:
            kind, label, kw = _entry(raw, ctx, where, name_key="kind")
            if "rate" not in kw and kind != "none":
                raise ctx.err(where, "a noise entry needs a 'rate'.")
            rate = kw.pop("rate", 0.0)
            nc = NoiseConfig.from_value({"kind": kind, "rate": rate, "options": kw})  # the rate's range lives there
    except (InvalidParameterError, KeyError) as e:
        raise ctx.err(where, str(e)) from None
    if nc.kind != "none":
        nreg = _registry("robustlab.noise", "NOISES", f"noise '{nc.kind}'", ctx, where)
        if nc.kind not in nreg:  # regression target noise (own registry)
            nreg = _registry("robustlab.noise", "TARGET_NOISES", f"noise '{nc.kind}'", ctx, where)
        nspec = _lookup(nreg, nc.kind, ctx, where)
        options = _check_kwargs(nspec.factory, nc.options, ctx, where, skip=("rate", "num_classes", "y", "s", "g"),
                                what=f"noise '{nc.kind}'")
        nc = NoiseConfig(nc.kind, nc.rate, options)
    return _AxisValue(label or nc.label, nc.to_dict())


def _named_axis(module: str, attr: str, what: str, skip: tuple[str, ...]):  # noqa: ANN202
    def build(raw: Any, ctx: _Ctx, where: str) -> _AxisValue:
        name, label, kw = _entry(raw, ctx, where)
        train = kw.pop("train", {}) if what == "objective" else {}
        reg = _registry(module, attr, what, ctx, where)
        if what == "loss" and isinstance(name, str) and name not in reg:  # regression losses (own registry)
            reg = _registry(module, "REGRESSION_LOSSES", what, ctx, where) if name in \
                _registry(module, "REGRESSION_LOSSES", what, ctx, where) else reg
        if what == "model" and isinstance(name, str) and name not in reg and _model_ref(name, ctx) is not None:
            # a model file, module:attribute factory or timm:NAME: resolved when the grid is checked
            return _AxisValue(label or name, {"name": _model_ref(name, ctx), "kwargs": kw})
        spec = _lookup(reg, name, ctx, where)
        normalize = kw.pop("normalize", None) if what == "model" else None
        kw = _check_kwargs(spec.factory, kw, ctx, where, skip=skip, what=f"{what} '{name}'")
        if normalize is not None:
            # input normalization inside the model: "data" = the training inputs' scalar mean/std
            ok = normalize == "data" or (isinstance(normalize, list) and len(normalize) == 2)
            if not ok:
                raise ctx.err(f"{where}.normalize", f"must be 'data' or a [mean, std] pair. Got {normalize!r} instead.")
            kw["normalize"] = normalize
        if what == "objective":  # cheap to build: catches bad values now, not mid-sweep
            try:
                reg.get(name, **kw)
            except (TypeError, ValueError) as e:
                raise ctx.err(where, str(e)) from None
        if what == "loss":  # values against the declared constraints (per-sample state is sized by fit only)
            _check_loss_values(spec.factory, kw, ctx, where)
        if train:
            ctx.expect(train, dict, f"{where}.train", "a mapping of train settings")
            train = _train(train, ctx, f"{where}.train", defaults=False)
        return _AxisValue(label or name, {"name": name, "kwargs": kw}, train)

    return build


_MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".jit")


def _model_ref(name: str, ctx: _Ctx) -> str | None:
    """A non-registry model reference as the config records it (file paths made absolute), or None."""
    import re

    prefix, sep, rest = name.partition(":")
    if sep and prefix == "timm" or re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", name):
        return name
    if sep and prefix in ("checkpoint", "torchscript"):
        return f"{prefix}:{_absolute(rest, ctx)}"
    if os.sep in name or "/" in name or name.endswith(_MODEL_FILE_SUFFIXES) or (ctx.base_dir / name).exists():
        return _absolute(name, ctx)
    return None


def _check_loss_values(factory: Any, kw: dict[str, Any], ctx: _Ctx, where: str) -> None:
    """Loss hyper-parameters against their declared constraints (an undeclared loss is checked by the grid
    check's dry run, where ``fit`` sizes its per-sample state; nothing here sizes it)."""
    declared = getattr(factory, "parameter_constraints", None)
    if not callable(declared):
        return
    from .._constraints import validate_params

    cons = {k: c for k, c in declared().items() if k in kw}
    try:
        validate_params(cons, {k: kw[k] for k in cons}, getattr(factory, "__name__", "loss"))
    except (TypeError, ValueError) as e:
        raise ctx.err(where, str(e)) from None


_AXIS_BUILDERS = {
    "data": _data_axis,
    "noise": _noise_axis,
    "model": _named_axis("robustlab.models", "MODELS", "model", ("input_shape", "num_classes")),
    "loss": _named_axis("robustlab.losses", "LOSSES", "loss", ("num_samples",)),
    "objective": _named_axis("robustlab.training.objectives", "OBJECTIVES", "objective", ()),
}


def _train(raw: dict[str, Any], ctx: _Ctx, where: str, *, defaults: bool = True) -> dict[str, Any]:
    """Train settings checked against :data:`robustlab.pipeline.TRAIN_OPTIONS` (``fit``'s ranges)."""
    ctx.check_keys(raw, _TRAIN_KEYS, where)
    out = check_train_options({}) if defaults else {}
    for k, v in raw.items():
        try:
            out.update(check_train_options({k: v}, fill_defaults=False))
        except InvalidParameterError as e:
            ctx.problems.append(f"{where}.{k}: {e}")
    return out
