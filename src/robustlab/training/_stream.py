"""Where ``fit``'s batches come from: in-memory tensors (the fast path), a torch ``Dataset`` or a ``DataLoader``.

Every source yields ``(index, x, y)`` batches on the training device. In-memory tensors and a ``Dataset`` are
ordered by the same seeded permutation drawn from ``fit``'s generator, so the same samples give the same
batches (and the same weights); a ``DataLoader`` is used as given (its own sampler decides the order).
With ``shard=(rank, world)`` each batch of the global permutation is cut into ``world`` contiguous slices and
the source yields only slice ``rank`` (the global batch size stays ``batch_size``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .._validation import InvalidParameterError
from ..data._stream import unpack_batch

__all__ = ["LoaderSource", "MemorySource", "DatasetSource", "Source", "as_eval_source", "is_streaming",
           "split_dataset"]


def is_streaming(obj: Any) -> bool:
    """True for a torch ``Dataset``, a ``DataLoader`` or a ``data.StreamingData`` (the streaming path of ``fit``)."""
    from ..data._stream import is_streaming as _is_streaming

    return _is_streaming(obj)


def _shard(idx: torch.Tensor, shard: tuple[int, int] | None, pad: bool = False) -> torch.Tensor:
    """Slice ``rank`` of ``world`` contiguous slices of ``idx``; with ``pad`` an empty slice is the batch's first
    sample instead (a rank must still run a step; ``fit`` gives that sample weight 0)."""
    if shard is None:
        return idx
    rank, world = shard
    part = torch.tensor_split(idx, world)[rank]
    return idx[:1] if pad and part.numel() == 0 else part


class Source:
    """A training or evaluation source: ``n`` samples, known ``labels`` (or None), batches on a device."""

    n: int
    labels: torch.Tensor | None = None

    def first_x(self) -> torch.Tensor | None:
        """One input (with a batch dimension), for shape checks; None when it cannot be read without iterating."""
        raise NotImplementedError

    def batches(self, gen: torch.Generator | None, batch_size: int, dev: torch.device,
                shard: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]:
        """``(index, x, y)`` per batch: shuffled by ``gen`` (None: in order) and sharded by ``shard``."""
        raise NotImplementedError


class MemorySource(Source):
    """In-memory tensors on the training device: gathers with advanced indexing (no per-sample Python)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.n, self.labels = x, y, int(x.shape[0]), y

    def first_x(self) -> torch.Tensor:
        return self.x[:1]

    def batches(self, gen, batch_size, dev, shard=None):
        perm = (torch.randperm(self.n, generator=gen) if gen is not None else torch.arange(self.n)).to(self.x.device)
        move = self.x.device != dev  # training tensors already live on the device; a test split may not
        for start in range(0, self.n, batch_size):
            idx = _shard(perm[start:start + batch_size], shard, gen is not None)
            if move:
                yield idx.to(dev), self.x[idx].to(dev), self.y[idx].to(dev)
            else:
                yield idx, self.x[idx], self.y[idx]


def _labels_of(ds: Any) -> torch.Tensor | None:
    """The labels of a data set without reading its inputs (``targets``, e.g. an image folder), or None."""
    if isinstance(ds, Subset):
        parent = _labels_of(ds.dataset)
        return parent[torch.as_tensor(ds.indices, dtype=torch.long)] if parent is not None else None
    t = getattr(ds, "targets", None)
    if t is None:
        return None
    t = torch.as_tensor(t)
    return t.long() if t.dim() == 1 and t.shape[0] == len(ds) else None


class DatasetSource(Source):
    """A map-style ``Dataset`` of ``(x, y[, ...])`` items, read by a ``DataLoader`` with ``num_workers`` workers.

    The loader gets its own generator (``loader_gen``) for its worker seeds, so torch's global generator
    (dropout) draws the same numbers as on the in-memory path.
    """

    def __init__(self, ds: Dataset, *, num_workers: int = 0, loader_gen: torch.Generator | None = None,
                 owner: str = "fit") -> None:
        try:
            self.n = len(ds)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidParameterError(
                f"The data of {owner} must be a map-style Dataset with a length (or a DataLoader); "
                f"got {type(ds).__name__} without __len__.") from None
        self.ds, self.num_workers, self.owner = ds, int(num_workers), owner
        self.loader_gen = loader_gen if loader_gen is not None else torch.Generator().manual_seed(0)
        self.labels = _labels_of(ds)

    def first_x(self) -> torch.Tensor | None:
        if self.n == 0:
            return None
        x, _, _ = unpack_batch(self.ds[0], self.owner, batched=False, with_index=True)
        return torch.as_tensor(x).unsqueeze(0)

    def batches(self, gen, batch_size, dev, shard=None):
        order = torch.randperm(self.n, generator=gen) if gen is not None else torch.arange(self.n)
        chunks = [_shard(order[s:s + batch_size], shard, gen is not None) for s in range(0, self.n, batch_size)]
        chunks = [c for c in chunks if c.numel()]
        loader = DataLoader(self.ds, batch_sampler=[c.tolist() for c in chunks], num_workers=self.num_workers,
                            pin_memory=dev.type == "cuda", generator=self.loader_gen)
        for idx, batch in zip(chunks, loader):
            x, y, _ = unpack_batch(batch, self.owner, with_index=True)
            yield idx.to(dev), x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)


class LoaderSource(Source):
    """A user's ``DataLoader``, used as given: its sampler decides the order; indices only if it yields them."""

    def __init__(self, loader: DataLoader, *, owner: str = "fit") -> None:
        self.loader, self.owner = loader, owner
        try:
            self.n = len(loader.dataset)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidParameterError(
                f"The DataLoader given to {owner} must read a map-style Dataset with a length; "
                f"got {type(loader.dataset).__name__}.") from None
        self.labels = _labels_of(loader.dataset)

    def first_x(self) -> torch.Tensor | None:
        try:
            x, _, _ = unpack_batch(self.loader.dataset[0], self.owner, batched=False, with_index=True)  # type: ignore[index]
        except Exception:
            return None
        return torch.as_tensor(x).unsqueeze(0)

    def batches(self, gen, batch_size, dev, shard=None):
        if shard is not None:
            raise InvalidParameterError(
                f"{self.owner}(distributed=True) shards the data itself: pass the Dataset, not a DataLoader "
                "(each rank then reads a disjoint slice of every global batch).")
        for batch in self.loader:
            x, y, idx = unpack_batch(batch, self.owner, with_index=True)
            yield (idx.to(dev) if idx is not None else None), x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)


def split_dataset(ds: Dataset, labels: torch.Tensor | None, fraction: float, seed: int,
                  owner: str = "fit") -> tuple[Dataset, Dataset]:
    """``(train, held-out)`` Subsets of ``ds``: the stratified split of :func:`_select.stratified_split` on its labels."""
    if labels is None:
        raise InvalidParameterError(
            f"{owner} cannot hold out a stratified validation split of a {type(ds).__name__}: its labels are not "
            "known without reading every input (no 'targets' attribute). Pass val_data=<a Dataset> instead, "
            "or val_fraction=0 / select=None.")
    from ._select import stratified_split

    train_idx, val_idx = stratified_split(labels, fraction, seed)
    return Subset(ds, train_idx.tolist()), Subset(ds, val_idx.tolist())


def as_eval_source(obj: Any, name: str, *, num_workers: int = 0, owner: str = "fit") -> Source:
    """``test_data``/``val_data``: a Dataset, a DataLoader or an ``(x, y)`` tensor pair, as an evaluation source."""
    if isinstance(obj, DataLoader):
        return LoaderSource(obj, owner=owner)
    if isinstance(obj, Dataset):
        return DatasetSource(obj, num_workers=num_workers, owner=owner)
    if isinstance(obj, tuple) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj):
        return MemorySource(obj[0], obj[1])
    raise InvalidParameterError(
        f"The '{name}' parameter of {owner} must be a torch Dataset, a DataLoader or an (x, y) tensor pair; "
        f"got {type(obj).__name__}.")


def eval_batches(src: Source, dev: torch.device, batch_size: int,
                 shard: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of an evaluation source in order, on ``dev`` (with ``shard``: this rank's slices)."""
    if shard is not None and isinstance(src, LoaderSource):
        shard = None  # a user's DataLoader is read whole by every rank
    if isinstance(src, MemorySource) and shard is None:
        x, y = src.x.to(dev), src.y.to(dev)
        for i in range(0, src.n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for _, xb, yb in src.batches(None, batch_size, dev, shard):
        if yb.shape[0]:
            yield xb, yb


@torch.no_grad()
def accuracy(model: torch.nn.Module, src: Source, dev: torch.device, batch_size: int = 1024, ctx: Any = None) -> float:
    """Clean accuracy of ``model`` (eval mode; mode restored) on an evaluation source; nan when it is empty.

    With a distributed context ``ctx`` each rank counts its slices and the counts are summed.
    """
    was_training = model.training
    model.eval()
    try:
        correct = total = 0
        for xb, yb in eval_batches(src, dev, batch_size, None if ctx is None else ctx.shard):
            correct += int((model(xb).argmax(1) == yb).sum())
            total += int(yb.shape[0])
    finally:
        model.train(was_training)
    if ctx is not None and not isinstance(src, LoaderSource):
        correct, total = ctx.sum_counts(correct, total)
    # float32 division: the same number as the in-memory path's (pred == y).float().mean()
    return float(torch.tensor(float(correct)) / total) if total else float("nan")


@torch.no_grad()
def all_logits(model: torch.nn.Module, src: Source, dev: torch.device,
               batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, labels, indices)`` of the whole training source in order (eval mode; mode restored)."""
    was_training = model.training
    model.eval()
    try:
        out, ys, ids = [], [], []
        for idx, xb, yb in src.batches(None, batch_size, dev):
            if idx is None:
                raise InvalidParameterError(
                    "This loss re-selects samples by data-set index, but the DataLoader yields no indices; make "
                    "its data set return (x, y, index) or pass the Dataset itself.")
            out.append(model(xb))
            ys.append(yb)
            ids.append(idx)
        return torch.cat(out), torch.cat(ys), torch.cat(ids)
    finally:
        model.train(was_training)


class FitData(NamedTuple):
    """``fit``'s data, resolved: the train / held-out / test sources and what is known about the data set."""

    train: Source
    val: Source | None
    test: Source | None
    num_classes: int | None
    input_shape: tuple[int, ...] | None
    name: str


def _meta(obj: Any, attr: str) -> Any:
    while obj is not None:
        if getattr(obj, attr, None) is not None:
            return getattr(obj, attr)
        obj = getattr(obj, "dataset", None)  # DataLoader -> Dataset, Subset -> parent
    return None


def prepare(data: Any, *, val_fraction: float, val_data: Any, test_data: Any, seed: int, dev: torch.device,
            num_workers: int, loader_gen: torch.Generator, owner: str = "fit") -> FitData:
    """Resolve ``fit``'s ``data`` (ClassificationData, StreamingData, Dataset or DataLoader), held-out split and
    test set. A ``StreamingData`` trains on its train split and (unless ``test_data`` is given) tests on its test split."""
    from ..data import ClassificationData
    from ..data._stream import StreamingData
    from ._select import stratified_split

    if isinstance(data, StreamingData):
        test_data = data.test if test_data is None else test_data
        num_workers = num_workers or int(data.num_workers or 0)
        data = data.train

    val: Source | None = None
    test: Source | None = None
    num_classes: int | None
    shape: tuple[int, ...] | None
    if isinstance(data, ClassificationData):
        if data.x_train.shape[0] == 0:
            raise ValueError(
                f"Data set '{data.name}' has an empty train split; nothing to fit "
                "(for a test-set-only folder load it with use_test_split_as_train=0.8).")
        x, y = data.x_train.to(dev), data.y_train.to(dev)
        if val_fraction > 0:
            train_idx, val_idx = stratified_split(data.y_train, val_fraction, seed)
            val = MemorySource(x[val_idx.to(dev)], y[val_idx.to(dev)])
            x, y = x[train_idx.to(dev)], y[train_idx.to(dev)]
        train: Source = MemorySource(x, y)
        test = MemorySource(data.x_test, data.y_test)
        num_classes, shape, name = data.num_classes, tuple(data.input_shape), data.name
    elif isinstance(data, DataLoader):
        if val_fraction > 0:
            raise InvalidParameterError(
                f"{owner} cannot hold out a validation split of a DataLoader (val_fraction={val_fraction:g}): pass "
                "val_data=<a Dataset or DataLoader> for selection, or the Dataset itself.")
        train = LoaderSource(data, owner=owner)
        num_classes, name = _num_classes(data), f"DataLoader({type(data.dataset).__name__})"
    elif isinstance(data, Dataset):
        name = _meta(data, "name") or type(data).__name__
        if val_fraction > 0:
            data, held = split_dataset(data, _labels_of(data), val_fraction, seed, owner)
            val = DatasetSource(held, num_workers=num_workers, loader_gen=loader_gen, owner=owner)
        train = DatasetSource(data, num_workers=num_workers, loader_gen=loader_gen, owner=owner)
        num_classes = _num_classes(data)
    else:
        raise TypeError(
            f"The 'data' parameter of {owner} must be a ClassificationData, a StreamingData, a torch Dataset or a "
            "DataLoader. "
            f"Got {type(data).__name__}.")
    if not isinstance(data, ClassificationData):
        if train.n == 0:
            raise ValueError(f"The training data of {owner} ({name}) is empty; nothing to fit.")
        first = train.first_x()
        shape = tuple(first.shape[1:]) if first is not None else None
    if val_data is not None:
        val = as_eval_source(val_data, "val_data", num_workers=num_workers, owner=owner)
    if test_data is not None:
        test = as_eval_source(test_data, "test_data", num_workers=num_workers, owner=owner)
    return FitData(train, val, test, num_classes, shape, str(name))


def _num_classes(data: Any) -> int | None:
    k = _meta(data, "num_classes")
    if k is None and _meta(data, "classes") is not None:
        k = len(_meta(data, "classes"))
    return int(k) if k is not None else None
