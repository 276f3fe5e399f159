"""``fit``: in-memory mini-batch training with a pluggable objective."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._validation import InvalidParameterError, check_bool, check_in_range, check_int, check_option
from ..data import ClassificationData
from . import _distributed as _dist
from . import _resume
from ._checkpoint import save_checkpoint, save_train_state
from ._collapse import CollapseMonitor
from ._objectives import Batch, Objective
from ._select import WeightEMA, resolve_select_kw, selection_metric_batches
from ._stream import MemorySource, accuracy, all_logits, eval_batches, is_streaming
from ._stream import prepare as prepare_data
from .augment import resolve as resolve_augment

__all__ = ["FitResult", "NonFiniteLossError", "fit", "predict_logits", "prune_epochs", "resolve_loss"]

from ._fit_setup import (  # noqa: E402  (re-exported: the option tables and errors are fit's API)
    _AMP_DTYPES,
    OPTIMIZERS,
    PRECISIONS,  # noqa: F401  (re-exported for _runconfig)
    SCHEDULES,
    NonFiniteLossError,
    _check_new_options,
    _lr_factor,
    _make_optimizer,
    _raise_non_finite,
    _resolve_objective,
    _takes_num_samples,
    prune_epochs,
    resolve_loss,
)


class FitResult(NamedTuple):
    """``(model, history)``; history maps metric name -> list over evaluated epochs."""

    model: nn.Module
    history: dict[str, list[float]]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched; restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        dev = next((p.device for p in model.parameters()), x.device)
        out = [model(x[i:i + batch_size].to(dev)) for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out) if out else torch.empty(0)
    finally:
        model.train(was_training)


def _check_output_width(model: nn.Module, x1: torch.Tensor | None, k: int | None, name: str, owner: str) -> int:
    """One sample through ``model`` (eval mode): its output must be (1, num_classes) (or (1, 1) for 2 classes).

    Returns the number of classes (from the model's output width when the data do not say: 1 means 2).
    """
    if x1 is None:
        if k is None:
            raise InvalidParameterError(
                f"{owner} cannot tell the number of classes of '{name}': give its data set a 'num_classes' or "
                "'classes' attribute.")
        return k
    out = predict_logits(model, x1)
    if k is None and out.dim() == 2:
        k = max(2, int(out.shape[1]))
    if out.dim() != 2 or not (out.shape[1] == k or (k == 2 and out.shape[1] == 1)):
        raise ValueError(
            f"The model's output has shape {tuple(out.shape)} for one input, but data set '{name}' has {k} "
            f"classes: {owner} needs logits of shape (N, {k}). Build the model with num_classes={k}."
        )
    return int(k)  # type: ignore[arg-type]


def fit(
    model: nn.Module,
    data: ClassificationData | Dataset | DataLoader,
    *,
    loss: Any = "ce",
    loss_kw: dict[str, Any] | None = None,
    objective: Any = "standard",
    objective_kw: dict[str, Any] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    seed: int = 0,
    eval_every: int = 1,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    augment: Any = None,
    augment_kw: dict[str, Any] | None = None,
    precision: str = "fp32",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    val_fraction: float | None = None,
    select: str | None = None,
    select_kw: dict[str, Any] | None = None,
    select_every: int = 1,
    patience: int | None = None,
    ema: float | None = None,
    test_data: Any = None,
    val_data: Any = None,
    num_workers: int = 0,
    distributed: bool = False,
    sync_bn: bool = False,
    dist_timeout: float = 600.0,
) -> FitResult:
    """Train ``model`` on ``data`` (``x_train, y_train``, or a streamed data set) and return ``(model, history)``.

    Mini-batches of a ``ClassificationData`` are gathered from in-memory tensors with a seeded permutation (no
    DataLoader, no per-sample Python work). A torch ``Dataset`` of ``(x, y)`` (or ``(x, y, index)``) items
    streams: the same seeded permutation of its indices is read in batches by a ``DataLoader`` with
    ``num_workers`` workers, so the same samples give the same weights as in memory; the permutation also
    gives every sample's index (per-sample losses work). A ``DataLoader`` is used as given: its own sampler
    decides the order (a shuffling loader's ``generator`` is not checkpointed: resume needs one that draws
    from torch's global generator, which is), and losses with ``needs_index`` need it to yield
    ``(x, y, index)``. ``test_data`` (a Dataset, DataLoader or ``(x, y)`` tensors) replaces the test split
    for ``test_acc`` (nan for a streamed set without one); ``val_data`` is the held-out set for ``select``
    (a streamed Dataset is otherwise split by its ``targets``; without them pass ``val_data``). The number of
    classes comes from the data set's ``num_classes``/``classes`` or else the model's output width.
    ``loss`` is a registry name (``losses.get``) or a callable
    ``(logits, target) -> scalar``; losses with ``needs_index`` get the batch's data-set indices.
    ``objective`` is a registry name (``training.objectives``) or an :class:`Objective`.
    ``schedule``: ``cosine`` (per step, to 0), ``step`` (/10 at 50% and 75% of training) or ``constant``.
    History keys: ``epoch``, ``loss``, ``train_acc`` (on the given, possibly noisy, labels),
    ``test_acc``, ``lr``, ``time_s``, any objective metric as ``train_<name>``, and for losses with a
    ``prune`` method (TGCE) ``kept_fraction``, the fraction of training samples kept (1 before the first
    prune; schedule: :func:`prune_epochs`). ``checkpoint`` (file or run directory) is written atomically at the end.

    ``augment``: a :mod:`training.augment` name (``crop_flip``, ``flip``, ``cutout``, ``noise``; options in
    ``augment_kw``) or a callable ``(x, generator) -> x``, applied to each batch on its device before the
    objective (adversarial objectives attack the augmented batch); its random numbers come from a generator
    seeded with ``seed + 2``, so the batch order is the same with and without augmentation.

    ``precision``: ``fp32``, ``bf16`` or ``fp16`` -- the training forward/backward (objective included) runs
    under ``torch.autocast``; ``fp16`` uses a ``GradScaler``. Weights, optimizer state and every evaluation
    (test accuracy, selection, and all of ``evaluate``/``certify``) stay float32: a half-precision attack is
    a known source of false robustness (gradients that round to zero look like a robust model).

    ``checkpoint_dir``: every ``checkpoint_every`` epochs (and at the end) ``<dir>/last.pt`` is written
    atomically with the model, optimizer, scaler, LR-schedule position, epoch, every RNG state (fit,
    objective, augmentation and torch's global generators), the loss's per-sample state (ALDR-KL lambda,
    TGCE weights), the objective's state, the EMA and best weights and the history. ``resume=True``
    continues from it (or starts fresh when there is none); on the CPU the result is bit-identical to the
    uninterrupted run. Resuming with different settings is refused, naming them.

    ``select``: ``clean`` or ``pgd`` (robust accuracy under PGD, ``select_kw`` e.g. ``{"eps": 0.1,
    "steps": 10}``; eps/norm default to the objective's) measured every ``select_every`` epochs on a
    stratified held-out ``val_fraction`` of the train split (default 0.1 when selecting; it is not trained
    on); the best epoch's weights are returned (and written to ``<checkpoint_dir>/best.pt``), training
    stops after ``patience`` evaluations without improvement. History gains ``val_epoch``, ``val_acc``
    (``val_robust_acc`` for pgd) and ``selected_epoch`` (Rice, Wong & Kolter 2020). ``ema``: decay of an
    exponential moving average of the weights (e.g. 0.999; Gowal et al. 2020), used for test accuracy and
    selection and returned.

    ``distributed=True`` (in a script launched by ``torchrun --nproc_per_node=N``): data-parallel training with
    torch ``DistributedDataParallel`` over the launch's processes (process group from torchrun's environment,
    ``nccl`` on CUDA with ``cuda:LOCAL_RANK``, ``gloo`` on the CPU, ``dist_timeout`` seconds before a collective
    waiting on a dead rank fails). Each global batch of the seeded permutation is cut into N contiguous slices,
    one per rank, and each rank's loss is weighted by its share, so the global batch is ``batch_size`` and
    N processes reproduce one (weights allclose, about 1e-7 apart after a few epochs of an MLP) for deterministic
    objectives; random starts, augmentations and dropout draw per rank (rank 0's generators are the
    single-process ones). ``sync_bn=True`` synchronises BatchNorm statistics over the global batch. Per-sample
    loss state (ALDR-KL lambda, TGCE weights) is made equal on every rank after each epoch (each sample is
    trained by one rank per epoch: exact). Test accuracy and selection are counted on each rank's slice and
    summed. Only rank 0 writes checkpoints (after every rank reached the epoch's end; with every rank's RNG
    states) and shows progress; ``callback`` runs on every rank (``torch.distributed.get_rank()`` tells which).
    Resume needs the same number of processes. Pass a Dataset, not a DataLoader (fit shards it).

    Raises ``ValueError`` before training if the model's output width is not the data's number of classes,
    and :class:`NonFiniteLossError` (a ``ValueError`` and ``FloatingPointError``) naming the epoch and step
    when the training loss becomes NaN/inf (checked once per epoch; nothing is written). A run whose training
    accuracy sits at chance for 3 recorded epochs gets a ``CollapseWarning`` naming the likely causes.
    """
    owner = "fit"
    check_int(epochs, "epochs", 1, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_option(optimizer, "optimizer", OPTIMIZERS, owner=owner)
    check_option(schedule, "schedule", SCHEDULES, owner=owner)
    check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner)
    check_in_range(momentum, "momentum", 0.0, 1.0, closed="left", owner=owner)
    check_in_range(weight_decay, "weight_decay", 0.0, None, owner=owner)
    check_int(eval_every, "eval_every", 0, None, owner=owner)
    check_int(num_workers, "num_workers", 0, None, owner=owner)
    check_bool(distributed, "distributed", owner=owner)
    check_bool(sync_bn, "sync_bn", owner=owner)
    check_in_range(dist_timeout, "dist_timeout", 0.0, None, closed="neither", owner=owner)
    if sync_bn and not distributed:
        raise InvalidParameterError("The 'sync_bn' parameter of fit synchronises BatchNorm across processes: it needs "
                                    "distributed=True (under torchrun).")
    if distributed and isinstance(data, DataLoader):
        raise InvalidParameterError(
            "fit(distributed=True) shards the data itself: pass the Dataset (or ClassificationData), not a "
            "DataLoader (each rank then reads a disjoint slice of every global batch).")
    if not isinstance(data, ClassificationData) and not is_streaming(data):
        raise TypeError(f"The 'data' parameter of fit must be a ClassificationData, a torch Dataset or a DataLoader. "
                        f"Got {type(data).__name__}.")
    aug = resolve_augment(augment, augment_kw, owner=owner)
    val_fraction = _check_new_options(owner, precision, checkpoint_dir, checkpoint_every, resume,
                                      val_fraction, select, select_every, patience, ema, val_data is not None)

    ctx = _dist.setup(device, dist_timeout, owner) if distributed else None
    main = ctx is None or ctx.is_main
    shard = ctx.shard if ctx is not None else None
    if ctx is not None:
        dev = ctx.device
    else:
        dev = torch.device(device) if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    model.to(dev)
    if sync_bn:
        model = _dist.convert_sync_batchnorm(model, dev)
    loader_gen = torch.Generator().manual_seed(int(seed) + 4)  # DataLoader worker seeds (streaming Datasets)
    fd = prepare_data(data, val_fraction=val_fraction, val_data=val_data, test_data=test_data, seed=int(seed),
                      dev=dev, num_workers=num_workers, loader_gen=loader_gen, owner=owner)
    src = fd.train
    if getattr(aug, "needs_image", False) and fd.input_shape is not None and len(fd.input_shape) != 3:
        raise InvalidParameterError(
            f"augment {augment!r} needs image inputs (C, H, W); data set '{fd.name}' has input shape "
            f"{fd.input_shape}. Use augment='noise' or None for flat inputs.")
    n = src.n
    loss_kw = dict(loss_kw or {})
    if isinstance(loss, str) and "num_samples" not in loss_kw and _takes_num_samples(loss):
        loss_kw["num_samples"] = int(n)  # per-sample state sized to the training set
    loss_fn = resolve_loss(loss, loss_kw)
    needs_index = bool(getattr(loss_fn, "needs_index", False))
    if needs_index and getattr(loss_fn, "num_samples", None) not in (None, n):
        raise ValueError(
            f"The loss keeps per-sample state for num_samples={loss_fn.num_samples} examples, but the training "
            f"split has {n}; build it with num_samples={n}."
        )
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(dev)
    prunes = set(prune_epochs(epochs)) if hasattr(loss_fn, "prune") else set()
    kept_fraction = 1.0
    obj = _resolve_objective(objective, objective_kw)
    sel_kw = resolve_select_kw(select, select_kw, obj)
    num_classes = _check_output_width(model, src.first_x(), fd.num_classes, fd.name, owner)

    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total_steps = epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(int(seed))
    rank_seed = 0 if ctx is None else 1_000_003 * ctx.rank  # each rank its own random starts/augmentations
    obj_gen = torch.Generator(device=dev).manual_seed(int(seed) + 1 + rank_seed)
    aug_gen = torch.Generator(device=dev).manual_seed(int(seed) + 2 + rank_seed) if aug is not None else None
    if callable(getattr(obj, "prepare", None)):  # two-stage objectives (pretrain, rcal): a first stage on the train split
        obj.prepare(model=model, x=getattr(src, "x", None), y=src.labels, num_classes=num_classes, seed=int(seed),
                    device=dev)
    obj.setup(model=model, epochs=epochs, steps_per_epoch=steps_per_epoch, num_classes=num_classes,
              num_train=n, generator=obj_gen)
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    amp_dtype = _AMP_DTYPES[precision]
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    ema_w = WeightEMA(model, ema) if ema is not None else None
    history: dict[str, list[float]] = {"epoch": [], "loss": [], "train_acc": [], "test_acc": [], "lr": [], "time_s": []}
    sel = _resume.Selection()
    gens = {"fit": gen, "objective": obj_gen, "augment": aug_gen}
    if not isinstance(src, MemorySource):
        gens["loader"] = loader_gen
    fingerprint = _resume.fingerprint(
        epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule, seed=seed, n_train=n, num_classes=num_classes,
        loss=loss, loss_kw=loss_kw, objective=objective, objective_kw=objective_kw, augment=augment,
        augment_kw=augment_kw, precision=precision, val_fraction=val_fraction, select=select, select_kw=sel_kw,
        select_every=select_every, patience=patience, ema=ema,
        **({"world_size": ctx.world, "sync_bn": sync_bn} if ctx is not None else {}))
    start_epoch = step = 0
    if resume:
        assert checkpoint_dir is not None  # checked with the options
        state = _resume.load(checkpoint_dir, fingerprint)
        if state is not None:
            start_epoch, step, kept_fraction = _resume.restore(
                state, model=model, opt=opt, scaler=scaler, loss_fn=loss_fn, obj=obj, gens=gens, ema=ema_w,
                history=history, selection=sel, device=dev, rank=0 if ctx is None else ctx.rank)
    net = model if ctx is None else _dist.wrap(model, dev)  # what the objective trains (DDP: gradients all-reduced)
    reduce = None if ctx is None else ctx.sum_counts

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc="fit", unit="epoch", leave=False, disable=None)
    collapse = (CollapseMonitor(src.labels, lr=lr, optimizer=optimizer, objective=obj)  # warns once on a collapse
                if src.labels is not None else None)
    model.train()
    for epoch in range(start_epoch, epochs):
        if sel.stopped:
            break
        t0 = time.perf_counter()
        obj.on_epoch_start(epoch)
        if epoch in prunes:  # truncated losses (TGCE) re-select their kept samples (prune_epochs)
            if isinstance(src, MemorySource):
                kept_fraction = float(loss_fn.prune(predict_logits(model, src.x), src.y, torch.arange(n, device=dev)))
            else:
                kept_fraction = float(loss_fn.prune(*all_logits(model, src, dev)))
            model.train()
        record = eval_every > 0 and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs)
        if isinstance(obj, Objective):
            obj.track_metrics = record
        # Per-step values are only collected (no tensor arithmetic per step); the epoch means are one
        # weighted reduction at the end.
        losses_seen: list[torch.Tensor] = []
        metrics_seen: dict[str, list[torch.Tensor]] = {}
        sizes: list[int] = []
        labels_seen: list[torch.Tensor] | None = [] if collapse is None else None
        touched = torch.zeros(n, dtype=torch.bool, device=dev) if ctx is not None and needs_index else None
        constant_lr = schedule == "constant"
        if constant_lr:
            for g in opt.param_groups:
                g["lr"] = lr
        for j, (idx, xb, yb) in enumerate(src.batches(gen, batch_size, dev, shard)):
            if idx is None and needs_index:
                raise InvalidParameterError(
                    "The loss keeps per-sample state and needs each sample's data-set index, but the DataLoader "
                    "given to fit yields (x, y) only: make its data set return (x, y, index), or pass the Dataset "
                    "itself (fit then knows the indices from its permutation).")
            if not constant_lr:
                factor = _lr_factor(schedule, step, total_steps)
                for g in opt.param_groups:
                    g["lr"] = lr * factor
            if aug is not None:
                xb = aug(xb, aug_gen)
            if amp_dtype is None:
                value, metrics = obj(net, Batch(xb, yb, idx), loss_fn)
            else:
                with torch.autocast(dev.type, dtype=amp_dtype):
                    value, metrics = obj(net, Batch(xb, yb, idx), loss_fn)
            size = int(yb.shape[0])
            grad_value = value
            if ctx is not None:  # weight by this rank's share of the global batch: DDP's mean is the global mean
                global_size = min(batch_size, n - j * batch_size)
                size = ctx.local_size(global_size)
                grad_value = value * (size * ctx.world / global_size)
                if touched is not None and size:
                    touched[idx] = True
            optimizer_step(opt, grad_value, scaler, ema_w)
            losses_seen.append(value.detach())
            for k, v in metrics.items():
                metrics_seen.setdefault(k, []).append(v.detach())
            sizes.append(size)
            if labels_seen is not None:
                labels_seen.append(yb)
            step += 1
        n_seen = sum(sizes)
        weights = torch.tensor(sizes, dtype=torch.float32, device=dev)
        loss_sum = (torch.stack(losses_seen).float() * weights).sum()
        metric_sums = {
            k: (torch.stack(vs).float().reshape(len(vs)) * weights).sum() if len(vs) == len(losses_seen)
            else torch.stack(vs).float().mean() * n_seen  # a metric reported on some steps only
            for k, vs in metrics_seen.items()
        }
        if ctx is not None:  # epoch sums over the ranks; per-sample loss state made equal on every rank
            loss_sum, n_seen, metric_sums = _dist.epoch_sums(ctx, loss_sum, n_seen, metric_sums)
            if touched is not None:
                _dist.sync_per_sample_state(loss_fn, touched, ctx)
        if not bool(torch.isfinite(loss_sum)):  # the epoch's one sync; the step is found only on failure
            _raise_non_finite(losses_seen, epoch, steps_per_epoch, lr, owner)
        if labels_seen is not None:  # labels not known up front: chance level from the first epoch's labels
            collapse = CollapseMonitor(torch.cat(labels_seen), lr=lr, optimizer=optimizer, objective=obj)
        eval_model = model if ema_w is None else ema_w.model
        if record:
            row = {"epoch": epoch + 1, "loss": float(loss_sum) / n_seen,
                   "lr": lr * _lr_factor(schedule, step, total_steps)}
            for k, v in metric_sums.items():
                row["train_acc" if k == "acc" else f"train_{k}"] = float(v) / n_seen
            row.setdefault("train_acc", float("nan"))
            if prunes:
                row["kept_fraction"] = kept_fraction
            row["test_acc"] = accuracy(eval_model, fd.test, dev, ctx=ctx) if fd.test is not None else float("nan")
            model.train()
            row["time_s"] = time.perf_counter() - t0
            for key, val in row.items():
                history.setdefault(key, []).append(float(val))
            assert collapse is not None
            if main:
                collapse.update(epoch + 1, row)
            if callback is not None:
                callback(epoch + 1, row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", test_acc=f"{row['test_acc']:.3f}")
        if select is not None and ((epoch + 1) % select_every == 0 or epoch + 1 == epochs):
            assert fd.val is not None
            value_sel = selection_metric_batches(eval_model, eval_batches(fd.val, dev, 512, shard), select, sel_kw,
                                                 seed=int(seed) + 3 + rank_seed, device=dev, reduce=reduce)
            if (sel.update(epoch + 1, value_sel, eval_model, history, select, patience) and checkpoint_dir is not None
                    and main):
                save_checkpoint(eval_model, os.path.join(checkpoint_dir, "best.pt"),
                                extra={"epoch": epoch + 1, "val_" + _resume.metric_name(select): value_sel})
        if checkpoint_dir is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs or sel.stopped):
            rng_ranks = None
            if ctx is not None:  # every rank reached this epoch's end before rank 0 writes; RNG states of all ranks
                rng_ranks = ctx.gather_objects(_resume.rng_state(gens))
            if main:
                save_train_state(checkpoint_dir, _resume.capture(
                    fingerprint=fingerprint, epoch=epoch + 1, step=step, model=model, opt=opt, scaler=scaler,
                    loss_fn=loss_fn, obj=obj, gens=gens, ema=ema_w, history=history, selection=sel,
                    kept_fraction=kept_fraction, rng_ranks=rng_ranks))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if isinstance(obj, Objective):
        vars(obj).pop("track_metrics", None)  # back to the class default for use outside fit
    if sel.best is not None:
        model.load_state_dict(sel.best)
        history["selected_epoch"] = [float(sel.best_epoch)]
    elif ema_w is not None:
        model.load_state_dict(ema_w.model.state_dict())
    model.eval()
    if checkpoint is not None and main:
        save_checkpoint(model, checkpoint, extra={"history": history})
    if ctx is not None:
        ctx.barrier()  # the files rank 0 writes exist when fit returns on any rank
    return FitResult(model, history)


def optimizer_step(opt: torch.optim.Optimizer, value: torch.Tensor, scaler: Any, ema: Any) -> None:
    """One step on ``value``: zero the gradients, backward (through the fp16 ``GradScaler`` when given), step,
    then update the weight EMA (``None``: none). Shared by :func:`fit` and ``fit_regression``."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        value.backward()
        opt.step()
    else:
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
    if ema is not None:
        ema.update()
