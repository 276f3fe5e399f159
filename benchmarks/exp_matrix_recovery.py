"""Robust matrix recovery with the ℓ1 sub-gradient method: error vs iterations and a phase diagram.

Ma & Fattahi (JMLR 2023): rank-r PSD truth (d x d), m = 20 d r Gaussian measurements, a fraction of them
replaced by outliers (10x the measurements' RMS), over-parameterised factor U (d x r'), small random
initialisation (scale alpha = 1e-6), geometric step eta_t = 0.5 * 0.98^t (``robustlab.diagnostics``). Prints three
Markdown tables: the relative error ||UU^T - X*||_F / ||X*||_F at a few iterations, the final error over
(outlier fraction x r'), and the final error at r' = d for each initialisation scale in ``--alphas`` (the O(alpha)
floor of the over-parameterised case); ``--svg`` also writes the error curves.

    .venv/bin/python benchmarks/exp_matrix_recovery.py [--quick] [--d 20] [--rank 2] [--iterations 500]
        [--alphas 1e-3 1e-6] [--json out.json] [--svg curves.svg]
"""

from __future__ import annotations

import argparse
import json

import torch

from robustlab.diagnostics import make_matrix_sensing, subgradient_recovery


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="d 10, rank 1, 300 iterations")
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-6], help="init scales; the last is the main one")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    p.add_argument("--json", default=None)
    p.add_argument("--svg", default=None)
    a = p.parse_args()
    if a.quick:
        a.d, a.rank, a.iterations = 10, 1, 300
    torch.set_num_threads(1)
    widths = sorted({a.rank, 2 * a.rank, 5 * a.rank, a.d} - {w for w in (2 * a.rank, 5 * a.rank) if w > a.d})
    curves, final = {}, {}
    for f in a.fractions:
        pr = make_matrix_sensing(d=a.d, rank=a.rank, outlier_fraction=f, seed=0)
        for w in widths:
            _, err = subgradient_recovery(pr, width=w, iterations=a.iterations, init_scale=a.alphas[-1])
            curves[f"{f:g}/{w}"] = err
            final[(f, w)] = err[-1]
            print(f"outliers {f:.1f} r'={w:<3} error {err[-1]:.2e}", flush=True)
        for alpha in a.alphas[:-1]:
            _, err = subgradient_recovery(pr, width=widths[-1], iterations=a.iterations, init_scale=alpha)
            final[(f, alpha)] = err[-1]
    marks = [0, a.iterations // 10, a.iterations // 5, a.iterations // 2, a.iterations]
    print(f"\nrelative error vs iteration (d={a.d}, r={a.rank}, r'={widths[-1]}, alpha={a.alphas[-1]:g})\n")
    print("| outliers | " + " | ".join(f"t={t}" for t in marks) + " |\n|:---|" + "---:|" * len(marks))
    for f in a.fractions:
        err = curves[f"{f:g}/{widths[-1]}"]
        print(f"| {f:g} | " + " | ".join(f"{err[t]:.1e}" for t in marks) + " |")
    print(f"\nfinal relative error after {a.iterations} iterations (rows: outlier fraction, columns: r')\n")
    print("| outliers | " + " | ".join(f"r'={w}" for w in widths) + " |\n|:---|" + "---:|" * len(widths))
    for f in a.fractions:
        print(f"| {f:g} | " + " | ".join(f"{final[(f, w)]:.1e}" for w in widths) + " |")
    print(f"\nfinal relative error at r'={widths[-1]} by initialisation scale alpha\n")
    print("| outliers | " + " | ".join(f"alpha={x:g}" for x in a.alphas) + " |\n|:---|" + "---:|" * len(a.alphas))
    for f in a.fractions:
        cells = [final[(f, x)] for x in a.alphas[:-1]] + [final[(f, widths[-1])]]
        print(f"| {f:g} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "curves": curves,
                       "final": {f"{k[0]:g}/{k[1]:g}": v for k, v in final.items()}}, fh)
    if a.svg:
        write_svg(a.svg, {k: v for k, v in curves.items() if k.endswith(f"/{widths[-1]}")}, a.iterations)


def write_svg(path: str, curves: dict[str, list[float]], iterations: int) -> None:
    """Log-scale error curves as a small standalone SVG."""
    import math

    w, h, pad = 480, 300, 40
    lo, hi = -8.0, 0.5

    def xy(t: int, e: float) -> str:
        y = min(max(math.log10(max(e, 1e-12)), lo), hi)
        return f"{pad + (w - 2 * pad) * t / iterations:.1f},{h - pad - (h - 2 * pad) * (y - lo) / (hi - lo):.1f}"

    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="15" text-anchor="middle">relative error (log10) vs iteration</text>']
    for k, (name, err) in enumerate(curves.items()):
        c = colors[k % len(colors)]
        out.append(f'<polyline fill="none" stroke="{c}" points="{" ".join(xy(t, e) for t, e in enumerate(err))}"/>')
        out.append(f'<text x="{w - pad - 90}" y="{30 + 14 * k}" fill="{c}">outliers {name.split("/")[0]}</text>')
    for v in range(int(lo), 1, 2):
        out.append(f'<text x="5" y="{xy(0, 10.0 ** v).split(",")[1]}">1e{v}</text>')
    out.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(out))


if __name__ == "__main__":
    main()
