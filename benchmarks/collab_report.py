"""Tables and figures of a collaborative sweep (``robustlab bench run collab[-quick] --out DIR``) for the docs.

    python benchmarks/collab_report.py DIR [--figures docs/results/collab] [--grid collab]

Prints how much of each collaborative sweep's grid has completed (runs per seed), then one Markdown table per
(split, behaviour): final honest test accuracy per aggregator and f (mean over seeds, ± std when there are
several, "(n=k)" where a cell has fewer seeds than the fullest cell), and writes the report's accuracy-vs-f plots as SVG
files. A partly-run sweep is reported as it stands; rerunning its ``bench run`` command finishes it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from robustlab.bench import report
from robustlab.bench._report_collab import METRIC, collab_plots
from robustlab.bench.spec import expand


def coverage(rd: report.ReportData, grid_spec: str | None = None) -> tuple[list[str], int]:
    """Lines saying, per collaborative sweep (or for the grid of ``grid_spec``), how many grid runs completed
    per seed; and the most seeds."""
    done = {r["id"] for r in rd.runs if r["status"] == "completed"}
    lines, most = [], 1
    specs = ([(grid_spec, grid_spec)] if grid_spec else
             [(sw["spec"], json.loads(sw["spec_json"])) for sw in rd.sweeps])
    for name, spec in specs:
        grid = [rc for rc in expand(spec) if "f" in rc.labels]
        if not grid:
            continue
        seeds = sorted({rc.seed for rc in grid})
        most = max(most, len(seeds))
        per = [f"seed {s}: {sum(rc.id in done for rc in grid if rc.seed == s)} of "
               f"{sum(rc.seed == s for rc in grid)}" for s in seeds]
        lines.append(f"sweep {name}: {sum(rc.id in done for rc in grid)} of {len(grid)} runs completed ("
                     + ", ".join(per) + ")")
    return lines, most


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", help="results directory of the sweep (holds results.db)")
    p.add_argument("--figures", default=None, help="folder for the SVG plots (none: no files)")
    p.add_argument("--grid", default=None, help="count completed runs against this spec's grid (file or shipped "
                                                "name; default: the sweeps recorded in the folder)")
    args = p.parse_args()
    rd = report.load_report_data(args.results)
    lines, _ = coverage(rd, args.grid)
    print("\n".join(lines))
    cells: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = {}
    byz_all = sorted({str(g.labels["byzantine"]) for g in rd.groups if g.labels.get("f")} - {"none"})
    for g in rd.groups:
        if g.labels.get("f") is None:
            continue
        ids = dict.fromkeys([*g.run_ids, *(r for _, r, _ in g.collapsed)])  # all seeds, collapsed ones included
        vals = [rd.final.get(rid, {}).get(METRIC) for rid in ids]
        vals = [v for v in vals if v is not None]
        byzs = byz_all if g.labels["byzantine"] == "none" else [str(g.labels["byzantine"])]
        for b in byzs:
            cells.setdefault((str(g.labels["heterogeneity"]), b), {}).setdefault(
                str(g.labels["aggregator"]), {}).setdefault(int(g.labels["f"]), []).extend(vals)
    most = max((len(v) for rows in cells.values() for by_f in rows.values() for v in by_f.values()), default=1)
    for (het, byz), rows in sorted(cells.items()):
        fs = sorted({f for r in rows.values() for f in r})
        print(f"\n**{byz}, {het} split** (final honest test accuracy)\n")
        print("| aggregator | " + " | ".join(f"f = {f}" for f in fs) + " |")
        print("|:---|" + "---:|" * len(fs))
        for agg, by_f in sorted(rows.items()):
            def cell(v: list[float]) -> str:
                if not v:
                    return "–"
                return (f"{statistics.fmean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")
                        + (f" (n={len(v)})" if len(v) < most else ""))
            print(f"| {agg} | " + " | ".join(cell(by_f.get(f, [])) for f in fs) + " |")
    if args.figures:
        out = Path(args.figures)
        out.mkdir(parents=True, exist_ok=True)
        for _, cap, svg in collab_plots(rd):
            name = re.sub(r"[^a-z0-9]+", "_", cap.split("(")[1].split(")")[0].lower()).strip("_")
            (out / f"{name}.svg").write_text(svg, encoding="utf-8")
            print(f"wrote {out / name}.svg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
