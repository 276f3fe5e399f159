"""Diagnostic data sets: ``slabs`` (simplicity bias) and ``modular`` (memorization vs generalization).

``slabs``: Shah et al., "The Pitfalls of Simplicity Bias in Neural Networks", NeurIPS 2020
(arXiv:2006.07710; generator of harshays/simplicitybiaspitfalls ``gendata.py``). Evaluate with
:func:`robustlab.shift.slab_randomization_auc`.

``modular``: ``(a op b) mod p`` on one-hot pairs with a fraction of corrupted training labels
(Power et al. 2022, arXiv:2201.02177; Nanda et al.; label-corruption studies). Report with
:func:`robustlab.shift.memorization_report`.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_bool, check_in_range, check_int, check_option, check_unit_interval
from ._base import ClassificationData, register_dataset

__all__ = ["make_slab_coordinate"]

SLAB_KINDS = ("lms", "ms")
MODULAR_OPS = ("add", "sub", "mul", "div")


def make_slab_coordinate(kind: int | str, y: np.ndarray, rng: np.random.Generator, *, width: float = 1.0,
                         margin: float = 0.1, p5: float = 0.75, p7: float = 0.875) -> np.ndarray:
    """One coordinate given labels ``y`` in {0, 1}: ``"linear"`` or an n-slab, n in {3, 5, 7}.

    B = ``width``, gamma = ``margin`` (absolute). Linear: (2y - 1)(gamma + (B - gamma) U).
    3-slab: w = (2B - 4 gamma)/3, y=0 centre +-w U/2, y=1 +-(w/2 + 2 gamma + w U).
    5-slab: w = (2B - 8 gamma)/5, y=1 +-((B + 6 gamma)/5 + w U); y=0 centre w.p. p5, else +-((3B + 8 gamma)/5 + w U).
    7-slab: w = (2B - 12 gamma)/7, y=1 +-(w/2 + 2 gamma + w U) w.p. p7 else +-(5w/2 + 6 gamma + w U);
    y=0 centre w.p. 1/2 else +-(3w/2 + 4 gamma + w U). Gaps between slabs are 2 gamma; the outer edge is B.
    """
    n = y.shape[0]
    u = rng.random(n)
    sign = rng.choice(np.array([-1.0, 1.0]), size=n)
    b, g = float(width), float(margin)
    pos = y == 1
    if kind == "linear":
        return (2.0 * y - 1.0) * (g + (b - g) * u)
    if kind == 3:
        w = (2 * b - 4 * g) / 3
        return np.where(pos, sign * (0.5 * w + 2 * g + w * u), sign * 0.5 * w * u)
    if kind == 5:
        w = (2 * b - 8 * g) / 5
        centre = rng.random(n) < p5
        neg = np.where(centre, sign * 0.5 * w * u, sign * ((8 * g + 3 * b) / 5 + w * u))
        return np.where(pos, sign * ((b + 6 * g) / 5 + w * u), neg)
    if kind == 7:
        w = (2 * b - 12 * g) / 7
        inner = rng.random(n) < p7
        posv = np.where(inner, sign * (0.5 * w + 2 * g + w * u), sign * (2.5 * w + 6 * g + w * u))
        centre = rng.random(n) < 0.5
        negv = np.where(centre, sign * 0.5 * w * u, sign * (1.5 * w + 4 * g + w * u))
        return np.where(pos, posv, negv)
    raise ValueError(f"Unknown slab coordinate kind {kind!r}; use 'linear', 3, 5 or 7.")


@register_dataset("slabs", tags={"tabular", "synthetic", "diagnostic"},
                  reference="arXiv:2006.07710 (Shah et al. 2020, LMS-n / MS-(n,m) slabs)",
                  example_kwargs={"n_train": 400, "n_test": 200, "dim": 10})
def slabs(
    *,
    root: str | None = None,
    kind: str = "lms",
    n: int = 5,
    m: int = 7,
    dim: int = 50,
    n_train: int = 20000,
    n_test: int = 5000,
    margin: float = 0.1,
    width: float = 1.0,
    p5: float = 0.75,
    p7: float = 0.875,
    rotate: bool = True,
    corrupt_linear: float = 0.0,
    seed: int = 0,
) -> ClassificationData:
    """Simplicity-bias slab data: LMS-n (1 linear + dim-1 n-slab coords) or MS-(n,m) (1 n-slab + dim-1 m-slabs).

    Binary labels ~ Bernoulli(1/2); each coordinate is drawn independently given y (margin and width as
    fractions of B = ``width``). With ``rotate`` the points are multiplied by a random orthogonal W (QR of a
    Gaussian matrix). ``corrupt_linear`` (LMS only) replaces the linear coordinate of that fraction of rows
    by U(-gamma, gamma). Features are then min-max scaled per coordinate to [0, 1]; ``meta`` keeps (as
    JSON-able lists) ``rotation`` (W), ``offset`` and ``scale`` (x_rot = x * scale + offset), ``simple_coords`` and
    ``complex_coords`` (in the un-rotated basis) for :func:`robustlab.shift.slab_randomization_auc`.
    The first ``n_test`` generated rows are the test split, as in the reference code.
    """
    owner = "slabs"
    check_option(kind, "kind", SLAB_KINDS, owner=owner)
    check_option(n, "n", (3, 5, 7), owner=owner)
    check_option(m, "m", (3, 5, 7), owner=owner)
    check_int(dim, "dim", 2, None, owner=owner)
    check_int(n_train, "n_train", 2, None, owner=owner)
    check_int(n_test, "n_test", 2, None, owner=owner)
    check_in_range(width, "width", 0.0, None, closed="neither", owner=owner)
    check_in_range(margin, "margin", 0.0, 1 / 6, closed="left", owner=owner)
    check_unit_interval(p5, "p5", owner=owner)
    check_unit_interval(p7, "p7", owner=owner)
    check_bool(rotate, "rotate", owner=owner)
    check_unit_interval(corrupt_linear, "corrupt_linear", owner=owner)
    if corrupt_linear > 0 and kind != "lms":
        raise ValueError("The 'corrupt_linear' parameter of slabs needs kind='lms' (MS data has no linear coordinate).")
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    y = rng.integers(0, 2, size=total)
    b, g = float(width), float(margin) * float(width)
    kw = dict(width=b, margin=g, p5=p5, p7=p7)
    first: int | str = "linear" if kind == "lms" else n
    rest = n if kind == "lms" else m
    cols = [make_slab_coordinate(first, y, rng, **kw)] + [make_slab_coordinate(rest, y, rng, **kw) for _ in range(dim - 1)]
    x = np.stack(cols, axis=1)
    if corrupt_linear > 0:
        k = int(round(corrupt_linear * total))
        rows = rng.choice(total, size=k, replace=False)
        x[rows, 0] = rng.uniform(-g, g, size=k)
    w = np.eye(dim)
    if rotate:
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        w = q * np.sign(np.diag(r))[None, :]
    xr = x @ w
    lo, hi = xr.min(0), xr.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    x01 = np.clip((xr - lo) / span, 0.0, 1.0).astype(np.float32)
    xt = torch.from_numpy(x01)
    yt = torch.from_numpy(y.astype(np.int64))
    name = f"LMS-{n}" if kind == "lms" else f"MS-({n},{m})"
    return ClassificationData(
        x_train=xt[n_test:], y_train=yt[n_test:], x_test=xt[:n_test], y_test=yt[:n_test], num_classes=2,
        input_shape=(dim,), class_names=["0", "1"], name="slabs",
        meta={"variant": name, "seed": seed, "margin": margin, "width": width, "rotate": rotate,
              "corrupt_linear": corrupt_linear,
              "rotation": w.tolist(), "offset": lo.tolist(), "scale": span.tolist(),
              "simple_coords": [0], "complex_coords": list(range(1, dim))},
    )


def _modular_labels(a: np.ndarray, b: np.ndarray, p: int, op: str) -> np.ndarray:
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    return (a * np.array([pow(int(v), p - 2, p) for v in b])) % p  # a / b via Fermat (p prime, b != 0)


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


@register_dataset("modular", tags={"tabular", "synthetic", "diagnostic"},
                  reference="arXiv:2201.02177 (Power et al. 2022, modular arithmetic; label-corruption variant)",
                  example_kwargs={"p": 11})
def modular(
    *,
    root: str | None = None,
    p: int = 97,
    op: str = "add",
    train_fraction: float = 0.5,
    corrupt_fraction: float = 0.0,
    seed: int = 0,
) -> ClassificationData:
    """Modular arithmetic ``(a op b) mod p`` over all pairs, inputs one-hot(a) ++ one-hot(b) (2p features).

    ``op``: ``add``, ``sub``, ``mul`` or ``div`` (a * b^-1, b != 0, needs prime p). A random
    ``train_fraction`` of the pairs is the training split; a fraction xi = ``corrupt_fraction`` of the
    training labels is replaced by a uniformly drawn *different* class. ``meta["corrupted"]`` (bools, per
    training row) and ``meta["y_train_clean"]`` (lists) keep the ground truth for
    :func:`robustlab.shift.memorization_report`.
    """
    owner = "modular"
    check_int(p, "p", 2, None, owner=owner)
    check_option(op, "op", MODULAR_OPS, owner=owner)
    check_in_range(train_fraction, "train_fraction", 0.0, 1.0, closed="neither", owner=owner)
    check_unit_interval(corrupt_fraction, "corrupt_fraction", owner=owner)
    if op == "div" and not _is_prime(p):
        raise ValueError(f"The 'p' parameter of modular must be prime for op='div'. Got {p} instead.")
    rng = np.random.default_rng(seed)
    ga, gb = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = ga.ravel(), gb.ravel()
    if op == "div":
        a, b = a[b != 0], b[b != 0]
    y = _modular_labels(a, b, p, op).astype(np.int64)
    x = np.zeros((a.shape[0], 2 * p), dtype=np.float32)
    x[np.arange(a.shape[0]), a] = 1.0
    x[np.arange(a.shape[0]), p + b] = 1.0
    perm = rng.permutation(a.shape[0])
    n_train = int(round(train_fraction * a.shape[0]))
    if not 0 < n_train < a.shape[0]:
        raise ValueError(f"modular: train_fraction={train_fraction} leaves an empty split for {a.shape[0]} pairs.")
    tr, te = perm[:n_train], perm[n_train:]
    y_clean = y[tr].copy()
    y_tr = y_clean.copy()
    k = int(round(corrupt_fraction * n_train))
    corrupted = np.zeros(n_train, dtype=bool)
    if k:
        rows = rng.choice(n_train, size=k, replace=False)
        y_tr[rows] = (y_tr[rows] + rng.integers(1, p, size=k)) % p
        corrupted[rows] = True
    return ClassificationData(
        x_train=torch.from_numpy(x[tr]), y_train=torch.from_numpy(y_tr), x_test=torch.from_numpy(x[te]),
        y_test=torch.from_numpy(y[te]), num_classes=p, input_shape=(2 * p,),
        class_names=[str(i) for i in range(p)], name="modular",
        meta={"p": p, "op": op, "seed": seed, "train_fraction": train_fraction,
              "corrupt_fraction": corrupt_fraction, "corrupted": corrupted.tolist(),
              "y_train_clean": y_clean.tolist()},
    )
