"""Regression data: the ``RegressionData`` container and its registry (``friedman``, ``diabetes``, ``csv:`` with ``target=``).

``data.load(name)`` looks names up here when they are not classification sets, and ``load("csv:PATH",
target="COLUMN")`` reads a CSV whose ``target`` column is a numeric target (the same hardened reading as the
classification CSV loader: UTF-8, header row, equal row lengths, numeric columns, errors naming the column
and row). Inputs follow ``ClassificationData``: float32 in [0, 1] (train-split min-max); targets are float32
and left in their units (``meta["target_mean"]``/``["target_std"]`` of the train split are recorded).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .._registry import Registry
from .._validation import InvalidParameterError, check_finite, check_in_range, check_int, check_unit_interval

__all__ = ["REGRESSION_DATASETS", "RegressionData", "friedman", "load_regression_csv", "register_regression_dataset"]

REGRESSION_DATASETS: Registry[RegressionData] = Registry("regression data set",
                                                          checks="robustlab.testing._regression_data")
register_regression_dataset = REGRESSION_DATASETS.register


@dataclass
class RegressionData:
    """A regression data set held in memory: ``x_*`` float32 in [0, 1], ``y_*`` float32 targets (N,).

    Mirrors :class:`~robustlab.data.ClassificationData` (``input_shape``, ``name``, ``meta``, ``subset``)
    with ``num_classes = None``; ``with_train_targets`` replaces the train targets (target noise).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    num_classes: None = None
    task: str = "regression"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check dtypes, shapes, finiteness and the [0, 1] input range; raise ``TypeError``/``ValueError``."""
        for split in ("train", "test"):
            x: torch.Tensor = getattr(self, f"x_{split}")
            y: torch.Tensor = getattr(self, f"y_{split}")
            owner = f"regression data set '{self.name}'"
            for nm, t in ((f"x_{split}", x), (f"y_{split}", y)):
                if t.dtype != torch.float32:
                    raise TypeError(f"{nm} of {owner} must be float32. Got {t.dtype}.")
                check_finite(t, nm, owner=owner)
            if y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"{owner}: y_{split} must have shape ({x.shape[0]},) (one target per row of "
                                 f"x_{split}). Got {tuple(y.shape)}.")
            if x.numel() and tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"{owner}: x_{split} has sample shape {tuple(x.shape[1:])}, expected "
                                 f"input_shape {tuple(self.input_shape)}.")
            if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
                raise ValueError(f"{owner}: x_{split} must be scaled to [0, 1]; got range "
                                 f"[{float(x.min()):.4g}, {float(x.max()):.4g}].")

    @property
    def num_features(self) -> int:
        """Product of ``input_shape``."""
        return int(np.prod(self.input_shape))

    def with_train_targets(self, y_train: torch.Tensor, **meta: Any) -> RegressionData:
        """A copy whose training targets are replaced (e.g. by noisy targets); inputs are shared."""
        return replace(self, y_train=y_train, meta={**self.meta, **meta})

    def subset(self, *, n_train: int | None = None, n_test: int | None = None) -> RegressionData:
        """The first ``n_train`` / ``n_test`` examples of each split (splits are already shuffled)."""
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])

    def __repr__(self) -> str:
        return (f"RegressionData(name={self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)})")


def _build(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
           meta: dict[str, Any]) -> RegressionData:
    """Seeded shuffled split, train min-max scaling of x (test clipped), float32 tensors."""
    check_unit_interval(test_fraction, "test_fraction", closed="neither", owner=name)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    if n_test < 1 or n_test >= len(y):
        raise ValueError(f"{name}: test_fraction={test_fraction} leaves an empty split of {len(y)} rows.")
    te, tr = perm[:n_test], perm[n_test:]
    lo, hi = x[tr].min(0), x[tr].max(0)
    xs = np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    yf = y.astype(np.float32)
    meta = {**meta, "split_seed": seed, "test_fraction": test_fraction,
            "target_mean": float(yf[tr].mean()), "target_std": float(yf[tr].std())}
    t = torch.from_numpy
    return RegressionData(x_train=t(xs[tr]), y_train=t(yf[tr]), x_test=t(xs[te]), y_test=t(yf[te]),
                          input_shape=(x.shape[1],), name=name, meta=meta)


@register_regression_dataset("friedman", tags={"tabular", "synthetic", "regression"},
                             reference="Friedman, Ann. Stat. 1991 (#1); scikit-learn make_friedman1",
                             example_kwargs={"n_samples": 200})
def friedman(*, root: str | None = None, n_samples: int = 2000, n_features: int = 10, noise: float = 1.0,
             test_fraction: float = 0.25, seed: int = 0) -> RegressionData:
    """Friedman #1: :math:`y = 10\\sin(\\pi x_1 x_2) + 20(x_3 - 1/2)^2 + 10 x_4 + 5 x_5 + \\epsilon`.

    ``x`` uniform on [0, 1]^d (d = ``n_features`` >= 5; the rest are irrelevant), :math:`\\epsilon \\sim
    N(0, \\text{noise}^2)`; seeded (same seed, same data).
    """
    owner = "friedman"
    check_int(n_samples, "n_samples", 4, None, owner=owner)
    check_int(n_features, "n_features", 5, None, owner=owner)
    check_in_range(noise, "noise", 0.0, None, owner=owner)
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n_samples, n_features))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + noise * rng.standard_normal(n_samples))
    return _build("friedman", x, y, test_fraction, seed, {"seed": seed, "noise": noise})


@register_regression_dataset("diabetes", tags={"tabular", "embedded", "regression"},
                             reference="Efron et al., Ann. Stat. 2004 (scikit-learn load_diabetes)", example_kwargs={})
def diabetes(*, root: str | None = None, test_fraction: float = 0.25, seed: int = 0) -> RegressionData:
    """scikit-learn's diabetes set (442 patients, 10 features, disease progression after one year)."""
    from sklearn.datasets import load_diabetes

    b = load_diabetes()
    return _build("diabetes", b.data.astype(np.float64), b.target.astype(np.float64), test_fraction, seed, {})


def load_regression_csv(path: str, *, target: str, delimiter: str = ",", test_fraction: float = 0.2,
                        seed: int = 0) -> RegressionData:
    """CSV with a header row; ``target`` names the numeric target column, every other column is a numeric feature."""
    from ._files import _column, _is_float, read_csv_table

    check_int(seed, "seed", 0, None, owner="csv")
    p, header, body = read_csv_table(path, delimiter, target, "target")
    if len(body) < 2:
        raise ValueError(f"csv file '{p}' holds {len(body)} data row(s); a regression set needs at least 2.")
    a = np.empty((len(body), len(header)), dtype=np.float64)
    for j in range(len(header)):
        col = [r[j] for r in body]
        try:
            a[:, j] = np.asarray(col, dtype=np.float64)
        except ValueError:
            row = next(i for i, v in enumerate(col) if not _is_float(v))
            raise ValueError(f"csv file '{p}': column {_column(header[j], j)} must be numeric; row {row + 2} is not "
                             "a number (a regression CSV holds numbers only).") from None
    if not np.isfinite(a).all():
        j = int(np.flatnonzero(~np.isfinite(a).all(0))[0])
        raise ValueError(f"csv file '{p}': column {_column(header[j], j)} holds NaN or infinite values.")
    ti = header.index(target)
    feats = [j for j in range(len(header)) if j != ti]
    if not feats:
        raise ValueError(f"csv file '{p}' has no feature column besides the target {target!r}.")
    meta = {"path": str(p), "target_column": target, "feature_columns": [header[j] for j in feats]}
    return _build(f"csv:{p.name}", a[:, feats], a[:, ti], test_fraction, seed, meta)


def check_regression_csv_options(options: dict[str, Any]) -> None:
    """Refuse options :func:`load_regression_csv` does not take, naming them and the accepted ones."""
    accepted = [k for k in inspect.signature(load_regression_csv).parameters if k != "path"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidParameterError(
            f"The csv: regression loader (target=COLUMN) got unknown option(s) {unknown}; it takes {accepted}. "
            "Classification options (e.g. longtail) do not apply to a regression CSV.")
