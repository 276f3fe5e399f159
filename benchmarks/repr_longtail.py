"""Noisy long-tailed digits: CE vs GCE vs LDR-KL vs RCAL, overall and tail-class test accuracy.

    python benchmarks/repr_longtail.py [--quick] [--seeds 3] [--out docs/results/repr]

Digits (UCI optdigits, 8x8) with the train split long-tailed (rho = 0.1, exponential profile, class 0 the
head) and symmetric label noise at 20% and 40% applied after subsampling; the test split stays balanced.
CE/GCE/LDR-KL: an MLP (256, 256) trained with ``training.fit`` (SGD, cosine, 20 epochs). RCAL: the same MLP
body as encoder (64-d features), contrastive pre-training (infonce, 20 epochs), LOF + calibrated sampling,
classifier with the representation regulariser (``defences.rcal``). Tail = classes 5..9.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repr_common import fmt, parser, setup, table, write  # noqa: E402

from robustlab import data, defences, models, noise, training  # noqa: E402
from robustlab.bench._svg import bar_chart  # noqa: E402


def main() -> None:
    args = parser(__doc__).parse_args()
    t0 = setup(args)
    rates = [0.4] if args.quick else [0.2, 0.4]
    epochs, pre_epochs = (10, 10) if args.quick else (20, 20)
    d = data.load("digits", longtail=0.1)
    tail = data.tail_classes(d.num_classes)
    res: dict[str, dict[str, dict[str, list[float]]]] = {}
    for rate in rates:
        for seed in range(args.seeds):
            ny = noise.inject(d.y_train, kind="symmetric", rate=rate, num_classes=10,
                              generator=torch.Generator().manual_seed(seed))
            dn = d.with_train_labels(ny.labels)
            for loss in ("ce", "gce", "ldr_kl"):
                torch.manual_seed(seed)
                m = models.create("mlp", input_shape=d.input_shape, num_classes=10)
                m = training.fit(m, dn, loss=loss, epochs=epochs, batch_size=64, lr=0.05, seed=seed,
                                 progress=False).model.eval()
                pred = training.predict_logits(m, d.x_test).argmax(1)
                mask = torch.isin(d.y_test, torch.tensor(tail))
                r = res.setdefault(f"{rate:g}", {}).setdefault(loss, {"all": [], "tail": []})
                r["all"].append(float((pred == d.y_test).float().mean()))
                r["tail"].append(float((pred[mask] == d.y_test[mask]).float().mean()))
            torch.manual_seed(seed)
            enc = models.create("mlp", input_shape=d.input_shape, num_classes=64)
            rc = defences.rcal(dn, enc, pretrain_epochs=pre_epochs, pretrain_kw={"batch_size": 128,
                                                                               "loss_kw": {"temperature": 0.3}},
                               epochs=100, seed=seed)
            r = res[f"{rate:g}"].setdefault("rcal", {"all": [], "tail": []})
            r["all"].append(rc.accuracy(d.x_test, d.y_test))
            r["tail"].append(rc.accuracy(d.x_test, d.y_test, tail))
    rows = [[f"{rate}", m, fmt(v["all"]), fmt(v["tail"])] for rate, by in res.items() for m, v in by.items()]
    print(f"digits, longtail rho=0.1 (train counts {d.meta['longtail']['counts']}), symmetric noise, "
          f"{args.seeds} seed(s); test accuracy % (mean ± sd)\n")
    print(table(["noise", "method", "overall", "tail (5-9)"], rows))
    methods = ["ce", "gce", "ldr_kl", "rcal"]
    svg = bar_chart([f"{m} @ {r}" for r in res for m in methods],
                    [{"label": "overall", "y": [sum(res[r][m]["all"]) / len(res[r][m]["all"]) for r in res
                                                for m in methods]},
                     {"label": "tail classes", "y": [sum(res[r][m]["tail"]) / len(res[r][m]["tail"]) for r in res
                                                     for m in methods]}],
                    title="Noisy long-tailed digits (rho = 0.1)", ylabel="test accuracy")
    write(args, "longtail", {"results": res, "counts": d.meta["longtail"]["counts"]}, svg, t0)


if __name__ == "__main__":
    main()
