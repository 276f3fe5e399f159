"""``fit(distributed=True)``: data-parallel training over the processes of a ``torchrun`` launch.

The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``, ``LOCAL_RANK``): backend ``nccl`` on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo``
on the CPU, with a timeout so that a rank that dies makes the others fail instead of waiting forever. Every
global batch of the seeded permutation is cut into ``world`` contiguous slices (rank ``r`` takes slice
``r``); each rank's loss is weighted by its share of the global batch, so the gradient torch
``DistributedDataParallel`` averages is the global batch's. ``sync_bn`` synchronises BatchNorm statistics
(torch's ``SyncBatchNorm`` on CUDA; :class:`GlooSyncBatchNorm` on the CPU, where torch's refuses).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._validation import InvalidParameterError

__all__ = ["DistContext", "GlooSyncBatchNorm", "convert_sync_batchnorm", "epoch_sums", "is_main_process", "setup", "sync_per_sample_state", "wrap"]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistContext:
    """This process's place in the run: ``rank`` of ``world``, its device, and whether ``fit`` made the group."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_size(self, global_size: int) -> int:
        """Samples of a global batch of ``global_size`` that this rank trains on (``tensor_split`` sizes)."""
        q, r = divmod(global_size, self.world)
        return q + (1 if self.rank < r else 0)

    def barrier(self) -> None:
        dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce ``t`` (sum) in place over the ranks; returns it."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sum_counts(self, *counts: int) -> tuple[int, ...]:
        """Integer counts summed over the ranks."""
        t = torch.tensor(counts, dtype=torch.float64, device=self.device if dist.get_backend() == "nccl" else "cpu")
        return tuple(int(v) for v in self.sum_(t).tolist())

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (RNG states for the checkpoint)."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out



def is_main_process() -> bool:
    """True outside a distributed run and on its rank 0 (the one process that writes files)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def setup(device: str | torch.device | None, timeout_s: float, owner: str = "fit") -> DistContext:
    """Join (or start, from torchrun's environment) the default process group; pick this rank's device."""
    if not dist.is_available():
        raise InvalidParameterError(f"{owner}(distributed=True) needs torch.distributed, which this torch build lacks.")
    owns = False
    if not dist.is_initialized():
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise InvalidParameterError(
                f"{owner}(distributed=True) must run under torchrun (missing environment variables "
                f"{', '.join(missing)}): launch it as 'torchrun --nproc_per_node=N script.py' or "
                "'torchrun --nproc_per_node=N -m robustlab train ... --distributed'.")
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout_s)))
        atexit.register(_destroy)  # left up for later fit calls in the same script; torn down at exit
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), dev, owns)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (parameters broadcast from rank 0; gradients all-reduced)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def epoch_sums(ctx: DistContext, loss_sum: torch.Tensor, n_seen: int,
               metric_sums: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """An epoch's weighted loss/metric sums and sample count, summed over the ranks (one all-reduce)."""
    keys = sorted(metric_sums)
    dev = loss_sum.device if dist.get_backend() == "nccl" else torch.device("cpu")
    parts = [loss_sum.double().reshape(1), torch.tensor([float(n_seen)], dtype=torch.float64, device=loss_sum.device)]
    parts += [metric_sums[k].double().reshape(1) for k in keys]
    total = ctx.sum_(torch.cat(parts).to(dev)).to(loss_sum.device)
    return total[0].float(), int(total[1]), {k: total[2 + i].float() for i, k in enumerate(keys)}


class _SyncStats(torch.autograd.Function):
    """Sum over the ranks, with the gradient summed over the ranks too (each rank's loss uses the total)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are the global batch's, for the CPU (gloo) where torch's ``SyncBatchNorm`` refuses.

    Mean and (biased) variance over all ranks' samples, computed in two all-reduces (sum, then the centred sum
    of squares); the running statistics are updated as ``F.batch_norm`` does (unbiased variance). Outside
    training or without a process group it is plain BatchNorm. Same state dict as the BatchNorm it replaces.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = _SyncStats.apply(torch.tensor([float(x.numel() // x.shape[1])], device=x.device, dtype=x.dtype))
        mean = _SyncStats.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _SyncStats.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=m)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` synchronised over the ranks (``nn.SyncBatchNorm`` on CUDA, :class:`GlooSyncBatchNorm` on the CPU)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, (GlooSyncBatchNorm, nn.SyncBatchNorm)):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:  # the same Parameter objects, as torch's convert_sync_batchnorm keeps them
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


def sync_per_sample_state(loss_fn: Any, touched: torch.Tensor, ctx: DistContext) -> None:
    """Make a loss's per-sample buffers (ALDR-KL λ, TGCE weights) equal on every rank after an epoch.

    In an epoch every sample is trained on by exactly one rank, so each entry is taken from the rank that
    touched it (``touched``: this rank's mask); untouched entries are unchanged everywhere. Exact, one
    all-reduce per buffer.
    """
    if not isinstance(loss_fn, nn.Module):
        return
    n = touched.shape[0]
    owner = touched.to(torch.float32)
    ctx.sum_(owner)
    any_touched = owner > 0
    for buf in loss_fn.buffers():
        if buf.dim() >= 1 and buf.shape[0] == n and buf.dtype.is_floating_point:
            mask = touched.view(-1, *([1] * (buf.dim() - 1)))
            mine = torch.where(mask, buf, torch.zeros_like(buf))
            ctx.sum_(mine)
            buf.copy_(torch.where(any_touched.view_as(mask), mine, buf))
