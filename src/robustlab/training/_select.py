"""Model selection for ``fit``: a stratified held-out split, the selection metric, and weight EMA.

Rice, Wong & Kolter (ICML 2020), "Overfitting in adversarially robust deep learning": robust test accuracy
peaks shortly after the first LR decay and then falls; keeping the epoch with the best robust accuracy on a
held-out split recovers most of the gap. Gowal et al. (2020), "Uncovering the limits of adversarial
training against norm-bounded adversarial examples": an exponential moving average of the weights is the
model to evaluate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError

__all__ = ["SELECT_METRICS", "WeightEMA", "selection_metric", "selection_metric_batches", "stratified_split"]

SELECT_METRICS = ("clean", "pgd")
PGD_DEFAULTS = {"steps": 10, "norm": "linf"}


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``, both sorted: ``round(fraction * n_c)`` samples of each class held out.

    Every class keeps at least one training sample; the choice is a seeded permutation (``seed``) per class.
    Raises :class:`InvalidParameterError` when nothing would be held out.
    """
    g = torch.Generator().manual_seed(int(seed))
    y = y.cpu()
    val = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        k = min(int(round(fraction * idx.numel())), idx.numel() - 1)
        val.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    val_idx = torch.sort(torch.cat(val)).values if val else torch.empty(0, dtype=torch.long)
    if val_idx.numel() == 0:
        raise InvalidParameterError(
            f"The 'val_fraction' parameter of fit holds out no sample: val_fraction={fraction:g} of {y.shape[0]} "
            f"training samples rounds to 0 in every class. Use a larger val_fraction (or select=None).")
    keep = torch.ones(y.shape[0], dtype=torch.bool)
    keep[val_idx] = False
    return keep.nonzero().flatten(), val_idx


def resolve_select_kw(select: str | None, select_kw: dict[str, Any] | None, objective: Any) -> dict[str, Any]:
    """PGD options for ``select="pgd"``: ``select_kw`` over the objective's ``eps``/``norm`` over 10 steps, linf."""
    kw = dict(select_kw or {})
    if select != "pgd":
        if kw:
            raise InvalidParameterError(f"The 'select_kw' parameter of fit is only used with select='pgd'. Got select={select!r}.")
        return kw
    out = dict(PGD_DEFAULTS)
    for name in ("eps", "norm"):
        if hasattr(objective, name) and isinstance(getattr(objective, name), (int, float, str)):
            out[name] = getattr(objective, name)
    out.update(kw)
    if "eps" not in out:
        raise InvalidParameterError(
            "select='pgd' needs a radius: pass select_kw={'eps': ...} (the objective has no 'eps' to reuse).")
    from ..attacks import get

    get("pgd", **out)  # validates the options now, before any training
    return out


def selection_metric(model: nn.Module, x: torch.Tensor, y: torch.Tensor, select: str, select_kw: dict[str, Any],
                     *, seed: int, batch_size: int = 512) -> float:
    """Clean or PGD robust accuracy of ``model`` (eval mode, float32) on the held-out tensors ``x, y``.

    The PGD start is drawn from a generator re-seeded with ``seed`` at every call, so the metric of a
    given set of weights does not depend on when it is computed (resumed runs select the same epoch).
    """
    batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size))
    return selection_metric_batches(model, batches, select, select_kw, seed=seed, device=x.device)


def selection_metric_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], select: str,
                             select_kw: dict[str, Any], *, seed: int, device: torch.device,
                             reduce: Callable[[int, int], tuple[int, ...]] | None = None) -> float:
    """:func:`selection_metric` over ``(x, y)`` batches on ``device`` (a streamed held-out set).

    The same batches give the same number as the in-memory path (PGD's generator runs across batches).
    ``reduce`` sums ``(correct, total)`` over the ranks of a distributed run (each rank's batches a slice).
    """
    was_training = model.training
    model.eval()
    try:
        attack = None
        if select != "clean":
            from ..attacks import get

            gen = torch.Generator(device=device).manual_seed(int(seed))
            attack = get("pgd", **select_kw, generator=gen)
        correct = total = 0
        for xb, yb in batches:
            if attack is not None:
                xb = attack(model, xb, yb)
            with torch.no_grad():
                correct += int((model(xb).argmax(1) == yb).sum())
            total += int(yb.shape[0])
        if reduce is not None:
            correct, total = reduce(correct, total)
        return correct / max(1, total)
    finally:
        model.train(was_training)


class WeightEMA:
    r"""An exponential moving average of a model's weights: :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta`.

    Updated after every optimizer step (one fused ``_foreach_lerp_``); buffers (BatchNorm statistics) are
    copied. ``model`` is an eval-mode copy holding the averaged weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._src = [p for p in model.parameters()]
        self._dst: list[torch.Tensor] = [p for p in self.model.parameters()]
        self._src_buf = list(model.buffers())
        self._dst_buf = list(self.model.buffers())

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward the current weights."""
        torch._foreach_lerp_(self._dst, [p.detach() for p in self._src], 1.0 - self.decay)
        for d, s in zip(self._dst_buf, self._src_buf):
            d.copy_(s)
