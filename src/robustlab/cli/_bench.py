"""``robustlab bench run|check|expand SPEC``: run a benchmark sweep, check its grid, or print it.

``bench check`` validates the spec and its whole grid (every data set loads, every name resolves, every
option is in range, one training step of each distinct configuration runs) and lists all problems (exit 0 when clean, 2 otherwise); ``bench run`` does the
same check before it launches anything.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="run a benchmark spec (a YAML path or a shipped spec name)")
    bsub = p.add_subparsers(dest="bench_command", metavar="{run,check,expand}")
    bsub.required = True
    r = bsub.add_parser("run", help="run every grid point not yet completed in OUT/results.db")
    r.add_argument("spec", help="spec file (.yaml) or shipped spec name (see 'robustlab list specs')")
    r.add_argument("--out", required=True, help="results directory (holds results.db and runs/)")
    r.add_argument("--workers", type=int, default=1, help="concurrent runs (default 1)")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: one child process per run; ray: Ray core tasks (pip install 'robustlab[ray]')")
    r.add_argument("--ray-address", default=None,
                   help="join an existing Ray cluster (e.g. 'auto' or 'ray://host:10001'); none starts a local one")
    r.add_argument("--timeout", type=float, default=None, help="per-run wall-clock limit in seconds (kills only that run)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores // workers)")
    r.add_argument("--mlflow", default=None, metavar="URI", help="also log each finished run to this MLflow tracking URI")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--quiet", action="store_true", help="do not print the leaderboard at the end")
    r.add_argument("--full-leaderboard", action="store_true", help="print every leaderboard column, not one per family")
    r.set_defaults(func=run)
    c = bsub.add_parser("check", help="check the spec and its whole grid (data load, names, option ranges); "
                                      "list every problem; exit 0 when clean")
    c.add_argument("spec", help="spec file (.yaml) or shipped spec name")
    c.add_argument("--no-fetch", action="store_true", help="ignore the spec's download/mirror options")
    c.add_argument("--no-dry-run", action="store_true",
                   help="skip the one training step on four examples of each distinct (data, model, loss, objective)")
    c.set_defaults(func=check_cmd)
    e = bsub.add_parser("expand", help="print one run id per line (the grid after include/exclude rules)")
    e.add_argument("spec", help="spec file (.yaml) or shipped spec name")
    e.add_argument("--long", action="store_true", help="also print each run's axis values")
    e.set_defaults(func=expand_cmd)


def expand_cmd(args: argparse.Namespace) -> int:
    from ..bench import expand

    for rc in expand(args.spec):
        print(f"{rc.id}  {rc.describe()}" if args.long else rc.id)
    return 0


def check_cmd(args: argparse.Namespace) -> int:
    """``bench check``: the grid check alone; the problems (if any) go to stderr via the CLI's error path."""
    from ..bench import expand
    from ..bench.spec import check_spec

    bs = check_spec(args.spec, fetch=not args.no_fetch, dry_run=not args.no_dry_run)
    n = len(expand(bs))
    print(f"spec '{bs.name}': OK — {n} runs; {len(bs.axes['data'])} data set(s) load, every name resolves, "
          "every option is in range.")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..bench import run_sweep
    from ..bench.spec import check_spec

    if args.ray_address and args.executor != "ray":
        raise ValueError("--ray-address is only used with --executor ray.")
    spec = check_spec(args.spec)  # the whole grid, before anything is launched or written
    try:
        res = run_sweep(spec, args.out, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                        timeout_s=args.timeout, threads=args.threads, progress=not args.no_progress,
                        mlflow_uri=args.mlflow, check=False)  # checked just above
    except ImportError as e:  # an optional extra (ray, mlflow) is missing: a usage error, not a crash
        raise ValueError(str(e)) from None
    total = len(res.run_ids)
    print(f"bench {res.spec}: {total} runs in the grid; {res.skipped} already completed, {res.executed} executed "
          f"({res.executed - res.failed} completed, {res.failed} failed) in {res.wall_s:.1f} s; results in {res.db}")
    for rid, err in list(res.failures.items())[:10]:
        print(f"  failed {rid[:12]}: {err}", file=sys.stderr)
    if not args.quiet:
        from ..bench.report import leaderboard_markdown, load_report_data

        print()
        print(leaderboard_markdown(load_report_data(args.out), compact=not args.full_leaderboard))
        print("(compact leaderboard: one column per metric family; the report has them all)"
              if not args.full_leaderboard else "")
    return 1 if res.failed else 0
