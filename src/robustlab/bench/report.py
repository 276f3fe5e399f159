"""The report: built only from ``results.db``; one self-contained HTML file plus a Markdown summary.

``load_report_data(dir)`` reads the database; ``to_markdown``/``to_html`` are pure functions of
that data (templates do no computation beyond formatting); ``write_report`` writes both files
atomically. Leaderboards aggregate over seeds (mean ± sample std, n shown; best per column in
bold); plots are inline SVG (no external assets, no network).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from . import _svg
from .spec import canonical_json
from .store import ResultStore

__all__ = ["ReportData", "leaderboards", "load_report_data", "to_html", "to_markdown", "write_report"]

GROUP_AXES = ("data", "noise", "model", "loss", "objective")


@dataclass
class Group:
    """Runs sharing everything but the seed."""

    key: tuple[str, ...]
    labels: dict[str, Any]
    run_ids: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def stat(self, name: str) -> tuple[float, float, int] | None:
        vals = [v for v in self.values.get(name, []) if v is not None and math.isfinite(v)]
        if not vals:
            return None
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return statistics.fmean(vals), sd, len(vals)

    def mean(self, name: str) -> float | None:
        s = self.stat(name)
        return None if s is None else s[0]


@dataclass
class ReportData:
    """Everything the report shows, read from one results database."""

    path: str
    runs: list[dict[str, Any]]
    final: dict[str, dict[str, float]]
    sweeps: list[dict[str, Any]]
    counts: dict[str, int]
    generated_at: str
    groups: list[Group] = field(default_factory=list)


def load_report_data(results: str | os.PathLike[str]) -> ReportData:
    """Read ``DIR/results.db`` (read-only) and group completed runs over seeds."""
    with ResultStore(results, readonly=True) as st:
        runs = st.runs()
        final = st.final_metrics()
        sweeps = st.sweeps()
        counts = st.counts()
    rd = ReportData(path=str(Path(results)), runs=runs, final=final, sweeps=sweeps, counts=counts,
                    generated_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    groups: dict[tuple[str, ...], Group] = {}
    for r in sorted(runs, key=lambda r: (tuple(str(r["labels"].get(a)) for a in GROUP_AXES), r["seed"])):
        if r["status"] != "completed":
            continue
        # runs are seeds of one configuration only if their configs agree up to the seed: labels alone
        # would merge, e.g., the same spec run before and after its epochs were edited into one mean ± std
        rest = canonical_json({k: v for k, v in r["config"].items() if k != "seed"})
        key = (*(str(r["labels"].get(a)) for a in GROUP_AXES), rest)
        g = groups.setdefault(key, Group(key=key, labels={a: r["labels"].get(a) for a in
                                                          (*GROUP_AXES, "noise_kind", "noise_rate")}))
        g.run_ids.append(r["id"])
        g.seeds.append(r["seed"])
        for name, v in final.get(r["id"], {}).items():
            g.values.setdefault(name, []).append(v)
    rd.groups = list(groups.values())
    return rd


# -- columns and leaderboards -------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    metric: str
    header: str
    higher_is_better: bool | None  # None: not ranked


_EPS_RE = re.compile(r"=(.*)$")


def _num_key(name: str) -> float:
    m = _EPS_RE.search(name)
    try:
        return float(m.group(1)) if m else 0.0
    except ValueError:
        return 0.0


def _columns(groups: list[Group], *, compact: bool = False) -> list[Column]:
    """Leaderboard columns present in ``groups``; ``compact`` keeps one column per metric family
    (the middle ε / radius of a grid, the first conformal score) for a terminal-width table."""
    names = sorted({n for g in groups for n in g.values})
    cols: list[Column] = []
    scores_seen: list[str] = []

    def add(prefix: str, header: Any, better: bool | None, *, exclude: Iterable[str] = ()) -> None:
        sel = sorted((n for n in names if n.startswith(prefix) and n not in exclude), key=lambda n: (_num_key(n), n))
        if compact and len(sel) > 1:
            sel = [sel[len(sel) // 2]]
        for n in sel:
            cols.append(Column(n, header(n) if callable(header) else header, better))

    add("acc/clean", "clean acc", True)
    tops = sorted((n for n in names if re.fullmatch(r"acc/top\d+", n) and n != "acc/top1"), key=lambda n: int(n[7:]))
    for n in tops[-1:] if compact else tops:
        cols.append(Column(n, f"top-{n[7:]} acc", True))
    add("acc/worst_class", "worst-class acc", True)
    add("mem/memorized", "memorized (noisy) ↓", False)
    robust = [n for n in names if n.startswith("robust_acc/any/")]
    if robust:
        add("robust_acc/any/", lambda n: f"robust acc ε={n.split('=')[1]}", True)
    else:
        first = sorted({n.split("/")[1] for n in names if n.startswith("robust_acc/") and "/eps=" in n
                        and not n.startswith("robust_acc/worst_class")})
        if first:
            add(f"robust_acc/{first[0]}/", lambda n: f"{n.split('/')[1]} acc ε={n.split('=')[1]}", True)
    add("powerlaw/k", "power-law k", None, exclude=("powerlaw/k_lo", "powerlaw/k_hi"))
    add("cert_acc/ibp/", lambda n: f"IBP cert ε={n.split('=')[1]}", True)
    add("cert_acc/rs/", lambda n: f"RS cert r={n.split('=')[1]}", True, exclude=("cert_acc/rs/r=0",))
    for s in sorted({n.split("/")[1] for n in names if n.startswith("conformal/")}):
        if compact and scores_seen:
            break
        scores_seen.append(s)
        add(f"conformal/{s}/coverage", f"{s} coverage", None)
        add(f"conformal/{s}/set_size", f"{s} set size ↓", False)
    add("corr_acc/mean", "corruption acc", True)
    return cols


def _method_axes(groups: list[Group]) -> list[str]:
    """Axes that vary among ``groups`` (besides data); at least ``loss``."""
    out = [a for a in ("noise", "model", "loss", "objective") if len({g.labels[a] for g in groups}) > 1]
    return out or ["loss"]


def _method(g: Group, axes: list[str]) -> str:
    return " / ".join(str(g.labels[a]) for a in axes if a != "noise")


@dataclass
class Leaderboard:
    data: str
    axes: list[str]
    columns: list[Column]
    rows: list[tuple[Group, list[tuple[float, float, int] | None]]]
    best: list[float | None]


def leaderboards(rd: ReportData, *, compact: bool = False) -> list[Leaderboard]:
    """One leaderboard per data set: rows = configurations (mean ± std over seeds), sorted by clean acc."""
    out = []
    for data in sorted({g.labels["data"] for g in rd.groups}):
        gs = [g for g in rd.groups if g.labels["data"] == data]
        cols = _columns(gs, compact=compact)
        axes = [a for a in ("noise", "model", "loss", "objective") if len({g.labels[a] for g in gs}) > 1] or ["loss"]
        rows: list[tuple[Group, list[Any]]] = [(g, [g.stat(c.metric) for c in cols]) for g in gs]

        def lead(r: tuple[Group, list[Any]]) -> float:
            return r[1][0][0] if r[1] and r[1][0] is not None else -1.0

        rows.sort(key=lambda r: (-lead(r), r[0].key))
        best: list[float | None] = []
        for i, c in enumerate(cols):
            vals = [r[1][i][0] for r in rows if r[1][i] is not None]
            if c.higher_is_better is None or not vals:
                best.append(None)
            else:
                best.append(max(vals) if c.higher_is_better else min(vals))
        out.append(Leaderboard(data=data, axes=axes, columns=cols, rows=rows, best=best))
    return out


def _cell(s: tuple[float, float, int] | None, best: float | None, *, md: bool) -> str:
    if s is None:
        return "–"
    m, sd, n = s
    text = f"{m:.3f}" + (f" ± {sd:.3f}" if n > 1 else "")
    if best is not None and abs(m - best) <= 1e-12:
        return f"**{text}**" if md else f"<b>{text}</b>"
    return text


# -- Markdown -----------------------------------------------------------------------------------
def _md_table(header: list[str], rows: list[list[str]], align_right_from: int) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i < align_right_from else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def leaderboard_markdown(rd: ReportData, *, compact: bool = False) -> str:
    """The leaderboard tables alone; ``compact`` (what ``make demo`` prints) keeps one column per family."""
    parts = []
    for lb in leaderboards(rd, compact=compact):
        header = [a for a in lb.axes] + ["n"] + [c.header for c in lb.columns]
        rows = []
        for g, stats in lb.rows:
            rows.append([str(g.labels[a]) for a in lb.axes] + [str(len(g.seeds))]
                        + [_cell(s, b, md=True) for s, b in zip(stats, lb.best)])
        parts.append(f"### {lb.data}\n\n" + _md_table(header, rows, len(lb.axes)))
    return "\n\n".join(parts) if parts else "(no completed runs)"


def to_markdown(rd: ReportData) -> str:
    """Markdown summary: provenance, leaderboards (best per column in bold), failures, environment."""
    specs = ", ".join(s["spec"] for s in rd.sweeps) or "(none)"
    out = [f"# robustlab benchmark report: {specs}", "",
           f"Generated {rd.generated_at} from `{rd.path}/results.db`. Runs: "
           + ", ".join(f"{k} {v}" for k, v in rd.counts.items()) + ".", ""]
    for w in _warnings(rd):
        out += [f"> **Note.** {w}", ""]
    out += ["## Leaderboard", "", "Mean ± sample standard deviation over seeds (n = number of seeds); "
            "best value per column in bold; ↓ = lower is better.", "", leaderboard_markdown(rd), ""]
    failed = [r for r in rd.runs if r["status"] == "failed"]
    if failed:
        out += ["## Failed runs", ""]
        out.append(_md_table(["run", "config", "error"],
                             [[r["id"][:12], _describe(r), (r["error"] or "").replace("|", "\\|")[:200]] for r in failed], 3))
        out.append("")
    out += ["## Environment", ""]
    for k, v in _environment(rd).items():
        out.append(f"- {k}: {v}")
    return "\n".join(out) + "\n"


def _describe(r: dict[str, Any]) -> str:
    lab = r["labels"]
    return " ".join(f"{a}={lab.get(a)}" for a in (*GROUP_AXES, "seed"))


def _environment(rd: ReportData) -> dict[str, str]:
    def distinct(key: str) -> str:
        vals = sorted({str(r.get(key)) for r in rd.runs if r.get(key) is not None})
        return ", ".join(vals) if vals else "n/a"

    threads = sorted({str(r["env"].get("threads")) for r in rd.runs if r.get("env", {}).get("threads")})
    pys = sorted({str(r["env"].get("python")) for r in rd.runs if r.get("env", {}).get("python")})
    plats = sorted({str(r["env"].get("platform")) for r in rd.runs if r.get("env", {}).get("platform")})
    durations = [r["duration_s"] for r in rd.runs if r.get("duration_s")]
    return {
        "robustlab": distinct("robustlab_version"),
        "torch": distinct("torch_version"),
        "git commit": ", ".join(c[:12] for c in distinct("git_commit").split(", ")),
        "python": ", ".join(pys) or "n/a",
        "platform": ", ".join(plats) or "n/a",
        "hosts": distinct("host"),
        "executors": distinct("executor"),
        "torch threads per run": ", ".join(threads) or "n/a",
        "run time": (f"{sum(durations):.1f} s over {len(durations)} runs (median {statistics.median(durations):.2f} s)"
                     if durations else "n/a"),
    }


def _warnings(rd: ReportData) -> list[str]:
    w = []
    for key, what in (("robustlab_version", "robustlab versions"), ("git_commit", "git commits")):
        vals = {r.get(key) for r in rd.runs if r["status"] == "completed" and r.get(key)}
        if len(vals) > 1:
            w.append(f"completed runs come from {len(vals)} different {what}; numbers may not be comparable.")
    if any(n.startswith("corr_acc/") for g in rd.groups for n in g.values):
        w.append("corruptions are computed in memory by robustlab.shift; the numbers are not comparable to "
                 "published CIFAR-10-C / MNIST-C figures computed from the released files.")
    shown = [tuple(str(g.labels[a]) for a in GROUP_AXES) for g in rd.groups]
    clash = sorted({k for k in shown if shown.count(k) > 1})
    if clash:
        w.append(f"{len(clash)} label combination(s) (e.g. {' / '.join(clash[0])}) stand for several different "
                 "configurations (other settings differ, e.g. train epochs); each is listed separately. Give them "
                 "distinct labels in the spec or use separate results directories.")
    if any(len(g.seeds) == 1 for g in rd.groups):
        w.append("some configurations have a single seed: their ± is not shown and their ranking is not a "
                 "statistical claim.")
    return w


# -- plots --------------------------------------------------------------------------------------
def _series_label(g: Group, axes: list[str], extra: str = "") -> str:
    lab = " / ".join(str(g.labels[a]) for a in axes) or str(g.labels["loss"])
    return lab + extra


def _varying(groups: list[Group]) -> list[str]:
    """Axes whose value differs among ``groups`` (for short legend labels); at least ``loss``."""
    return [a for a in ("noise", "model", "loss", "objective") if len({g.labels[a] for g in groups}) > 1] or ["loss"]


def _plots(rd: ReportData) -> list[tuple[str, str, str]]:
    """``(section, caption, svg)`` for every plot the data supports."""
    plots: list[tuple[str, str, str]] = []
    for data in sorted({g.labels["data"] for g in rd.groups}):
        gs = [g for g in rd.groups if g.labels["data"] == data]
        meth_axes = [a for a in ("model", "loss", "objective") if len({g.labels[a] for g in gs}) > 1] or ["loss"]
        # 1. accuracy vs noise rate, one panel per noise kind, one line per method
        kinds = sorted({g.labels["noise_kind"] for g in gs} - {"none"})
        for kind in kinds:
            series = []
            methods: dict[str, dict[float, Group]] = {}
            for g in gs:
                if g.labels["noise_kind"] in (kind, "none"):
                    methods.setdefault(_method(g, meth_axes), {})[float(g.labels["noise_rate"] or 0.0)] = g
            for m, by_rate in sorted(methods.items()):
                rates = sorted(r for r in by_rate if by_rate[r].stat("acc/clean"))
                if len(rates) < 2:
                    continue
                st: list[Any] = [by_rate[r].stat("acc/clean") for r in rates]
                series.append({"label": m, "x": rates, "y": [s[0] for s in st], "err": [s[1] for s in st]})
            if series:
                plots.append(("Accuracy vs label-noise rate", f"{data}: clean test accuracy vs {kind} noise rate "
                              "(mean ± std over seeds)",
                              _svg.line_chart(series, title=f"{data} — {kind} noise", xlabel="noise rate",
                                              ylabel="test accuracy")))
        # 2. robust accuracy vs eps, one line per defence/configuration, with the power-law exponent
        series = []
        all_axes = _varying([g for g in gs if any(n.startswith(("robust_acc/", "cert_acc/", "corr_acc/"))
                                                  for n in g.values)] or gs)
        for g in gs:
            names = sorted((n for n in g.values if n.startswith("robust_acc/any/eps=")), key=_num_key)
            if not names:
                attack = sorted({n.split("/")[1] for n in g.values if n.startswith("robust_acc/") and "/eps=" in n
                                 and not n.startswith("robust_acc/worst_class")})
                names = sorted((n for n in g.values if attack and n.startswith(f"robust_acc/{attack[0]}/eps=")),
                               key=_num_key)
            if not names:
                continue
            clean: Any = g.stat("acc/clean")
            xs, ys, es = [0.0], [g.mean("acc/clean")], [clean[1] if clean else 0.0]
            for n in names:
                s = g.stat(n)
                if s:
                    xs.append(_num_key(n))
                    ys.append(s[0])
                    es.append(s[1])
            k = g.stat("powerlaw/k")
            extra = ""
            if k:
                lo, hi = g.mean("powerlaw/k_lo"), g.mean("powerlaw/k_hi")
                extra = f" (k={k[0]:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "") + ")"
            if ys[0] is None:
                xs, ys, es = xs[1:], ys[1:], es[1:]
            series.append({"label": _series_label(g, all_axes, extra), "x": xs, "y": ys, "err": es})
        if series:
            plots.append(("Robust accuracy vs ε", f"{data}: robust accuracy (worst over the attack suite) vs ε; "
                          "k = fitted power-law exponent of robust error vs ε, with its confidence interval",
                          _svg.line_chart(series, title=f"{data} — robust accuracy vs ε", xlabel="ε",
                                          ylabel="robust accuracy")))
        # 3. certified accuracy vs radius
        for prefix, name, xl in (("cert_acc/ibp/eps=", "IBP", "ε (l∞)"), ("cert_acc/rs/r=", "randomized smoothing", "radius (l2)")):
            series = []
            for g in gs:
                names = sorted((n for n in g.values if n.startswith(prefix)), key=_num_key)
                if not names:
                    continue
                cst: list[Any] = [g.stat(n) for n in names]
                series.append({"label": _series_label(g, all_axes), "x": [_num_key(n) for n in names],
                               "y": [x[0] if x else float("nan") for x in cst], "err": [x[1] if x else 0.0 for x in cst]})
            if series:
                plots.append(("Certified accuracy vs radius", f"{data}: {name} certified accuracy vs radius",
                              _svg.line_chart(series, title=f"{data} — {name} certified accuracy", xlabel=xl,
                                              ylabel="certified accuracy")))
        # 4. conformal coverage vs set size
        pts = []
        target = None
        for g in gs:
            for sc in sorted({n.split("/")[1] for n in g.values if n.startswith("conformal/")}):
                cov, size = g.mean(f"conformal/{sc}/coverage"), g.mean(f"conformal/{sc}/set_size")
                if cov is not None and size is not None:
                    pts.append({"label": f"score {sc}", "x": size, "y": cov,
                                "title": f"{_series_label(g, _varying(gs))} ({sc})"})
                    target = g.mean(f"conformal/{sc}/target") or target
        if pts:
            plots.append(("Conformal coverage vs set size", f"{data}: empirical coverage vs mean prediction-set size, "
                          "one point per configuration (hover for its name); dashed: target 1 − α",
                          _svg.scatter_chart(pts, title=f"{data} — conformal sets", xlabel="mean set size",
                                             ylabel="coverage", hline=(target, "target") if target else None)))
        # 5. per-class disparity
        ranked = sorted((g for g in gs if g.stat("acc/clean") and g.stat("acc/worst_class")),
                        key=lambda g: -(g.mean("acc/clean") or 0))[:8]
        if ranked:
            cats = [_series_label(g, _varying(ranked)) for g in ranked]
            series = [{"label": "mean accuracy", "y": [g.mean("acc/clean") for g in ranked]},
                      {"label": "worst-class accuracy", "y": [g.mean("acc/worst_class") for g in ranked]}]
            rw = [g for g in ranked if any(n.startswith("robust_acc/worst_class/") for n in g.values)]
            if rw:
                def worst_robust(g: Group) -> float | None:
                    ns = sorted((n for n in g.values if n.startswith("robust_acc/worst_class/")), key=_num_key)
                    return g.mean(ns[0]) if ns else None
                series.append({"label": "worst-class robust acc (smallest ε)", "y": [worst_robust(g) for g in ranked]})
            plots.append(("Per-class disparity", f"{data}: mean vs worst-class test accuracy (top {len(ranked)} "
                          "configurations by clean accuracy)",
                          _svg.bar_chart(cats, series, title=f"{data} — per-class disparity", ylabel="accuracy")))
        # 6. corruptions: accuracy vs severity (mean over corruptions)
        series = []
        for g in gs:
            sev: dict[int, list[float]] = {}
            for n in g.values:
                parts = n.split("/")
                if n.startswith("corr_acc/") and len(parts) == 3 and parts[2].isdigit():
                    mv = g.mean(n)
                    if mv is not None:
                        sev.setdefault(int(parts[2]), []).append(mv)
            if sev:
                levels = sorted(sev)
                series.append({"label": _series_label(g, all_axes), "x": [float(x) for x in levels],
                               "y": [statistics.fmean(sev[x]) for x in levels]})
        if series:
            plots.append(("Accuracy under corruptions", f"{data}: accuracy vs corruption severity, mean over the "
                          "corruption suite (in-memory corruptions)",
                          _svg.line_chart(series, title=f"{data} — corruptions", xlabel="severity",
                                          ylabel="accuracy")))
    return plots


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}.scroll{overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px}th{background:#f4f4f4;cursor:pointer;user-select:none}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0}
figure.plot{display:inline-block;margin:8px 12px 16px 0;vertical-align:top}
figcaption{font-size:12px;color:#555;max-width:560px}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:400px}
.failed{color:#b00020}.muted{color:#666}
"""

_JS = """
(function(){
  function val(td){var t=(td.getAttribute('data-v')||td.textContent).trim();var f=parseFloat(t);return isNaN(f)?t:f;}
  var tables=document.querySelectorAll('table.sortable');
  for(var i=0;i<tables.length;i++){(function(table){
    var ths=table.querySelectorAll('thead th');
    for(var j=0;j<ths.length;j++){(function(th,col){
      th.addEventListener('click',function(){
        var body=table.tBodies[0];if(!body)return;
        var rows=Array.prototype.slice.call(body.rows);
        var asc=th.getAttribute('data-asc')!=='1';th.setAttribute('data-asc',asc?'1':'0');
        rows.sort(function(a,b){var x=val(a.cells[col]),y=val(b.cells[col]);
          if(typeof x===typeof y){return (x<y?-1:x>y?1:0)*(asc?1:-1);} return (typeof x==='number'?-1:1);});
        for(var k=0;k<rows.length;k++){body.appendChild(rows[k]);}
      });})(ths[j],j);}
  })(tables[i]);}
})();
"""


def _html_table(header: list[str], rows: list[list[Any]], *, num_from: int, cls: str = "sortable") -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for i, (html, sort) in enumerate(r):
            attrs = ' class="num"' if i >= num_from else ""
            if sort is not None:
                attrs += f' data-v="{escape(sort)}"'
            cells.append(f"<td{attrs}>{html}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def to_html(rd: ReportData) -> str:
    """A self-contained HTML page (inline CSS, inline SVG, ~30 lines of optional JS for sorting)."""
    specs = ", ".join(s["spec"] for s in rd.sweeps) or "(none)"
    h: list[str] = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                    f"<title>robustlab report: {escape(specs)}</title><style>{_CSS}</style></head><body>",
                    f"<h1>robustlab benchmark report: {escape(specs)}</h1>",
                    f"<p class=\"muted\">Generated {escape(rd.generated_at)} from <code>{escape(rd.path)}/results.db</code>. "
                    + "Runs: " + ", ".join(f"{escape(k)} <b>{v}</b>" for k, v in rd.counts.items()) + ".</p>"]
    for w in _warnings(rd):
        h.append(f'<p class="note">{escape(w)}</p>')
    h.append('<h2 id="leaderboard">Leaderboard</h2><p>Mean ± sample standard deviation over seeds (n = number of '
             'seeds); best value per column in <b>bold</b>; ↓ = lower is better. Click a header to sort.</p>')
    for lb in leaderboards(rd):
        header = [*lb.axes, "n"] + [c.header for c in lb.columns]
        rows: list[list[Any]] = []
        for g, stats in lb.rows:
            rows.append([(escape(str(g.labels[a])), None) for a in lb.axes] + [(str(len(g.seeds)), str(len(g.seeds)))]
                        + [(_cell(s, b, md=False), None if s is None else f"{s[0]:.6f}") for s, b in zip(stats, lb.best)])
        h.append(f"<h3>{escape(lb.data)}</h3><div class=\"scroll\">" + _html_table(header, rows, num_from=len(lb.axes))
                 + "</div>")
    plots = _plots(rd)
    order = {sec: i for i, sec in enumerate(dict.fromkeys(p[0] for p in plots))}
    plots.sort(key=lambda p: order[p[0]])  # stable: one section per kind, data sets in order inside it
    section = None
    for sec, caption, svg in plots:
        if sec != section:
            h.append(f"<h2>{escape(sec)}</h2>")
            section = sec
        h.append(f'<figure class="plot">{svg}<figcaption>{escape(caption)}</figcaption></figure>')
    failed = [r for r in rd.runs if r["status"] == "failed"]
    if failed:
        h.append(f'<h2 id="failures" class="failed">Failed runs ({len(failed)})</h2>')
        for r in failed:
            tb = "\n".join((r.get("traceback") or "").splitlines()[-30:])
            h.append(f"<details><summary><code>{r['id'][:12]}</code> {escape(_describe(r))}: "
                     f"<span class=\"failed\">{escape(r.get('error') or '')}</span></summary><pre>{escape(tb)}</pre></details>")
    h.append("<h2>All runs</h2><details><summary>" + f"{len(rd.runs)} runs" + "</summary>")
    rows = []
    for r in sorted(rd.runs, key=lambda r: (_describe(r), r["id"])):
        clean = rd.final.get(r["id"], {}).get("acc/clean")
        rows.append([(f"<code>{r['id'][:12]}</code>", None)]
                    + [(escape(str(r["labels"].get(a))), None) for a in (*GROUP_AXES, "seed")]
                    + [(escape(r["status"]), None), (f"{r['duration_s']:.2f}" if r.get("duration_s") else "–", None),
                       ("–" if clean is None else f"{clean:.3f}", None)])
    h.append(_html_table(["run", *GROUP_AXES, "seed", "status", "time (s)", "clean acc"], rows, num_from=8))
    h.append("</details>")
    h.append("<h2>Environment</h2><table><tbody>" + "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _environment(rd).items()) + "</tbody></table>")
    h.append("<h2>Spec</h2>")
    import yaml

    for s in rd.sweeps:
        spec = json.loads(s["spec_json"])
        h.append(f"<p>Spec <b>{escape(s['spec'])}</b> (robustlab {escape(str(s.get('robustlab_version')))}, "
                 f"executor {escape(str(s.get('executor')))}); reproduce with "
                 f"<code>robustlab bench run SPEC.yaml --out DIR</code>:</p>"
                 f"<pre>{escape(yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))}</pre>")
    h.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(h)


def write_report(results: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Write the HTML report (default ``DIR/report.html``) and ``report.md`` beside it; return both paths."""
    from ..training import atomic_write_text

    rd = load_report_data(results)
    html_path = Path(output) if output is not None else Path(results) / "report.html"
    md_path = html_path.with_suffix(".md")
    atomic_write_text(html_path, to_html(rd))
    atomic_write_text(md_path, to_markdown(rd))
    return html_path, md_path
