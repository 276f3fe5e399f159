"""Evaluations for the diagnostic data sets: slab feature randomization (simplicity bias) and memorization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .._validation import check_option

__all__ = ["SlabAUC", "binary_auc", "memorization_report", "randomize_features", "slab_randomization_auc"]


def binary_auc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """ROC-AUC of ``scores`` for labels ``y`` in {0, 1}: the Mann-Whitney statistic with ties counted 1/2."""
    s = scores.detach().flatten().double().cpu()
    yy = y.detach().flatten().cpu()
    pos, neg = int((yy == 1).sum()), int((yy == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = torch.argsort(s)
    ss = s[order]
    ranks = torch.empty_like(s)
    # average ranks over ties (1-based)
    uniq, inverse, counts = torch.unique_consecutive(ss, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2.0
    ranks[order] = avg[inverse]
    r_pos = float(ranks[yy == 1].sum())
    return (r_pos - pos * (pos + 1) / 2.0) / (pos * neg)


def _slab_meta(data: Any) -> dict[str, Any]:
    meta = getattr(data, "meta", {})
    missing = [k for k in ("rotation", "offset", "scale", "simple_coords", "complex_coords") if k not in meta]
    if missing:
        raise ValueError(
            f"Data set '{getattr(data, 'name', '?')}' lacks slab metadata {missing}; "
            "use robustlab.data.load('slabs', ...)."
        )
    return meta


def randomize_features(data: Any, coords: Sequence[int] | str, *, split: str = "test",
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The slab inputs of ``split`` with coordinates ``coords`` (of the un-rotated basis) randomized.

    As in Shah et al. 2020: undo the scaling and rotation (x W^T), apply *one shared random permutation
    of the rows* to the chosen coordinates (breaking their link to y, keeping their marginals), rotate
    and rescale back. ``coords`` is a list or ``"simple"`` / ``"complex"``. Values may leave [0, 1] slightly.
    """
    check_option(split, "split", ("train", "test"), owner="randomize_features")
    meta = _slab_meta(data)
    if isinstance(coords, str):
        check_option(coords, "coords", ("simple", "complex"), owner="randomize_features")
        coords = meta[f"{coords}_coords"]
    x = getattr(data, f"x_{split}").double()
    w = torch.as_tensor(meta["rotation"], dtype=torch.float64)
    scale = torch.as_tensor(meta["scale"], dtype=torch.float64)
    offset = torch.as_tensor(meta["offset"], dtype=torch.float64)
    xr = x * scale + offset
    xs = xr @ w.T
    perm = torch.randperm(xs.shape[0], generator=generator)
    idx = torch.as_tensor(list(coords), dtype=torch.long)
    xs[:, idx] = xs[perm][:, idx]
    back = (xs @ w - offset) / scale
    return back.to(getattr(data, f"x_{split}").dtype)


class SlabAUC(NamedTuple):
    """AUCs on the clean, S-randomized (simple coordinate permuted) and S^c-randomized test sets."""

    standard: float
    s_randomized: float
    sc_randomized: float


@torch.no_grad()
def _scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from ..training import predict_logits

    logits = predict_logits(model, x)
    return logits[:, 1] - logits[:, 0] if logits.dim() == 2 and logits.shape[1] == 2 else logits.flatten()


def slab_randomization_auc(model: nn.Module, data: Any, *, generator: torch.Generator | None = None) -> SlabAUC:
    """Which feature does ``model`` use on slab data? AUC (of logit_1 - logit_0) on three test sets.

    Extreme simplicity bias (Shah et al. 2020, LMS-5): standard ~ 1, S-randomized ~ 0.5, S^c-randomized ~ 1.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    y = data.y_test
    return SlabAUC(
        standard=binary_auc(_scores(model, data.x_test), y),
        s_randomized=binary_auc(_scores(model, randomize_features(data, "simple", generator=gen)), y),
        sc_randomized=binary_auc(_scores(model, randomize_features(data, "complex", generator=gen)), y),
    )


@torch.no_grad()
def memorization_report(model: nn.Module, data: Any) -> dict[str, float]:
    """Accuracies on a data set with corrupted training labels (``modular``, or any with ``meta["corrupted"]``).

    Keys: ``train_clean`` (rows whose label was kept), ``train_corrupted_memorized`` (corrupted rows, agreement
    with the *corrupted* label), ``train_corrupted_true`` (corrupted rows, agreement with the true label) and
    ``test``. NaN where a split is empty.
    """
    from ..training import predict_logits

    meta = getattr(data, "meta", {})
    n = data.y_train.shape[0]
    corrupted = torch.as_tensor(meta.get("corrupted", [False] * n), dtype=torch.bool)[:n]
    y_true = torch.as_tensor(meta.get("y_train_clean", data.y_train), dtype=torch.long)[:n]
    pred = predict_logits(model, data.x_train).argmax(1).cpu()

    def acc(mask: torch.Tensor, target: torch.Tensor) -> float:
        return float((pred[mask] == target[mask]).float().mean()) if bool(mask.any()) else float("nan")

    test_pred = predict_logits(model, data.x_test).argmax(1).cpu()
    return {
        "train_clean": acc(~corrupted, data.y_train),
        "train_corrupted_memorized": acc(corrupted, data.y_train),
        "train_corrupted_true": acc(corrupted, y_true),
        "test": float((test_pred == data.y_test).float().mean()) if data.y_test.numel() else float("nan"),
    }
