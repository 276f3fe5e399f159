"""Mixed precision against uniform precision at the same average weight bit-width (after EQ-Net's search).

A LeNet is trained on MNIST (the first ``n_train - n_holdout`` training images) as an elastic-quantization
supernet (``elastic_quant`` with bits {8, 6, 4, 3, 2}: one width per step, or ``layerwise`` one per layer per
step, EQ-Net's random sub-network); a standard model is the baseline. For each average-bit budget,
``shift.mixed_precision_search`` picks per-layer widths on the held-out last ``n_holdout`` training images
(never trained on), and the test accuracy of that assignment is printed next to the widest uniform width within
the budget (post-training quantization, per-channel symmetric weights, float activations).

    .venv/bin/python benchmarks/exp_mixed_precision.py [--root ../shared/datasets/mnist-t10k] [--epochs 5]
        [--budgets 2.25,2.5,3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from robustlab import data, models, shift, training

BITS = (8, 6, 4, 3, 2)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((training.predict_logits(model, x).argmax(1) == y).double().mean())


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--n-holdout", type=int, default=1000)
    p.add_argument("--budgets", default="2.25,2.5,3")
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    budgets = [float(b) for b in a.budgets.split(",")]
    full = data.load("mnist", root=a.root, use_test_split_as_train=0.8, seed=a.seed)
    n_fit = full.x_train.shape[0] - a.n_holdout
    d = full.subset(n_train=n_fit)
    holdout = (full.x_train[n_fit:], full.y_train[n_fit:])
    objectives = {
        "standard": "standard",
        "elastic_quant": ("elastic_quant", {"bits": list(BITS)}),
        "elastic_quant layerwise": ("elastic_quant", {"bits": list(BITS), "layerwise": True}),
    }
    rows = []
    for name, spec in objectives.items():
        objective = spec if isinstance(spec, str) else training.objectives.get(spec[0], **spec[1])
        torch.manual_seed(a.seed)
        m = models.create("lenet", input_shape=d.input_shape, num_classes=d.num_classes)
        training.fit(m, d, objective=objective, epochs=a.epochs, batch_size=64, lr=0.05, progress=False, seed=a.seed)
        m.eval()
        for budget in budgets:
            res = shift.mixed_precision_search(m, holdout, budget=budget, bits=list(BITS), population=a.population,
                                               generations=a.generations, seed=a.seed)
            ub = res.uniform_at_budget
            row = {"training": name, "budget": budget, "bits": res.bits, "average_bits": res.average_bits,
                   "holdout_mixed": res.accuracy, "holdout_uniform": res.uniform[ub], "uniform_bits": ub,
                   "test_mixed": _accuracy(shift.quantize(m, bits=res.bits), full.x_test, full.y_test),
                   "test_uniform": _accuracy(shift.quantize(m, bits=ub), full.x_test, full.y_test),
                   "test_float": _accuracy(m, full.x_test, full.y_test), "evaluations": res.evaluations}
            rows.append(row)
            print(f"[{time.time() - t0:5.0f}s] {name}, budget {budget:g}:\n{res.table()}\n"
                  f"test: mixed {100 * row['test_mixed']:.1f} %, uniform {ub}-bit {100 * row['test_uniform']:.1f} %",
                  flush=True)
    print(f"\nMNIST t10k split, LeNet, {a.epochs} epochs on {n_fit} images, search on {a.n_holdout} held-out training "
          f"images (population {a.population}, {a.generations} generations, seed {a.seed}), test accuracy (%) on "
          f"{full.x_test.shape[0]} images; per-channel symmetric weights, float activations")
    print("| training | budget (avg bits) | float | uniform | mixed (avg bits) | mixed widths |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        widths = ", ".join(str(b) for b in r["bits"].values())
        print(f"| {r['training']} | {r['budget']:g} | {100 * r['test_float']:.1f} | {r['uniform_bits']}-bit: "
              f"{100 * r['test_uniform']:.1f} | {100 * r['test_mixed']:.1f} ({r['average_bits']:.2f}) | {widths} |")
    print(f"{time.time() - t0:.0f} s")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "rows": rows, "seconds": time.time() - t0}, f, indent=2)


if __name__ == "__main__":
    main()
