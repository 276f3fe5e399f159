"""Conformance checks for every registered data set (``robustlab.data.DATASETS``).

Shapes, dtypes, [0, 1] inputs, labels in range, class names, determinism, unknown options. File-based
sets (tag ``files``) run on tiny synthetic files written by :func:`write_fake_files`.
"""

from __future__ import annotations

import gzip
import inspect
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._registry import Spec
from . import check

__all__ = ["DEFECTS", "write_fake_files", "write_idx"]


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzip if the name ends in .gz or ``compress``)."""
    p = Path(path)
    a = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    if compress or (compress is None and p.name.endswith(".gz")):
        raw = gzip.compress(raw, mtime=0)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(raw)
    return p


DEFECTS = ("truncated", "bad_labels", "mismatched", "float_labels", "trailing_data")


def write_fake_files(name: str, root: str | Path, *, n_train: int = 60, n_test: int = 40, seed: int = 0,
                     train: bool = True, defect: str | None = None) -> Path:
    """Write tiny random files in the on-disk layout of ``name`` (mnist, fashion_mnist, cifar10, cifar100).

    ``defect`` breaks the test split on purpose: ``"truncated"`` (file cut short), ``"bad_labels"`` (a label
    equal to the number of classes), ``"mismatched"`` (one label fewer than images), ``"float_labels"`` (a
    label of 2.5, which must be refused, never rounded) or ``"trailing_data"`` (bytes after the payload).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    if name in ("mnist", "fashion_mnist"):
        d = root / name
        splits = [("t10k", n_test)] + ([("train", n_train)] if train else [])
        for prefix, n in splits:
            labels = np.arange(n) % 10
            if prefix == "t10k" and defect == "bad_labels":
                labels[-1] = 10
            if prefix == "t10k" and defect == "mismatched":
                labels = labels[:-1]
            img = write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
            lab = write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labels)
            if prefix == "t10k" and defect == "float_labels":  # IDX type 0x0D: big-endian float32
                f = labels.astype(">f4")
                f[2] = 2.5
                lab.write_bytes(gzip.compress(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", n) + f.tobytes(), mtime=0))
            if prefix == "t10k" and defect == "trailing_data":
                img.write_bytes(gzip.compress(gzip.decompress(img.read_bytes()) + bytes(1000), mtime=0))
            if prefix == "t10k" and defect == "truncated":
                raw = gzip.decompress(img.read_bytes())
                img.write_bytes(gzip.compress(raw[: len(raw) - 100], mtime=0))
        return d
    if name in ("cifar10", "cifar100"):
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)

        def batch(n: int, broken: bool = False) -> dict[bytes, Any]:
            out: dict[bytes, Any] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
            if name == "cifar10":
                out[b"labels"] = [int(i % 10) for i in range(n)]
            else:
                out[b"fine_labels"] = [int(i % 100) for i in range(n)]
                out[b"coarse_labels"] = [int(i % 20) for i in range(n)]
            if broken and defect == "float_labels":
                for key in (b"labels", b"fine_labels", b"coarse_labels"):
                    if key in out:
                        out[key][2] = 2.5
            if broken and defect in ("bad_labels", "mismatched"):
                for key in (b"labels", b"fine_labels", b"coarse_labels"):
                    if key in out:
                        if defect == "bad_labels":
                            out[key][-1] = 10 if key == b"labels" else 100 if key == b"fine_labels" else 20
                        else:
                            out[key] = out[key][:-1]
            return out

        if name == "cifar10":
            files = {f"data_batch_{i}": batch(max(1, n_train // 5)) for i in range(1, 6)} if train else {}
            files["test_batch"] = batch(n_test, broken=True)
            files["batches.meta"] = {b"label_names": [s.encode() for s in
                                                      ("airplane automobile bird cat deer dog frog horse ship truck").split()]}
        else:
            files = {"train": batch(n_train)} if train else {}
            files["test"] = batch(n_test, broken=True)
        for fname, obj in files.items():
            raw = pickle.dumps(obj, protocol=2)
            if defect == "truncated" and fname in ("test_batch", "test"):
                raw = raw[: len(raw) // 2]
            if defect == "trailing_data" and fname in ("test_batch", "test"):
                raw = raw + b"trailing bytes after the pickle's STOP"

            (d / fname).write_bytes(raw)
        return d
    raise ValueError(f"write_fake_files knows mnist, fashion_mnist, cifar10, cifar100; not '{name}'.")


def _load(spec: Spec[Any], tmp: str, **override: Any) -> Any:
    kw = {**spec.example_kwargs, **override}
    if "files" in spec.tags:
        write_fake_files(spec.name, tmp)
        kw.setdefault("root", tmp)
    return spec.create(**kw)


def _with_tmp(fn: Any) -> Any:
    def run(spec: Spec[Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            fn(spec, tmp)

    run.__name__ = fn.__name__
    run.__module__ = fn.__module__
    return run


@check()
@_with_tmp
def check_container(spec: Spec[Any], tmp: str) -> None:
    from ..data import ClassificationData

    d = _load(spec, tmp)
    assert isinstance(d, ClassificationData)
    assert d.x_train.shape[0] > 0 and d.x_test.shape[0] > 0
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[0] == y.shape[0] and tuple(x.shape[1:]) == tuple(d.input_shape)
        assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < d.num_classes
    assert len(d.class_names) == d.num_classes and d.num_classes >= 2
    assert d.num_features == int(np.prod(d.input_shape))
    assert isinstance(d.name, str) and d.name
    assert spec.doc and spec.reference


@check()
@_with_tmp
def check_deterministic(spec: Spec[Any], tmp: str) -> None:
    a, b = _load(spec, tmp), _load(spec, tmp)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, k), getattr(b, k)), f"two loads differ in {k}"


@check()
@_with_tmp
def check_seed_changes_synthetic_data(spec: Spec[Any], tmp: str) -> None:
    factory_params = inspect.signature(spec.factory).parameters
    if "seed" not in factory_params or "files" in spec.tags:
        return  # nothing random to vary
    a = _load(spec, tmp, seed=1)
    b = _load(spec, tmp, seed=2)
    same = a.x_train.shape == b.x_train.shape and torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not same, "changing the seed did not change the data"


@check()
@_with_tmp
def check_unknown_option_raises(spec: Spec[Any], tmp: str) -> None:
    import pytest

    with pytest.raises(TypeError):
        _load(spec, tmp, not_an_option=1)


@check()
@_with_tmp
def check_subset_and_relabel(spec: Spec[Any], tmp: str) -> None:
    d = _load(spec, tmp)
    s = d.subset(n_train=5, n_test=3)
    assert s.x_train.shape[0] == min(5, d.x_train.shape[0]) and s.x_test.shape[0] == min(3, d.x_test.shape[0])
    y = torch.zeros_like(d.y_train)
    r = d.with_train_labels(y, noise="test")
    assert torch.equal(r.y_train, y) and r.x_train is d.x_train and r.meta["noise"] == "test"
    import pytest

    with pytest.raises(ValueError, match="outside"):
        d.with_train_labels(torch.full_like(d.y_train, d.num_classes))


@check()
def check_unknown_name_suggests(spec: Spec[Any]) -> None:
    import pytest

    from ..data import load

    with pytest.raises(KeyError, match=f"Did you mean '{spec.name}'.*Available: .*{spec.name}"):
        load(spec.name + "x")


@check()
@_with_tmp
def check_container_rejects_bad_values(spec: Spec[Any], tmp: str) -> None:
    import dataclasses

    import pytest

    d = _load(spec, tmp)
    bad = d.x_train.clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dataclasses.replace(d, x_train=bad)
    with pytest.raises(ValueError, match="rows"):
        dataclasses.replace(d, y_train=d.y_train[:-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dataclasses.replace(d, x_test=d.x_test + 2.0)


@check(requires={"files"})
@_with_tmp
def check_missing_files_named(spec: Spec[Any], tmp: str) -> None:
    import pytest

    with pytest.raises(FileNotFoundError, match="(?i)expected"):
        spec.create(**{**spec.example_kwargs, "root": tmp})


@check(requires={"files"})
def check_defective_files_raise(spec: Spec[Any]) -> None:
    import pytest

    patterns = {"truncated": "corrupt|truncated", "bad_labels": "outside", "mismatched": "mismatched lengths",
                "float_labels": "integer class indices", "trailing_data": "corrupt|truncated"}
    for defect, pattern in patterns.items():
        with tempfile.TemporaryDirectory() as tmp:
            write_fake_files(spec.name, tmp, defect=defect)
            with pytest.raises(ValueError, match=pattern):
                spec.create(**{**spec.example_kwargs, "root": tmp})
