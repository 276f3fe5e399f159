"""Ablation behind bench_lipschitz's certified-accuracy gap: robustlab's side only, one setting changed at a time.

Run: ``nice .venv/bin/python benchmarks/exp_lipschitz_recipe.py --grid`` (six 2-epoch trainings, about 3 CPU
minutes; ``--conv soc`` etc. for one row). The protocol is bench_lipschitz's (MNIST t10k split 8000/2000, first
4000 training images, ``lipschitz_cnn`` with channels (16, 32) and hidden (256,), hinge margin 1, Adam lr 3e-3,
batch 128, 2 epochs, one thread), so the row "zero bias, no decay, constant" equals bench_lipschitz's robustlab row.
``--bias torch`` rebuilds the layers with torch's default U(±1/√fan_in) bias (the initialisation before the fix,
same random stream); ``--weight-decay 5e-4 --schedule cosine`` are ``fit``'s defaults, which the benchmark used to
inherit. Prints clean and certified L2 accuracy at 36/255, 0.5 and 1.0 (radius margin/(√2·L), L = 1).
"""

from __future__ import annotations

import argparse
import os
import time
from unittest import mock

import torch

from robustlab import data, models, training
from robustlab.certify import lipschitz
from robustlab.models import _lipschitz

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets", "mnist-t10k"))
EPS = (36 / 255, 0.5, 1.0)
GRID = [("torch", 5e-4, "cosine"), ("torch", 0.0, "cosine"), ("torch", 5e-4, "constant"), ("torch", 0.0, "constant"),
        ("zero", 5e-4, "cosine"), ("zero", 0.0, "constant")]


def run(d: data.ClassificationData, bias: str, weight_decay: float, schedule: str, conv: str, linear: str, seed: int,
        epochs: int) -> list[float]:
    """Train one ``lipschitz_cnn`` and return [clean, certified at each of EPS]."""
    torch.manual_seed(seed)
    keep = mock.patch.object(_lipschitz, "_zero_bias", lambda layer: None) if bias == "torch" else mock.patch.object(
        _lipschitz, "_zero_bias", _lipschitz._zero_bias)
    with keep:
        model = models.create("lipschitz_cnn", input_shape=d.input_shape, num_classes=d.num_classes,
                              channels=(16, 32), hidden=(256,), conv=conv, linear=linear)
    training.fit(model, d.subset(n_train=4000), objective="lipschitz_margin", objective_kw={"mode": "hinge", "margin": 1.0},
                 epochs=epochs, batch_size=128, optimizer="adam", lr=3e-3, weight_decay=weight_decay, schedule=schedule,
                 progress=False, seed=seed, eval_every=0)
    cert = lipschitz(model.eval(), d.x_test, d.y_test)
    return [cert.certified_accuracy(0.0)] + [cert.certified_accuracy(e) for e in EPS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist-root", default=DEFAULT_MNIST)
    p.add_argument("--grid", action="store_true", help="the six bias x weight decay x schedule rows of the results page")
    p.add_argument("--bias", default="zero", choices=["zero", "torch"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine", "step"])
    p.add_argument("--conv", default="cayley", choices=sorted(_lipschitz.CONVS))
    p.add_argument("--linear", default="cayley", choices=sorted(_lipschitz.LINEARS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    d = data.load("mnist", root=a.mnist_root, use_test_split_as_train=0.8, seed=a.seed)
    rows = GRID if a.grid else [(a.bias, a.weight_decay, a.schedule)]
    print(f"{'bias':6s} {'decay':>6s} {'schedule':9s} {'conv':7s} {'linear':7s} cpu s  clean   "
          + "  ".join(f"ε={e:.3g}".ljust(7) for e in EPS))
    for bias, wd, schedule in rows:
        c0 = time.process_time()
        acc = run(d, bias, wd, schedule, a.conv, a.linear, a.seed, a.epochs)
        print(f"{bias:6s} {wd:6.0e} {schedule:9s} {a.conv:7s} {a.linear:7s} {time.process_time() - c0:5.1f}  "
              + "  ".join(f"{v:7.3f}" for v in acc), flush=True)


if __name__ == "__main__":
    main()
