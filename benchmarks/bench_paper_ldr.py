"""The shipped ``paper-ldr`` spec (the LDR paper's protocol on the data sets robustlab ships).

By default a slice that fits in a few minutes on 2 cores (digits, seed 0: 7 noise settings x 15
losses = 105 runs); ``--full`` runs the whole spec (630 runs). Prints the leaderboard and writes
``runs/paper-ldr/report.html``. Peer: none measured here (the paper's own numbers were not
retrieved; see the reference notes), so this script reports our figures only.

    .venv/bin/python benchmarks/bench_paper_ldr.py [--full] [--workers 2] [--out runs/paper-ldr]
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from robustlab.bench import SPECS, run_sweep, write_report
from robustlab.bench.report import leaderboard_markdown, load_report_data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="all data sets and seeds of the spec")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/paper-ldr")
    args = ap.parse_args()
    spec = yaml.safe_load(SPECS.get("paper-ldr").read_text())
    if not args.full:
        spec["data"] = spec["data"][:1]
        spec["seeds"] = spec["seeds"][:1]
        spec["name"] = "paper-ldr-slice"
    t0 = time.perf_counter()
    res = run_sweep(spec, args.out, workers=args.workers, progress=False)
    print(f"{res.spec}: {len(res.run_ids)} runs ({res.skipped} already done, {res.failed} failed) "
          f"in {time.perf_counter() - t0:.1f} s")
    print(leaderboard_markdown(load_report_data(args.out)))
    html, _ = write_report(args.out)
    print(f"report: {html}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
