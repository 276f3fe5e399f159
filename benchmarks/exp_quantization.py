"""One model for every bit-width: ``elastic_quant`` (after EQ-Net) against post-training quantization of a
standard model, at weight bit-widths 8/4/3/2, clean and PGD-robust accuracy.

The models have the same architecture, data, epochs and seed; the only difference is the objective
(``standard``; ``elastic_quant`` with bits {8, 4, 3, 2}; the same over EQ-Net's whole elastic space: granularity
(per-channel and per-tensor scales) and symmetry (symmetric and affine grids) drawn per step, with group
progressive guidance, the widest -> drawn -> narrowest chain). Each is then quantized post-training with
``shift.quantize`` at every ``--schemes`` x ``--symmetries`` combination (float activations) and evaluated with
``shift.quantization_error`` (PGD-L∞ at --eps against the quantized model itself, straight-through rounding).

    .venv/bin/python benchmarks/exp_quantization.py [--data mnist --root ../shared/datasets/mnist-t10k | --data digits]
        [--model lenet] [--epochs 5] [--schemes per_channel,per_tensor] [--symmetries symmetric,asymmetric]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from robustlab import data, models, shift, training

BITS = (8, 4, 3, 2)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--model", default="lenet", choices=["lenet", "mlp"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--eps", type=float, default=0.1, help="PGD-L∞ budget for the robust accuracy")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..S-1 and report the mean")
    p.add_argument("--schemes", default="per_channel,per_tensor",
                   help=f"post-training quantization granularities of the evaluation, among {shift.QUANT_SCHEMES}")
    p.add_argument("--symmetries", default="symmetric,asymmetric",
                   help=f"post-training quantization grids of the evaluation, among {shift.QUANT_SYMMETRIES}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    evals = [(g, s) for g in a.schemes.split(",") for s in a.symmetries.split(",")]
    torch.set_num_threads(a.threads)
    t0 = time.time()
    objectives = {
        "standard": "standard",
        "elastic_quant": ("elastic_quant", {"bits": list(BITS)}),
        "elastic_quant + granularity + symmetry + guidance": ("elastic_quant", {
            "bits": list(BITS), "guidance_weight": 1.0, "scheme": ["per_channel", "per_tensor"],
            "symmetry": ["symmetric", "asymmetric"]}),
    }
    out: dict[tuple[str, str, str], list[dict[str, object]]] = {(n, g, s): [] for n in objectives for g, s in evals}
    for seed in range(a.seeds):
        d = (data.load("mnist", root=a.root, use_test_split_as_train=0.8, seed=seed) if a.data == "mnist"
             else data.load("digits"))
        for name in objectives:
            spec = objectives[name]
            objective = spec if isinstance(spec, str) else training.objectives.get(spec[0], **spec[1])
            torch.manual_seed(seed)
            m = models.create(a.model, input_shape=d.input_shape, num_classes=d.num_classes)
            training.fit(m, d, objective=objective, epochs=a.epochs, batch_size=64, lr=0.05, progress=False, seed=seed)
            for scheme, symmetry in evals:
                res = shift.quantization_error(m.eval(), d, bits=list(BITS), scheme=scheme, symmetry=symmetry,
                                               attack="pgd", eps=a.eps, n_test=a.n_test, seed=seed)
                out[name, scheme, symmetry].append(res.to_dict())
                print(f"[{time.time() - t0:5.0f}s] seed {seed} {name}:\n{res.table()}", flush=True)

    def mean(name: tuple[str, str, str], key: str, b: str | None) -> float:
        vals = [r[key] if b is None else r[key][b] for r in out[name]]  # type: ignore[index]
        return 100 * sum(vals) / len(vals)  # type: ignore[arg-type]

    print(f"\n{a.data}, {a.model}, {a.epochs} epochs, {a.seeds} seed(s), {a.n_test} test points, "
          f"PGD eps={a.eps:g}; clean / robust accuracy (%) after post-training quantization")
    print("| training | PTQ | float | " + " | ".join(f"{b}-bit" for b in BITS) + " |")
    print("|---|---|---|" + "---|" * len(BITS))
    for scheme, symmetry in evals:
        for name in objectives:
            key = (name, scheme, symmetry)
            cells = [f"{mean(key, 'float_clean', None):.1f} / {mean(key, 'float_robust', None):.1f}"]
            cells += [f"{mean(key, 'clean', str(b)):.1f} / {mean(key, 'robust', str(b)):.1f}" for b in BITS]
            print(f"| {name} | {scheme} {symmetry} | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "results": {" / ".join(k): v for k, v in out.items()},
                       "seconds": time.time() - t0}, f, indent=2)


if __name__ == "__main__":
    main()
