"""Functional forms of every registered loss: ``f(logits, target, *, ..., reduction="mean")``.

Each validates its arguments, computes a per-sample vector (N,), then applies ``reduction`` in
{"none", "mean", "sum"}. ``logits`` is (N, K) floating, ``target`` (N,) integer class indices.
"""

from __future__ import annotations

from ._fn_margin import aldr_kl, comp_sum, cs, ensloss, ldr_kl, normalize_logits, ww, zloss
from ._fn_prob import (
    ce,
    focal,
    gce,
    js,
    label_smoothing,
    mae,
    mse,
    nce,
    nce_agce,
    nce_aul,
    nce_rce,
    rce,
    rll,
    sce,
    tgce,
)

__all__ = [
    "aldr_kl", "ce", "comp_sum", "cs", "ensloss", "focal", "gce", "js", "label_smoothing", "ldr_kl", "mae", "mse",
    "nce", "nce_agce", "nce_aul", "nce_rce", "normalize_logits", "rce", "rll", "sce", "tgce", "ww", "zloss",
]
