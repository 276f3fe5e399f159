"""One model for every bit-width: ``elastic_quant`` (after EQ-Net) against post-training quantization of a
standard model, at weight bit-widths 8/4/3/2, clean and PGD-robust accuracy.

The models have the same architecture, data, epochs and seed; the only difference is the objective
(``standard``; ``elastic_quant`` with bits {8, 4, 3, 2}; the same over EQ-Net's whole elastic space: granularity
(per-channel and per-tensor scales) and symmetry (symmetric and affine grids) drawn per step, with group
progressive guidance, the widest -> drawn -> narrowest chain). Each is then quantized post-training with
``shift.quantize`` at every ``--schemes`` x ``--symmetries`` combination (float activations) and evaluated with
``shift.quantization_error`` (PGD-L∞ at --eps against the quantized model itself, straight-through rounding).

``--seeds 0,1,2`` repeats the whole experiment per seed: the seed drives the model initialisation, the batch order
and the attack's random start; the train/test split stays the one of seed 0. With more than one seed each cell is
printed as mean ± sample std (n - 1) over the seeds, and ``--json`` holds every per-seed value.

    .venv/bin/python benchmarks/exp_quantization.py [--data mnist --root ../shared/datasets/mnist-t10k | --data digits]
        [--model lenet] [--epochs 5] [--seeds 0,1,2] [--schemes per_channel,per_tensor]
        [--symmetries symmetric,asymmetric] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import torch

from robustlab import data, models, shift, training

BITS = (8, 4, 3, 2)
SPLIT_SEED = 0  # the train/test split of the MNIST t10k file, the same for every --seeds entry
OBJECTIVES: dict[str, Any] = {
    "standard": "standard",
    "elastic_quant": ("elastic_quant", {"bits": list(BITS)}),
    "elastic_quant + granularity + symmetry + guidance": ("elastic_quant", {
        "bits": list(BITS), "guidance_weight": 1.0, "scheme": ["per_channel", "per_tensor"],
        "symmetry": ["symmetric", "asymmetric"]}),
}


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: distinct non-negative integers separated by commas (the ``--seeds`` value)."""
    parts = [s.strip() for s in str(text).split(",")]
    if not parts or any(not s.isdigit() for s in parts):
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated non-negative integers such as 0,1,2. Got {text!r} instead.")
    seeds = [int(s) for s in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must not repeat a seed. Got {text!r} instead.")
    return seeds


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value) of ``values``."""
    if not values:
        raise ValueError("mean_std needs at least one value.")
    mu = sum(values) / len(values)
    if len(values) == 1:
        return mu, 0.0
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def cell_values(runs: list[dict[str, Any]], key: str, bits: int | None) -> list[float]:
    """Per-seed accuracies in % of one table cell: ``key`` among float_clean/float_robust (``bits=None``) or
    clean/robust at ``bits``, from ``QuantizationResult.to_dict()`` records."""
    return [100 * float(r[key] if bits is None else r[key][str(bits)]) for r in runs]


def fmt(values: list[float]) -> str:
    """``97.0`` for one seed, ``97.0 ± 0.3`` (mean ± sample std) for several."""
    mu, sd = mean_std(values)
    return f"{mu:.1f}" if len(values) == 1 else f"{mu:.1f} ± {sd:.1f}"


def table(out: dict[tuple[str, str, str], list[dict[str, Any]]], evals: list[tuple[str, str]]) -> list[str]:
    """Markdown rows (header included): clean / robust accuracy per training x PTQ form x bit-width."""
    rows = ["| training | PTQ | float | " + " | ".join(f"{b}-bit" for b in BITS) + " |",
            "|---|---|---|" + "---|" * len(BITS)]
    for scheme, symmetry in evals:
        for name in OBJECTIVES:
            runs = out[name, scheme, symmetry]
            cells = [f"{fmt(cell_values(runs, 'float_clean', None))} / {fmt(cell_values(runs, 'float_robust', None))}"]
            cells += [f"{fmt(cell_values(runs, 'clean', b))} / {fmt(cell_values(runs, 'robust', b))}" for b in BITS]
            rows.append(f"| {name} | {scheme} {symmetry} | " + " | ".join(cells) + " |")
    return rows


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file, so an interrupted run never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--model", default="lenet", choices=["lenet", "mlp"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--eps", type=float, default=0.1, help="PGD-L∞ budget for the robust accuracy")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seeds", type=parse_seeds, default=[0],
                   help="comma-separated seeds (model init, batch order, attack start), e.g. 0,1,2; default 0")
    p.add_argument("--schemes", default="per_channel,per_tensor",
                   help=f"post-training quantization granularities of the evaluation, among {shift.QUANT_SCHEMES}")
    p.add_argument("--symmetries", default="symmetric,asymmetric",
                   help=f"post-training quantization grids of the evaluation, among {shift.QUANT_SYMMETRIES}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write every per-seed result here (rewritten after each seed)")
    a = p.parse_args()
    evals = [(g, s) for g in a.schemes.split(",") for s in a.symmetries.split(",")]
    torch.set_num_threads(a.threads)
    t0 = time.time()
    d = (data.load("mnist", root=a.root, use_test_split_as_train=0.8, seed=SPLIT_SEED) if a.data == "mnist"
         else data.load("digits"))
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {(n, g, s): [] for n in OBJECTIVES for g, s in evals}
    for i, seed in enumerate(a.seeds):
        for name, spec in OBJECTIVES.items():
            objective = spec if isinstance(spec, str) else training.objectives.get(spec[0], **spec[1])
            torch.manual_seed(seed)
            m = models.create(a.model, input_shape=d.input_shape, num_classes=d.num_classes)
            training.fit(m, d, objective=objective, epochs=a.epochs, batch_size=64, lr=0.05, progress=False, seed=seed)
            for scheme, symmetry in evals:
                res = shift.quantization_error(m.eval(), d, bits=list(BITS), scheme=scheme, symmetry=symmetry,
                                               attack="pgd", eps=a.eps, n_test=a.n_test, seed=seed)
                out[name, scheme, symmetry].append(res.to_dict())
                print(f"[{time.time() - t0:5.0f}s] seed {seed} {name}:\n{res.table()}", flush=True)
        if a.json:
            write_json(a.json, {"args": vars(a), "seeds_done": a.seeds[:i + 1], "complete": i + 1 == len(a.seeds),
                                "results": {" / ".join(k): v for k, v in out.items()},
                                "seconds": time.time() - t0})

    spread = "mean ± sample std over seeds " + ",".join(map(str, a.seeds)) if len(a.seeds) > 1 else f"seed {a.seeds[0]}"
    print(f"\n{a.data}, {a.model}, {a.epochs} epochs, {spread}, {a.n_test} test points, PGD eps={a.eps:g}; "
          f"clean / robust accuracy (%) after post-training quantization ({time.time() - t0:.0f} s)")
    print("\n".join(table(out, evals)))


if __name__ == "__main__":
    main()
