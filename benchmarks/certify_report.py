"""The "Done means" figures of issue 6 on the embedded ``digits`` data (8x8, 10 classes, 450 test images).

    .venv/bin/python benchmarks/certify_report.py [--quick] [--out report.json]

1. Randomized smoothing: an MLP trained with Gaussian augmentation (σ = 0.25) is certified with
   CERTIFY (n0 = 100, n = 100 000 by default, α = 0.001) on the whole test split; certified accuracy
   at L2 radii 0, 0.25, 0.5, 0.75.
2. IBP: an MLP (one hidden layer of 128) trained 40 epochs with the ``ibp`` objective (ε = 0.05, L∞;
   ε ramps to 1.1·ε, κ 1 -> 0.5) versus a standard one; certified accuracy at ε = 0.05 with IBP,
   CROWN-IBP and CROWN.
3. Conformal at α = 0.1: split conformal (thr, aps, raps) on the standard model, mean over 20 random
   calibration/test splits of the test set; RSCP+ (σ = 0.25, ε = 0.125 L2, n_mc = 256, PTT) on the
   Gaussian-augmented model, on clean and on L2-PGD-perturbed test points, next to vanilla split conformal.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from robustlab.certify import SmoothedClassifier, certified_accuracy, certified_accuracy_curve
from robustlab.conformal import RobustConformal, SplitConformal, average_set_size, coverage
from robustlab.data import load
from robustlab.models import create
from robustlab.training import fit, predict_logits


def _train(data, objective, kw, epochs, seed=0, hidden=(256, 256), lr=1e-3):
    torch.manual_seed(seed)
    model = create("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=hidden)
    fit(model, data, objective=objective, objective_kw=kw, epochs=epochs, batch_size=64, optimizer="adam",
        lr=lr, weight_decay=0.0, progress=False, seed=seed)
    return model.eval()


def _pgd_l2(model, x, y, eps, steps=20):
    d = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x + d), y), d)
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        d = d + 0.25 * eps * g
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        d = (d * (eps / n).clamp(max=1)).detach().requires_grad_(True)
    return (x + d).detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs / draws (a smoke run, not the reported figures)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--n", type=int, default=100_000, help="CERTIFY estimation draws (Cohen et al.: 100000)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load("digits")
    x, y = data.x_test, data.y_test
    ep = 5 if args.quick else 30
    report: dict = {"data": f"digits ({x.shape[0]} test images)"}

    # 1. randomized smoothing ------------------------------------------------------------------------
    t0 = time.perf_counter()
    gauss = _train(data, "gaussian_aug", {"sigma": 0.25}, ep)
    n = 1000 if args.quick else args.n
    # independent draws per point, as Cohen et al.'s code: the recorded figures reproduce exactly
    smooth = SmoothedClassifier(gauss, sigma=0.25, num_classes=data.num_classes, noise="independent")
    classes, radii = smooth.certify(x, n0=100, n=n, alpha=0.001, batch_size=10_000, generator=torch.Generator().manual_seed(0))
    grid = [0.0, 0.25, 0.5, 0.75]
    curve = certified_accuracy_curve(classes, radii, y, grid)
    report["smoothing"] = {"sigma": 0.25, "n0": 100, "n": n, "alpha": 0.001,
                           "clean_accuracy_base": float((predict_logits(gauss, x).argmax(1) == y).float().mean()),
                           "abstain": float((classes == -1).float().mean()),
                           "certified_accuracy": {f"{r:g}": round(float(a), 4) for r, a in zip(grid, curve)},
                           "time_s": round(time.perf_counter() - t0, 1)}
    print("smoothing", json.dumps(report["smoothing"]))

    # 2. IBP ---------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    eps = 0.05
    res: dict = {"eps": eps, "model": "mlp hidden=(128,)", "epochs": 40 if not args.quick else ep}
    std = _train(data, "standard", None, res["epochs"], hidden=(128,), lr=2e-3)
    ibp = _train(data, "ibp", {"eps": eps}, res["epochs"], hidden=(128,), lr=2e-3)
    for name, model in (("standard", std), ("ibp_trained", ibp)):
        res[name] = {"clean_accuracy": float((predict_logits(model, x).argmax(1) == y).float().mean())}
        for method in ("ibp", "crown_ibp", "crown"):
            res[name][method] = certified_accuracy(model, data, eps=eps, method=method)
    res["time_s"] = round(time.perf_counter() - t0, 1)
    report["ibp"] = res
    print("ibp", json.dumps(res))

    # 3. conformal ----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    probs = predict_logits(std, x).softmax(1)
    g = torch.Generator().manual_seed(0)
    conf: dict = {"alpha": 0.1, "splits": 20, "model": "standard mlp"}
    for score in ("thr", "aps", "raps"):
        covs, sizes = [], []
        for _ in range(20):
            perm = torch.randperm(x.shape[0], generator=g)
            cal, test = perm[:225], perm[225:]
            cp = SplitConformal(score, 0.1).calibrate(probs[cal], y[cal], generator=g)
            sets = cp.predict_sets(probs[test], generator=g)
            covs.append(coverage(sets, y[test]))
            sizes.append(average_set_size(sets))
        conf[score] = {"coverage": round(sum(covs) / 20, 4), "set_size": round(sum(sizes) / 20, 3)}
    perm = torch.randperm(x.shape[0], generator=g)
    cal, test = perm[:225], perm[225:]
    x_adv = _pgd_l2(gauss, x[test], y[test], 0.125)
    rob: dict = {"sigma": 0.25, "eps": 0.125, "n_mc": 256, "model": "gaussian_aug mlp"}
    for score in ("thr", "aps"):
        rc = RobustConformal(gauss, sigma=0.25, eps=0.125, score=score, alpha=0.1, n_mc=256 if not args.quick else 64)
        rc.calibrate(x[cal], y[cal], generator=g)
        clean_sets, adv_sets = rc.predict_sets(x[test], generator=g), rc.predict_sets(x_adv, generator=g)
        van = SplitConformal(score, 0.1).calibrate(predict_logits(gauss, x[cal]).softmax(1), y[cal], generator=g)
        van_adv = van.predict_sets(predict_logits(gauss, x_adv).softmax(1), generator=g)
        rob[score] = {"rscp_plus_clean": [round(coverage(clean_sets, y[test]), 4), round(average_set_size(clean_sets), 3)],
                      "rscp_plus_pgd": [round(coverage(adv_sets, y[test]), 4), round(average_set_size(adv_sets), 3)],
                      "vanilla_pgd": [round(coverage(van_adv, y[test]), 4), round(average_set_size(van_adv), 3)]}
    conf["robust"] = rob
    conf["time_s"] = round(time.perf_counter() - t0, 1)
    report["conformal"] = conf
    print("conformal", json.dumps(conf))
    if args.out:
        from robustlab.training import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
