"""Certified accuracy vs L2 radius on MNIST at one σ: base model alone, FO-denoised, ZO-denoised (black box),
consistency-denoised, and a Gaussian-augmented model (Cohen et al.), all certified by randomized smoothing.

Small CPU scale: the MNIST test file (/work/shared/datasets/mnist-t10k) split 80/20 into train/test, one
LeNet base classifier trained on clean images, a DnCNN denoiser (MSE pre-training, then FO stability loss /
ZO-AE-DS with RGE in the autoencoder's latent space / the consistency loss, each from the same pre-trained
denoiser and for the same --epochs), CERTIFY with n0 = 100 and
n = --n draws (the published protocol uses n = 100 000: fewer draws cap the certifiable radius at
σΦ⁻¹(α^(1/n)), printed as "max radius").

    .venv/bin/python benchmarks/exp_denoised_smoothing.py [--root ../shared/datasets/mnist-t10k] [--n-train 4000]
        [--n-cert 100] [--n 1000] [--sigma 0.25] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch

from robustlab import data, models, training
from robustlab.bench.evaluations import max_certifiable_radius
from robustlab.certify import SmoothedClassifier
from robustlab.certify.smoothing import certified_accuracy_curve
from robustlab.defences import DenoisedSmoothing

RADII_PER_SIGMA = (0.0, 0.5, 1.0, 1.5)  # radii reported, in units of σ (σ = 0.5: 0, 0.25, 0.5, 0.75)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-cert", type=int, default=100)
    p.add_argument("--n", type=int, default=1000, help="CERTIFY estimation draws per point")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=3, help="epochs of each training stage")
    p.add_argument("--q", type=int, default=20, help="ZO-AE-DS: RGE directions per example")
    p.add_argument("--zo-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    d = data.load("mnist", root=a.root, use_test_split_as_train=0.8, seed=a.seed).subset(n_train=a.n_train)
    x, shape = d.x_train, d.input_shape
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)  # noqa: E731

    def lenet() -> torch.nn.Module:
        torch.manual_seed(a.seed)
        return models.create("lenet", input_shape=shape, num_classes=10)

    base = lenet()
    training.fit(base, d, epochs=a.epochs + 2, batch_size=64, lr=0.05, progress=False, seed=a.seed)
    base.eval()
    log("base classifier trained")
    gauss = lenet()
    training.fit(gauss, d, objective=training.objectives.get("gaussian_aug", sigma=a.sigma), epochs=a.epochs + 2,
                 batch_size=64, lr=0.05, progress=False, seed=a.seed)
    gauss.eval()
    log("Gaussian-augmented classifier trained")

    g = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)
    den = models.create("dncnn", input_shape=shape, num_classes=10, width=16, depth=5)
    DenoisedSmoothing(base, den, a.sigma).fit(x, method="mse", epochs=a.epochs, lr=2e-3, generator=g)
    log("denoiser pre-trained (MSE)")
    fo = DenoisedSmoothing(base, copy.deepcopy(den), a.sigma)
    fo_fit = fo.fit(x, method="fo", loss="stability", epochs=a.epochs, lr=1e-3, generator=g)
    log(f"FO denoiser trained {fo_fit.history}")

    def black_box(z: torch.Tensor) -> torch.Tensor:  # logits only
        with torch.no_grad():
            return base(z)

    torch.manual_seed(a.seed)
    ae = models.create("conv_autoencoder", input_shape=shape, num_classes=10, width=16, latent_channels=4)
    zo = DenoisedSmoothing(black_box, copy.deepcopy(den), a.sigma, autoencoder=ae)
    zo.fit_autoencoder(x, epochs=a.epochs, lr=2e-3, generator=g)
    zo_fit = zo.fit(x, method="zo", estimator="rge", q=a.q, mu=0.005, epochs=a.zo_epochs, lr=1e-3, generator=g)
    log(f"ZO-AE-DS trained: {zo_fit.queries} black-box queries, {zo_fit.history}")
    cons = DenoisedSmoothing(base, copy.deepcopy(den), a.sigma)  # from the MSE-pre-trained denoiser, as FO and ZO
    cons_fit = cons.fit(x, method="consistency", levels=4, epochs=a.epochs, lr=1e-3, generator=g)
    log(f"consistency denoiser trained {cons_fit.history}")

    xt, yt = d.x_test[:a.n_cert], d.y_test[:a.n_cert]
    radii_grid = tuple(f * a.sigma for f in RADII_PER_SIGMA)
    rows, points = {}, {}
    for name, model in (("base alone", base), ("FO-denoised", fo), ("ZO-AE-DS (black box)", zo),
                        ("consistency-denoised", cons), ("Gaussian-augmented", gauss)):
        sc = SmoothedClassifier(model, sigma=a.sigma, num_classes=10)
        cls, rad = sc.certify(xt, n0=100, n=a.n, alpha=0.001, batch_size=1000,
                              generator=torch.Generator().manual_seed(a.seed), progress=False)
        rows[name] = [float(v) for v in certified_accuracy_curve(cls, rad, yt, radii_grid)]
        points[name] = {"class": cls.tolist(), "radius": rad.tolist()}
        log(f"certified {name}: {rows[name]}")
        if a.json:  # partial results after each model
            _write(a, radii_grid, rows, points, yt.tolist(), zo_fit.queries, t0)
    rmax = max_certifiable_radius(a.sigma, a.n, 0.001)
    print(f"\nMNIST, sigma={a.sigma}, {a.n_cert} test points, n0=100, n={a.n}, alpha=0.001, max radius {rmax:.3f}; "
          f"ZO queries for training: {zo_fit.queries}")
    print("| model | " + " | ".join(f"r={r:g}" for r in radii_grid) + " |")
    print("|---|" + "---|" * len(radii_grid))
    for name, vals in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * v:.0f}%" for v in vals) + " |")
    if a.json:
        _write(a, radii_grid, rows, points, yt.tolist(), zo_fit.queries, t0)


def _write(a: argparse.Namespace, radii: tuple[float, ...], rows: dict[str, list[float]],
           points: dict[str, dict[str, list[float]]], labels: list[int], queries: int, t0: float) -> None:
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump({"args": vars(a), "radii": radii, "certified_accuracy": rows, "points": points,
                   "labels": labels, "zo_queries": queries,
                   "max_radius": max_certifiable_radius(a.sigma, a.n, 0.001), "seconds": time.time() - t0}, f, indent=2)


if __name__ == "__main__":
    main()
