"""``robustlab report RESULTS_DIR [-o report.html | -o summary.md]``: the static HTML report or its Markdown summary."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report and/or a Markdown summary from a results directory")
    p.add_argument("results", help="results directory (holds results.db)")
    p.add_argument("-o", "--out", default=None,
                   help="file to write; its suffix picks the format: .html (the HTML report) or .md (the Markdown "
                        "summary). Default: both, as RESULTS/report.html and RESULTS/report.md")
    p.add_argument("--leaderboard", action="store_true", help="also print the leaderboard (Markdown)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.report import leaderboard_markdown, load_report_data, write_report

    paths = write_report(args.results, args.out)
    if args.leaderboard:
        print(leaderboard_markdown(load_report_data(args.results)))
        print()
    for p in paths:
        print(f"{'summary' if p.suffix.lower() == '.md' else 'report'}: {p.resolve()}")
    return 0
