"""``robustlab report RESULTS_DIR -o report.html``: the static HTML report and its Markdown summary."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report (and a Markdown summary) from a results directory")
    p.add_argument("results", help="results directory (holds results.db)")
    p.add_argument("-o", "--output", default=None, help="HTML file to write (default RESULTS/report.html); "
                   "the Markdown summary goes beside it with the .md suffix")
    p.add_argument("--leaderboard", action="store_true", help="also print the leaderboard (Markdown)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.report import leaderboard_markdown, load_report_data, write_report

    html, md = write_report(args.results, args.output)
    if args.leaderboard:
        print(leaderboard_markdown(load_report_data(args.results)))
        print()
    print(f"report: {html.resolve()}")
    print(f"summary: {md.resolve()}")
    return 0
