"""Corrupted regression targets: MSE vs Huber vs quantile (pinball) vs CS divergence, as RIQL does for its Q-targets.

The transferable part of *Towards Robust Offline RL under Diverse Data Corruption* (RIQL): a fraction of the
regression targets (RIQL: the Q-learning targets) is corrupted by an adversary, and the Huber and quantile
estimators keep the fit close to the clean function where least squares is dragged away. Full offline RL is
out of scope: here the learner is a small MLP on Friedman #1 (``data.load("friedman")``), the corruption is
``noise.inject_targets(kind=...)`` (``adversarial``: the most extreme targets reflected through the mean;
``outliers``: replaced by mean +- 10 std), and the score is the test MSE / R^2 on **clean** test targets.

    .venv/bin/python benchmarks/exp_corrupted_targets.py [--quick] [--kind adversarial|outliers]
        [--rates 0 0.1 0.2 0.3] [--seeds 0 1 2] [--epochs 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustlab import data, noise
from robustlab.training import fit_regression, regression_metrics, regression_model

LOSSES = {"mse": {}, "huber": {"delta": 1.0}, "quantile": {"tau": 0.5}, "cs_divergence": {"sigma": 2.0}}


def run(kind: str, rates: list[float], seeds: list[int], epochs: int, n_samples: int) -> list[dict]:
    rows = []
    for seed in seeds:
        d = data.load("friedman", n_samples=n_samples, seed=seed)
        for rate in rates:
            nt = noise.inject_targets(d.y_train, kind=kind, rate=rate, generator=torch.Generator().manual_seed(seed))
            dn = d.with_train_targets(nt.targets)
            for name, kw in LOSSES.items():
                torch.manual_seed(seed)
                model = regression_model("mlp", input_shape=d.input_shape, hidden=(64, 64))
                t0 = time.perf_counter()
                fit_regression(model, dn, loss=name, loss_kw=kw, epochs=epochs, lr=3e-3, batch_size=64, seed=seed,
                               eval_every=0)
                m = regression_metrics(model, d.x_test, d.y_test)
                rows.append({"seed": seed, "rate": rate, "loss": name, **m, "time_s": time.perf_counter() - t0})
                print(f"seed {seed} rate {rate:.2f} {name:<14} test mse {m['mse']:.3f} r2 {m['r2']:.3f}", flush=True)
    return rows


def table(rows: list[dict], rates: list[float]) -> str:
    lines = ["| loss | " + " | ".join(f"rate {r:g}" for r in rates) + " |", "|:---|" + "---:|" * len(rates)]
    for name in LOSSES:
        cells = []
        for r in rates:
            v = [x for x in rows if x["loss"] == name and x["rate"] == r]
            mse, mse_sd = mean_std([x["mse"] for x in v])
            r2, r2_sd = mean_std([x["r2"] for x in v])
            cells.append(f"{mse:.2f} ± {mse_sd:.2f} (R² {r2:.3f} ± {r2_sd:.3f})" if len(v) > 1
                         else f"{mse:.2f} (R² {r2:.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 600 samples, 20 epochs, rates 0 / 0.2")
    p.add_argument("--kind", default="adversarial", choices=noise.TARGET_NOISES.available())
    p.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.seeds, a.n_samples, a.epochs, a.rates = [0], 600, 20, [0.0, 0.2]
    torch.set_num_threads(1)
    rows = run(a.kind, a.rates, a.seeds, a.epochs, a.n_samples)
    print(f"\ntest MSE on clean targets (mean ± sample std over seeds {a.seeds}), {a.kind} target corruption, "
          f"friedman n={a.n_samples}, {a.epochs} epochs\n")
    print(table(rows, a.rates))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
