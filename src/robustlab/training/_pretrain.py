"""Contrastive pre-training (``pretrain``), frozen-feature extraction (``encode``) and ``linear_probe``."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from .._validation import InvalidParameterError, check_in_range, check_int, check_option
from ..data import ClassificationData
from ._heads import Head, resolve_head
from .augment import resolve as resolve_augment

__all__ = ["PretrainResult", "ProbeResult", "encode", "linear_probe", "pretrain", "projection_head"]


class PretrainResult(NamedTuple):
    """``(encoder, projector, loss, history)``: the trained encoder (eval mode), its projection head, the
    contrastive loss module (with its per-sample state) and ``history`` (``epoch``, ``loss``, ``time_s``,
    ``tau_mean`` for losses with individual temperatures)."""

    encoder: nn.Module
    projector: nn.Module
    loss: nn.Module
    history: dict[str, list[float]]


class ProbeResult(NamedTuple):
    """``(head, train_acc, test_acc)`` of a head fitted on frozen features."""

    head: Head
    train_acc: float
    test_acc: float


def _device_of(module: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next((p.device for p in module.parameters()), torch.device("cpu"))


@torch.no_grad()
def encode(encoder: nn.Module, x: torch.Tensor, *, batch_size: int = 1024, device: Any = None) -> torch.Tensor:
    """Features ``encoder(x)`` flattened to (N, F), float32 on the CPU, computed in eval mode and batches."""
    if not isinstance(encoder, nn.Module):
        raise InvalidParameterError(f"The 'encoder' parameter must be an nn.Module. Got {type(encoder).__name__}.")
    check_int(batch_size, "batch_size", 1, None, owner="encode")
    dev = _device_of(encoder, device)
    was = encoder.training
    encoder.eval()
    try:
        out = [encoder(x[i:i + batch_size].to(dev)).flatten(1).float().cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        encoder.train(was)
    return torch.cat(out) if out else torch.empty(0)


def projection_head(in_dim: int, hidden: int = 128, out_dim: int = 64) -> nn.Module:
    """SimCLR's projection MLP ``in_dim -> hidden -> ReLU -> out_dim`` (the loss sees its output)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def _inputs(data: Any) -> torch.Tensor:
    if isinstance(data, ClassificationData):
        return data.x_train
    if isinstance(data, torch.Tensor) and data.dtype.is_floating_point and data.dim() >= 2:
        return data
    if hasattr(data, "x") and isinstance(data.x, torch.Tensor):  # data.Unlabeled
        return data.x
    raise InvalidParameterError(
        "The 'data' parameter of pretrain must be a ClassificationData (its train inputs are used, labels "
        f"ignored), an Unlabeled split or a float tensor (N, ...). Got {type(data).__name__}.")


def _views_augment(augment: Any, augment_kw: dict[str, Any] | None, x: torch.Tensor) -> Callable[..., torch.Tensor]:
    if augment == "auto":
        augment = ("resized_crop", "noise") if x.dim() == 4 else ("noise",)
    if isinstance(augment, (list, tuple)):
        if augment_kw:
            raise InvalidParameterError("The 'augment_kw' parameter of pretrain needs a single augmentation name; "
                                        "pass built augmentations (training.augment.get(name, **kw)) in the list.")
        parts = [p for p in (resolve_augment(a, owner="pretrain") for a in augment) if p is not None]

        def composed(t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
            for p in parts:
                t = p(t, generator)
            return t

        return composed
    aug = resolve_augment(augment, augment_kw, owner="pretrain")
    if aug is None:
        raise InvalidParameterError("pretrain needs an augmentation: two identical views teach nothing. "
                                    "Use augment='auto' or a name/list of names of training.augment.")
    return aug


def _resolve_contrastive(loss: Any, loss_kw: dict[str, Any] | None, num_samples: int) -> nn.Module:
    from ..losses import CONTRASTIVE_LOSSES

    if isinstance(loss, str):
        kw = dict(loss_kw or {})
        spec = CONTRASTIVE_LOSSES.spec(loss)
        if "num_samples" in inspect.signature(spec.factory).parameters and "num_samples" not in kw:
            kw["num_samples"] = num_samples
        return spec.create(**kw)
    if isinstance(loss, nn.Module) and not loss_kw:
        return loss
    raise InvalidParameterError(f"The 'loss' parameter of pretrain must be a contrastive loss name "
                                f"({', '.join(CONTRASTIVE_LOSSES.available())}) or a module. Got {loss!r}.")


def pretrain(encoder: nn.Module, data: Any, *, loss: Any = "infonce", loss_kw: dict[str, Any] | None = None,
             epochs: int = 10, batch_size: int = 256, optimizer: str = "adam", lr: float = 1e-3,
             weight_decay: float = 1e-6, augment: Any = "auto", augment_kw: dict[str, Any] | None = None,
             projection: tuple[int, int] = (128, 64), seed: int = 0, device: Any = None,
             callback: Callable[[int, dict[str, float]], None] | None = None) -> PretrainResult:
    """Contrastive pre-training of ``encoder`` on two augmented views of each training input.

    Each step draws a batch (seeded permutation), makes two views with ``augment`` (a
    :mod:`training.augment` name, a callable ``(x, generator)``, or a list composed in order; ``"auto"`` =
    ``resized_crop`` + ``noise`` for images, ``noise`` otherwise), passes both through the encoder and a
    projection MLP (``projection`` = (hidden, out) widths) and minimises the contrastive ``loss``
    (``infonce``, ``sogclr``, ``isogclr``; ``num_samples`` is filled in). Labels are never read.
    Batches of one sample are skipped (they have no negatives). Same ``seed`` -> same encoder.

    Example::

        enc = models.create("mlp", input_shape=d.input_shape, num_classes=64)
        res = training.pretrain(enc, d, loss="sogclr", epochs=20)
        probe = training.linear_probe(res.encoder, d, head="logistic")
    """
    from ._fit import OPTIMIZERS, _make_optimizer

    owner = "pretrain"
    if not isinstance(encoder, nn.Module):
        raise InvalidParameterError(f"The 'encoder' parameter of pretrain must be an nn.Module. Got {type(encoder).__name__}.")
    x = _inputs(data)
    epochs = check_int(epochs, "epochs", 1, None, owner=owner)
    batch_size = check_int(batch_size, "batch_size", 2, None, owner=owner)
    check_option(optimizer, "optimizer", OPTIMIZERS, owner=owner)
    lr = float(check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner))
    check_in_range(weight_decay, "weight_decay", 0.0, None, owner=owner)
    seed = check_int(seed, "seed", 0, None, owner=owner)
    if not (isinstance(projection, (tuple, list)) and len(projection) == 2 and all(isinstance(p, int) and p > 0
                                                                                    for p in projection)):
        raise InvalidParameterError(f"The 'projection' parameter of pretrain must be (hidden, out) positive ints. "
                                    f"Got {projection!r}.")
    aug = _views_augment(augment, augment_kw, x)
    n = int(x.shape[0])
    if n < 2:
        raise InvalidParameterError(f"pretrain needs at least 2 training inputs. Got {n}.")
    dev = _device_of(encoder, device)
    encoder.to(dev)
    crit = _resolve_contrastive(loss, loss_kw, n).to(dev)
    torch.manual_seed(seed)
    feat_dim = int(encode(encoder, x[:1], device=dev).shape[1])
    projector = projection_head(feat_dim, *projection).to(dev)
    model = nn.Sequential(encoder, nn.Flatten(1), projector)
    opt = _make_optimizer(model, optimizer, lr, 0.9, float(weight_decay))
    g_perm = torch.Generator().manual_seed(seed)
    g_aug = torch.Generator(device=dev).manual_seed(seed + 2)
    history: dict[str, list[float]] = {"epoch": [], "loss": [], "time_s": []}
    model.train()
    crit.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=g_perm)
        total, count = torch.zeros((), device=dev), 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if idx.numel() < 2:
                continue
            xb = x[idx].to(dev)
            z1, z2 = model(aug(xb, g_aug)), model(aug(xb, g_aug))
            value = crit(z1, z2, index=idx.to(dev)) if getattr(crit, "needs_index", False) else crit(z1, z2)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += value.detach() * idx.numel()
            count += idx.numel()
        mean = float(total) / max(1, count)
        if not torch.isfinite(torch.tensor(mean)):
            from ._fit import NonFiniteLossError

            raise NonFiniteLossError(f"pretrain: the contrastive loss became non-finite ({mean}) at epoch "
                                     f"{epoch + 1}; lower the learning rate (lr={lr:g}).")
        history["epoch"].append(epoch + 1)
        history["loss"].append(mean)
        history["time_s"].append(time.perf_counter() - t0)
        if hasattr(crit, "tau") and isinstance(crit.tau, torch.Tensor):
            history.setdefault("tau_mean", []).append(float(crit.tau.mean()))
        if callback is not None:
            callback(epoch + 1, {k: v[-1] for k, v in history.items()})
    encoder.eval()
    return PretrainResult(encoder, projector, crit, history)


def linear_probe(encoder: nn.Module, data: ClassificationData, *, head: Any = "logistic",
                 head_kw: dict[str, Any] | None = None, batch_size: int = 1024, device: Any = None,
                 n_per_class: int | None = None, seed: int = 0) -> ProbeResult:
    """Fit a head (``logistic``, ``gaussian_nb``, ``lda`` or a :class:`Head`) on the frozen features of
    ``data``'s train split and report train/test accuracy. ``n_per_class``: fit on that many labelled
    samples per class only (seeded), as in the few-label regime of the heads paper.
    """
    from ._heads import per_class_sample

    if not isinstance(data, ClassificationData):
        raise InvalidParameterError(f"The 'data' parameter of linear_probe must be a ClassificationData. "
                                    f"Got {type(data).__name__}.")
    h = resolve_head(head, head_kw)
    f_tr = encode(encoder, data.x_train, batch_size=batch_size, device=device)
    f_te = encode(encoder, data.x_test, batch_size=batch_size, device=device)
    y_tr = data.y_train
    if n_per_class is not None:
        n_per_class = check_int(n_per_class, "n_per_class", 1, None, owner="linear_probe")
        idx = per_class_sample(y_tr, n_per_class, data.num_classes, torch.Generator().manual_seed(seed))
        f_tr, y_tr = f_tr[idx], y_tr[idx]
    h.fit(f_tr, y_tr, data.num_classes)
    return ProbeResult(h, h.score(f_tr, y_tr), h.score(f_te, data.y_test))

