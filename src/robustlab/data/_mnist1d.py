"""MNIST-1D (Greydanus, 2020; arXiv:2011.14439): a procedurally generated 1-D digit data set.

Re-implemented from the paper's description of the generator, vectorised over samples:

1. Ten hand-made 12-point templates (one per digit shape), standardised, shifted to start at 0, / 6.
2. Append p zeros to each template (p uniform in ``padding`` = [36, 60]) and stretch it back to
   ``template_len + padding[1]`` = 72 points (linear interpolation).
3. Scale the amplitude by ``1 + scale_coeff * (u - 0.5)`` and roll (circular shift) by up to ``max_translation``.
4. Where the signal is zero, add correlated noise (Gaussian noise smoothed by a Gaussian filter of
   width 2, times ``corr_noise_scale``); everywhere add iid noise ``iid_noise_scale``.
5. Shear: subtract ``c * linspace(-0.5, 0.5)`` with ``c = shear_scale * (u - 0.5)``, then resample to
   ``final_seq_length`` = 40 points.

The samples are class-balanced (``num_samples // 10`` per class), shuffled and split ``train_split``
(default 4000/1000 of 5000). The reals are min-max scaled to [0, 1] with the train split's global
min/max (test values clipped); inputs have shape (40,). Same ``seed`` -> same data set. The random
streams differ from the reference code, so the samples are not bit-identical to the released pickle.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_in_range, check_int
from ._base import ClassificationData, register_dataset

__all__ = ["mnist1d", "mnist1d_templates"]

_TEMPLATES = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
], dtype=np.float64)


def mnist1d_templates() -> np.ndarray:
    """The ten (10, 12) templates: standardised (zero mean, unit std), shifted to start at 0, divided by 6."""
    x = _TEMPLATES - _TEMPLATES.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    return (x - x[:, :1]) / 6.0


def _resample(x: np.ndarray, lengths: np.ndarray, n_out: int) -> np.ndarray:
    """Linear resampling of row i's first ``lengths[i]`` points to ``n_out`` points (endpoints kept)."""
    pos = np.linspace(0.0, 1.0, n_out)[None, :] * (lengths[:, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, lengths[:, None] - 1)
    frac = pos - lo
    rows = np.arange(x.shape[0])[:, None]
    return x[rows, lo] * (1.0 - frac) + x[rows, hi] * frac


def _gaussian_filter_rows(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma, axis=1)


@register_dataset("mnist1d", tags={"embedded", "synthetic", "sequence"},
                  reference="Greydanus, arXiv:2011.14439 (MNIST-1D)", example_kwargs={"num_samples": 500})
def mnist1d(
    *,
    root: str | None = None,
    num_samples: int = 5000,
    train_split: float = 0.8,
    template_len: int = 12,
    padding: tuple[int, int] = (36, 60),
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
    seed: int = 42,
) -> ClassificationData:
    """MNIST-1D: 10 templates -> pad, scale, translate, correlated + iid noise, shear, resample to 40.

    Defaults are the paper's (5000 samples, 80/20 split, seed 42). Inputs (final_seq_length,) in [0, 1].
    """
    owner = "mnist1d"
    check_int(num_samples, "num_samples", 20, None, owner=owner)
    check_in_range(train_split, "train_split", 0.0, 1.0, closed="neither", owner=owner)
    if template_len != 12:
        raise ValueError(f"The 'template_len' parameter of mnist1d must be 12 (the templates' length). Got {template_len!r} instead.")
    if (not isinstance(padding, (tuple, list)) or len(padding) != 2
            or not all(isinstance(p, int) for p in padding) or not 0 <= padding[0] < padding[1]):
        raise ValueError(f"The 'padding' parameter of mnist1d must be a pair of ints (low, high) with 0 <= low < high. Got {padding!r} instead.")
    check_in_range(scale_coeff, "scale_coeff", 0.0, 2.0, owner=owner)
    check_int(max_translation, "max_translation", 1, None, owner=owner)
    check_in_range(corr_noise_scale, "corr_noise_scale", 0.0, None, owner=owner)
    check_in_range(iid_noise_scale, "iid_noise_scale", 0.0, None, owner=owner)
    check_in_range(shear_scale, "shear_scale", 0.0, None, owner=owner)
    check_int(final_seq_length, "final_seq_length", 2, None, owner=owner)
    check_int(seed, "seed", 0, None, owner=owner)

    rng = np.random.default_rng(seed)
    templates = mnist1d_templates() + 1e-8  # the reference adds eps so "is signal" survives the zero start
    per_class = num_samples // 10
    y = np.repeat(np.arange(10), per_class)
    n = y.shape[0]
    width = template_len + padding[1]  # 72 with the defaults

    # 2. append p zeros (p uniform in [low, high]), then stretch back to `width` points
    p = rng.integers(padding[0], padding[1] + 1, size=n)
    buf = np.zeros((n, template_len + padding[1]))
    buf[:, :template_len] = templates[y]
    x = _resample(buf, template_len + p, width)

    # 3. amplitude scale and circular translation
    x *= 1.0 + scale_coeff * (rng.random(n)[:, None] - 0.5)
    shift = rng.integers(0, max_translation, size=n)
    idx = (np.arange(width)[None, :] - shift[:, None]) % width
    x = x[np.arange(n)[:, None], idx]

    # 4. correlated noise where there is no signal, iid noise everywhere
    mask = x != 0
    corr = _gaussian_filter_rows(corr_noise_scale * rng.standard_normal((n, width)), 2.0)
    x = np.where(mask, x, corr)
    x = x + iid_noise_scale * rng.standard_normal((n, width))

    # 5. shear, then resample to the final length
    coeff = shear_scale * (rng.random(n) - 0.5)
    x = x - coeff[:, None] * np.linspace(-0.5, 0.5, width)[None, :]
    x = _resample(x, np.full(n, width), final_seq_length)

    perm = rng.permutation(n)
    x, y = x[perm], y[perm]
    n_train = int(n * train_split)
    if n_train < 1 or n_train >= n:
        raise ValueError(f"mnist1d: train_split={train_split} leaves an empty split for {n} samples.")
    lo, hi = x[:n_train].min(), x[:n_train].max()
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    return ClassificationData(
        x_train=xt[:n_train], y_train=yt[:n_train], x_test=xt[n_train:], y_test=yt[n_train:],
        num_classes=10, input_shape=(final_seq_length,), class_names=[str(i) for i in range(10)], name="mnist1d",
        meta={"seed": seed, "num_samples": n, "train_split": train_split, "scale": [float(lo), float(hi)],
              "reference": "arXiv:2011.14439"},
    )
