"""Embedded, offline data sets: digits, gaussians, blobs2d (and mnist1d in ``_mnist1d``)."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_in_range, check_int, check_unit_interval
from ._base import ClassificationData, register_dataset


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class shuffled split; returns (train_idx, test_idx), each shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    tr, te = np.concatenate(train), np.concatenate(test)
    rng.shuffle(tr)
    rng.shuffle(te)
    return tr, te


def _to_data(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, **kw) -> ClassificationData:
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return ClassificationData(x_train=xt[tr], y_train=yt[tr], x_test=xt[te], y_test=yt[te], **kw)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=0, keepdims=True), x.max(axis=0, keepdims=True)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


@register_dataset("digits", tags={"image", "embedded"}, reference="UCI optdigits via scikit-learn",
                  example_kwargs={})
def digits(*, root: str | None = None, test_fraction: float = 0.25, flatten: bool = False) -> ClassificationData:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), fixed stratified split (seed 0).

    Pixels (0..16) are divided by 16. ``flatten=True`` gives vectors of 64 instead of (1, 8, 8) images.
    """
    from sklearn.datasets import load_digits

    check_in_range(test_fraction, "test_fraction", 0.0, 1.0, closed="neither", owner="digits")
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    shape: tuple[int, ...] = (64,) if flatten else (1, 8, 8)
    x = x.reshape((-1, *shape))
    tr, te = _stratified_split(y, test_fraction, seed=0)
    return _to_data(x, y, tr, te, num_classes=10, input_shape=shape, class_names=[str(i) for i in range(10)],
                    name="digits", meta={"split_seed": 0, "test_fraction": test_fraction})


@register_dataset("gaussians", tags={"tabular", "embedded", "synthetic"},
                  reference="k-class Gaussian mixture (isotropic, configurable separation/imbalance)",
                  example_kwargs={"n_train": 200, "n_test": 100})
def gaussians(
    *,
    root: str | None = None,
    num_classes: int = 3,
    dim: int = 10,
    separation: float = 3.0,
    imbalance: float = 1.0,
    n_train: int = 3000,
    n_test: int = 1000,
    noise_std: float = 1.0,
    seed: int = 0,
) -> ClassificationData:
    """A k-class isotropic Gaussian mixture in ``dim`` dimensions, min-max scaled to [0, 1].

    Class means lie on a simplex-like random set at pairwise distance about ``separation * noise_std``.
    ``imbalance`` = n_largest / n_smallest class (geometric decay of class sizes, largest class 0);
    the test split follows the same priors.
    """
    owner = "gaussians"
    check_int(num_classes, "num_classes", 2, None, owner=owner)
    check_int(dim, "dim", 1, None, owner=owner)
    check_in_range(separation, "separation", 0.0, None, owner=owner)
    check_in_range(imbalance, "imbalance", 1.0, None, owner=owner)
    check_int(n_train, "n_train", num_classes, None, owner=owner)
    check_int(n_test, "n_test", 1, None, owner=owner)
    check_in_range(noise_std, "noise_std", 0.0, None, closed="neither", owner=owner)
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((num_classes, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    means = dirs * (separation * noise_std / np.sqrt(2.0))
    priors = imbalance ** (-np.arange(num_classes) / max(num_classes - 1, 1))
    priors = priors / priors.sum()

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        counts = np.maximum(1, np.round(priors * n).astype(int))
        y = np.repeat(np.arange(num_classes), counts)
        x = means[y] + noise_std * rng.standard_normal((len(y), dim))
        perm = rng.permutation(len(y))
        return x[perm], y[perm]

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    x = np.concatenate([xtr, xte])
    lo, hi = xtr.min(0), xtr.max(0)
    x = np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    y = np.concatenate([ytr, yte]).astype(np.int64)
    tr, te = np.arange(len(ytr)), np.arange(len(ytr), len(y))
    return _to_data(x, y, tr, te, num_classes=num_classes, input_shape=(dim,),
                    class_names=[f"class_{i}" for i in range(num_classes)], name="gaussians",
                    meta={"seed": seed, "priors": priors.tolist(), "separation": separation,
                          "imbalance": imbalance})


@register_dataset("blobs2d", tags={"tabular", "embedded", "synthetic", "2d"},
                  reference="scikit-learn make_blobs, for plots", example_kwargs={"n_samples": 200})
def blobs2d(
    *, root: str | None = None, num_classes: int = 3, n_samples: int = 1000, cluster_std: float = 1.0,
    test_fraction: float = 0.25, seed: int = 0,
) -> ClassificationData:
    """Two-dimensional Gaussian blobs (scikit-learn ``make_blobs``), min-max scaled to [0, 1]."""
    from sklearn.datasets import make_blobs

    owner = "blobs2d"
    check_int(num_classes, "num_classes", 2, None, owner=owner)
    check_int(n_samples, "n_samples", 2 * num_classes, None, owner=owner)
    check_in_range(cluster_std, "cluster_std", 0.0, None, closed="neither", owner=owner)
    check_unit_interval(test_fraction, "test_fraction", closed="neither", owner=owner)
    x, y = make_blobs(n_samples=n_samples, centers=num_classes, cluster_std=cluster_std, random_state=seed)
    x = _minmax(x).astype(np.float32)
    tr, te = _stratified_split(y, test_fraction, seed)
    return _to_data(x, y.astype(np.int64), tr, te, num_classes=num_classes, input_shape=(2,),
                    class_names=[f"class_{i}" for i in range(num_classes)], name="blobs2d", meta={"seed": seed})
