"""Collaborative training on ``torch.distributed``: each rank is a worker (gloo on CPU, nccl on GPU).

Ranks ``0 .. n-f-1`` are honest, the last f Byzantine. Each round every rank computes what the simulation's
loop path computes for its worker (:func:`robustlab.collab.fit` with ``batched=False``), then:

1. ``all_gather`` of the honest vectors (the attacker is omniscient, as in the literature);
2. Byzantine ranks apply their behaviour to them and keep their own row;
3. ``all_gather`` of the sent vectors; every honest rank aggregates (pivoted on itself for MoNNA).

Launch with torchrun (``torchrun --nproc-per-node 4 -m robustlab.collab.distributed --f 1 ...``) or call
:func:`fit_distributed` in each process of an initialised group (the tests use ``torch.multiprocessing``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .._validation import InvalidParameterError
from ._fit import (
    CollabSetup,
    _accuracy,
    _batch_generators,
    _byzantine_vectors,
    _check_common,
    _draw,
    _evaluate_now,
    _Flat,
    _grad_fn,
    _labels,
    _local_step,
    _lr_at,
    _plan,
    _setup,
)

__all__ = ["fit_distributed", "main"]


def _gather(v: torch.Tensor, world: int) -> torch.Tensor:
    out = [torch.empty_like(v) for _ in range(world)]
    dist.all_gather(out, v.contiguous())
    return torch.stack(out)


def fit_distributed(model: nn.Module, data: Any, *, setup: CollabSetup | None = None, epochs: int = 10,
                    batch_size: int = 32, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                    schedule: str = "constant", eval_every: int = 1, loss: Any = "ce", loss_kw: dict[str, Any] | None = None, seed: int = 0,
                    device: str | torch.device | None = None, **collab: Any) -> Any:
    """This rank's part of :func:`robustlab.collab.fit`; returns ``FitResult(model, history)`` for this worker.

    The group's world size must equal ``workers``; every rank passes the same arguments (same data, same
    initial model). A Byzantine rank's history holds only ``epoch``; an honest rank's ``test_acc`` is its own.
    """
    from ..training import FitResult, resolve_loss

    if not dist.is_available() or not dist.is_initialized():
        raise InvalidParameterError("fit_distributed needs an initialised torch.distributed process group "
                                    "(torchrun, or dist.init_process_group in each process).")
    s = _setup(setup, collab)
    world, rank = dist.get_world_size(), dist.get_rank()
    if world != s.workers:
        raise InvalidParameterError(f"The 'workers' parameter ({s.workers}) must equal the world size ({world}): "
                                    "one rank per worker.")
    _check_common(model, data, epochs, batch_size, lr, momentum, weight_decay, seed, schedule, eval_every)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    plan = _plan(s, data, batch_size, seed)
    base_lr, total = lr, epochs * plan.steps_per_epoch
    flat = _Flat(model)
    gfn = _grad_fn(model, flat, resolve_loss(loss, loss_kw))
    h, f, a = s.honest, s.f, plan.active
    active = rank < a
    theta = flat.flat(model).float().to(dev)
    mom = torch.zeros_like(theta)
    gen = _batch_generators(seed, s.workers)[rank]
    byz_gen = torch.Generator().manual_seed(seed * 7_368_787 + 17)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_acc": []}
    model.eval()
    x_train = data.x_train.to(dev)
    diverged = False
    for ep in range(epochs):
        losses = []
        for k in range(plan.steps_per_epoch if not diverged else 0):
            lr = _lr_at(ep * plan.steps_per_epoch + k, total, base_lr, schedule)
            if active:
                idx = _draw(plan.parts[rank], batch_size, gen)
                g, lv = gfn(theta, x_train[idx.to(dev)], _labels(plan, data, rank, idx).to(dev))
                losses.append(float(lv))
                mom = _local_step(g, theta, mom, momentum, weight_decay)
                vec = theta - lr * mom if s.mode == "params" else mom
            else:
                vec = torch.zeros_like(theta)
            seen = _gather(vec, world)
            if not bool(torch.isfinite(seen[:a]).all()):
                diverged = True
                history["diverged_step"] = [ep * plan.steps_per_epoch + len(losses)]
                break
            if a < s.workers:  # vector Byzantine ranks: craft from the honest vectors, send their own row
                own = _byzantine_vectors(plan.behaviour, seen[:h].cpu(), f, byz_gen)[rank - h].to(dev) \
                    if not active else vec
                sent = _gather(own, world)
            else:
                sent = seen
            if active:
                sent_cpu = sent.cpu()
                if s.mode == "params":
                    theta = plan.agg(sent_cpu, f, pivot=rank).to(dev)
                else:
                    theta = theta - lr * plan.agg(sent_cpu, f).to(dev)
        if not _evaluate_now(ep, epochs, eval_every):
            continue
        history["epoch"].append(ep + 1)
        if active:
            history["train_loss"].append(sum(losses) / len(losses) if losses else float("nan"))
            history["test_acc"].append(_accuracy(model.to(dev), flat, theta, _on(data, dev)))
    with torch.no_grad():
        for p, v in zip(model.parameters(), flat.unflat(theta).values()):
            p.copy_(v)
    return FitResult(model, history)


def _on(data: Any, dev: torch.device) -> Any:
    if dev.type == "cpu":
        return data

    class _D:
        x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)

    return _D()


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: train on a registry data set and model; rank 0 prints each honest rank's history."""
    import os

    from .. import models
    from ..data import load

    p = argparse.ArgumentParser(prog="python -m robustlab.collab.distributed",
                                description="One collaborative run, one rank per worker (launch with torchrun).")
    p.add_argument("--data", default="digits", help="registry data set")
    p.add_argument("--model", default="mlp", help="registry model (no batch norm)")
    p.add_argument("--f", type=int, default=0, help="number of Byzantine ranks (the last f)")
    p.add_argument("--aggregator", default="monna", help="robust aggregator (collab.aggregators.available())")
    p.add_argument("--byzantine", default="sign_flip", help="Byzantine behaviour (collab.byzantine.available())")
    p.add_argument("--heterogeneity", default="iid", help="'iid' or 'dirichlet:<alpha>'")
    p.add_argument("--epochs", type=int, default=5, help="epochs")
    p.add_argument("--batch-size", type=int, default=32, help="batch size per worker")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="worker momentum beta")
    p.add_argument("--seed", type=int, default=0, help="seed")
    args = p.parse_args(argv)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu"
        d = load(args.data)
        if d.num_classes is None:
            raise InvalidParameterError(f"The 'data' option of collab.distributed must name a classification data "
                                        f"set. Got {args.data!r} (no classes).")
        torch.manual_seed(args.seed)
        model = models.create(args.model, input_shape=d.input_shape, num_classes=d.num_classes)
        res = fit_distributed(model, d, workers=dist.get_world_size(), f=args.f, aggregator=args.aggregator,
                              byzantine=args.byzantine, heterogeneity=args.heterogeneity, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, seed=args.seed,
                              device=device)
        rows = [None] * dist.get_world_size()
        dist.all_gather_object(rows, res.history)
        if dist.get_rank() == 0:
            json.dump({"ranks": rows}, sys.stdout)
            print()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
