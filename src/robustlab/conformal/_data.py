"""Conformal prediction on data of any form: in memory (ClassificationData, ``(x, y)``) or streamed (torch
Dataset, DataLoader, :class:`~robustlab.data.StreamingData`).

:func:`model_probs` gives the model's softmax probabilities (N, C) batch by batch (N x C stays small even when
the inputs do not fit in memory); :class:`SetEvaluation` holds the metrics of prediction sets. The calibrate /
evaluate entry points (``SplitConformal.calibrate_data`` / ``.evaluate``, ``RobustConformal.calibrate_data`` /
``.evaluate``) use them and give the same numbers for in-memory and streamed data with the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import check_finite, check_int
from ..data._stream import ACCEPTED, BatchSource, is_streaming, num_examples
from .metrics import average_set_size, class_conditional_coverage, coverage, size_stratified_coverage

__all__ = ["SetEvaluation", "evaluate_sets", "model_probs"]


def source(data: Any, owner: str) -> BatchSource:
    """The examples of ``data`` (a ClassificationData's test split) as a :class:`BatchSource`."""
    from ..data import ClassificationData

    if isinstance(data, ClassificationData):
        return BatchSource(x=data.x_test, y=data.y_test, n=int(data.y_test.shape[0]), owner=owner)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        if data[0].shape[0] != data[1].shape[0]:
            raise ValueError(f"The (x, y) pair passed to {owner} has {data[0].shape[0]} inputs but "
                             f"{data[1].shape[0]} labels.")
        return BatchSource(x=data[0], y=data[1], n=int(data[0].shape[0]), owner=owner)
    if not is_streaming(data):
        raise TypeError(f"The 'data' parameter of {owner} must be {ACCEPTED}. Got {type(data).__name__} instead.")
    return BatchSource(data=data, n=num_examples(data, owner=owner), owner=owner,
                       check=lambda xb, yb: check_finite(xb, "x", owner=owner))


def tensors(data: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of in-memory data (a ClassificationData's test split)."""
    src = source(data, owner)
    if src.streaming:
        raise TypeError(f"{owner}: expected in-memory data here.")
    assert src.x is not None and src.y is not None
    return src.x, src.y


def aligned_batch(batch_size: int, n_mc: int, target: int) -> int:
    """Points per streamed batch so that ``points * n_mc`` is a multiple of ``batch_size`` (about ``target``).

    The Monte-Carlo (point, draw) pairs are then cut into the same ``batch_size`` chunks as in one call over
    all the points, so the random draws (noise, randomized scores) are the same.
    """
    step = batch_size // math.gcd(batch_size, n_mc)
    return step * max(1, target // step)


def batches(data: Any, batch_size: int, owner: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` CPU batches of ``data`` in order (in memory: slices; streamed: re-formed batches)."""
    for xb, yb, _ in source(data, owner).batches(batch_size):
        yield xb, yb


@torch.no_grad()
def model_probs(model: nn.Module, data: Any, *, batch_size: int = 1024,
                progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, C) (float32, CPU) and labels (N,) of ``model`` on ``data``, ``batch_size`` at a time.

    ``data``: a ClassificationData (test split), ``(x, y)``, a torch Dataset/DataLoader or a StreamingData.
    The model runs in eval mode (restored); logits must be finite.
    """
    owner = "model_probs"
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    src = source(data, owner)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    was = model.training
    model.eval()
    probs, ys = [], []
    try:
        for xb, yb, _ in progress_bar(src.batches(batch_size, dev), "probabilities", enabled=progress,
                                      total=-(-src.n // batch_size)):
            logits = model(xb)
            check_finite(logits, "model output", owner=owner)
            probs.append(logits.float().softmax(1).cpu())
            ys.append(yb.cpu().long())
    finally:
        model.train(was)
    if not probs:
        raise ValueError(f"The data passed to {owner} hold no examples.")
    return torch.cat(probs), torch.cat(ys)


@dataclass
class SetEvaluation:
    """Metrics of prediction sets against labels: coverage, average size, size-stratified and per-class coverage."""

    coverage: float
    average_set_size: float
    size_stratified_coverage: dict[int, tuple[float, int]]
    class_conditional_coverage: dict[int, float]
    n: int
    sets: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (no per-example sets)."""
        return {"coverage": self.coverage, "average_set_size": self.average_set_size,
                "size_stratified_coverage": {str(k): list(v) for k, v in self.size_stratified_coverage.items()},
                "class_conditional_coverage": {str(k): v for k, v in self.class_conditional_coverage.items()},
                "n": self.n}


def evaluate_sets(sets: torch.Tensor, y: torch.Tensor) -> SetEvaluation:
    """:class:`SetEvaluation` of boolean (N, C) ``sets`` against labels ``y`` (N,)."""
    return SetEvaluation(coverage=coverage(sets, y), average_set_size=average_set_size(sets),
                         size_stratified_coverage=size_stratified_coverage(sets, y),
                         class_conditional_coverage=class_conditional_coverage(sets, y), n=int(y.shape[0]), sets=sets)
