"""Benchmark specs: YAML -> validated :class:`BenchSpec` -> :func:`expand` -> list of :class:`RunConfig`.

A spec names the grid axes (``data``, ``noise``, ``models``, ``losses``, ``objectives``, ``seeds``),
the shared ``train`` settings and the ``evaluations``. The grid is the product of the axes, minus the
points matched by an ``exclude`` rule, plus those matched by an ``include`` rule (GitHub-Actions
style). A run's id is the SHA-256 of its normalized config (canonical JSON), so the same experiment
gets the same id in every spec, and execution options (workers, executor, paths) never change it.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import inspect
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._registry import Registry

__all__ = [
    "AXES", "BenchSpec", "RunConfig", "SCHEMA_VERSION", "SPECS", "SpecError", "canonical_json", "expand",
    "load_spec", "run_id",
]

SCHEMA_VERSION = 1
AXES = ("data", "noise", "model", "loss", "objective", "seed")
_AXIS_KEYS = {"data": "data", "noise": "noise", "models": "model", "losses": "loss", "objectives": "objective"}
_TOP_KEYS = ("name", "description", "data", "noise", "models", "losses", "objectives", "seeds", "train",
             "evaluations", "exclude", "include", "run")
_TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "eval_every")
_RUN_KEYS = ("timeout_s", "checkpoints", "num_gpus", "device")
_SPEC_DIR = Path(__file__).parent / "specs"


class SpecError(ValueError):
    """A benchmark spec is invalid; the message names the spec, the place and the fix."""


# -- shipped specs ------------------------------------------------------------------------------
SPECS: Registry[Path] = Registry("spec")


def _register_shipped() -> None:
    for path in sorted(_SPEC_DIR.glob("*.yaml")):
        name = path.stem
        try:
            import yaml

            doc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except Exception:  # a broken shipped spec must not break `import robustlab.bench`
            doc = ""
        SPECS.register(name, tags={"shipped"}, doc=str(doc).strip().split("\n")[0])(lambda p=path: p)


_register_shipped()


# -- canonical form and hashing -----------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Sorted-key, compact JSON with NaN forbidden: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_id(config: dict[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of a normalized run config."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunConfig:
    """One grid point: ``config`` (normalized, hashed) and display ``labels`` per axis (not hashed)."""

    spec: str
    labels: dict[str, Any]
    config: dict[str, Any]

    @property
    def id(self) -> str:
        return run_id(self.config)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def describe(self) -> str:
        return " ".join(f"{a}={self.labels[a]}" for a in AXES)


@dataclass(frozen=True)
class _AxisValue:
    label: str
    config: Any
    train: dict[str, Any] = field(default_factory=dict)  # per-data / per-objective train overrides


@dataclass
class BenchSpec:
    """A validated spec (use :func:`load_spec`; :func:`expand` gives the grid)."""

    name: str
    description: str
    axes: dict[str, list[_AxisValue]]
    train: dict[str, Any]
    evaluations: list[tuple[dict[str, Any], dict[str, Any]]]  # (normalized kwargs incl. name, when-rule)
    exclude: list[dict[str, list[Any]]]
    include: list[dict[str, list[Any]]]
    run: dict[str, Any]
    source: dict[str, Any]
    path: str | None = None

    def to_json(self) -> str:
        return canonical_json(self.source)


# -- helpers ------------------------------------------------------------------------------------
def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class _Ctx:
    def __init__(self, spec_name: str) -> None:
        self.spec = spec_name

    def err(self, where: str, msg: str) -> SpecError:
        return SpecError(f"spec '{self.spec}': {where}: {msg}")

    def check_keys(self, d: dict[str, Any], allowed: tuple[str, ...] | list[str], where: str) -> None:
        for k in d:
            if k not in allowed:
                raise self.err(where, f"unknown key '{k}'.{_suggest(k, list(allowed))} Allowed: {', '.join(allowed)}.")

    def expect(self, value: Any, types: type | tuple[type, ...], where: str, what: str) -> Any:
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


def _check_kwargs(factory: Any, kwargs: dict[str, Any], ctx: _Ctx, where: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Reject keyword arguments the factory does not accept; ints become floats where the default is a float.

    Arguments equal to the factory's default are dropped, so ``gce`` and ``{name: gce, q: <default>}``
    normalize to the same config (and so the same run id).
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return kwargs
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    allowed = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in skip
               and n != "self"]
    out = {}
    for k, v in kwargs.items():
        if k not in allowed:
            raise ctx.err(where, f"unknown parameter '{k}'.{_suggest(k, allowed)} Accepted: {', '.join(allowed) or '(none)'}.")
        default = params[k].default
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
def _data_axis(raw: Any, ctx: _Ctx, where: str) -> _AxisValue:
    name, label, kw = _entry(raw, ctx, where)
    train = kw.pop("train", {})
    if train:
        ctx.expect(train, dict, f"{where}.train", "a mapping of train settings")
        train = _train(train, ctx, f"{where}.train", defaults=False)
    reg = _registry("robustlab.data", "DATASETS", "data", ctx, where)
    prefix, sep, _ = str(name).partition(":")
    path_loaders = getattr(importlib.import_module("robustlab.data"), "_PATH_LOADERS", {})
    spec = None if (sep and prefix in path_loaders) else _lookup(reg, name, ctx, where)  # "csv:<path>" etc.
    sub = {}
    for key in ("n_train", "n_test"):
        if key in kw:
            v = kw.pop(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ctx.err(f"{where}.{key}", f"must be a positive int or null. Got {v!r} instead.")
            sub[key] = v
    options = _check_kwargs(spec.factory, kw, ctx, where, skip=("root",)) if spec is not None else kw
    cfg = {"name": name, "options": options, "n_train": sub.get("n_train"), "n_test": sub.get("n_test")}
    return _AxisValue(label or name, cfg, train)


def _noise_axis(raw: Any, ctx: _Ctx, where: str) -> _AxisValue:
    if raw is None or raw == "none" or raw == "clean":
        return _AxisValue("none", {"kind": "none", "rate": 0.0, "options": {}})
    if isinstance(raw, str):
        kind, sep, rate_s = raw.partition(":")
        if not sep:
            raise ctx.err(where, f"write noise as 'kind:rate' (e.g. 'symmetric:0.4') or 'none'. Got {raw!r}.")
        try:
            rate = float(rate_s)
        except ValueError:
            raise ctx.err(where, f"the rate in {raw!r} must be a number.") from None
        kw: dict[str, Any] = {}
        label = None
    else:
        kind, label, kw = _entry(raw, ctx, where, name_key="kind")
        if "rate" not in kw:
            raise ctx.err(where, "a noise entry needs a 'rate'.")
        rate = kw.pop("rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise ctx.err(f"{where}.rate", f"must be a float in [0, 1). Got {rate!r} instead.")
    rate = float(rate)
    if kind == "none":
        return _AxisValue(label or "none", {"kind": "none", "rate": 0.0, "options": {}})
    reg = _registry("robustlab.noise", "NOISES", f"noise '{kind}'", ctx, where)
    nspec = _lookup(reg, kind, ctx, where)
    kw = _check_kwargs(nspec.factory, kw, ctx, where, skip=("rate", "num_classes"))
    return _AxisValue(label or f"{kind}:{rate:g}", {"kind": kind, "rate": rate, "options": kw})


def _named_axis(module: str, attr: str, what: str, skip: tuple[str, ...]):  # noqa: ANN202
    def build(raw: Any, ctx: _Ctx, where: str) -> _AxisValue:
        name, label, kw = _entry(raw, ctx, where)
        train = kw.pop("train", {}) if what == "objective" else {}
        reg = _registry(module, attr, what, ctx, where)
        spec = _lookup(reg, name, ctx, where)
        normalize = kw.pop("normalize", None) if what == "model" else None
        kw = _check_kwargs(spec.factory, kw, ctx, where, skip=skip)
        if normalize is not None:
            # input normalization inside the model: "data" = the training inputs' scalar mean/std
            ok = normalize == "data" or (isinstance(normalize, list) and len(normalize) == 2)
            if not ok:
                raise ctx.err(f"{where}.normalize", f"must be 'data' or a [mean, std] pair. Got {normalize!r} instead.")
            kw["normalize"] = normalize
        if what in ("loss", "objective"):  # cheap to build: catches bad values now, not mid-sweep
            try:
                probe = dict(kw)
                if "num_samples" in inspect.signature(spec.factory).parameters and "num_samples" not in kw:
                    probe["num_samples"] = 2  # filled with the training-set size by the worker
                reg.get(name, **probe)
            except (TypeError, ValueError) as e:
                raise ctx.err(where, str(e)) from None
        if train:
            ctx.expect(train, dict, f"{where}.train", "a mapping of train settings")
            train = _train(train, ctx, f"{where}.train", defaults=False)
        return _AxisValue(label or name, {"name": name, "kwargs": kw}, train)

    return build


_AXIS_BUILDERS = {
    "data": _data_axis,
    "noise": _noise_axis,
    "model": _named_axis("robustlab.models", "MODELS", "model", ("input_shape", "num_classes")),
    "loss": _named_axis("robustlab.losses", "LOSSES", "loss", ()),
    "objective": _named_axis("robustlab.training.objectives", "OBJECTIVES", "objective", ()),
}


def _train_defaults() -> dict[str, Any]:
    from ..training import fit

    params = inspect.signature(fit).parameters
    return {k: params[k].default for k in _TRAIN_KEYS}


def _train(raw: dict[str, Any], ctx: _Ctx, where: str, *, defaults: bool = True) -> dict[str, Any]:
    ctx.check_keys(raw, _TRAIN_KEYS, where)
    base = _train_defaults()
    out = dict(base) if defaults else {}
    for k, v in raw.items():
        d = base[k]
        if isinstance(d, bool) or isinstance(d, str):
            ctx.expect(v, type(d), f"{where}.{k}", f"a {type(d).__name__}")
        elif isinstance(d, int):
            ctx.expect(v, int, f"{where}.{k}", "an int")
        elif isinstance(d, float):
            ctx.expect(v, (int, float), f"{where}.{k}", "a number")
            v = float(v)
        out[k] = v
    return out


def _rule(raw: Any, spec: BenchSpec | None, axes: dict[str, list[_AxisValue]], seeds: list[int], ctx: _Ctx,
          where: str) -> dict[str, list[Any]]:
    ctx.expect(raw, dict, where, "a mapping of axis -> value(s)")
    out: dict[str, list[Any]] = {}
    for key, val in raw.items():
        if key not in AXES:
            raise ctx.err(where, f"unknown axis '{key}'.{_suggest(key, list(AXES))} Axes: {', '.join(AXES)}.")
        vals = val if isinstance(val, list) else [val]
        if key == "seed":
            labels: list[Any] = seeds
        else:
            labels = [a.label for a in axes[key]]
            if key == "noise":
                labels = labels + sorted({a.config["kind"] for a in axes[key]} - set(labels))
        for v in vals:
            if key == "noise" and v is None:
                v = "none"
            if v not in labels:
                raise ctx.err(where, f"{key} {v!r} is not in the spec's {key} axis.{_suggest(v, [str(x) for x in labels])} "
                                     f"Values: {', '.join(str(x) for x in labels)}.")
        out[key] = ["none" if (key == "noise" and v is None) else v for v in vals]
    return out


def _disjoint(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
    """True when no grid point can match both rules (some axis is restricted to disjoint values)."""
    for key in set(a) & set(b):
        if not set(map(str, a[key])) & set(map(str, b[key])):
            return True
    return False


def _matches(rule: dict[str, list[Any]], point: dict[str, _AxisValue | int]) -> bool:
    for key, vals in rule.items():
        p = point[key]
        if key == "seed":
            if p not in vals:
                return False
        elif key == "noise":
            assert isinstance(p, _AxisValue)
            if p.label not in vals and p.config["kind"] not in vals:
                return False
        else:
            assert isinstance(p, _AxisValue)
            if p.label not in vals:
                return False
    return True


# -- loading ------------------------------------------------------------------------------------
def _read(spec: str | os.PathLike[str]) -> tuple[dict[str, Any], str, str | None]:
    import yaml

    p = Path(spec)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        if not p.is_file():
            raise SpecError(f"Spec file '{p}' does not exist. Shipped specs: {', '.join(SPECS.available())}.")
        text, name, path = p.read_text(encoding="utf-8"), p.stem, str(p.resolve())
    elif str(spec) in SPECS:
        sp = SPECS.get(str(spec))
        text, name, path = sp.read_text(encoding="utf-8"), str(spec), None
    else:
        raise SpecError(f"'{spec}' is neither a spec file nor a shipped spec.{_suggest(str(spec), SPECS.available())} "
                        f"Shipped specs: {', '.join(SPECS.available())}.")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"spec '{name}': not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"spec '{name}': the top level must be a mapping. Got {type(raw).__name__}.")
    return raw, name, path


def load_spec(spec: str | os.PathLike[str] | dict[str, Any] | BenchSpec) -> BenchSpec:
    """Read and validate a spec: a YAML path, the name of a shipped spec (:data:`SPECS`) or a dict.

    Raises :class:`SpecError` for unknown keys, unknown registry names (with a suggestion), wrong
    types, and evaluations whose module is not available in this installation.
    """
    if isinstance(spec, BenchSpec):
        return spec
    path = None
    if isinstance(spec, dict):
        raw, default_name = copy.deepcopy(spec), "<dict>"
    else:
        raw, default_name, path = _read(spec)
    name = raw.get("name", default_name)
    ctx = _Ctx(str(name))
    if not isinstance(name, str) or not name:
        raise ctx.err("name", f"must be a non-empty string. Got {name!r}.")
    ctx.check_keys(raw, _TOP_KEYS, "top level")
    for req in ("data", "models", "losses"):
        if req not in raw:
            raise ctx.err("top level", f"the '{req}' key is required.")
    axes: dict[str, list[_AxisValue]] = {}
    for key, axis in [("data", "data"), ("noise", "noise"), ("models", "model"), ("losses", "loss"),
                      ("objectives", "objective")]:
        default = [None] if key == "noise" else ["standard"] if key == "objectives" else None
        entries = raw.get(key, default)
        if not isinstance(entries, list):
            entries = [entries]
        if not entries:
            raise ctx.err(key, "must list at least one entry.")
        vals = [_AXIS_BUILDERS[axis](e, ctx, f"{key}[{i}]") for i, e in enumerate(entries)]
        labels = [v.label for v in vals]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ctx.err(key, f"duplicate label(s) {dup}; give entries distinct 'label' values.")
        axes[axis] = vals
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    ctx.expect(seeds, list, "seeds", "a list of ints")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ctx.err(f"seeds[{i}]", f"must be a non-negative int. Got {s!r} instead.")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ctx.err("seeds", f"must be a non-empty list of distinct ints. Got {seeds!r}.")
    train = _train(ctx.expect(raw.get("train", {}) or {}, dict, "train", "a mapping"), ctx, "train")

    from .evaluations import normalize_evaluation

    evals = []
    raw_evals = raw.get("evaluations", ["clean"]) or []
    ctx.expect(raw_evals, list, "evaluations", "a list")
    for i, e in enumerate(raw_evals):
        where = f"evaluations[{i}]"
        name_, label, kw = _entry(e, ctx, where)
        if label is not None:
            raise ctx.err(where, "evaluations take no 'label'.")
        when = kw.pop("when", None)
        rule = _rule(when, None, axes, seeds, ctx, f"{where}.when") if when is not None else {}
        evals.append((normalize_evaluation(name_, kw, ctx, where), rule))
    for i, (kw_i, when_i) in enumerate(evals):  # the same evaluation twice needs disjoint 'when' rules
        for j in range(i):
            if evals[j][0]["name"] == kw_i["name"] and not _disjoint(evals[j][1], when_i):
                raise ctx.err(f"evaluations[{i}]", f"evaluation '{kw_i['name']}' already appears as evaluations[{j}] "
                                                   "for some runs; give the two entries disjoint 'when' rules.")
    exclude = [_rule(r, None, axes, seeds, ctx, f"exclude[{i}]")
               for i, r in enumerate(ctx.expect(raw.get("exclude", []) or [], list, "exclude", "a list of rules"))]
    include = [_rule(r, None, axes, seeds, ctx, f"include[{i}]")
               for i, r in enumerate(ctx.expect(raw.get("include", []) or [], list, "include", "a list of rules"))]
    run = ctx.expect(raw.get("run", {}) or {}, dict, "run", "a mapping")
    ctx.check_keys(run, _RUN_KEYS, "run")
    if "timeout_s" in run and run["timeout_s"] is not None:
        t = run["timeout_s"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise ctx.err("run.timeout_s", f"must be a positive number or null. Got {t!r}.")
    if "checkpoints" in run:
        ctx.expect(run["checkpoints"], bool, "run.checkpoints", "a bool")
    if "num_gpus" in run:
        ng = run["num_gpus"]
        if isinstance(ng, bool) or not isinstance(ng, (int, float)) or ng < 0:
            raise ctx.err("run.num_gpus", f"must be a non-negative number. Got {ng!r}.")
    axes["seed"] = [_AxisValue(str(s), s) for s in seeds]
    return BenchSpec(name=name, description=str(raw.get("description", "")).strip(), axes=axes, train=train,
                     evaluations=evals, exclude=exclude, include=include, run=dict(run),
                     source=_jsonable(raw, ctx, "spec"), path=path)


# -- expansion ----------------------------------------------------------------------------------
def expand(spec: str | os.PathLike[str] | dict[str, Any] | BenchSpec) -> list[RunConfig]:
    """The grid, explicitly: one :class:`RunConfig` per point after ``exclude``/``include`` rules.

    Order is deterministic (axes in spec order, seeds innermost); ids are unique.
    """
    s = load_spec(spec)
    names = ("data", "noise", "model", "loss", "objective", "seed")
    out: list[RunConfig] = []
    seen: set[str] = set()
    for combo in itertools.product(*(s.axes[a] for a in names)):
        point: dict[str, Any] = dict(zip(names, combo))
        point["seed"] = point["seed"].config
        if any(_matches(r, point) for r in s.exclude) and not any(_matches(r, point) for r in s.include):
            continue
        train = {**s.train, **point["data"].train, **point["objective"].train}
        evals = [kw for kw, when in s.evaluations if not when or _matches(when, point)]
        config = {
            "schema": SCHEMA_VERSION,
            "data": point["data"].config,
            "noise": point["noise"].config,
            "model": point["model"].config,
            "loss": point["loss"].config,
            "objective": point["objective"].config,
            "train": train,
            "evaluations": evals,
            "seed": point["seed"],
        }
        config = json.loads(canonical_json(config))  # a plain, detached copy
        labels = {a: (point[a] if a == "seed" else point[a].label) for a in names}
        labels["noise_kind"] = point["noise"].config["kind"]
        labels["noise_rate"] = point["noise"].config["rate"]
        rc = RunConfig(spec=s.name, labels=labels, config=config)
        if rc.id in seen:
            continue
        seen.add(rc.id)
        out.append(rc)
    return out
