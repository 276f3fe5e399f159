"""The issue-4 "Done means" run: digits models evaluated with the standard suite, next to torchattacks' PGD.

Trains two MLPs (256, 256) on the embedded ``digits`` set (8×8, 10 classes): a standard one and a PGD-AT
one (if the ``pgd_at`` objective is registered). For each, on the full test set (450 images):
  - a suite (``--suite``, default ``fast``: APGD-CE → APGD-T(9) → Square-5000, the cascade of the published table;
    ``standard`` is AutoAttack's APGD-CE → APGD-T(9) → FAB-T(9) → Square-5000) at L∞ ε (default 0.1) and L2 ε (default 0.5),
    seeded, with the Clopper–Pearson interval and worst-class robust accuracy;
  - robustlab PGD-40 and torchattacks PGD-40 (same ε, step ε/10, random start) for comparison;
  - the robustness curve (PGD-20 on a log grid) with the power-law exponent k and its bootstrap interval;
  - the gradient-masking sanity checks.

    .venv/bin/python benchmarks/eval_standard.py [--suite fast] [--eps 0.1] [--eps-l2 0.5] [--epochs 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robustlab import attacks, data, evaluate, models, training


def acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def report(name: str, model: torch.nn.Module, d: data.ClassificationData, args: argparse.Namespace) -> None:
    x, y = d.x_test, d.y_test
    print(f"\n=== {name}: clean accuracy {100 * acc(model, x, y):.2f}% on {len(y)} test images ===")
    for norm, eps in (("linf", args.eps), ("l2", args.eps_l2)):
        t = time.perf_counter()
        res = evaluate.robust_accuracy(model, d, args.suite, eps=eps, norm=norm, seed=0)
        print(f"[{args.suite} {norm} eps={eps:g}] {res}  ({time.perf_counter() - t:.1f} s)")
        print("    cumulative after each attack: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in res.per_attack.items()))
        ours = acc(model, attacks.functional.pgd(model, x, y, eps=eps, norm=norm, step_size=eps / 10, steps=40,
                                                 generator=torch.Generator().manual_seed(0)), y)
        line = f"    robustlab PGD-40 {100 * ours:.2f}%"
        try:
            import torchattacks as ta

            torch.manual_seed(0)
            cls = ta.PGD if norm == "linf" else ta.PGDL2
            theirs = acc(model, cls(model, eps=eps, alpha=eps / 10, steps=40, random_start=True)(x, y), y)
            line += f"   torchattacks PGD-40 {100 * theirs:.2f}%"
        except ImportError:
            line += "   (torchattacks not installed)"
        print(line)
    grid = np.geomspace(args.eps / 50, args.eps * 2, 16)
    t = time.perf_counter()
    curve = evaluate.robustness_curve(model, d, eps_grid=grid, attack_kw={"steps": 20}, bootstrap=1000,
                                      bisection_steps=8)
    f = curve.fit
    print(f"[curve linf PGD-20, {len(grid)} eps in {grid[0]:.4g}..{grid[-1]:.4g}] ({time.perf_counter() - t:.1f} s)")
    print("    adv error (clean-correct points): " + ", ".join(f"{e:.4g}:{100 * r:.1f}%" for e, r in zip(curve.eps, curve.adv_error)))
    if f is not None:
        print(f"    power law err ≈ {f.a:.3g}·ε^{f.k:.3f}, 95% bootstrap CI for k [{f.ci[0]:.3f}, {f.ci[1]:.3f}], "
              f"R² {f.r2:.3f}, {f.n_points} points in ε ∈ [{f.eps_range[0]:.4g}, {f.eps_range[1]:.4g}]")
    else:
        print("    power law: " + curve.notes[-1])
    ce = curve.critical_eps
    if ce is not None:
        fin = ce[torch.isfinite(ce) & (ce > 0)]
        print(f"    minimal ε by bisection: median {float(fin.median()):.4f} over {fin.numel()} broken points; "
              f"{int(torch.isinf(ce).sum())} unbroken at ε={grid[-1]:.3g}")
    rep = evaluate.sanity_checks(model, d, eps=args.eps, n=256)
    print("    " + str(rep).replace("\n", "\n    "))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="fast", help="evaluate suite: fast (the table's cascade) or standard (AutoAttack's)")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--eps-l2", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = data.load("digits")
    runs = [("standard", {})]
    if "pgd_at" in training.OBJECTIVES:
        runs.append(("pgd_at", {"eps": args.eps, "steps": 7, "step_size": args.eps / 4}))
    for objective, kw in runs:
        torch.manual_seed(0)
        m = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(256, 256))
        t = time.perf_counter()
        training.fit(m, d, epochs=args.epochs, batch_size=64, lr=0.05, objective=objective, objective_kw=kw or None,
                     progress=False, seed=0)
        print(f"trained mlp(256,256) on digits with objective {objective} {kw} in {time.perf_counter() - t:.1f} s")
        report(f"digits mlp, {objective}", m.eval(), d, args)


if __name__ == "__main__":
    main()
