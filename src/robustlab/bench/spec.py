"""Benchmark specs: YAML -> validated :class:`BenchSpec` -> :func:`expand` -> list of :class:`RunConfig`.

A spec names the grid axes (``data``, ``noise``, ``models``, ``losses``, ``objectives``, ``seeds``:
:data:`SPEC_AXES`, the one axis table), the shared ``train`` settings and the ``evaluations``.
Each grid point's config is a :class:`robustlab.pipeline.Config` dict; the pipeline runs it. The grid
is the product of the axes, minus the points matched by an ``exclude`` rule, plus those matched by an
``include`` rule (GitHub-Actions style); rules may also name the ``collab`` block's axes
(:data:`robustlab.pipeline.COLLAB_AXES`, e.g. ``exclude: [{aggregator: mean, f: 3}]``). A run's id is the SHA-256 of its normalized config (canonical JSON), so the same experiment
gets the same id in every spec, and execution options (workers, executor, paths) never change it.

Data are named as everywhere else: a registry name with options (``{name: mnist, root: DIR,
use_test_split_as_train: 0.8}``; a relative ``root`` is taken from the spec file's folder) or a path
form (``csv:<path>``). ``download``/``mirror`` fetch the data when the grid is checked
(:func:`check_spec`); they are not part of a run's config or id and are never recorded.
Specs are strict YAML (:mod:`robustlab.bench._yaml`): no aliases/anchors, no duplicate keys.
Validation reports every problem of a spec at once.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._registry import Registry
from ..pipeline import AXES, COLLAB_AXES, SCHEMA_VERSION
from ._spec_axes import (
    _AXIS_BUILDERS,
    SpecError,
    _AxisValue,
    _Ctx,
    _entry,
    _jsonable,
    _suggest,
    _train,
    canonical_json,
)
from ._spec_collab import collab_points, collab_rule_values
from ._yaml import YAMLSpecError, load_yaml

if TYPE_CHECKING:
    from ._gridcheck import check_spec

__all__ = [
    "AXES", "BenchSpec", "GROUP_AXES", "RunConfig", "SCHEMA_VERSION", "SPECS", "SPEC_AXES", "SpecError",
    "canonical_json", "check_spec", "expand", "load_spec", "run_id",
]

#: spec key -> axis (the pipeline's :data:`~robustlab.pipeline.AXES`, in the same order)
SPEC_AXES = {"data": "data", "noise": "noise", "models": "model", "losses": "loss", "objectives": "objective",
             "seeds": "seed"}
assert tuple(SPEC_AXES.values()) == AXES
#: the axes that tell runs apart apart from the seed (runs differing only in seed are one group)
GROUP_AXES = tuple(a for a in AXES if a != "seed")
_TOP_KEYS = ("name", "description", *SPEC_AXES, "collab", "train", "evaluations", "exclude", "include", "run")
_RUN_KEYS = ("timeout_s", "checkpoints", "num_gpus", "device")
_SPEC_DIR = Path(__file__).parent / "specs"


# -- shipped specs ------------------------------------------------------------------------------
SPECS: Registry[Path] = Registry("spec")


def _register_shipped() -> None:
    for path in sorted(_SPEC_DIR.glob("*.yaml")):
        name = path.stem
        try:
            doc = (load_yaml(path.read_text(encoding="utf-8")) or {}).get("description", "")
        except Exception:  # a broken shipped spec must not break `import robustlab.bench`
            doc = ""
        SPECS.register(name, tags={"shipped"}, doc=str(doc).strip().split("\n")[0])(lambda p=path: p)


_register_shipped()


# -- canonical form and hashing -----------------------------------------------------------------
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
        return " ".join(f"{a}={self.labels[a]}" for a in (*AXES, *COLLAB_AXES) if a in self.labels)


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
    collab: list[Any] = field(default_factory=lambda: [None])  # (labels, collab config) points: _spec_collab

    def to_json(self) -> str:
        return canonical_json(self.source)


def _rule(raw: Any, spec: BenchSpec | None, axes: dict[str, list[_AxisValue]], seeds: list[int], ctx: _Ctx,
          where: str, collab: list[Any] | None = None) -> dict[str, list[Any]]:
    ctx.expect(raw, dict, where, "a mapping of axis -> value(s)")
    out: dict[str, list[Any]] = {}
    for key, val in raw.items():
        if key not in AXES and key not in COLLAB_AXES:
            every = (*AXES, *COLLAB_AXES)
            raise ctx.err(where, f"unknown axis '{key}'.{_suggest(key, list(every))} Axes: {', '.join(every)}.")
        vals = val if isinstance(val, list) else [val]
        if key in COLLAB_AXES:  # include/exclude rules: collab axes match the run's collab labels
            out[key] = collab_rule_values(key, vals, collab, ctx, where)
            continue
        if key == "seed":
            labels: list[Any] = seeds
        else:
            labels = [a.label for a in axes[key]]
            if key == "noise":
                labels = labels + sorted({a.config["kind"] for a in axes[key] if a.valid} - set(labels))
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
        p = point.get(key)  # a collab axis is absent from a plain run's point: no match
        if key in COLLAB_AXES:
            if p is None or p not in vals:
                return False
        elif key == "seed":
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
        raw = load_yaml(text)
    except YAMLSpecError as e:
        raise SpecError(f"spec '{name}': {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"spec '{name}': the top level must be a mapping. Got {type(raw).__name__}.")
    return raw, name, path


def _axis(key: str, axis: str, raw: dict[str, Any], ctx: _Ctx) -> list[_AxisValue]:
    default = [None] if key == "noise" else ["standard"] if key == "objectives" else None
    entries = raw.get(key, default)
    if not isinstance(entries, list):
        entries = [entries]
    if not entries:
        raise ctx.err(key, "must list at least one entry.")
    vals = []
    for i, e in enumerate(entries):
        v = ctx.collect(_AXIS_BUILDERS[axis], e, ctx, f"{key}[{i}]")
        if v is None:  # keep its label so rules naming it do not add a second, misleading problem
            guess = e.get("label") or e.get("kind" if axis == "noise" else "name") if isinstance(e, dict) else e
            v = _AxisValue(str(guess), None, valid=False)
        vals.append(v)
    labels = [v.label for v in vals if v.valid]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ctx.err(key, f"duplicate label(s) {dup}; give entries distinct 'label' values.")
    return vals


def _seeds(raw: dict[str, Any], ctx: _Ctx) -> list[int]:
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    ctx.expect(seeds, list, "seeds", "a list of ints")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ctx.err(f"seeds[{i}]", f"must be a non-negative int. Got {s!r} instead.")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ctx.err("seeds", f"must be a non-empty list of distinct ints. Got {seeds!r}.")
    return seeds


def _evaluations(raw: dict[str, Any], axes: dict[str, list[_AxisValue]], seeds: list[int],
                 ctx: _Ctx) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    from .evaluations import normalize_evaluation

    evals: list[tuple[dict[str, Any], dict[str, Any]]] = []
    raw_evals = raw.get("evaluations", ["clean"]) or []
    ctx.expect(raw_evals, list, "evaluations", "a list")

    def one(e: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        name_, label, kw = _entry(e, ctx, where)
        if label is not None:
            raise ctx.err(where, "evaluations take no 'label'.")
        when = kw.pop("when", None)
        rule = _rule(when, None, axes, seeds, ctx, f"{where}.when") if when is not None else {}
        return normalize_evaluation(name_, kw, ctx, where), rule

    for i, e in enumerate(raw_evals):
        ev = ctx.collect(one, e, f"evaluations[{i}]")
        if ev is not None:
            evals.append(ev)
    for i, (kw_i, when_i) in enumerate(evals):  # the same evaluation twice needs disjoint 'when' rules
        for j in range(i):
            if evals[j][0]["name"] == kw_i["name"] and not _disjoint(evals[j][1], when_i):
                raise ctx.err(f"evaluations[{i}]", f"evaluation '{kw_i['name']}' already appears as evaluations[{j}] "
                                                   "for some runs; give the two entries disjoint 'when' rules.")
    return evals


def _run_section(raw: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
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
    return dict(run)


def load_spec(spec: str | os.PathLike[str] | dict[str, Any] | BenchSpec) -> BenchSpec:
    """Read and validate a spec: a YAML path, the name of a shipped spec (:data:`SPECS`) or a dict.

    Raises one :class:`SpecError` listing every problem found: unknown keys, unknown registry names
    (with a suggestion), wrong types, values out of range, evaluations whose module is not available.
    It loads no data; :func:`check_spec` also does that.
    """
    if isinstance(spec, BenchSpec):
        return spec
    path = None
    if isinstance(spec, dict):
        raw, default_name = copy.deepcopy(spec), "<dict>"
    else:
        raw, default_name, path = _read(spec)
    name = raw.get("name", default_name)
    ctx = _Ctx(str(name), Path(path).parent if path else None)
    if not isinstance(name, str) or not name:
        raise ctx.err("name", f"must be a non-empty string. Got {name!r}.")
    ctx.collect(ctx.check_keys, raw, _TOP_KEYS, "top level")
    for req in ("data", "models", "losses"):
        if req not in raw:
            ctx.problems.append(f"top level: the '{req}' key is required.")
    axes: dict[str, list[_AxisValue]] = {}
    for key, axis in SPEC_AXES.items():
        if axis != "seed":
            axes[axis] = ctx.collect(_axis, key, axis, raw, ctx, default=[]) if key in raw or axis in (
                "noise", "objective") else []
    seeds = ctx.collect(_seeds, raw, ctx, default=[0])
    train = ctx.collect(lambda: _train(ctx.expect(raw.get("train", {}) or {}, dict, "train", "a mapping"), ctx, "train"),
                        default={})
    evals = ctx.collect(_evaluations, raw, axes, seeds, ctx, default=[])
    collab = ctx.collect(collab_points, raw.get("collab"), ctx, default=[None])
    rules = {}
    for kind in ("exclude", "include"):
        entries = ctx.collect(ctx.expect, raw.get(kind, []) or [], list, kind, "a list of rules", default=[])
        rules[kind] = [r for r in (ctx.collect(_rule, r, None, axes, seeds, ctx, f"{kind}[{i}]", collab)
                                   for i, r in enumerate(entries)) if r is not None]
    run = ctx.collect(_run_section, raw, ctx, default={})
    source = ctx.collect(_jsonable, raw, ctx, "spec", default={})
    ctx.raise_problems()
    axes["seed"] = [_AxisValue(str(s), s) for s in seeds]
    return BenchSpec(name=name, description=str(raw.get("description", "")).strip(), axes=axes, train=train,
                     evaluations=evals, exclude=rules["exclude"], include=rules["include"], run=run,
                     source=source, path=path, collab=collab)


# -- expansion ----------------------------------------------------------------------------------
def expand(spec: str | os.PathLike[str] | dict[str, Any] | BenchSpec) -> list[RunConfig]:
    """The grid, explicitly: one :class:`RunConfig` per point after ``exclude``/``include`` rules.

    Order is deterministic (axes in spec order, seeds innermost); ids are unique.
    """
    s = load_spec(spec)
    names = ("data", "noise", "model", "loss", "objective", "seed")
    out: list[RunConfig] = []
    seen: set[str] = set()
    for *combo, cp, seed in itertools.product(*(s.axes[a] for a in names[:-1]), s.collab, s.axes["seed"]):
        point: dict[str, Any] = dict(zip(names, [*combo, seed]))
        point["seed"] = point["seed"].config
        point.update(cp[0] if cp is not None else {})  # the collab labels, for include/exclude rules
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
            **({"collab": cp[1]} if cp is not None else {}),
        }
        config = json.loads(canonical_json(config))  # a plain, detached copy
        labels = {a: (point[a] if a == "seed" else point[a].label) for a in names}
        labels["noise_kind"] = point["noise"].config["kind"]
        labels["noise_rate"] = point["noise"].config["rate"]
        labels.update(cp[0] if cp is not None else {})
        rc = RunConfig(spec=s.name, labels=labels, config=config)
        if rc.id in seen:
            continue
        seen.add(rc.id)
        out.append(rc)
    return out


def __getattr__(name: str) -> Any:
    if name == "check_spec":  # defined beside the loaders it drives; imported lazily (it imports this module)
        from ._gridcheck import check_spec

        return check_spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
