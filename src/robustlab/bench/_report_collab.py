"""The report's collaborative-learning plots: final honest accuracy vs the number f of Byzantine workers.

One panel per data set, Byzantine behaviour, heterogeneity and worker count; one line per aggregator
(plus any other method axis that varies); the f = 0 runs (no attacker, behaviour ``none``) start every line.
Seeds whose model collapsed count here (a collapsed model is what an attack achieves), unlike the leaderboard.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from ..pipeline import AXES, COLLAB_AXES
from . import _svg

if TYPE_CHECKING:
    from .report import Group, ReportData

__all__ = ["collab_plots"]

METRIC = "acc/final_epoch_test"  # honest worker 0's test accuracy after the last epoch
_OTHER = tuple(a for a in AXES if a not in ("data", "seed"))


def _values(rd: ReportData, g: Group) -> list[float]:
    ids = list(g.run_ids) + [rid for _, rid, _ in g.collapsed if rid not in g.run_ids]
    return [v for rid in ids if (v := rd.final.get(rid, {}).get(METRIC)) is not None and v == v]


def collab_plots(rd: ReportData) -> list[tuple[str, str, str]]:
    """``(section, caption, svg)``: accuracy vs f for every collaborative sweep in the results."""
    out: list[tuple[str, str, str]] = []
    gs = [g for g in rd.groups if g.labels.get("f") is not None]
    for data in sorted({str(g.labels["data"]) for g in gs}):
        dg = [g for g in gs if str(g.labels["data"]) == data]
        other = [a for a in _OTHER if len({str(g.labels.get(a)) for g in dg}) > 1]
        panels = sorted({(str(g.labels["byzantine"]), str(g.labels["heterogeneity"]), str(g.labels["workers"]))
                         for g in dg if g.labels["byzantine"] != "none"})
        for byz, het, workers in panels:
            lines: dict[str, dict[int, list[float]]] = {}
            for g in dg:
                if (str(g.labels["heterogeneity"]), str(g.labels["workers"])) != (het, workers):
                    continue
                if str(g.labels["byzantine"]) not in (byz, "none"):
                    continue
                name = " / ".join([str(g.labels["aggregator"]), *(str(g.labels.get(a)) for a in other)])
                lines.setdefault(name, {}).setdefault(int(g.labels["f"]), []).extend(_values(rd, g))
            series: list[dict[str, Any]] = []
            for name, by_f in sorted(lines.items()):
                pts = sorted((f, v) for f, v in by_f.items() if v)
                if len(pts) >= 2:
                    series.append({"label": name, "x": [f for f, _ in pts], "y": [statistics.fmean(v) for _, v in pts],
                                   "err": [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts]})
            if series:
                title = f"{data} — {byz}, {het}, {workers} workers"
                cap = (f"{data}: final honest test accuracy vs the number f of Byzantine workers ({byz}, {het} split, "
                       f"{workers} workers), one line per aggregator (mean ± std over seeds, collapsed seeds included)")
                out.append(("Accuracy vs Byzantine workers", cap,
                            _svg.line_chart(series, title=title, xlabel="f (Byzantine workers)",
                                            ylabel="honest test accuracy")))
    return out


assert set(COLLAB_AXES) == {"aggregator", "byzantine", "f", "workers", "heterogeneity"}  # the labels read above
