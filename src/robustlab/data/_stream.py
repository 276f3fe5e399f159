"""Streaming data: one adapter from a torch ``Dataset`` / ``DataLoader`` / :class:`StreamingData` to batches.

Every evaluation accepts, besides a :class:`~robustlab.data.ClassificationData` (its test split) or an
``(x, y)`` pair of tensors, data that does not fit in memory:

- a map-style ``torch.utils.data.Dataset`` yielding ``(x, y)`` (read through a ``DataLoader`` without
  shuffling),
- a ``torch.utils.data.DataLoader`` yielding ``(x, y)`` batches (used as is; it must not shuffle, since
  evaluations read the data more than once in the same order),
- a :class:`StreamingData` (e.g. ``data.load("imagefolder:PATH", size=32)``): its ``test`` split, read with
  its ``num_workers``.

:class:`BatchSource` turns any of these into batches of exactly ``batch_size`` examples, in data order,
optionally only the examples a boolean mask selects: the same batches the in-memory path forms, so an
evaluation that draws random numbers per batch gets the same numbers either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from .._validation import InvalidParameterError, check_int

__all__ = ["BatchSource", "StreamingData", "as_loader", "is_streaming", "iter_batches", "num_examples", "take"]

ACCEPTED = ("a ClassificationData, an (x, y) pair of tensors, a torch Dataset or DataLoader yielding (x, y), "
            "or a StreamingData")


@dataclass
class StreamingData:
    """A classification data set read batch by batch: ``train`` and ``test`` torch Datasets plus metadata.

    Each split yields ``(x, y)``: ``x`` float32 in [0, 1] of shape ``input_shape``, ``y`` an int class index.
    Evaluations read its ``test`` split with ``num_workers`` DataLoader workers; ``to_memory()`` reads
    everything into a :class:`~robustlab.data.ClassificationData` (the same values).
    """

    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_int(self.num_workers, "num_workers", 0, None, owner=f"data set '{self.name}'")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"Data set '{self.name}': {len(self.class_names)} class names for "
                             f"{self.num_classes} classes.")

    @property
    def classes(self) -> list[str]:
        """The class names (index ``i`` is label ``i``)."""
        return self.class_names

    def subset(self, *, n_train: int | None = None, n_test: int | None = None) -> StreamingData:
        """The first ``n_train`` / ``n_test`` examples of each split (as ``ClassificationData.subset``)."""
        def first(ds: Dataset, k: int | None) -> Dataset:
            if k is None:
                return ds
            return Subset(ds, range(min(check_int(k, "n", 0, None, owner="subset"), len(ds))))  # type: ignore[arg-type]

        return replace(self, train=first(self.train, n_train), test=first(self.test, n_test))

    def loader(self, split: str = "test", *, batch_size: int = 256, shuffle: bool = False,
               generator: torch.Generator | None = None) -> DataLoader:
        """A DataLoader over ``split`` (``"train"`` or ``"test"``) with this data set's ``num_workers``."""
        if split not in ("train", "test"):
            raise InvalidParameterError(f"The 'split' parameter of loader must be 'train' or 'test'. Got {split!r}.")
        return DataLoader(getattr(self, split), batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers)

    def to_memory(self, *, batch_size: int = 256) -> Any:
        """Both splits read into a :class:`~robustlab.data.ClassificationData` (same images, same order)."""
        from ._base import ClassificationData

        splits = {}
        for split in ("train", "test"):
            xs, ys = [], []
            for xb, yb, _ in iter_batches(getattr(self, split), batch_size, num_workers=self.num_workers):
                xs.append(xb)
                ys.append(yb)
            splits[split] = (torch.cat(xs) if xs else torch.zeros(0, *self.input_shape),
                             torch.cat(ys) if ys else torch.zeros(0, dtype=torch.int64))
        return ClassificationData(x_train=splits["train"][0], y_train=splits["train"][1], x_test=splits["test"][0],
                                  y_test=splits["test"][1], num_classes=self.num_classes,
                                  input_shape=tuple(self.input_shape), class_names=list(self.class_names),
                                  name=self.name, meta=dict(self.meta))

    def __repr__(self) -> str:
        return (f"StreamingData(name={self.name!r}, train={len(self.train)}, "  # type: ignore[arg-type]
                f"test={len(self.test)}, input_shape={tuple(self.input_shape)}, "  # type: ignore[arg-type]
                f"num_classes={self.num_classes}, num_workers={self.num_workers})")


def is_streaming(obj: Any) -> bool:
    """True for the streaming forms: a torch ``Dataset``, a ``DataLoader`` or a :class:`StreamingData`."""
    return isinstance(obj, (Dataset, DataLoader, StreamingData))


def _dataset(obj: Any, owner: str) -> Dataset:
    if isinstance(obj, StreamingData):
        return obj.test
    if isinstance(obj, DataLoader):
        return obj.dataset
    if isinstance(obj, Dataset):
        return obj
    raise TypeError(f"The 'data' parameter of {owner} must be {ACCEPTED}. Got {type(obj).__name__} instead.")


def num_examples(obj: Any, *, owner: str = "evaluation") -> int:
    """Number of examples of a streaming data object (its test split for :class:`StreamingData`)."""
    ds = _dataset(obj, owner)
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"The 'data' parameter of {owner} must have a length (a map-style Dataset); "
                        f"{type(ds).__name__} has none.") from None


def take(data: Any, indices: torch.Tensor, *, owner: str = "evaluation") -> Any:
    """The examples at ``indices`` (in that order), in the same form: a Dataset ``Subset`` for streaming data
    (a DataLoader's dataset, read afterwards with the default collate; a :class:`StreamingData`'s test split),
    an ``(x, y)`` pair for in-memory data."""
    idx = torch.as_tensor(indices, dtype=torch.long).cpu()
    if is_streaming(data):
        return Subset(_dataset(data, owner), idx.tolist())
    from ._base import ClassificationData

    if isinstance(data, ClassificationData):
        return data.x_test[idx], data.y_test[idx]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0][idx], data[1][idx]
    raise TypeError(f"The 'data' parameter of {owner} must be {ACCEPTED}. Got {type(data).__name__} instead.")


def as_loader(obj: Any, batch_size: int, *, num_workers: int | None = None, indices: Any = None,
              owner: str = "evaluation") -> DataLoader:
    """A DataLoader reading ``obj`` in a fixed order (``indices``: only those positions of a Dataset).

    A ``Dataset`` (or a :class:`StreamingData`'s test split) gets a new loader (no shuffling, ``num_workers``
    workers, default the StreamingData's or 0); a ``DataLoader`` is used as is and must not shuffle.
    """
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    if isinstance(obj, DataLoader):
        sampler = obj.batch_sampler.sampler if obj.batch_sampler is not None else obj.sampler
        if isinstance(sampler, RandomSampler) or isinstance(obj.sampler, RandomSampler):
            raise InvalidParameterError(
                f"The DataLoader passed as 'data' to {owner} shuffles (shuffle=True); evaluations read the data "
                "more than once and need the same order each time. Pass DataLoader(..., shuffle=False) or the Dataset.")
        if indices is not None:
            raise ValueError("as_loader: 'indices' applies to a Dataset, not to a DataLoader.")
        return obj
    ds = _dataset(obj, owner)
    workers = num_workers if num_workers is not None else getattr(obj, "num_workers", 0)
    check_int(workers, "num_workers", 0, None, owner=owner)
    if indices is not None:
        ds = Subset(ds, indices)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)


def unpack_batch(batch: Any, owner: str, *, batched: bool = True, with_index: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(x, y, index or None)`` of one item or batch of a user's data, checked once for every reader.

    Items are ``(x, y)`` or, with ``with_index``, ``(x, y, index)``; ``y`` (and ``index``) become tensors.
    ``batched``: ``y`` must be (batch,) class indices, one per row of ``x``.
    """
    sizes = (2, 3) if with_index else (2,)
    if not (isinstance(batch, (tuple, list)) and len(batch) in sizes):
        kind = (f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, (tuple, list))
                else type(batch).__name__)
        raise InvalidParameterError(
            f"The data of {owner} must yield (x, y){' or (x, y, index)' if with_index else ''} items; got {kind}. "
            "Wrap the data set so that each item is (input tensor, integer label).")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor):
        raise InvalidParameterError(f"The data of {owner} must yield input tensors; got {type(x).__name__}.")
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidParameterError(
            f"The data of {owner} must yield integer labels; got {type(y).__name__}.") from None
    if batched and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise InvalidParameterError(f"The data of {owner} yield labels of shape {tuple(y.shape)} for inputs of shape "
                                    f"{tuple(x.shape)}; labels must be (batch,) class indices.")
    idx = torch.as_tensor(batch[2]) if len(batch) == 3 else None
    return x, y, idx


def iter_batches(obj: Any, batch_size: int, device: torch.device | str | None = None, *,
                 select: torch.Tensor | None = None, n: int | None = None, num_workers: int | None = None,
                 owner: str = "evaluation") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, idx)`` batches of exactly ``batch_size`` examples (the last may be shorter), in data order.

    ``idx`` (CPU int64) are the examples' positions; ``select`` (bool, one per example) keeps only those
    examples (a Dataset reads only them); ``n`` stops after the first ``n`` examples. ``x`` and ``y`` (int64)
    are moved to ``device``. A loader's own batch size does not matter: batches are re-formed.
    """
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    indices = None
    pos = None
    if select is not None:
        pos = select.detach().cpu().bool().nonzero().squeeze(1)
        if n is not None:
            pos = pos[pos < n]
    elif n is not None and not isinstance(obj, DataLoader):
        pos = torch.arange(min(n, num_examples(obj, owner=owner)))
    if pos is not None and not isinstance(obj, DataLoader):
        indices = pos.tolist()
    loader = as_loader(obj, batch_size, num_workers=num_workers, indices=indices, owner=owner)
    buf_x: list[torch.Tensor] = []
    buf_i: list[torch.Tensor] = []
    buf_y: list[torch.Tensor] = []
    held = 0
    seen = 0

    def emit(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nonlocal buf_x, buf_y, buf_i, held
        x, y, i = torch.cat(buf_x), torch.cat(buf_y), torch.cat(buf_i)
        buf_x, buf_y, buf_i = [x[k:]], [y[k:]], [i[k:]]
        held -= k
        return x[:k].to(device), y[:k].to(device).long(), i[:k]

    for batch in loader:
        x, y, _ = unpack_batch(batch, owner)
        m = x.shape[0]
        if indices is not None:
            idx = pos[seen:seen + m]
        else:
            idx = torch.arange(seen, seen + m)
            keep = torch.ones(m, dtype=torch.bool)
            if n is not None:
                keep &= idx < n
            if select is not None:
                sel = select[seen:seen + m].detach().cpu().bool()
                keep[sel.numel():] = False
                keep[:sel.numel()] &= sel
            if not bool(keep.all()):
                x, y, idx = x[keep], y[keep], idx[keep]
        seen += m
        if idx.numel() != m and indices is not None:
            raise ValueError(f"The data of {owner} yielded more examples than its length.")
        if idx.numel():
            buf_x.append(x)
            buf_y.append(y)
            buf_i.append(idx)
            held += int(idx.numel())
        while held >= batch_size:
            yield emit(batch_size)
        if n is not None and indices is None and seen >= n:
            break
    if held:
        yield emit(held)


@dataclass
class BatchSource:
    """The examples of an evaluation, in memory (``x``, ``y``) or streamed (``data``): the same batches either way.

    ``batches(batch_size, device, select=None)`` yields ``(x, y, idx)``; in memory, consecutive slices (or the
    selected positions ``batch_size`` at a time), streamed, :func:`iter_batches` with ``check`` run on each
    batch (validation). ``head(k)``: the first ``k`` examples on the CPU (model probes).
    """

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    data: Any = None
    n: int = 0
    check: Callable[[torch.Tensor, torch.Tensor], None] | None = None
    owner: str = "evaluation"
    limit: int | None = None

    @property
    def streaming(self) -> bool:
        """True when the examples are read from a Dataset/DataLoader."""
        return self.x is None

    def batches(self, batch_size: int, device: torch.device | str | None = None, *,
                select: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(x, y, idx)`` on ``device`` (``y`` int64; ``idx`` CPU positions), ``batch_size`` at a time."""
        if self.x is not None and self.y is not None:
            if select is None:
                for s in range(0, self.n, batch_size):
                    yield (self.x[s:s + batch_size].to(device), self.y[s:s + batch_size].to(device),
                           torch.arange(s, min(s + batch_size, self.n)))
                return
            idx = select.nonzero().squeeze(1)
            for s in range(0, idx.numel(), batch_size):
                j = idx[s:s + batch_size]
                yield self.x[j].to(device), self.y[j].to(device), j
            return
        for xb, yb, j in iter_batches(self.data, batch_size, select=select, n=self.limit, owner=self.owner):
            if self.check is not None:
                self.check(xb, yb)
            yield xb.to(device), yb.to(device), j

    def head(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``k`` examples (fewer if there are fewer), on the CPU."""
        if self.x is not None and self.y is not None:
            return self.x[:k], self.y[:k]
        k = max(1, min(k, max(self.n, 1)))
        for xb, yb, _ in iter_batches(self.data, k, n=min(k, self.limit) if self.limit else k, owner=self.owner):
            return xb, yb  # a Dataset reads only these k examples
        raise ValueError(f"The data of {self.owner} hold no examples.")
