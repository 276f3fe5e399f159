"""Dice vs MSE vs BCE as the training masks get noisier (SeaBird's observation, small CPU scale).

SeaBird (Kumar et al., CVPR 2024) shows the dice loss is more robust than regression losses to the noise of large
objects. Here: ``data.synthetic_segmentation`` (32x32 rectangles and discs), training masks corrupted by
``data.corrupt_masks`` (``boundary`` flips with probability p, or ``dilate`` by k pixels), a 3-layer CNN trained
with BCE, MSE on sigmoid probabilities, or ``dice``; the score is the foreground IoU on **clean** test masks.

    .venv/bin/python benchmarks/exp_dice_noise.py [--quick] [--kind boundary|dilate|remove]
        [--amounts 0 0.3 0.6 0.9] [--epochs 15] [--seeds 0 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from exp_corrupted_targets import mean_std  # one mean ± sample std for both regression experiments
from torch import nn

from robustlab import data
from robustlab.losses import segmentation


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=2, dilation=2),
                         nn.ReLU(), nn.Conv2d(16, 1, 1))


def train(d: data.SegmentationData, loss: str, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    dice = segmentation("dice")
    g = torch.Generator().manual_seed(seed)
    n = d.x_train.shape[0]
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(32):
            x, m = d.x_train[idx], d.y_train[idx]
            z = model(x)
            if loss == "bce":
                v = F.binary_cross_entropy_with_logits(z[:, 0], m.float())
            elif loss == "mse":
                v = F.mse_loss(torch.sigmoid(z[:, 0]), m.float())
            else:
                v = dice(z, m)
            opt.zero_grad()
            v.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def iou(model: nn.Module, d: data.SegmentationData) -> float:
    pred = model(d.x_test)[:, 0] > 0
    t = d.y_test.bool()
    return float((pred & t).sum() / (pred | t).sum().clamp_min(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="256 training images, 8 epochs, amounts 0 / 0.6 / 0.9")
    p.add_argument("--kind", default="boundary", choices=data.MASK_CORRUPTIONS)
    p.add_argument("--amounts", type=float, nargs="+", default=[0.0, 0.3, 0.6, 0.9])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.n_train, a.epochs, a.amounts = 256, 8, [0.0, 0.6, 0.9]
    torch.set_num_threads(1)
    rows = []
    for seed in a.seeds:
        d = data.synthetic_segmentation(n_train=a.n_train, n_test=256, seed=seed)
        for amount in a.amounts:
            amt = int(amount) if a.kind in ("dilate", "erode") else amount
            noisy = data.corrupt_masks(d.y_train, kind=a.kind, amount=amt, generator=torch.Generator().manual_seed(seed))
            dn = d.with_train_masks(noisy)
            for loss in ("bce", "mse", "dice"):
                v = iou(train(dn, loss, a.epochs, seed), d)
                rows.append({"seed": seed, "amount": amount, "loss": loss, "iou": v})
                print(f"seed {seed} {a.kind} {amount:g} {loss:<5} clean test IoU {v:.4f}", flush=True)
    print(f"\nforeground IoU on clean test masks, {a.kind} mask noise (mean ± sample std over seeds {a.seeds})\n")
    print("| loss | " + " | ".join(f"{a.kind} {x:g}" for x in a.amounts) + " |\n|:---|" + "---:|" * len(a.amounts))
    for loss in ("bce", "mse", "dice"):
        cells = [mean_std([r["iou"] for r in rows if r["loss"] == loss and r["amount"] == x]) for x in a.amounts]
        print(f"| {loss} | " + " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in cells) + " |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
