"""Shared bits of the representation-learning experiments (``repr_*.py``): arguments, output, tables."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke-sized run (seconds): 1 seed, fewer points")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--out", default=None, help="folder for <name>.json and <name>.svg (default: print only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def setup(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds = 1
    return time.perf_counter()


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs: list[float], pct: bool = True) -> str:
    m, s = mean_sd(xs)
    k = 100.0 if pct else 1.0
    return f"{k * m:.1f} ± {k * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write(args: argparse.Namespace, name: str, record: dict[str, Any], svg: str | None, t0: float) -> None:
    record = {**record, "command": "python " + " ".join(sys.argv), "seconds": round(time.perf_counter() - t0, 1),
              "torch": torch.__version__}
    print(f"\n({record['seconds']} s)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        if svg:
            (out / f"{name}.svg").write_text(svg)
