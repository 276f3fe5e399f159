"""Generative vs discriminative heads on frozen features: test error vs labelled samples per class.

    python benchmarks/repr_heads.py [--quick] [--seeds 5] [--out docs/results/repr]

Features: (a) digits' raw 64 pixels, (b) the 64-d features of an MLP encoder pre-trained with SimCLR
(infonce, 30 epochs) on the digits train inputs (labels unused). Heads: ``logistic`` (L2 1e-3, L-BFGS),
``gaussian_nb`` and ``lda`` (shrinkage 0.1), each fitted on n = 1, 2, 5, 10, 20, 50 labelled samples per
class (the same samples for every head at a given seed), error on the full test split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repr_common import fmt, parser, setup, table, write  # noqa: E402

from robustlab import data, models, training  # noqa: E402
from robustlab.bench._svg import line_chart  # noqa: E402

HEADS = ("logistic", "gaussian_nb", "lda")


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(seeds=5)
    args = p.parse_args()
    t0 = setup(args)
    d = data.load("digits")
    ns = [1, 5, 20] if args.quick else [1, 2, 5, 10, 20, 50]
    torch.manual_seed(0)
    enc = models.create("mlp", input_shape=d.input_shape, num_classes=64)
    enc = training.pretrain(enc, d, loss="infonce", loss_kw={"temperature": 0.3}, epochs=5 if args.quick else 30,
                            batch_size=128).encoder
    feats = {"pixels": (d.x_train.flatten(1), d.x_test.flatten(1)),
             "simclr features": (training.encode(enc, d.x_train), training.encode(enc, d.x_test))}
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    series = []
    for fname, (ftr, fte) in feats.items():
        rows = training.learning_curve(ftr, d.y_train, fte, d.y_test, heads=HEADS, n_per_class=ns,
                                       seeds=range(args.seeds), num_classes=10)
        by = out.setdefault(fname, {})
        for r in rows:
            by.setdefault(r["head"], {}).setdefault(r["n_per_class"], []).append(r["error"])
        print(f"\n{fname}: test error % (mean ± sd over {args.seeds} seed(s)) vs labelled samples per class\n")
        print(table(["head", *[f"n={n}" for n in ns]], [[h, *[fmt(by[h][n]) for n in ns]] for h in HEADS]))
        series += [{"label": f"{h} ({fname})", "x": [float(n) for n in ns],
                    "y": [sum(by[h][n]) / len(by[h][n]) for n in ns]} for h in HEADS]
    svg = line_chart(series, title="Heads on frozen features (digits)", xlabel="labelled samples per class",
                     ylabel="test error")
    write(args, "heads", {"n_per_class": ns, "errors": {f: {h: {str(n): v for n, v in hv.items()}
                                                            for h, hv in by.items()} for f, by in out.items()}},
          svg, t0)


if __name__ == "__main__":
    main()
