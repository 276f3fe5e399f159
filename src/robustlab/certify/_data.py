"""Certification over any data form: in memory (ClassificationData, ``(x, y)``) or streamed (torch Dataset,
DataLoader, :class:`~robustlab.data.StreamingData`), read batch by batch through ``robustlab.data._stream``.

- Bound methods (IBP / CROWN-IBP / CROWN): :func:`certified_accuracy` streams ``batch_size`` points at a
  time into :func:`~robustlab.certify.verified`; its mask does not depend on the batching, so the number is
  the in-memory one.
- Randomized smoothing: :func:`smoothing_certify_data` runs CERTIFY on ``points_per_call`` points at a time
  with one generator in sequence, the same chunks for in-memory and streamed data, so both give the same
  classes and radii for the same seed (and, with every point in one chunk, exactly ``certify(x)``'s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import check_finite, check_image_batch, check_int, check_labels
from ..data._stream import ACCEPTED, BatchSource, is_streaming, num_examples

__all__ = ["SmoothingCertificates", "certified_accuracy_stream", "smoothing_certify_data"]


def _source(data: Any, owner: str, num_classes: int | None) -> BatchSource:
    """A :class:`BatchSource` over ``data``'s examples; streamed batches are validated as they are read."""
    from ..data import ClassificationData

    if isinstance(data, ClassificationData):
        return BatchSource(x=data.x_test, y=data.y_test, n=int(data.y_test.shape[0]), owner=owner)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return BatchSource(x=data[0], y=data[1], n=int(data[0].shape[0]), owner=owner)
    if not is_streaming(data):
        raise TypeError(f"The 'data' parameter of {owner} must be {ACCEPTED}. Got {type(data).__name__} instead.")

    def check(xb: torch.Tensor, yb: torch.Tensor) -> None:
        check_finite(xb, "x", owner=owner)
        check_image_batch(xb, "x", owner=owner)
        if num_classes is not None:
            check_labels(yb, num_classes, "y", owner=owner)

    return BatchSource(data=data, n=num_examples(data, owner=owner), check=check, owner=owner)


def certified_accuracy_stream(model: nn.Module, data: Any, **kw: Any) -> float:
    """:func:`~robustlab.certify.certified_accuracy` on streamed ``data`` (``kw``: its keyword arguments).

    Reads ``batch_size`` points at a time; each batch goes to :func:`~robustlab.certify.verified`.
    """
    from .ibp import verified

    owner = "certified_accuracy"
    batch_size = check_int(kw.get("batch_size", 256), "batch_size", 1, None, owner=owner)
    progress = kw.pop("progress", None)
    check_progress(progress, owner=owner)
    src = _source(data, owner, None)
    oks = []
    with progress_bar(total=src.n, desc=f"certify {kw.get('method', 'ibp')} eps={float(kw['eps']):g}",
                      enabled=progress, unit="pt") as bar:
        for xb, yb, _ in src.batches(batch_size):
            oks.append(verified(model, xb, yb, progress=False, **kw))
            bar.update(int(yb.shape[0]))
    ok = torch.cat(oks) if oks else torch.zeros(0, dtype=torch.bool)
    return float(ok.float().mean()) if ok.numel() else float("nan")


@dataclass
class SmoothingCertificates:
    """CERTIFY's output over a data set: ``classes`` (-1 = abstain), L2 ``radii`` and the labels ``y`` (N,)."""

    classes: torch.Tensor
    radii: torch.Tensor
    y: torch.Tensor

    def accuracy(self, radius_grid: Any) -> torch.Tensor:
        """Certified accuracy at each radius (:func:`~robustlab.certify.certified_accuracy_curve`)."""
        from .smoothing import certified_accuracy_curve

        return certified_accuracy_curve(self.classes, self.radii, self.y, radius_grid)

    @property
    def abstain(self) -> float:
        """Fraction of points where CERTIFY abstained."""
        return float((self.classes == -1).float().mean()) if self.classes.numel() else float("nan")


def smoothing_certify_data(
    smoothed: Any, data: Any, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
    points_per_call: int = 256, generator: torch.Generator | None = None, progress: bool | None = None,
) -> SmoothingCertificates:
    """CERTIFY (``smoothed.certify``) over every example of ``data``, ``points_per_call`` points at a time.

    The chunks are consecutive runs of ``points_per_call`` examples in data order, for in-memory and streamed
    data alike, certified in turn with ``generator``: the two forms give identical classes and radii. Labels
    must lie in ``[0, num_classes)``. ``progress``: a bar over the points.
    """
    owner = "SmoothedClassifier.certify_data"
    check_int(points_per_call, "points_per_call", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    src = _source(data, owner, smoothed.num_classes)
    classes, radii, ys = [], [], []
    with progress_bar(total=src.n, desc=f"smoothing certify: n0={n0}, n={n}", enabled=progress, unit="pt") as bar:
        for xb, yb, _ in src.batches(points_per_call):
            check_labels(yb, smoothed.num_classes, "y", owner=owner)
            c, r = smoothed.certify(xb, n0=n0, n=n, alpha=alpha, batch_size=batch_size, generator=generator,
                                    progress=False)
            classes.append(c)
            radii.append(r)
            ys.append(yb.cpu().long())
            bar.update(int(yb.shape[0]))
    if not ys:
        return SmoothingCertificates(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    return SmoothingCertificates(torch.cat(classes), torch.cat(radii), torch.cat(ys))
