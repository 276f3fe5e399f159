r"""Two-stage objectives: a first stage on the training split (contrastive pre-training, RCAL's feature
statistics) run by ``fit`` through the ``prepare`` hook, then a per-batch objective. This is how
:func:`robustlab.training.pretrain` + a linear probe and :func:`robustlab.defences.rcal` run from a bench
spec or ``robustlab train``: ``objective: {name: pretrain, kwargs: {...}}`` / ``{name: rcal, ...}``.

The run's model is split into a *body* (every layer but the last) and its last ``nn.Linear`` (the *head*):
the body is the encoder that is pre-trained, the head the classifier on its features.

``fit`` calls ``objective.prepare(model=, x=, y=, num_classes=, seed=, device=)`` once, before
``setup``, with the in-memory training split (after any validation split) whose row ``i`` is the
example of ``batch.index == i``. Outside ``fit`` (before ``prepare``) both objectives are the plain loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..._validation import InvalidParameterError, check_bool, check_in_range, check_int
from .._objectives import Batch, Objective, compute_loss, register_objective

__all__ = ["PretrainObjective", "RCALObjective", "split_head"]

_PRETRAIN_KEYS = ("loss_kw", "batch_size", "optimizer", "lr", "weight_decay", "augment", "augment_kw", "projection")


def split_head(model: nn.Module, owner: str) -> tuple[nn.Module, nn.Linear]:
    """``(body, head)`` of an ``nn.Sequential`` whose last layer is an ``nn.Linear`` (views, no copies)."""
    if isinstance(model, nn.Sequential) and len(model) >= 2 and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    raise InvalidParameterError(
        f"The objective {owner!r} splits the model into a body (the encoder it pre-trains) and a last linear "
        f"layer; it needs an nn.Sequential ending in nn.Linear (registry models 'mlp', 'lenet', ...). "
        f"Got {type(model).__name__}.")


def _check_pretrain(owner: str, epochs: Any, loss: Any, kw: Any) -> tuple[int, str, dict[str, Any]]:
    from ...losses import CONTRASTIVE_LOSSES

    epochs = check_int(epochs, "pretrain_epochs", 0, None, owner=owner)
    if not isinstance(loss, str):
        raise InvalidParameterError(f"The 'pretrain_loss' parameter of {owner} must be a contrastive loss name. "
                                    f"Got {loss!r}.")
    CONTRASTIVE_LOSSES.spec(loss)  # unknown name: "Did you mean" + the list
    if kw is None:
        kw = {}
    if not isinstance(kw, dict):
        raise InvalidParameterError(f"The 'pretrain_kw' parameter of {owner} must be a mapping. Got {kw!r}.")
    bad = sorted(set(kw) - set(_PRETRAIN_KEYS))
    if bad:
        raise InvalidParameterError(f"The 'pretrain_kw' parameter of {owner} takes {list(_PRETRAIN_KEYS)} "
                                    f"(training.pretrain's options). Got {bad}.")
    return epochs, loss, dict(kw)


def _pretrain_body(body: nn.Module, x: torch.Tensor, *, loss: str, epochs: int, kw: dict[str, Any], seed: int,
                   device: Any) -> dict[str, list[float]]:
    from .._pretrain import pretrain

    kw = dict(kw)
    if "projection" in kw:
        kw["projection"] = tuple(kw["projection"])
    kw["batch_size"] = min(int(kw.get("batch_size", 256)), int(x.shape[0]))
    return pretrain(body, x, loss=loss, epochs=epochs, seed=seed, device=device, **kw).history


def _in_memory(x: Any, owner: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidParameterError(f"The objective {owner!r} runs a first stage on the training inputs and needs "
                                    "in-memory data (a ClassificationData), not a streamed Dataset or DataLoader.")
    return x


@register_objective("pretrain", tags={"two_stage", "representation"},
                    reference="SimCLR (Chen et al. 2020), SogCLR (Yuan et al. 2022), iSogCLR (Qiu et al. 2023); "
                              "linear probe",
                    example_kwargs={"pretrain_epochs": 1, "pretrain_kw": {"batch_size": 16}})
class PretrainObjective(Objective):
    r"""Contrastive pre-training of the model's body, then the run's loss on the model.

    Stage 1 (``prepare``): :func:`robustlab.training.pretrain` of the body (all layers but the last linear
    one) on the training inputs for ``pretrain_epochs`` epochs with the contrastive ``pretrain_loss``
    (``infonce``, ``sogclr``, ``isogclr``) and ``pretrain_kw`` (``loss_kw``, ``batch_size``, ``lr``,
    ``augment``, ...); labels are not read. Stage 2 (``fit``'s epochs): ``freeze=True`` (default) trains the
    last layer only on the frozen features -- the linear probe with a logistic head (the run's loss) --;
    ``freeze=False`` fine-tunes the whole model. Cost: stage 1 is ``2 x pretrain_epochs`` passes over the
    data; then 1 forward + 1 backward per step (the frozen body's backward is skipped).
    """

    passes_per_step = 1.0

    def __init__(self, *, pretrain_epochs: int = 10, pretrain_loss: str = "infonce",
                 pretrain_kw: dict[str, Any] | None = None, freeze: bool = True) -> None:
        owner = "pretrain"
        self.pretrain_epochs, self.pretrain_loss, self.pretrain_kw = _check_pretrain(
            owner, pretrain_epochs, pretrain_loss, pretrain_kw)
        self.freeze = check_bool(freeze, "freeze", owner=owner)
        self._split: tuple[nn.Module, nn.Linear] | None = None
        self.pretrain_history: dict[str, list[float]] = {}

    def prepare(self, *, model: nn.Module, x: Any, y: Any = None, num_classes: int = 0, seed: int = 0,
                device: Any = None) -> None:
        """Stage 1: pre-train the body of ``model`` in place on the inputs ``x``."""
        body, head = split_head(model, "pretrain")
        x = _in_memory(x, "pretrain")
        if self.pretrain_epochs:
            self.pretrain_history = _pretrain_body(body, x, loss=self.pretrain_loss, epochs=self.pretrain_epochs,
                                                   kw=self.pretrain_kw, seed=seed, device=device)
        self._split = (body, head)

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._split is not None and self.freeze:
            body, head = self._split
            with torch.no_grad():
                feats = body(batch.x)
            logits = head(feats)
        else:
            logits = model(batch.x)
        value = compute_loss(loss, logits, batch.y, batch.index)
        if not self.track_metrics:
            return value, {}
        return value, {"acc": (logits.detach().argmax(1) == batch.y).float().mean()}


@register_objective("rcal", tags={"two_stage", "representation", "noisy_labels", "longtail"},
                    reference="Zhang et al., ICCV 2023 (RCAL, arXiv:2211.10955)",
                    example_kwargs={"pretrain_epochs": 1, "pretrain_kw": {"batch_size": 16}, "lof_k": 3})
class RCALObjective(Objective):
    r"""RCAL (representation calibration for noisy long-tailed labels) as a training objective.

    Stage 1 (``prepare``): contrastive pre-training of the model's body as in the ``pretrain`` objective
    (``pretrain_epochs=0`` skips it), features :math:`f_0(x)` of the training inputs, then
    :func:`robustlab.defences.calibrate` -- per-class LOF outlier removal (``lof_k``, ``lof_threshold``), class
    statistics, tail calibration (``tail_fraction``, ``n_borrow``, ``alpha``) -- and the sampled features that
    fill every class up to the largest. Per step: the run's loss on the batch's LOF-kept examples and
    cross-entropy of the last layer on an equal share of the sampled features (``ceil(M / steps_per_epoch)``
    per step, drawn from the run's generator), weighted by their counts, plus ``beta`` x
    :math:`\|f(x) - f_0(x)\|^2` on the kept examples (the individual calibration; ``finetune=False`` freezes
    the body and drops it). ``mixup`` > 0: the step's kept and sampled features are mixed with a permutation
    of themselves (one :math:`\lambda \sim \mathrm{Beta}(` ``mixup``, ``mixup`` :math:`)` per step, drawn
    from the run's generator) and the head's loss is the mixed-target cross-entropy (RCAL's classifier loss;
    the run's loss is then not used); 0 (default) = off. Cost: stage 1 as ``pretrain`` plus one LOF per class; then 1 forward + 1 backward
    per step (+ the small last-layer pass on the sampled features).

    :func:`robustlab.defences.rcal` is the same method with its own encoder and linear head trained by Adam;
    this form trains the run's model with ``fit``'s optimizer and schedule.
    """

    passes_per_step = 1.0

    def __init__(self, *, pretrain_epochs: int = 20, pretrain_loss: str = "infonce",
                 pretrain_kw: dict[str, Any] | None = None, lof_k: int = 10, lof_threshold: float = 1.5,
                 tail_fraction: float = 0.5, n_borrow: int = 2, alpha: float = 0.1, beta: float = 1.0,
                 finetune: bool = True, mixup: float = 0.0) -> None:
        owner = "rcal"
        self.pretrain_epochs, self.pretrain_loss, self.pretrain_kw = _check_pretrain(
            owner, pretrain_epochs, pretrain_loss, pretrain_kw)
        self.lof_k = check_int(lof_k, "lof_k", 1, None, owner=owner)
        self.lof_threshold = float(check_in_range(lof_threshold, "lof_threshold", 1.0, None, owner=owner))
        self.tail_fraction = float(check_in_range(tail_fraction, "tail_fraction", 0.0, 1.0, owner=owner))
        self.n_borrow = check_int(n_borrow, "n_borrow", 0, None, owner=owner)
        self.alpha = float(check_in_range(alpha, "alpha", 0.0, None, owner=owner))
        self.beta = float(check_in_range(beta, "beta", 0.0, None, owner=owner))
        self.finetune = check_bool(finetune, "finetune", owner=owner)
        self.mixup = float(check_in_range(mixup, "mixup", 0.0, None, owner=owner))
        self._split: tuple[nn.Module, nn.Linear] | None = None
        self.tail: list[int] = []
        self.kept_fraction = float("nan")

    def prepare(self, *, model: nn.Module, x: Any, y: Any, num_classes: int, seed: int = 0,
                device: Any = None) -> None:
        """Stage 1: pre-train the body, then the calibrated statistics and sampled features of ``(x, y)``."""
        from ...defences._rcal import calibrate
        from .._pretrain import encode

        body, head = split_head(model, "rcal")
        x = _in_memory(x, "rcal")
        if not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]:
            raise InvalidParameterError("The objective 'rcal' needs the training labels of every input.")
        if self.pretrain_epochs:
            _pretrain_body(body, x, loss=self.pretrain_loss, epochs=self.pretrain_epochs, kw=self.pretrain_kw,
                           seed=seed, device=device)
        dev = next((p.device for p in model.parameters()), torch.device("cpu")) if device is None else device
        f0 = encode(body, x, device=dev)
        cal = calibrate(f0, y.cpu(), int(num_classes), lof_k=self.lof_k, lof_threshold=self.lof_threshold,
                        tail_fraction=self.tail_fraction, n_borrow=self.n_borrow, alpha=self.alpha,
                        allow_empty=True)
        s_x, s_y = cal.sample(torch.Generator().manual_seed(int(seed)))
        self._f0, self._kept = f0.to(dev), cal.kept.to(dev)
        self._s_x, self._s_y = s_x.to(dev), s_y.to(dev)
        self.tail, self.kept_fraction = cal.tail, float(cal.kept.float().mean())
        self._split = (body, head)

    def setup(self, **kw: Any) -> None:
        super().setup(**kw)
        n_s = int(self._s_x.shape[0]) if self._split is not None else 0
        self._s_batch = math.ceil(n_s / max(1, int(kw["steps_per_epoch"]))) if n_s else 0

    def _mixup_loss(self, head: nn.Linear, feats: torch.Tensor, y: torch.Tensor, j: torch.Tensor | None,
                    zero: torch.Tensor) -> torch.Tensor:
        """Mixed-target cross-entropy of the head on the kept features and the sampled ones ``j``, mixed."""
        from ...defences._rcal import mixed_cross_entropy, mixup_draw

        if j is not None:
            feats = torch.cat([feats, self._s_x[j].to(feats.dtype)])
            y = torch.cat([y, self._s_y[j].to(y.device)])
        n = int(feats.shape[0])
        if n == 0:
            return zero
        mix, lam = mixup_draw(n, self.mixup, self.generator)
        mix = mix.to(feats.device)
        return mixed_cross_entropy(head(lam * feats + (1.0 - lam) * feats[mix]), y, mix, lam).to(zero.dtype) / n

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._split is None:  # outside fit: the plain loss
            logits = model(batch.x)
            value = compute_loss(loss, logits, batch.y, batch.index)
            return value, ({"acc": (logits.detach().argmax(1) == batch.y).float().mean()} if self.track_metrics else {})
        if batch.index is None:
            raise InvalidParameterError("The objective 'rcal' needs the batch's data-set indices (in-memory data).")
        body, head = self._split
        if self.finetune:
            feats = body(batch.x).flatten(1)
        else:
            with torch.no_grad():
                feats = body(batch.x).flatten(1)
        logits = head(feats)
        keep = self._kept[batch.index]
        n_keep = int(keep.sum())
        zero = logits.sum() * 0.0
        j = None
        if self._s_batch:
            gen = self.generator
            j = torch.randint(0, self._s_x.shape[0], (self._s_batch,), generator=gen, device=gen.device)
            j = j.to(self._s_x.device)
        if self.mixup > 0:
            value = self._mixup_loss(head, feats[keep], batch.y[keep], j, zero)
        else:
            real = compute_loss(loss, logits[keep], batch.y[keep], batch.index[keep]) if n_keep else zero
            total, count = real * n_keep, n_keep
            if j is not None:
                total = total + F.cross_entropy(head(self._s_x[j]).float(), self._s_y[j],
                                                reduction="sum").to(total.dtype)
                count += self._s_batch
            value = total / max(1, count)
        reg = zero
        if self.finetune and self.beta > 0 and n_keep:
            reg = ((feats[keep] - self._f0[batch.index[keep]]) ** 2).sum(1).mean()
            value = value + self.beta * reg
        metrics: dict[str, torch.Tensor] = {}
        if self.track_metrics:
            metrics = {"acc": (logits.detach().argmax(1) == batch.y).float().mean(), "repr_reg": reg.detach()}
        return value, metrics
