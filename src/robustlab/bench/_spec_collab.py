"""The bench spec's ``collab`` block: a grid over :data:`robustlab.pipeline.COLLAB_AXES`.

Example::

    collab:
      workers: 10
      f: [0, 1, 2, 3]
      aggregator: [mean, monna, {name: centered_clipping, kwargs: {tau: 2.0}}]
      byzantine: [sign_flip, alie]
      heterogeneity: [iid, "dirichlet:1"]
      exchange: null          # optional, not an axis: params for MoNNA, momentum otherwise

Each key takes one value or a list; the grid is their product. Every point is validated as a run's
``collab`` section (:class:`robustlab.collab._config.CollabConfig`); with f = 0 the behaviour is ``none``,
so the f = 0 points of different attacks are one run (same config, same id).
"""

from __future__ import annotations

import itertools
from typing import Any

from .._runconfig import COLLAB_AXES
from ._spec_axes import _Ctx

__all__ = ["collab_points", "collab_rule_values"]

_KEYS = (*COLLAB_AXES, "exchange")


def _label(value: Any) -> Any:
    return value.get("label", value.get("name")) if isinstance(value, dict) else value


def collab_points(raw: Any, ctx: _Ctx) -> list[tuple[dict[str, Any], dict[str, Any]] | None]:
    """``[(labels, collab config)]`` for every grid point, or ``[None]`` when the spec has no ``collab`` block."""
    if raw is None:
        return [None]
    ctx.expect(raw, dict, "collab", "a mapping of collaborative axis -> value(s)")
    ctx.check_keys(raw, _KEYS, "collab")
    if "workers" not in raw:
        raise ctx.err("collab", "needs 'workers' (the number of workers, Byzantine included).")
    lists = {a: (raw[a] if isinstance(raw[a], list) else [raw[a]]) for a in COLLAB_AXES if a in raw}
    for a, vals in lists.items():
        if not vals:
            raise ctx.err(f"collab.{a}", "must list at least one value.")
    from ..collab import CollabConfig

    out: list[tuple[dict[str, Any], dict[str, Any]] | None] = []
    seen: set[str] = set()
    problems = 0
    for combo in itertools.product(*lists.values()):
        point = dict(zip(lists, combo))
        value = {**point, "exchange": raw.get("exchange")}
        for k in ("aggregator", "byzantine"):
            if isinstance(value.get(k), dict):
                value[k] = {kk: vv for kk, vv in value[k].items() if kk != "label"}
        try:
            cc = CollabConfig.from_value(value)
        except (ValueError, TypeError, KeyError) as e:
            where = "collab " + " ".join(f"{k}={_label(v)}" for k, v in point.items())
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            if msg not in seen:
                seen.add(msg)
                ctx.problems.append(f"{where}: {msg}")
                problems += 1
            continue
        assert cc is not None
        labels = cc.labels()
        for k in ("aggregator", "byzantine"):
            if isinstance(point.get(k), dict) and "label" in point[k] and not (k == "byzantine" and cc.f == 0):
                labels[k] = str(point[k]["label"])
        out.append((labels, cc.to_dict()))
    return out


def collab_rule_values(axis: str, vals: list[Any], points: list[Any] | None, ctx: _Ctx, where: str) -> list[Any]:
    """An ``include``/``exclude`` rule's values for collaborative ``axis``, checked against the grid's labels.

    ``points``: :func:`collab_points` of the spec (``None`` where collaborative axes are not accepted, e.g. an
    evaluation's ``when``). A heterogeneity is matched by its label (``dirichlet:1.0`` is ``dirichlet:1``).
    """
    if points is None:
        raise ctx.err(where, f"'{axis}' is a collab axis; only include/exclude rules take collab axes.")
    labels: list[Any] = []
    for p in points:
        if p is not None and p[0][axis] not in labels:
            labels.append(p[0][axis])
    if not labels:
        raise ctx.err(where, f"'{axis}' is a collab axis but the spec has no (valid) 'collab' block.")
    out = []
    for v in vals:
        if axis == "heterogeneity" and isinstance(v, str):
            from ..collab._split import heterogeneity_label, parse_heterogeneity

            try:
                v = heterogeneity_label(parse_heterogeneity(v))
            except ValueError:
                pass  # reported below as a value not in the grid
        if isinstance(v, bool) or v not in labels:
            raise ctx.err(where, f"{axis} {v!r} is not in the spec's collab {axis} axis. "
                                 f"Values: {', '.join(str(x) for x in labels)}.")
        out.append(v)
    return out
