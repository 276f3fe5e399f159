"""The report's plots, drawn from the metric declarations (``Metric.plots``), never from name prefixes.

``plots(rd)`` returns ``(section, caption, svg)`` for every plot the data support. Which metric plays
which role in which plot (``("robust_eps", "y")``, ``("conformal", "x")``, ...) is declared next to the
evaluation that writes it; the axis labels come from the declarations' labels.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from ..pipeline import AXES
from . import _svg
from ._metrics import MetricMatch

if TYPE_CHECKING:
    from .report import Group, ReportData

__all__ = ["plots"]

_AXES = tuple(a for a in AXES if a not in ("data", "seed"))  # what varies inside one data set's plots
_METHOD_AXES = tuple(a for a in _AXES if a != "noise")  # lines of a plot whose x is the noise rate


def _varying(groups: list[Group], axes: tuple[str, ...] = _AXES) -> list[str]:
    """Axes whose value differs among ``groups`` (for short legend labels); at least ``loss``."""
    return [a for a in axes if len({g.labels[a] for g in groups}) > 1] or ["loss"]


def _label(g: Group, axes: list[str], *, mark: bool = True) -> str:
    """The configuration's values on ``axes``; ``mark`` flags a configuration whose every seed collapsed."""
    lab = " / ".join(str(g.labels[a]) for a in axes) or str(g.labels["loss"])
    return lab + (" (collapsed)" if mark and g.all_collapsed else "")


def _role(rd: ReportData, g: Group, plot: str, role: str) -> list[MetricMatch]:
    """``g``'s metrics playing ``role`` in ``plot``, in placeholder order."""
    out = [m for n in g.values if (m := rd.matches.get(n)) is not None and role in m.metric.roles(plot)]
    return sorted(out, key=lambda m: (m.metric.pattern, m.sort_key()))


def _x(m: MetricMatch) -> float:
    """The x value of a metric in a curve: its last numeric placeholder."""
    for p in reversed(m.metric.placeholders):
        v = m.number(p)
        if math.isfinite(v):
            return v
    return math.nan


def _one(rd: ReportData, g: Group, plot: str, role: str) -> float | None:
    ms = _role(rd, g, plot, role)
    return g.mean(ms[0].name) if ms else None


def _ylabel(rd: ReportData, gs: list[Group], plot: str, role: str, default: str) -> str:
    for g in gs:
        ms = _role(rd, g, plot, role)
        if ms:
            lab = ms[0].metric.label.split("{")[0].strip(" =ε") or default
            return lab + (f" ({ms[0].metric.unit})" if ms[0].metric.unit else "")
    return default


def plots(rd: ReportData) -> list[tuple[str, str, str]]:
    """``(section, caption, svg)`` for every plot the data supports, data set by data set."""
    out: list[tuple[str, str, str]] = []
    for data in sorted({str(g.labels["data"]) for g in rd.groups}):
        gs = [g for g in rd.groups if str(g.labels["data"]) == data]
        out += _noise_rate(rd, data, gs) + _robust_eps(rd, data, gs) + _certified(rd, data, gs)
        out += _conformal(rd, data, gs) + _disparity(rd, data, gs) + _corruptions(rd, data, gs)
    return out


def _noise_rate(rd: ReportData, data: str, gs: list[Group]) -> list[tuple[str, str, str]]:
    """y vs label-noise rate, one panel per noise kind, one line per method (clean runs at rate 0)."""
    out = []
    meth = _varying(gs, _METHOD_AXES)
    for kind in sorted({str(g.labels["noise_kind"]) for g in gs} - {"none"}):
        series = []
        methods: dict[str, dict[float, Group]] = {}
        for g in gs:
            if g.labels["noise_kind"] in (kind, "none"):
                methods.setdefault(_label(g, meth, mark=False), {})[float(g.labels["noise_rate"] or 0.0)] = g
        for m, by_rate in sorted(methods.items()):
            pts = []
            for r in sorted(by_rate):
                ms = _role(rd, by_rate[r], "noise_rate", "y")
                s = by_rate[r].stat(ms[0].name) if ms else None
                if s:
                    pts.append((r, s))
            if len(pts) >= 2:
                series.append({"label": m, "x": [r for r, _ in pts], "y": [s[0] for _, s in pts],
                               "err": [s[1] for _, s in pts]})
        if series:
            yl = _ylabel(rd, gs, "noise_rate", "y", "test accuracy")
            out.append(("Accuracy vs label-noise rate", f"{data}: {yl} vs {kind} noise rate (mean ± std over seeds)",
                        _svg.line_chart(series, title=f"{data} — {kind} noise", xlabel="noise rate", ylabel=yl)))
    return out


def _robust_eps(rd: ReportData, data: str, gs: list[Group]) -> list[tuple[str, str, str]]:
    """Robust accuracy vs ε per configuration, the clean accuracy at ε = 0, and the fitted power law."""
    series, unfitted = [], []
    with_y = [g for g in gs if _role(rd, g, "robust_eps", "y")]
    axes = _varying(with_y or gs)
    for g in with_y:
        xs, ys, es = [], [], []
        origin = _role(rd, g, "robust_eps", "origin")
        for m in origin[:1] + _role(rd, g, "robust_eps", "y"):
            s = g.stat(m.name)
            if s:
                xs.append(0.0 if m in origin else _x(m))
                ys.append(s[0])
                es.append(s[1])
        k, lo, hi, a = (_one(rd, g, "robust_eps", r) for r in ("k", "k_lo", "k_hi", "a"))
        entry: dict[str, Any] = {"label": _label(g, axes), "x": xs, "y": ys, "err": es}
        if k is not None and math.isfinite(k):
            entry["sub"] = f"k = {k:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")
            pos = [x for x in xs if x > 0]
            if a is not None and pos:
                entry["fit"] = _fit_curve(rd, g, min(pos), max(pos))
        else:
            unfitted.append(entry["label"])
        series.append(entry)
    if not series:
        return []
    cap = (f"{data}: robust accuracy (worst over the attack suite) vs ε, clean accuracy at ε = 0; legend: k = fitted "
           "power-law exponent of the adversarial error (A·ε^k, dashed) with its bootstrap interval")
    if unfitted:
        cap += (f". No power law for {', '.join(unfitted)}: the fit needs ≥ 3 ε with 0 < adversarial error ≤ 0.5 "
                "(or powerlaw: false)")
    return [("Robust accuracy vs ε", cap, _svg.line_chart(series, title=f"{data} — robust accuracy vs ε", xlabel="ε",
                                                          ylabel=_ylabel(rd, gs, "robust_eps", "y", "robust accuracy")))]


def _fit_curve(rd: ReportData, g: Group, lo: float, hi: float) -> tuple[list[float], list[float]]:
    """Mean over seeds of each seed's fitted ``clean·(1 − A·ε^k)``, drawn where the fit holds
    (adversarial error ≤ 0.5, the regime it was fitted on); NaN elsewhere."""
    names = {r: (_role(rd, g, "robust_eps", r) or [None])[0] for r in ("origin", "k", "a")}
    grid = [lo + (hi - lo) * i / 32 for i in range(33)]
    curves = []
    for rid in g.run_ids:
        vals = rd.final.get(rid, {})
        c0, k, a = (vals.get(m.name) if m else None for m in names.values())
        if None not in (c0, k, a) and all(math.isfinite(v) for v in (c0, k, a)):
            curves.append([c0 * (1 - a * e ** k) if a * e ** k <= 0.5 else math.nan for e in grid])
    ys = [statistics.fmean(col) if curves and all(math.isfinite(v) for v in col) else math.nan
          for col in zip(*curves)] if curves else [math.nan] * len(grid)
    return grid, ys


def _certified(rd: ReportData, data: str, gs: list[Group]) -> list[tuple[str, str, str]]:
    """Certified accuracy vs radius; radii beyond the largest certifiable one are cut, with a marker."""
    out = []
    axes = _varying([g for g in gs if _role(rd, g, "cert_ibp", "y") or _role(rd, g, "cert_rs", "y")] or gs)
    for plot, name, xl in (("cert_ibp", "IBP", "ε (l∞)"), ("cert_rs", "randomized smoothing", "radius (l2)")):
        series, limits = [], set()
        for g in gs:
            ms = _role(rd, g, plot, "y")
            if not ms:
                continue
            lim = _one(rd, g, plot, "limit")
            if lim is not None:
                limits.add(round(lim, 3))
                ms = [m for m in ms if _x(m) <= lim + 1e-12]
            st: list[Any] = [g.stat(m.name) for m in ms]
            series.append({"label": _label(g, axes), "x": [_x(m) for m in ms],
                           "y": [s[0] if s else math.nan for s in st], "err": [s[1] if s else 0.0 for s in st]})
        if series:
            cap = f"{data}: {name} certified accuracy vs radius"
            vline = None
            if limits:
                cap += (f"; radii above the largest certifiable one at these settings ({', '.join(f'{v:g}' for v in sorted(limits))}: "
                        "σ·Φ⁻¹(α^(1/n))) are not drawn — certified accuracy there is 0 by construction")
                vline = (min(limits), "max certifiable") if len(limits) == 1 else None
            out.append(("Certified accuracy vs radius", cap,
                        _svg.line_chart(series, title=f"{data} — {name} certified accuracy", xlabel=xl,
                                        ylabel=_ylabel(rd, gs, plot, "y", "certified accuracy"), vline=vline)))
    return out


def _conformal(rd: ReportData, data: str, gs: list[Group]) -> list[tuple[str, str, str]]:
    """Coverage (y) vs set size (x) per configuration and score; each point is labelled on the chart."""
    pts: list[dict[str, Any]] = []
    target = None
    axes = _varying([g for g in gs if _role(rd, g, "conformal", "y")] or gs)
    for g in gs:
        xs = {tuple(sorted(m.values.items())): m for m in _role(rd, g, "conformal", "x")}
        for ym in _role(rd, g, "conformal", "y"):
            key = tuple(sorted(ym.values.items()))
            xm = xs.get(key)
            cov, size = g.mean(ym.name), g.mean(xm.name) if xm else None
            if cov is None or size is None:
                continue
            what = " ".join(ym.values.values())
            pts.append({"label": f"score {what}", "x": size, "y": cov, "name": _label(g, axes),
                        "title": f"{_label(g, axes)} ({what})"})
            for tm in _role(rd, g, "conformal", "target"):
                if tm.values == ym.values:
                    target = g.mean(tm.name) or target
    if not pts:
        return []
    return [("Conformal coverage vs set size",
             f"{data}: empirical coverage vs mean prediction-set size, one labelled point per configuration and "
             "score; dashed: target 1 − α",
             _svg.scatter_chart(pts, title=f"{data} — conformal sets",
                                xlabel=_ylabel(rd, gs, "conformal", "x", "mean set size"),
                                ylabel=_ylabel(rd, gs, "conformal", "y", "coverage"),
                                hline=(target, "target") if target else None))]


def _disparity(rd: ReportData, data: str, gs: list[Group]) -> list[tuple[str, str, str]]:
    """Grouped bars: every ``disparity`` metric, for the 8 configurations best on the first one."""
    def bars(g: Group) -> list[MetricMatch]:
        first = _role(rd, g, "disparity", "bar_first")
        return _role(rd, g, "disparity", "bar") + first[:1]

    cand = [g for g in gs if len(bars(g)) >= 2]
    if not cand:
        return []
    lead = bars(cand[0])[0].metric.pattern
    ranked = sorted(cand, key=lambda g: -(next((g.mean(m.name) for m in bars(g) if m.metric.pattern == lead), 0) or 0))[:8]
    labels: dict[str, str] = {}
    for g in ranked:
        for m in bars(g):
            labels.setdefault(m.metric.pattern, m.header)
    series = []
    for pattern, lab in labels.items():
        ys = []
        for g in ranked:
            ms = [m for m in bars(g) if m.metric.pattern == pattern]
            ys.append(g.mean(ms[0].name) if ms else None)
        series.append({"label": lab, "y": ys})
    return [("Per-class disparity", f"{data}: mean vs worst-class test accuracy (top {len(ranked)} configurations "
             f"by {labels[lead]})",
             _svg.bar_chart([_label(g, _varying(ranked)) for g in ranked], series, title=f"{data} — per-class disparity",
                            ylabel="accuracy"))]


def _corruptions(rd: ReportData, data: str, gs: list[Group]) -> list[tuple[str, str, str]]:
    """Accuracy vs severity (the last placeholder), averaged over the corruptions (the first)."""
    series = []
    axes = _varying([g for g in gs if _role(rd, g, "corruptions", "y")] or gs)
    for g in gs:
        sev: dict[float, list[float]] = {}
        for m in _role(rd, g, "corruptions", "y"):
            v = g.mean(m.name)
            if v is not None and math.isfinite(_x(m)):
                sev.setdefault(_x(m), []).append(v)
        if sev:
            levels = sorted(sev)
            series.append({"label": _label(g, axes), "x": levels, "y": [statistics.fmean(sev[x]) for x in levels]})
    if not series:
        return []
    return [("Accuracy under corruptions", f"{data}: accuracy vs corruption severity, mean over the corruption suite "
             "(in-memory corruptions)",
             _svg.line_chart(series, title=f"{data} — corruptions", xlabel="severity", ylabel="accuracy"))]
