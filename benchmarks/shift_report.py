"""The numbers for issue 7's "Done means": corruption tables, slab AUCs, disparity and memorization.

Run: ``.venv/bin/python benchmarks/shift_report.py [--mnist ../shared/datasets/mnist-t10k] [--quick]``.
1. ``digits`` (8x8): an MLP evaluated on the common, extra and MNIST-C suites, mCE vs a linear baseline.
2. MNIST test set (if the IDX files are found): 8,000 / 2,000 split, LeNet vs an MLP baseline.
3. Slabs: LMS-5 and MS-(5,7) (d = 50), FCN 2x100 -> standard / S-randomized / S^c-randomized AUC.
4. ``gaussians`` with class imbalance 10: per-class accuracy, standard vs PGD adversarial training.
5. ``modular`` (a + b mod 47, xi in {0, 0.2}, weight decay 0 / 1): clean / corrupted / test accuracy of a
   quadratic MLP (Gromov 2023).
All seeds fixed; CPU, one thread.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time

import numpy as np
import torch

from robustlab import data, metrics, models, shift, training
from robustlab.data import ClassificationData


def _fit(model, d, **kw):
    t0 = time.perf_counter()
    r = training.fit(model, d, progress=False, **kw)
    acc = r.history["test_acc"][-1] if r.history["test_acc"] else float(
        (training.predict_logits(r.model, d.x_test).argmax(1) == d.y_test).float().mean())
    print(f"  trained {model.robustlab_config['name']} in {time.perf_counter() - t0:.1f} s, test acc {100 * acc:.1f}%")
    return r.model


def _norm(d):
    return (float(d.x_train.mean()), float(d.x_train.std()))


def digits_section(quick: bool) -> None:
    print("\n# 1. digits (8x8 grayscale, 1347 train / 450 test)")
    d = data.load("digits")
    torch.manual_seed(0)
    mlp = _fit(models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(256,), normalize=_norm(d)),
               d, epochs=30, lr=0.05, seed=0)
    lin = _fit(models.create("linear", input_shape=d.input_shape, num_classes=10, normalize=_norm(d)),
               d, epochs=30, lr=0.05, seed=0)
    for suite in ("common", "common_extra", "mnist_c"):
        t0 = time.perf_counter()
        res = shift.corruption_error(mlp, d, corruptions=suite, baseline=lin,
                                     generator=torch.Generator().manual_seed(0))
        print(f"\n## suite {suite}: MLP(256), baseline = linear model ({time.perf_counter() - t0:.1f} s)")
        print(res.table())
        print(f"baseline (linear): clean {100 * res.baseline.clean_accuracy:.1f}%, mean corruption accuracy "
              f"{100 * res.baseline.mean_accuracy:.1f}%")


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_section(root: str, quick: bool) -> None:
    xi = os.path.join(root, "t10k-images-idx3-ubyte.gz")
    yi = os.path.join(root, "t10k-labels-idx1-ubyte.gz")
    if not os.path.exists(xi):
        print(f"\n# 2. MNIST test set: not found at {root}, skipped")
        return
    x = torch.from_numpy(_read_idx(xi).astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(_read_idx(yi).astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    d = ClassificationData(x[:8000], y[:8000], x[8000:], y[8000:], 10, (1, 28, 28), [str(i) for i in range(10)],
                           "mnist_t10k_split", {"split": "8000/2000, seed 0"})
    n_test = 500 if quick else 1000
    print(f"\n# 2. MNIST test set split (8,000 train / 2,000 test; corruptions on the first {n_test})")
    torch.manual_seed(0)
    lenet = _fit(models.create("lenet", input_shape=d.input_shape, num_classes=10, normalize=(0.1307, 0.3081)),
                 d, epochs=3 if quick else 6, lr=0.05, batch_size=64, seed=0)
    mlp = _fit(models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(256,),
                             normalize=(0.1307, 0.3081)), d, epochs=3 if quick else 6, lr=0.05, batch_size=64, seed=0)
    for suite in ("common", "mnist_c"):
        t0 = time.perf_counter()
        res = shift.corruption_error(lenet, d, corruptions=suite, baseline=mlp, n_test=n_test,
                                     generator=torch.Generator().manual_seed(0))
        print(f"\n## suite {suite}: LeNet, baseline = MLP(256) ({time.perf_counter() - t0:.1f} s)")
        print(res.table())
        print(f"baseline (MLP): clean {100 * res.baseline.clean_accuracy:.1f}%, mean corruption accuracy "
              f"{100 * res.baseline.mean_accuracy:.1f}%")
    print(f"\n## MNIST-C at its own fixed parameters (shift.MNIST_C_PARAMS), first {n_test} test images")
    acc = {k: shift.mnist_c_accuracy(m, d, n_test=n_test, generator=torch.Generator().manual_seed(0))
           for k, m in (("LeNet", lenet), ("MLP", mlp))}
    print(f"{'corruption':<14} {'LeNet':>6} {'MLP':>6}")
    for name in acc["LeNet"]:
        print(f"{name:<14} {100 * acc['LeNet'][name]:6.1f} {100 * acc['MLP'][name]:6.1f}")


def slab_section(quick: bool) -> None:
    print("\n# 3. Simplicity bias on slab data (d = 50, margin 0.1, random rotation, 100k train / 5k test); "
          "FCN 2x100, SGD lr .1, wd 5e-5, batch 256, 10 epochs")
    n_train = 30000 if quick else 100000  # the notebook's 100k; MS-(5,7) overfits with 10k
    for kind, epochs, opt in (("lms", 10, {}), ("ms", 10, {})):
        d = data.load("slabs", kind=kind, n_train=n_train, n_test=5000, dim=50, seed=0)
        mean, std = d.x_train.mean(0), d.x_train.std(0)
        torch.manual_seed(0)
        m = models.create("mlp", input_shape=d.input_shape, num_classes=2, hidden=(100, 100), normalize=(mean, std))
        kw = {"lr": 0.1, "weight_decay": 5e-5, "batch_size": 256, "epochs": epochs, "seed": 0, **opt}
        m = _fit(m, d, **kw)
        auc = shift.slab_randomization_auc(m, d, generator=torch.Generator().manual_seed(0))
        print(f"  {d.meta['variant']}: standard AUC {auc.standard:.3f}, S-randomized AUC {auc.s_randomized:.3f}, "
              f"S^c-randomized AUC {auc.sc_randomized:.3f}  (paper: 1.000 / ~0.50 / 1.000)")


def disparity_section(quick: bool) -> None:
    print("\n# 4. Accuracy disparity: gaussians (2 classes, d = 20, imbalance 10), linear model, PGD-AT (linf)")
    d = data.load("gaussians", num_classes=2, dim=20, separation=3.0, imbalance=10.0, n_train=4000, n_test=4000,
                  seed=0)
    counts = torch.bincount(d.y_test).tolist()
    print(f"  test class counts {counts}")
    for objective, kw in (("standard", {}), ("pgd_at", {"eps": 0.01, "steps": 5}),
                          ("pgd_at", {"eps": 0.02, "steps": 5}), ("pgd_at", {"eps": 0.05, "steps": 5})):
        torch.manual_seed(0)
        m = models.create("linear", input_shape=d.input_shape, num_classes=2)
        m = _fit(m, d, epochs=20, lr=0.1, objective=objective, objective_kw=kw or None, seed=0)
        logits = training.predict_logits(m, d.x_test)
        pc = metrics.per_class_accuracy(logits, d.y_test, 2)
        print(f"  {objective} {kw}: accuracy {100 * metrics.accuracy(logits, d.y_test):.1f}%, per class "
              f"{[round(100 * float(v), 1) for v in pc]}, disparity {100 * float(pc[0] - pc[1]):.1f} points")


class QuadraticMLP(torch.nn.Module):
    """f(x) = W2 (W1 x)^2, the two-layer quadratic network of Gromov (2023) for modular arithmetic."""

    def __init__(self, d: int, hidden: int, k: int) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(d, hidden, bias=False)
        self.l2 = torch.nn.Linear(hidden, k, bias=False)
        self.robustlab_config = {"name": "quadratic_mlp"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.l1(x) ** 2)


def modular_section(quick: bool) -> None:
    p = 23 if quick else 47
    epochs = 600 if quick else 1500
    print(f"\n# 5. Memorization vs generalization: modular (a + b) mod {p}, train fraction 0.5; quadratic MLP "
          f"(512 hidden), AdamW lr 1e-3, full batch, {epochs} steps")
    for xi, wd in ((0.0, 0.0), (0.0, 1.0), (0.2, 0.0), (0.2, 1.0)):
        d = data.load("modular", p=p, op="add", train_fraction=0.5, corrupt_fraction=xi, seed=0)
        torch.manual_seed(0)
        m = _fit(QuadraticMLP(2 * p, 512, p), d, epochs=epochs, optimizer="adamw", lr=1e-3, weight_decay=wd,
                 batch_size=4096, schedule="constant", seed=0, eval_every=0)
        r = shift.memorization_report(m, d)
        print(f"  xi {xi}, weight decay {wd}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--mnist", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default="1,2,3,4,5")
    args = ap.parse_args()
    torch.set_num_threads(1)
    secs = set(args.sections.split(","))
    t0 = time.perf_counter()
    if "1" in secs:
        digits_section(args.quick)
    if "2" in secs:
        mnist_section(args.mnist, args.quick)
    if "3" in secs:
        slab_section(args.quick)
    if "4" in secs:
        disparity_section(args.quick)
    if "5" in secs:
        modular_section(args.quick)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
