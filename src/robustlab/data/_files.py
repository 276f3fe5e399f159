"""Data sets read from files: MNIST-family (IDX), CIFAR (python pickles), svmlight, CSV, npz.

Registered names (``load(name, root=...)``):

- ``mnist``, ``fashion_mnist``: IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``), looked up in
  ``root/<name>/``, ``root/<name>/raw/``, torchvision's ``root/MNIST/raw/`` (``FashionMNIST``) and ``root/``.
  Images (1, 28, 28), pixels / 255.
- ``cifar10``, ``cifar100``: the python pickle batches in ``root/cifar-10-batches-py/`` (``data_batch_1..5``,
  ``test_batch``, ``batches.meta``) or ``root/cifar-100-python/`` (``train``, ``test``, ``meta``;
  ``label_mode="fine"|"coarse"``). Pickles are read with a restricted unpickler that only accepts
  numpy arrays and builtin containers; anything else (arbitrary code) is refused. Images (3, 32, 32) / 255.

A missing **train** split with a present **test** split still loads: a ``UserWarning`` says so,
``meta["missing_split"] == "train"`` and ``x_train``/``y_train`` are **empty** (0 rows). To train on such
a set, split its test set: ``use_test_split_as_train=0.8`` puts a stratified, seeded 80 % of the test
set into ``x_train`` and the rest into ``x_test`` (``seed`` option; a train split on disk is then ignored;
the MNIST test set alone, e.g. a folder holding only the two ``t10k-*`` files, gives 8 000 / 2 000)::

    data.load("mnist", root="path/to/mnist-t10k", use_test_split_as_train=0.8, seed=0)

``download=True`` (``_download``) fetches missing official files first, checksum-verified.

By path (``load("csv:letter.csv", label="Letter")``):

- ``svmlight:<path>``: LIBSVM format; optional ``test_path`` (default: ``<path>.t`` when it exists).
- ``csv:<path>``: header row; ``label=`` names the label column (default ``"label"``); other columns
  must be numeric. ``delimiter=`` (default ``,``).
- ``npz:<path>``: arrays ``x`` and ``y`` (and optionally ``x_test``, ``y_test``); read with
  ``allow_pickle=False``.

File sets without a test split are split reproducibly and stratified: ``test_fraction`` (default 0.2)
with ``seed`` (default 0). Labels that are not already ``0..C-1`` integers are mapped to class indices in
sorted order (``class_names`` keeps the originals). Features outside [0, 1] are min-max scaled **per
feature with the train split's min and max**, and test values are clipped to [0, 1] (``meta["scaling"]``);
features already in [0, 1] are left untouched; ``uint8`` arrays are divided by 255.
Errors name the problem: missing files (with the expected names and the folders searched), corrupt
or truncated files, NaN/inf features, labels out of range, mismatched lengths.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_in_range, check_int, check_option, check_unit_interval
from . import _PATH_LOADERS
from ._base import ClassificationData, register_dataset
from ._embedded import _stratified_split
from ._readers import (  # noqa: F401  (re-exported: the readers' home before they moved)
    MAX_FILE_BYTES,
    MAX_SVMLIGHT_FEATURES,
    CorruptFileError,
    integer_labels,
    read_idx,
    restricted_load,
)

__all__ = ["read_idx", "restricted_load"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TV_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


# -- shared helpers ---------------------------------------------------------------------------------
def _need_root(root: str | os.PathLike[str] | None, name: str, expected: Sequence[str]) -> Path:
    if root is None:
        raise FileNotFoundError(
            f"Data set '{name}' is read from files: pass root='folder' holding {', '.join(expected)} "
            f"(or download=True to fetch them)."
        )
    return Path(root).expanduser()


def _check_xy(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: {x.shape[0]} feature rows but {y.shape[0]} labels (mismatched lengths).")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"{where}: the features contain {bad} NaN or infinite value(s); clean the file first.")


def _finish(
    name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, *, num_classes: int,
    class_names: list[str], input_shape: tuple[int, ...], meta: dict[str, Any], scale: bool = True,
) -> ClassificationData:
    """Scale to [0, 1] (uint8 / 255, else per-feature train min-max if outside [0, 1]) and build the container."""
    if xtr.dtype == np.uint8 and xte.dtype == np.uint8:
        xtr = xtr.astype(np.float32) / 255.0
        xte = xte.astype(np.float32) / 255.0
        meta["scaling"] = "divided by 255"
    elif scale:
        xtr = xtr.astype(np.float64)
        xte = xte.astype(np.float64)
        ref = xtr if xtr.shape[0] else xte
        outside = any(a.size and (a.min() < 0.0 or a.max() > 1.0) for a in (xtr, xte))
        if outside:
            lo, hi = ref.min(axis=0), ref.max(axis=0)
            span = np.where(hi > lo, hi - lo, 1.0)
            xtr = np.clip((xtr - lo) / span, 0.0, 1.0)
            xte = np.clip((xte - lo) / span, 0.0, 1.0)
            meta["scaling"] = "per-feature min-max with the train split's min/max; test clipped to [0, 1]"
            meta["scaling_min_max"] = [lo.tolist(), hi.tolist()] if lo.size <= 4096 else None
        else:
            meta["scaling"] = "none (already in [0, 1])"
    return ClassificationData(
        x_train=torch.from_numpy(np.ascontiguousarray(xtr, dtype=np.float32)).reshape(-1, *input_shape),
        y_train=torch.from_numpy(np.ascontiguousarray(ytr, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(xte, dtype=np.float32)).reshape(-1, *input_shape),
        y_test=torch.from_numpy(np.ascontiguousarray(yte, dtype=np.int64)),
        num_classes=num_classes, input_shape=input_shape, class_names=class_names, name=name, meta=meta,
    )


def _check_label_range(y: np.ndarray, num_classes: int, where: str) -> None:
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{where}: labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}.")


def _split_test_as_train(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tr, te = _stratified_split(y, 1.0 - fraction, seed)
    return x[tr], y[tr], x[te], y[te]


def _handle_splits(
    name: str, train: tuple[np.ndarray, np.ndarray] | None, test: tuple[np.ndarray, np.ndarray],
    use_test_split_as_train: float | None, seed: int, meta: dict[str, Any], sample_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xte, yte = test
    if use_test_split_as_train is not None:
        check_in_range(use_test_split_as_train, "use_test_split_as_train", 0.0, 1.0, closed="neither", owner=name)
        meta.update(source_split="test", use_test_split_as_train=use_test_split_as_train, split_seed=seed,
                    note=f"train and test are a stratified {use_test_split_as_train:g}/"
                         f"{1 - use_test_split_as_train:g} split of the official test set (seed {seed})")
        return _split_test_as_train(xte, yte, use_test_split_as_train, seed)
    if train is None:
        warnings.warn(
            f"Data set '{name}': the train split is missing, only the test split was loaded; x_train is empty. "
            f"Pass use_test_split_as_train=0.8 to split the test set into train/test.", UserWarning,
            stacklevel=7,  # _handle_splits <- loader <- factory <- Spec.create <- Registry.get <- data.load <- caller
        )
        meta["missing_split"] = "train"
        return np.zeros((0, *sample_shape), dtype=xte.dtype), np.zeros(0, dtype=np.int64), xte, yte
    return train[0], train[1], xte, yte


# -- MNIST family -----------------------------------------------------------------------------------
def _idx_candidates(root: Path, name: str) -> list[Path]:
    return [root / name, root / name / "raw", root / _TV_FOLDER[name] / "raw", root]


def _find_file(dirs: Sequence[Path], base: str) -> Path | None:
    for d in dirs:
        for fname in (base, base + ".gz"):
            p = d / fname
            if p.is_file():
                return p
    return None


def _load_idx_family(
    name: str, root: str | os.PathLike[str] | None, *, download: bool, mirror: str | None,
    use_test_split_as_train: float | None, seed: int, flatten: bool, class_names: list[str],
) -> ClassificationData:
    expected = [f"{b}[.gz]" for b in MNIST_FILES.values()]
    base = _need_root(root, name, expected)
    if download:
        from ._download import download as _dl

        _dl(name, base, mirror=mirror)
    dirs = _idx_candidates(base, name)
    found = {k: _find_file(dirs, v) for k, v in MNIST_FILES.items()}
    if found["test_images"] is None or found["test_labels"] is None:
        missing = [MNIST_FILES[k] + "[.gz]" for k, v in found.items() if v is None]
        raise FileNotFoundError(
            f"Data set '{name}': missing {', '.join(missing)}. Expected the IDX files {', '.join(expected)} in one of "
            f"{', '.join(str(d) for d in dirs)} (or pass download=True)."
        )

    def read_pair(img_key: str, lab_key: str) -> tuple[np.ndarray, np.ndarray]:
        x = read_idx(found[img_key])  # type: ignore[arg-type]
        where = f"{name} ({found[img_key]}, {found[lab_key]})"
        y = integer_labels(read_idx(found[lab_key]), where)  # type: ignore[arg-type]
        if x.ndim != 3:
            raise CorruptFileError(f"{where}: images must be (N, H, W); got shape {x.shape}.")
        _check_xy(x, y, where)
        _check_label_range(y, 10, where)
        return x[:, None], y

    test = read_pair("test_images", "test_labels")
    train = None
    if found["train_images"] is not None and found["train_labels"] is not None:
        train = read_pair("train_images", "train_labels")
    elif (found["train_images"] is None) != (found["train_labels"] is None):
        have = "train_images" if found["train_images"] else "train_labels"
        warnings.warn(f"Data set '{name}': only {found[have]} of the train split was found; ignoring it.",
                      UserWarning, stacklevel=3)
    meta: dict[str, Any] = {"files": {k: str(v) for k, v in found.items() if v is not None}}
    sample = test[0].shape[1:]
    if train is not None and train[0].shape[1:] != sample:
        raise CorruptFileError(
            f"Data set '{name}': train images are {train[0].shape[2:]} but test images are {sample[1:]}; "
            "both splits must have the same image size."
        )
    xtr, ytr, xte, yte = _handle_splits(name, train, test, use_test_split_as_train, seed, meta, sample)
    shape: tuple[int, ...] = (int(np.prod(sample)),) if flatten else tuple(int(s) for s in sample)
    return _finish(name, xtr, ytr, xte, yte, num_classes=10, class_names=class_names, input_shape=shape, meta=meta)


@register_dataset("mnist", tags={"image", "files", "downloadable"}, reference="LeCun et al. 1998 (IDX files)")
def mnist(
    *, root: str | None = None, download: bool = False, mirror: str | None = None,
    use_test_split_as_train: float | None = None, seed: int = 0, flatten: bool = False,
) -> ClassificationData:
    """MNIST from its IDX files under ``root`` (raw or .gz); see the module docstring for the missing-train rule."""
    return _load_idx_family("mnist", root, download=download, mirror=mirror,
                            use_test_split_as_train=use_test_split_as_train, seed=seed, flatten=flatten,
                            class_names=[str(i) for i in range(10)])


@register_dataset("fashion_mnist", tags={"image", "files", "downloadable"},
                  reference="Xiao et al. 2017, arXiv:1708.07747 (IDX files)")
def fashion_mnist(
    *, root: str | None = None, download: bool = False, mirror: str | None = None,
    use_test_split_as_train: float | None = None, seed: int = 0, flatten: bool = False,
) -> ClassificationData:
    """Fashion-MNIST from its IDX files under ``root`` (same file names and rules as ``mnist``)."""
    return _load_idx_family("fashion_mnist", root, download=download, mirror=mirror,
                            use_test_split_as_train=use_test_split_as_train, seed=seed, flatten=flatten,
                            class_names=list(FASHION_CLASSES))


# -- CIFAR ------------------------------------------------------------------------------------------
def _cifar_batch(path: Path, label_key: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    d = restricted_load(path)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        got = f"a dict with {len(d)} other key(s)" if isinstance(d, dict) else f"a {type(d).__name__}"
        raise CorruptFileError(f"'{path}' is not a CIFAR batch: expected keys b'data' and {label_key!r}, got {got}.")
    x = np.asarray(d[b"data"])
    y = integer_labels(d[label_key], f"'{path}'")
    if y.ndim != 1:
        raise CorruptFileError(f"'{path}': CIFAR labels must be a flat list; got shape {y.shape}.")
    if x.ndim != 2 or x.shape[1] != 3072 or x.dtype != np.uint8:
        raise CorruptFileError(f"'{path}': CIFAR data must be uint8 of shape (N, 3072); got {x.dtype} {x.shape}.")
    _check_xy(x, y, where)
    return x.reshape(-1, 3, 32, 32), y


def _load_cifar(
    name: str, root: str | os.PathLike[str] | None, *, download: bool, mirror: str | None,
    use_test_split_as_train: float | None, seed: int, label_mode: str,
) -> ClassificationData:
    folder = CIFAR_FOLDERS[name]
    if name == "cifar10":
        train_files, test_file, meta_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"
        label_key, names_key, num_classes = b"labels", b"label_names", 10
    else:
        train_files, test_file, meta_file = ["train"], "test", "meta"
        label_key = b"fine_labels" if label_mode == "fine" else b"coarse_labels"
        names_key = b"fine_label_names" if label_mode == "fine" else b"coarse_label_names"
        num_classes = 100 if label_mode == "fine" else 20
    expected = [f"{folder}/{f}" for f in [*train_files, test_file]]
    base = _need_root(root, name, expected)
    if download:
        from ._download import download as _dl

        _dl(name, base, mirror=mirror)
    d = base / folder if (base / folder).is_dir() else base
    if not (d / test_file).is_file():
        raise FileNotFoundError(
            f"Data set '{name}': missing '{test_file}'. Expected the python batches {', '.join(expected)} under "
            f"'{base}' (folder '{folder}' or the batches directly; or pass download=True)."
        )
    test = _cifar_batch(d / test_file, label_key, name)
    present = [f for f in train_files if (d / f).is_file()]
    train = None
    if present:
        if len(present) != len(train_files):
            missing = sorted(set(train_files) - set(present))
            raise FileNotFoundError(f"Data set '{name}': train batches {missing} are missing from '{d}'.")
        parts = [_cifar_batch(d / f, label_key, name) for f in train_files]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        _check_label_range(train[1], num_classes, name)
    _check_label_range(test[1], num_classes, name)
    class_names = CIFAR10_CLASSES if name == "cifar10" else [str(i) for i in range(num_classes)]
    if (d / meta_file).is_file():
        m = restricted_load(d / meta_file)
        if isinstance(m, dict) and names_key in m and len(m[names_key]) == num_classes:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in m[names_key]]
    meta: dict[str, Any] = {"folder": str(d), "label_mode": label_mode if name == "cifar100" else "fine"}
    xtr, ytr, xte, yte = _handle_splits(name, train, test, use_test_split_as_train, seed, meta, (3, 32, 32))
    return _finish(name, xtr, ytr, xte, yte, num_classes=num_classes, class_names=class_names,
                   input_shape=(3, 32, 32), meta=meta)


@register_dataset("cifar10", tags={"image", "files", "downloadable"}, reference="Krizhevsky 2009 (python batches)")
def cifar10(
    *, root: str | None = None, download: bool = False, mirror: str | None = None,
    use_test_split_as_train: float | None = None, seed: int = 0,
) -> ClassificationData:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (python pickle batches, read with a restricted unpickler)."""
    return _load_cifar("cifar10", root, download=download, mirror=mirror,
                       use_test_split_as_train=use_test_split_as_train, seed=seed, label_mode="fine")


@register_dataset("cifar100", tags={"image", "files", "downloadable"}, reference="Krizhevsky 2009 (python batches)")
def cifar100(
    *, root: str | None = None, download: bool = False, mirror: str | None = None,
    use_test_split_as_train: float | None = None, seed: int = 0, label_mode: str = "fine",
) -> ClassificationData:
    """CIFAR-100 from ``root/cifar-100-python``; ``label_mode`` "fine" (100 classes) or "coarse" (20)."""
    check_option(label_mode, "label_mode", ("fine", "coarse"), owner="cifar100")
    return _load_cifar("cifar100", root, download=download, mirror=mirror,
                       use_test_split_as_train=use_test_split_as_train, seed=seed, label_mode=label_mode)


# -- by path: svmlight, csv, npz --------------------------------------------------------------------
def _existing(path: str, kind: str) -> Path:
    if not path:
        raise ValueError(f"'{kind}:<path>' needs a path, e.g. '{kind}:data/train.{ 'txt' if kind == 'svmlight' else kind}'.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{kind} data file '{p}' does not exist.")
    return p


def _encode_labels(raw: np.ndarray, num_classes: int | None, where: str) -> tuple[np.ndarray, list[str], int]:
    """Integer labels 0..C-1 stay; other integers and string labels map to sorted unique values."""
    if raw.size == 0:
        raise ValueError(f"{where}: the file holds no samples; it needs at least one row with a label.")
    raw = integer_labels(raw, where)
    if raw.dtype.kind in "iu":
        y = raw.astype(np.int64)
        if num_classes is not None:
            _check_label_range(y, num_classes, where)
            return y, [str(i) for i in range(num_classes)], num_classes
        if y.min() >= 0 and len(np.unique(y)) == int(y.max()) + 1:
            c = int(y.max()) + 1
            return y, [str(i) for i in range(c)], c
    if num_classes is not None:
        raise ValueError(f"{where}: labels are not integer class indices in [0, {num_classes}).")
    classes, y = np.unique(raw, return_inverse=True)
    names = [str(c.item() if hasattr(c, "item") else c) for c in classes]
    return y.astype(np.int64), names, len(classes)


def _split_or_test(
    name: str, x: np.ndarray, y: np.ndarray, test: tuple[np.ndarray, np.ndarray] | None, test_fraction: float,
    seed: int, meta: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if test is not None:
        return x, y, test[0], test[1]
    check_unit_interval(test_fraction, "test_fraction", closed="neither", owner=name)
    tr, te = _stratified_split(y, test_fraction, seed)
    meta.update(split_seed=seed, test_fraction=test_fraction)
    return x[tr], y[tr], x[te], y[te]


def _check_dense_size(xs: Any, xt: Any, n_features: int | None, where: str) -> None:
    """Refuse a sparse file whose dense form would be huge (``0 1:1`` then ``1 1000000000:1`` is 20 bytes)."""
    d = xs.shape[1]
    if n_features is None and d > MAX_SVMLIGHT_FEATURES:
        raise ValueError(
            f"{where}: the largest feature index is {d}, over the limit of {MAX_SVMLIGHT_FEATURES} features for a "
            "file read without n_features; pass n_features=D (data_arg n_features=D) if the data really has D features."
        )
    rows = xs.shape[0] + (xt.shape[0] if xt is not None else 0)
    if rows * d * 8 > MAX_FILE_BYTES:
        raise ValueError(
            f"{where}: {rows} rows x {d} features would take {rows * d * 8} bytes as a dense array, over the "
            f"{MAX_FILE_BYTES}-byte limit; robustlab reads svmlight files into dense tensors."
        )


def load_svmlight(
    path: str, *, test_path: str | None = None, test_fraction: float = 0.2, seed: int = 0,
    n_features: int | None = None, num_classes: int | None = None,
) -> ClassificationData:
    """LIBSVM/svmlight file (dense), test split from ``test_path`` (or ``<path>.t``) or a seeded stratified split."""
    from sklearn.datasets import load_svmlight_file, load_svmlight_files

    p = _existing(path, "svmlight")
    check_int(seed, "seed", 0, None, owner="svmlight")
    tp = Path(test_path).expanduser() if test_path else (Path(str(p) + ".t") if Path(str(p) + ".t").is_file() else None)
    if tp is not None and not tp.is_file():
        raise FileNotFoundError(f"svmlight test file '{tp}' does not exist.")
    if n_features is not None:
        check_int(n_features, "n_features", 1, None, owner="svmlight")
    try:
        if tp is not None:
            xs, ys, xt, yt = load_svmlight_files([str(p), str(tp)], n_features=n_features)
        else:
            xs, ys = load_svmlight_file(str(p), n_features=n_features)
            xt = yt = None
    except (ValueError, IndexError, OverflowError, UnicodeDecodeError) as e:
        raise CorruptFileError(
            f"svmlight file '{p}' could not be parsed as LIBSVM/svmlight ({type(e).__name__}; with n_features given, "
            "every feature index must be at most n_features)."
        ) from e
    where = f"svmlight '{p}'"
    _check_dense_size(xs, xt, n_features, where)
    x = np.asarray(xs.toarray())
    _check_xy(x, ys, where)
    raw = ys if yt is None else np.concatenate([ys, yt])
    y_all, names, c = _encode_labels(raw, num_classes, where)
    meta: dict[str, Any] = {"path": str(p), "test_path": str(tp) if tp else None}
    test = None
    if xt is not None:
        xt = np.asarray(xt.toarray())
        _check_xy(xt, yt, f"svmlight '{tp}'")
        test = (xt, y_all[len(ys):])
    xtr, ytr, xte, yte = _split_or_test("svmlight", x, y_all[: len(ys)], test, test_fraction, seed, meta)
    return _finish(f"svmlight:{p.name}", xtr, ytr, xte, yte, num_classes=c, class_names=names,
                   input_shape=(x.shape[1],), meta=meta)


def read_csv_table(path: str, delimiter: str, column: str, role: str) -> tuple[Path, list[str], list[list[str]]]:
    """``(path, header, non-blank rows)`` of a CSV file with a header row that names ``column`` (the ``role``
    argument: ``label`` or ``target``); every row has the header's number of fields. Clear errors otherwise."""
    import csv

    p = _existing(path, "csv")
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error) as e:
        raise CorruptFileError(f"csv file '{p}' could not be read as UTF-8 CSV ({type(e).__name__}).") from e
    if not rows:
        raise CorruptFileError(f"csv file '{p}' is empty.")
    header = [h.strip() for h in rows[0]]
    if column not in header:
        raise ValueError(f"csv file '{p}' has no {role} column {column!r} in its header ({_columns(header)}). "
                         f"Pass {role}='NAME'.")
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise CorruptFileError(f"csv file '{p}': rows {bad[:5]} have a different number of fields than the header "
                               f"({len(header)}).")
    return p, header, body


def load_csv(
    path: str, *, label: str = "label", delimiter: str = ",", test_fraction: float = 0.2, seed: int = 0,
    num_classes: int | None = None, test_last: int | None = None,
) -> ClassificationData:
    """CSV with a header row; ``label`` names the label column, every other column is a numeric feature.

    ``test_last=N`` makes the last N rows the test split (file order kept, e.g. UCI letter: 15 000 / 5 000
    as in the LDR paper) instead of a seeded stratified ``test_fraction`` split.
    """
    check_int(seed, "seed", 0, None, owner="csv")
    p, header, body = read_csv_table(path, delimiter, label, "label")
    li = header.index(label)
    feat_cols = [j for j in range(len(header)) if j != li]
    x = np.empty((len(body), len(feat_cols)), dtype=np.float64)
    for k, j in enumerate(feat_cols):
        col = [r[j] for r in body]
        try:
            x[:, k] = np.asarray(col, dtype=np.float64)
        except ValueError:
            bad_row = next(i for i, v in enumerate(col) if not _is_float(v))
            raise ValueError(
                f"csv file '{p}': column {_column(header[j], j)} must be numeric; row {bad_row + 2} is not a number "
                f"(every column except the label column {label!r} must hold numbers)."
            ) from None
    where = f"csv '{p}'"
    raw = integer_labels(np.asarray([r[li].strip() for r in body]), where)
    _check_xy(x, raw, where)
    y, names, c = _encode_labels(raw, num_classes, where)
    meta: dict[str, Any] = {"path": str(p), "label_column": label, "feature_columns": [header[j] for j in feat_cols]}
    test = None
    if test_last is not None:
        check_int(test_last, "test_last", 1, len(y) - 1, owner="csv")
        test = (x[-test_last:], y[-test_last:])
        x, y = x[:-test_last], y[:-test_last]
        meta["test_last"] = test_last
    xtr, ytr, xte, yte = _split_or_test("csv", x, y, test, test_fraction, seed, meta)
    return _finish(f"csv:{p.name}", xtr, ytr, xte, yte, num_classes=c, class_names=names,
                   input_shape=(x.shape[1],), meta=meta)


_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_ .-]{0,39}")


def _columns(header: list[str]) -> str:
    """Describe a header without echoing file contents: names only when they look like column names."""
    if 0 < len(header) <= 64 and all(_NAME_LIKE.fullmatch(h) for h in header):
        return "columns: " + ", ".join(repr(h) for h in header)
    return f"{len(header)} column(s)"


def _column(name: str, index: int) -> str:
    return repr(name) if _NAME_LIKE.fullmatch(name) else f"number {index + 1}"


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def load_npz(
    path: str, *, test_fraction: float = 0.2, seed: int = 0, num_classes: int | None = None,
) -> ClassificationData:
    """``.npz`` with ``x`` (N, ...) and ``y`` (N,), optionally ``x_test``/``y_test``; ``allow_pickle=False``."""
    p = _existing(path, "npz")
    check_int(seed, "seed", 0, None, owner="npz")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile, KeyError, NotImplementedError,
            OverflowError, MemoryError, RuntimeError, struct.error) as e:
        raise CorruptFileError(f"npz file '{p}' is corrupt or not an npz archive ({type(e).__name__}).") from e
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"npz file '{p}' lacks array(s) {missing}; it must hold 'x' (N, ...) and 'y' (N,). Found {_columns(sorted(arrays)).replace('column', 'array')}.")
    x, yr = arrays["x"], arrays["y"]
    if x.dtype.kind not in "fiub":
        raise TypeError(f"npz file '{p}': 'x' must be numeric; got dtype {x.dtype}.")
    if yr.ndim != 1:
        raise ValueError(f"npz file '{p}': 'y' must have shape (N,); got {yr.shape}.")
    has_test = "x_test" in arrays or "y_test" in arrays
    if has_test and not ("x_test" in arrays and "y_test" in arrays):
        raise ValueError(f"npz file '{p}': give both 'x_test' and 'y_test' or neither.")
    _check_xy(x, yr, f"npz '{p}'")
    test = None
    raw = yr
    if has_test:
        xt, yt = arrays["x_test"], arrays["y_test"]
        _check_xy(xt, yt, f"npz '{p}' (test)")
        if xt.shape[1:] != x.shape[1:]:
            raise ValueError(f"npz file '{p}': x_test sample shape {xt.shape[1:]} differs from x's {x.shape[1:]}.")
        raw = np.concatenate([yr, yt])
    y_all, names, c = _encode_labels(raw, num_classes, f"npz '{p}'")
    if has_test:
        test = (arrays["x_test"], y_all[len(yr):])
    meta: dict[str, Any] = {"path": str(p)}
    xtr, ytr, xte, yte = _split_or_test("npz", x, y_all[: len(yr)], test, test_fraction, seed, meta)
    shape = tuple(int(s) for s in x.shape[1:])
    if xtr.dtype != np.uint8:  # per-feature scaling on the flattened features, then reshape
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return _finish(f"npz:{p.name}", xtr, ytr, xte, yte, num_classes=c, class_names=names, input_shape=shape, meta=meta)


_PATH_LOADERS.update({"svmlight": load_svmlight, "csv": load_csv, "npz": load_npz})
