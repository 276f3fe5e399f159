"""Noisy long-tailed digits: CE vs GCE vs LDR-KL vs RCAL, overall and tail-class test accuracy.

    python benchmarks/repr_longtail.py [--quick] [--seeds 3] [--rho 0.1 0.01] [--epochs 20] [--lr 0.05]
        [--optimizer sgd] [--q 0.7] [--methods ce gce ldr_kl rcal] [--name longtail] [--rcal-mixup 0] [--out docs/results/repr]

Digits (UCI optdigits, 8x8) with the train split long-tailed (imbalance ratio rho, exponential profile, class
0 the head) and symmetric label noise at 20% and 40% applied after subsampling; the test split stays
balanced. CE/GCE/LDR-KL: an MLP (256, 256) trained with ``training.fit`` (SGD momentum 0.9, cosine,
``--epochs`` epochs at ``--lr``, batch 64). RCAL: the same MLP body as encoder (64-d features), contrastive
pre-training (infonce, 20 epochs), LOF + calibrated sampling, classifier with the representation regulariser
(``defences.rcal``, its own Adam schedule: 100 epochs). Tail = classes 5..9.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repr_common import fmt, parser, setup, table, write  # noqa: E402

from robustlab import data, defences, models, noise, training  # noqa: E402
from robustlab.bench._svg import bar_chart  # noqa: E402

METHODS = ("ce", "gce", "ldr_kl", "rcal")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rho", type=float, nargs="+", default=[0.1], help="imbalance ratios (default 0.1)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the CE/GCE/LDR-KL runs (default 20)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate of the CE/GCE/LDR-KL runs (default 0.05)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"), help="of the CE/GCE/LDR-KL runs (default sgd)")
    p.add_argument("--q", type=float, default=0.7, help="GCE's q (default 0.7, the paper's)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--name", default="longtail", help="output file stem (default longtail)")
    p.add_argument("--rcal-mixup", type=float, default=0.0,
                   help="RCAL's mixup Beta parameter in its classifier stage (default 0: off, the earlier tables)")
    args = p.parse_args()
    t0 = setup(args)
    rates = [0.4] if args.quick else [0.2, 0.4]
    epochs, pre_epochs = (10, 10) if args.quick else (args.epochs, 20)
    res: dict[str, dict[str, dict[str, list[float]]]] = {}
    counts: dict[str, list[int]] = {}
    for rho in args.rho:
        d = data.load("digits", longtail=rho)
        counts[f"{rho:g}"] = d.meta["longtail"]["counts"]
        tail = data.tail_classes(d.num_classes)
        mask = torch.isin(d.y_test, torch.tensor(tail))
        for rate in rates:
            key = f"rho={rho:g} noise={rate:g}"
            for seed in range(args.seeds):
                ny = noise.inject(d.y_train, kind="symmetric", rate=rate, num_classes=10,
                                  generator=torch.Generator().manual_seed(seed))
                dn = d.with_train_labels(ny.labels)
                for method in args.methods:
                    r = res.setdefault(key, {}).setdefault(method, {"all": [], "tail": []})
                    torch.manual_seed(seed)
                    if method == "rcal":
                        enc = models.create("mlp", input_shape=d.input_shape, num_classes=64)
                        rc = defences.rcal(dn, enc, pretrain_epochs=pre_epochs,
                                           pretrain_kw={"batch_size": 128, "loss_kw": {"temperature": 0.3}},
                                           epochs=100, mixup=args.rcal_mixup, seed=seed)
                        r["all"].append(rc.accuracy(d.x_test, d.y_test))
                        r["tail"].append(rc.accuracy(d.x_test, d.y_test, tail))
                        continue
                    m = models.create("mlp", input_shape=d.input_shape, num_classes=10)
                    m = training.fit(m, dn, loss=method, loss_kw={"q": args.q} if method == "gce" else None,
                                     epochs=epochs, batch_size=64, lr=args.lr, optimizer=args.optimizer, seed=seed,
                                     progress=False).model.eval()
                    pred = training.predict_logits(m, d.x_test).argmax(1)
                    r["all"].append(float((pred == d.y_test).float().mean()))
                    r["tail"].append(float((pred[mask] == d.y_test[mask]).float().mean()))
    rows = [[k, m, fmt(v["all"]), fmt(v["tail"])] for k, by in res.items() for m, v in by.items()]
    print(f"digits, longtail (train counts {counts}), symmetric noise, {args.seeds} seed(s), CE/GCE/LDR-KL "
          f"{epochs} epochs at lr {args.lr:g}; test accuracy % (mean ± sd)\n")
    print(table(["setting", "method", "overall", "tail (5-9)"], rows))
    svg = bar_chart([f"{m} @ {k}" for k in res for m in args.methods],
                    [{"label": "overall", "y": [sum(res[k][m]["all"]) / len(res[k][m]["all"]) for k in res
                                                for m in args.methods]},
                     {"label": "tail classes", "y": [sum(res[k][m]["tail"]) / len(res[k][m]["tail"]) for k in res
                                                     for m in args.methods]}],
                    title=f"Noisy long-tailed digits ({epochs} epochs, lr {args.lr:g})", ylabel="test accuracy")
    write(args, args.name, {"results": res, "counts": counts, "epochs": epochs, "lr": args.lr}, svg, t0)


if __name__ == "__main__":
    main()
