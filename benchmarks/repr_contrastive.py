"""Contrastive pre-training: linear-probe accuracy of SimCLR (infonce) vs SogCLR vs iSogCLR at equal epochs.

    python benchmarks/repr_contrastive.py [--quick] [--seeds 2] [--epochs 10] [--out docs/results/repr]

MNIST from the shared t10k files (``--mnist-root``; 8000 train / 2000 test via ``use_test_split_as_train``,
cut to ``--n-train``), or digits with ``--quick`` / when the files are absent. Encoder: an MLP (256, 256) ->
64-d features; projection MLP (128, 64); views: ``resized_crop`` (scale 0.6) + Gaussian pixel noise (0.1);
Adam lr 1e-3, batch 256. Temperatures: infonce/sogclr 0.3; isogclr starts at 0.7 (rho 0.3, eta 0.01).
Probe: logistic regression (L-BFGS) on the frozen 64-d features; the row "random encoder" is the untrained MLP.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repr_common import fmt, parser, setup, table, write  # noqa: E402

from robustlab import data, models, training  # noqa: E402
from robustlab.bench._svg import line_chart  # noqa: E402

LOSSES = {"simclr (infonce)": ("infonce", {"temperature": 0.3}), "sogclr": ("sogclr", {"temperature": 0.3}),
          "isogclr": ("isogclr", {})}


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(seeds=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--mnist-root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets",
                                                        "mnist-t10k"))
    args = p.parse_args()
    t0 = setup(args)
    if args.quick or not os.path.isdir(args.mnist_root):
        d, name, epochs = data.load("digits"), "digits", (3 if args.quick else args.epochs)
    else:
        d = data.load("mnist", root=args.mnist_root, use_test_split_as_train=0.8).subset(n_train=args.n_train)
        name, epochs = "mnist", args.epochs
    res: dict[str, list[float]] = {"random encoder": []}
    curves: dict[str, list[list[float]]] = {k: [] for k in LOSSES}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        base = models.create("mlp", input_shape=d.input_shape, num_classes=64)
        res["random encoder"].append(training.linear_probe(base, d).test_acc)
        for label, (loss, kw) in LOSSES.items():
            torch.manual_seed(seed)
            enc = models.create("mlp", input_shape=d.input_shape, num_classes=64)
            r = training.pretrain(enc, d, loss=loss, loss_kw=kw, epochs=epochs, batch_size=256,
                                  augment=[training.augment.get("resized_crop", scale=0.6),
                                           training.augment.get("noise", sigma=0.1)], seed=seed)
            res.setdefault(label, []).append(training.linear_probe(r.encoder, d).test_acc)
            curves[label].append(r.history["loss"])
            if "tau_mean" in r.history:
                res.setdefault("isogclr mean tau (end)", []).append(r.history["tau_mean"][-1])
    print(f"{name}: {d.x_train.shape[0]} train / {d.x_test.shape[0]} test, {epochs} epochs, {args.seeds} seed(s); "
          "linear-probe test accuracy % (mean ± sd)\n")
    print(table(["pre-training", "probe accuracy"],
                [[k, fmt(v) if "tau" not in k else fmt(v, pct=False)] for k, v in res.items()]))
    series = [{"label": k, "x": [float(x) for x in range(1, epochs + 1)],
               "y": [sum(c[i] for c in v) / len(v) for i in range(epochs)]} for k, v in curves.items()]
    svg = line_chart(series, title=f"Contrastive loss per epoch ({name})", xlabel="epoch", ylabel="loss",
                     unit_y=False, note="values are on each loss's own scale")
    write(args, "contrastive", {"data": name, "epochs": epochs, "probe": res, "loss_curves": curves}, svg, t0)


if __name__ == "__main__":
    main()
