"""The report: built only from ``results.db``; a self-contained HTML page or a Markdown summary.

``load_report_data(dir)`` reads the database; ``to_markdown``/``to_html`` are pure functions of that
data; ``write_report`` writes them atomically. Which metrics become leaderboard columns, their
headers, ranking direction and plots are read from the evaluations' metric declarations
(``Evaluation.metrics``), never from name prefixes. Leaderboards aggregate over seeds (mean ± sample
std, n shown) and bold the best value within each group of comparable runs (same data and noise);
seeds whose model collapsed are flagged and left out of the means. Untrusted text (labels, spec
names, errors) is escaped for HTML and Markdown and stripped of terminal control sequences.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from ..pipeline import AXES, COLLAB_AXES
from ._metrics import MetricMatch, match_metric
from .evaluations import EVALUATIONS, collapse_reason, declared_metrics
from .spec import canonical_json
from .store import ResultStore

__all__ = ["ReportData", "leaderboard_markdown", "leaderboards", "load_report_data", "to_html", "to_markdown",
           "write_report"]

GROUP_AXES = tuple(a for a in AXES if a != "seed")  # a group = runs differing only by seed
_METHOD_AXES = (*(a for a in GROUP_AXES if a != "data"), *COLLAB_AXES)  # what varies inside one leaderboard
FORMATS = {".html": "html", ".htm": "html", ".md": "markdown"}


# -- untrusted text -----------------------------------------------------------------------------
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\x00-\x1f\x7f-\x9f]")
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def plain(text: Any) -> str:
    """``text`` on one line without terminal control sequences (ANSI escapes, C0/C1 controls)."""
    s = re.sub(r"\s*[\r\n\t\v\f]+\s*", " ", str(text))
    return _CONTROL.sub("", s).strip()


def md_escape(text: Any) -> str:
    """``text`` safe inside Markdown (and a table cell): one line, no control sequences, Markdown and
    HTML syntax (``|``, ``*``, ``<``, backticks, ...) backslash-escaped, ``&`` as an entity."""
    return _MD_SPECIAL.sub(r"\\\1", plain(text).replace("&", "&amp;"))


# -- data ---------------------------------------------------------------------------------------
@dataclass
class Group:
    """Runs sharing everything but the seed. ``collapsed`` lists ``(seed, run id, reason)`` of seeds whose
    model collapsed: they are left out of ``values`` unless every seed collapsed (``all_collapsed``)."""

    key: tuple[str, ...]
    labels: dict[str, Any]
    run_ids: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    collapsed: list[tuple[int, str, str]] = field(default_factory=list)
    all_collapsed: bool = False

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
    matches: dict[str, MetricMatch | None] = field(default_factory=dict)  # metric name -> its declaration


def load_report_data(results: str | os.PathLike[str]) -> ReportData:
    """Read ``DIR/results.db`` (read-only), resolve metric names to their declarations, group completed
    runs over seeds and set collapsed seeds aside."""
    with ResultStore(results, readonly=True) as st:
        runs = st.runs()
        final = st.final_metrics()
        sweeps = st.sweeps()
        counts = st.counts()
    rd = ReportData(path=str(Path(results)), runs=runs, final=final, sweeps=sweeps, counts=counts,
                    generated_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    declared = declared_metrics()
    rd.matches = {n: match_metric(n, declared) for vals in final.values() for n in vals}
    groups: dict[tuple[str, ...], tuple[Group, list[dict[str, Any]]]] = {}
    for r in sorted(runs, key=lambda r: (tuple(str(r["labels"].get(a)) for a in GROUP_AXES), r["seed"])):
        if r["status"] != "completed":
            continue
        # runs are seeds of one configuration only if their configs agree up to the seed: labels alone
        # would merge, e.g., the same spec run before and after its epochs were edited into one mean ± std
        rest = canonical_json({k: v for k, v in r["config"].items() if k != "seed"})
        key = (*(str(r["labels"].get(a)) for a in GROUP_AXES), rest)
        g, members = groups.setdefault(key, (Group(key=key, labels={a: r["labels"].get(a) for a in
                                                                    (*GROUP_AXES, "noise_kind", "noise_rate",
                                                                     *COLLAB_AXES)}), []))
        members.append(r)
    for g, members in groups.values():
        healthy = []
        for r in members:
            why = collapse_reason(final.get(r["id"], {}))
            if why is None:
                healthy.append(r)
            else:
                g.collapsed.append((r["seed"], r["id"], why))
        g.all_collapsed = not healthy
        for r in healthy or members:
            g.run_ids.append(r["id"])
            g.seeds.append(r["seed"])
            for name, v in final.get(r["id"], {}).items():
                g.values.setdefault(name, []).append(v)
    rd.groups = [g for g, _ in groups.values()]
    return rd


# -- columns and leaderboards -------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One leaderboard column: a metric name with its declared header and ranking direction.
    ``limit`` names the metric bounding ``x`` (a radius beyond it is not a result)."""

    metric: str
    header: str
    higher_is_better: bool | None  # None: not ranked
    limit: str | None = None
    x: float = math.nan


def _columns(rd: ReportData, groups: list[Group], *, compact: bool = False) -> list[Column]:
    """Leaderboard columns present in ``groups``, in declaration order; ``compact`` keeps the middle
    value of each declared family (one ε, one radius, one score) for a terminal-width table."""
    order = {id(m): i for i, (_, m) in enumerate(declared_metrics())}
    found = [m for n in {n for g in groups for n in g.values}
             if (m := rd.matches.get(n)) is not None and m.metric.leaderboard and n not in m.metric.hide]
    found.sort(key=lambda m: (order.get(id(m.metric), len(order)), m.sort_key(), m.name))
    if compact:
        fams: dict[int, list[MetricMatch]] = {}
        for m in found:
            lim = m.metric.limit
            lims = [v for g in groups if lim and (v := g.mean(lim[1])) is not None]
            if not lims or m.number(lim[0]) <= max(lims) + 1e-12:  # a column that is n/a everywhere says nothing
                fams.setdefault(id(m.metric), []).append(m)
        found = [ms[len(ms) // 2] for ms in fams.values()]
    cols = []
    for m in found:
        lim = m.metric.limit
        cols.append(Column(m.name, m.header, m.metric.higher_is_better, limit=lim[1] if lim else None,
                           x=m.number(lim[0]) if lim else math.nan))
    return cols


Cell = tuple[float, float, int] | str | None  # mean, std, n; or why there is no result


@dataclass
class Leaderboard:
    data: str
    axes: list[str]
    columns: list[Column]
    rows: list[tuple[Group, list[Cell]]]
    best: dict[str, list[float | None]]  # per noise label (the comparable group): best value per column


def _noise_order(g: Group) -> tuple[Any, ...]:
    return (g.labels.get("noise_kind") not in (None, "none"), str(g.labels.get("noise_kind")),
            float(g.labels.get("noise_rate") or 0.0), str(g.labels.get("noise")))


def _cell_value(g: Group, c: Column) -> Cell:
    if c.limit is not None:
        lim = g.mean(c.limit)
        if lim is not None and c.x > lim + 1e-12:
            return f"n/a (max {lim:.3g})"
    return g.stat(c.metric)


def leaderboards(rd: ReportData, *, compact: bool = False) -> list[Leaderboard]:
    """One leaderboard per data set; rows are configurations (mean ± std over seeds) grouped by noise,
    sorted by the first column inside each noise group; best values are per noise group."""
    out = []
    for data in sorted({str(g.labels["data"]) for g in rd.groups}):
        gs = [g for g in rd.groups if str(g.labels["data"]) == data]
        cols = _columns(rd, gs, compact=compact)
        axes = [a for a in _METHOD_AXES if len({g.labels[a] for g in gs}) > 1] or ["loss"]
        rows: list[tuple[Group, list[Cell]]] = [(g, [_cell_value(g, c) for c in cols]) for g in gs]

        def lead(r: tuple[Group, list[Cell]]) -> float:
            v = r[1][0] if r[1] else None
            return v[0] if isinstance(v, tuple) else -1.0

        rows.sort(key=lambda r: (_noise_order(r[0]), -lead(r), r[0].key))
        best: dict[str, list[float | None]] = {}
        for noise in {str(g.labels["noise"]) for g in gs}:
            peers = [r for r in rows if str(r[0].labels["noise"]) == noise and not r[0].all_collapsed]
            best[noise] = []
            for i, c in enumerate(cols):
                vals = [v[0] for r in peers if isinstance(v := r[1][i], tuple)]
                best[noise].append(None if c.higher_is_better is None or not vals
                                   else max(vals) if c.higher_is_better else min(vals))
        out.append(Leaderboard(data=data, axes=axes, columns=cols, rows=rows, best=best))
    return out


def _cell(s: Cell, best: float | None, *, md: bool) -> str:
    if s is None:
        return "–"
    if isinstance(s, str):
        return md_escape(s) if md else f'<span class="muted" title="beyond the largest certifiable radius">{escape(s)}</span>'
    m, sd, n = s
    text = f"{m:.3f}" + (f" ± {sd:.3f}" if n > 1 else "")
    if best is not None and abs(m - best) <= 1e-12:
        return f"**{text}**" if md else f"<b>{text}</b>"
    return text


def _n_cell(g: Group) -> str:
    if g.all_collapsed:
        return f"{len(g.seeds)} collapsed"
    return str(len(g.seeds)) + (f" (+{len(g.collapsed)} collapsed)" if g.collapsed else "")


def _lead_metric() -> tuple[str, str]:
    """The first declared leaderboard metric (clean accuracy): name and label, for the all-runs table."""
    m = next(m for _, m in declared_metrics() if m.leaderboard and not m.placeholders)
    return m.pattern, m.label


# -- Markdown -----------------------------------------------------------------------------------
def _md_table(header: list[str], rows: list[list[str]], align_right_from: int) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i < align_right_from else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def leaderboard_markdown(rd: ReportData, *, compact: bool = False) -> str:
    """The leaderboard tables alone (also what the CLI prints: every label is escaped and stripped of
    control sequences); ``compact`` keeps one column per metric family."""
    parts = []
    for lb in leaderboards(rd, compact=compact):
        header = [md_escape(a) for a in lb.axes] + ["n"] + [md_escape(c.header) for c in lb.columns]
        rows = []
        for g, stats in lb.rows:
            best = lb.best[str(g.labels["noise"])]
            rows.append([md_escape(g.labels[a]) for a in lb.axes] + [_n_cell(g)]
                        + [_cell(s, b, md=True) for s, b in zip(stats, best)])
        parts.append(f"### {md_escape(lb.data)}\n\n" + _md_table(header, rows, len(lb.axes)))
    return "\n\n".join(parts) if parts else "(no completed runs)"


_LEGEND = ("Mean ± sample standard deviation over seeds (n = number of seeds); best value per column in bold "
           "within each group of comparable runs (same data and noise); ↓ = lower is better; "
           "“n/a (max R)”: the radius exceeds R, the largest one the smoothing settings can certify.")


def to_markdown(rd: ReportData) -> str:
    """Markdown summary: provenance, leaderboards, collapsed seeds, failures, environment."""
    specs = ", ".join(md_escape(s["spec"]) for s in rd.sweeps) or "(none)"
    out = [f"# robustlab benchmark report: {specs}", "",
           f"Generated {rd.generated_at} from {md_escape(rd.path + '/results.db')}. Runs: "
           + ", ".join(f"{md_escape(k)} {v}" for k, v in rd.counts.items()) + ".", ""]
    for w in _warnings(rd):
        out += [f"> **Note.** {md_escape(w)}", ""]
    out += ["## Leaderboard", "", _LEGEND, "", leaderboard_markdown(rd), ""]
    failed = [r for r in rd.runs if r["status"] == "failed"]
    if failed:
        out += ["## Failed runs", ""]
        out.append(_md_table(["run", "config", "error"], [[md_escape(r["id"][:12]), md_escape(_describe(r)),
                                                           md_escape((r["error"] or "")[:200])] for r in failed], 3))
        out.append("")
    out += ["## Environment", ""]
    for k, v in _environment(rd).items():
        out.append(f"- {k}: {md_escape(v)}")
    return "\n".join(out) + "\n"


def _describe(r: dict[str, Any]) -> str:
    lab = r["labels"]
    return " ".join(f"{a}={lab.get(a)}" for a in (*GROUP_AXES, "seed"))


def _environment(rd: ReportData) -> dict[str, str]:
    def distinct(key: str) -> str:
        vals = sorted({str(r.get(key)) for r in rd.runs if r.get(key) is not None})
        return ", ".join(vals) if vals else "n/a"

    def env(key: str) -> str:
        return ", ".join(sorted({str(r["env"].get(key)) for r in rd.runs if (r.get("env") or {}).get(key)})) or "n/a"

    durations = [r["duration_s"] for r in rd.runs if r.get("duration_s")]
    return {
        "robustlab": distinct("robustlab_version"),
        "torch": distinct("torch_version"),
        "git commit": ", ".join(c[:12] for c in distinct("git_commit").split(", ")),
        "python": env("python"),
        "platform": env("platform"),
        "cpu": env("cpu"),
        "hosts": distinct("host"),
        "executors": distinct("executor"),
        "torch threads per run": env("threads"),
        "run time": (f"{sum(durations):.1f} s over {len(durations)} runs (median {statistics.median(durations):.2f} s)"
                     if durations else "n/a"),
    }


def _warnings(rd: ReportData) -> list[str]:
    w = []
    for key, what in (("robustlab_version", "robustlab versions"), ("git_commit", "git commits")):
        vals = {r.get(key) for r in rd.runs if r["status"] == "completed" and r.get(key)}
        if len(vals) > 1:
            w.append(f"completed runs come from {len(vals)} different {what}; numbers may not be comparable.")
    present = {m.evaluation for n in {n for g in rd.groups for n in g.values} if (m := rd.matches.get(n))}
    for name in present:
        note = getattr(EVALUATIONS.spec(name).factory, "note", "") if name in EVALUATIONS else ""
        if note:
            w.append(note)
    collapsed = [(g, s, why) for g in rd.groups for s, _, why in g.collapsed]
    if collapsed:
        shown = "; ".join(f"{' / '.join(str(g.labels[a]) for a in GROUP_AXES)} seed {s}: {why}"
                          for g, s, why in collapsed[:5])
        w.append(f"{len(collapsed)} run(s) collapsed and are left out of the means (marked in n): {shown}"
                 + (" ..." if len(collapsed) > 5 else "") + ".")
    shown_keys = [tuple(str(g.labels[a]) for a in GROUP_AXES) for g in rd.groups]
    clash = sorted({k for k in shown_keys if shown_keys.count(k) > 1})
    if clash:
        w.append(f"{len(clash)} label combination(s) (e.g. {' / '.join(clash[0])}) stand for several different "
                 "configurations (other settings differ, e.g. train epochs); each is listed separately. Give them "
                 "distinct labels in the spec or use separate results directories.")
    if any(len(g.seeds) == 1 for g in rd.groups):
        w.append("some configurations have a single seed: their ± is not shown and their ranking is not a "
                 "statistical claim.")
    return w


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
    """A self-contained HTML page (inline CSS, inline SVG, ~30 lines of optional JS for sorting); every
    text from the database is escaped."""
    from ._report_plots import plots as _plots

    specs = ", ".join(s["spec"] for s in rd.sweeps) or "(none)"
    h: list[str] = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                    f"<title>robustlab report: {escape(plain(specs))}</title><style>{_CSS}</style></head><body>",
                    f"<h1>robustlab benchmark report: {escape(plain(specs))}</h1>",
                    f"<p class=\"muted\">Generated {escape(rd.generated_at)} from <code>{escape(rd.path)}/results.db</code>. "
                    + "Runs: " + ", ".join(f"{escape(k)} <b>{v}</b>" for k, v in rd.counts.items()) + ".</p>"]
    for w in _warnings(rd):
        h.append(f'<p class="note">{escape(plain(w))}</p>')
    h.append(f'<h2 id="leaderboard">Leaderboard</h2><p>{escape(_LEGEND)} Click a header to sort.</p>')
    for lb in leaderboards(rd):
        header = [*lb.axes, "n"] + [c.header for c in lb.columns]
        rows: list[list[Any]] = []
        for g, stats in lb.rows:
            best = lb.best[str(g.labels["noise"])]
            rows.append([(escape(plain(g.labels[a])), None) for a in lb.axes] + [(escape(_n_cell(g)), str(len(g.seeds)))]
                        + [(_cell(s, b, md=False), f"{s[0]:.6f}" if isinstance(s, tuple) else None)
                           for s, b in zip(stats, best)])
        h.append(f"<h3>{escape(plain(lb.data))}</h3><div class=\"scroll\">"
                 + _html_table(header, rows, num_from=len(lb.axes)) + "</div>")
    from ._report_collab import collab_plots

    plots = _plots(rd) + collab_plots(rd)
    order = {sec: i for i, sec in enumerate(dict.fromkeys(p[0] for p in plots))}
    plots.sort(key=lambda p: order[p[0]])  # stable: one section per kind, data sets in order inside it
    section = None
    for sec, caption, svg in plots:
        if sec != section:
            h.append(f"<h2>{escape(sec)}</h2>")
            section = sec
        h.append(f'<figure class="plot">{svg}<figcaption>{escape(plain(caption))}</figcaption></figure>')
    failed = [r for r in rd.runs if r["status"] == "failed"]
    if failed:
        h.append(f'<h2 id="failures" class="failed">Failed runs ({len(failed)})</h2>')
        for r in failed:
            tb = "\n".join((r.get("traceback") or "").splitlines()[-30:])
            h.append(f"<details><summary><code>{escape(r['id'][:12])}</code> {escape(plain(_describe(r)))}: "
                     f"<span class=\"failed\">{escape(plain(r.get('error') or ''))}</span></summary>"
                     f"<pre>{escape(_CONTROL.sub('', tb))}</pre></details>")
    lead, lead_label = _lead_metric()
    h.append("<h2>All runs</h2><details><summary>" + f"{len(rd.runs)} runs" + "</summary>")
    rows = []
    for r in sorted(rd.runs, key=lambda r: (_describe(r), r["id"])):
        clean = rd.final.get(r["id"], {}).get(lead)
        why = collapse_reason(rd.final.get(r["id"], {})) if r["status"] == "completed" else None
        rows.append([(f"<code>{escape(r['id'][:12])}</code>", None)]
                    + [(escape(plain(r["labels"].get(a))), None) for a in (*GROUP_AXES, "seed")]
                    + [(escape(r["status"]) + (f' <span class="failed">(collapsed: {escape(why)})</span>' if why else ""),
                        None),
                       (f"{r['duration_s']:.2f}" if r.get("duration_s") else "–", None),
                       ("–" if clean is None else f"{clean:.3f}", None)])
    h.append(_html_table(["run", *GROUP_AXES, "seed", "status", "time (s)", lead_label], rows, num_from=8))
    h.append("</details>")
    h.append("<h2>Environment</h2><table><tbody>" + "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(plain(v))}</td></tr>" for k, v in _environment(rd).items())
        + "</tbody></table>")
    h.append("<h2>Spec</h2>")
    import yaml

    for s in rd.sweeps:
        spec = json.loads(s["spec_json"])
        h.append(f"<p>Spec <b>{escape(plain(s['spec']))}</b> (robustlab {escape(plain(s.get('robustlab_version')))}, "
                 f"executor {escape(plain(s.get('executor')))}); reproduce with "
                 f"<code>robustlab bench run SPEC.yaml --out DIR</code>:</p>"
                 f"<pre>{escape(yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))}</pre>")
    h.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(h)


def write_report(results: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the report; return the paths written.

    ``output`` None: ``DIR/report.html`` and ``DIR/report.md``. Otherwise its suffix picks the one
    format written: ``.html``/``.htm`` (HTML) or ``.md`` (Markdown), so ``-o r.md`` and ``-o r.html``
    never overwrite each other.
    """
    from .._validation import InvalidParameterError
    from ..training import atomic_write_text

    if output is None:
        targets = [(Path(results) / "report.html", "html"), (Path(results) / "report.md", "markdown")]
    else:
        out = Path(output)
        fmt = FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise InvalidParameterError(f"The report output '{out}' must end in {', '.join(FORMATS)} (the suffix "
                                        f"picks HTML or Markdown). Got suffix {out.suffix or '(none)'!r}.")
        targets = [(out, fmt)]
    rd = load_report_data(results)
    for path, fmt in targets:
        atomic_write_text(path, to_html(rd) if fmt == "html" else to_markdown(rd))
    return [p for p, _ in targets]
