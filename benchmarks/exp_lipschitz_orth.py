"""Accuracy / orthogonality trade-off of the OCNN regulariser on an ordinary CNN (Achour et al. 2022, Wang et al. 2020).

Run: ``nice .venv/bin/python benchmarks/exp_lipschitz_orth.py`` (five 2-epoch trainings, about 2 CPU minutes).

The network is ``lipschitz_cnn``'s architecture built from *ordinary* layers — [3x3 Conv2d (zero padding) - MaxMin -
PixelUnshuffle(2)] x 2 with 16 and 32 channels, then Linear 6272 -> 256 - MaxMin - Linear 256 -> 10 — trained with
``lipschitz_margin(mode="hinge", margin=1, orth_weight=λ)`` under bench_lipschitz's protocol (MNIST t10k split
8000/2000, first 4000 training images, Adam lr 3e-3 constant, no weight decay, batch 128, 2 epochs, one thread).
Nothing constrains the layers: λ alone pulls them towards orthogonality. Printed per λ: the final penalty, the
Lipschitz bound of ``certify.lipschitz_bound`` by power iteration (``--power-iters``) and by the sound SVD/FFT
method, clean accuracy and certified L2 accuracy at ε = 36/255, 0.5, 1.0 with radius margin/(√2·L) for L from the
power iteration (the figure the task asks for) and, in brackets, from the sound bound.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from bench_lipschitz import plain_layout  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from torch import nn

from robustlab import data, training
from robustlab.certify import lipschitz, lipschitz_bound, orthogonality_penalty

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets", "mnist-t10k"))
EPS = (36 / 255, 0.5, 1.0)


def plain_cnn(input_shape: tuple[int, int, int], num_classes: int, channels=(16, 32), hidden=(256,)) -> nn.Module:
    """``lipschitz_cnn``'s layout with unconstrained Conv2d / Linear layers (torch's default initialisation)."""
    return plain_layout("cnn", input_shape, num_classes, channels, hidden)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist-root", default=DEFAULT_MNIST)
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 1e-1, 1.0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--power-iters", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    d = data.load("mnist", root=a.mnist_root, use_test_split_as_train=0.8, seed=a.seed)
    sub = d.subset(n_train=4000)
    shape = tuple(d.input_shape)
    print(f"# exp_lipschitz_orth: plain CNN, MNIST t10k split, 4000 train / {d.x_test.shape[0]} test, {a.epochs} "
          f"epochs, hinge margin {a.margin}, Adam lr 3e-3 constant, seed {a.seed}; torch {torch.__version__}, 1 thread")
    print(f"{'λ':>7s}  {'penalty':>9s}  {'L power':>9s}  {'L svd':>9s}  {'clean':>6s}  "
          + "  ".join(f"ε={e:.3g}".ljust(13) for e in EPS) + "  cpu s")
    for lam in a.weights:
        torch.manual_seed(a.seed)
        model = plain_cnn(shape, d.num_classes)
        c0 = time.process_time()
        training.fit(model, sub, objective="lipschitz_margin",
                     objective_kw={"mode": "hinge", "margin": a.margin, "orth_weight": lam}, epochs=a.epochs,
                     batch_size=128, optimizer="adam", lr=3e-3, weight_decay=0.0, schedule="constant", progress=False,
                     seed=a.seed, eval_every=0)
        cpu = time.process_time() - c0
        model.eval()
        with torch.no_grad():
            pen = float(orthogonality_penalty(model))
        power = lipschitz(model, d.x_test, d.y_test, method="power", n_iter=a.power_iters)
        sound = lipschitz(model, d.x_test, d.y_test, bound=lipschitz_bound(model, shape, method="svd"))
        cells = "  ".join(f"{power.certified_accuracy(e):.3f} ({sound.certified_accuracy(e):.3f})" for e in EPS)
        print(f"{lam:7.0e}  {pen:9.3g}  {power.bound.value:9.4g}  {sound.bound.value:9.4g}  "
              f"{power.certified_accuracy(0.0):6.3f}  {cells}  {cpu:5.0f}", flush=True)


if __name__ == "__main__":
    main()
