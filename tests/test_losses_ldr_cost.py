"""ALDR-KL hot path: the lambda update allocates no avoidable N x C temporaries and keeps its values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robustlab.losses import _fn_margin as M


class _FullSizeAllocs(TorchDispatchMode):
    """Records the out-of-place ops whose output has the given shape (each one a fresh N x C buffer)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape, self.ops = shape, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        name = func._schema.name.split("::")[-1]
        if isinstance(out, torch.Tensor) and tuple(out.shape) == self.shape and not name.endswith("_"):
            self.ops.append(name)
        return out


def _reference_lambda(f: torch.Tensor, lam: torch.Tensor, lam0: float, alpha: float) -> torch.Tensor:
    """The update as written before the in-place rewrite (vecdot over a fresh product)."""
    logk = math.log(f.shape[1])
    z = (f - f.amax(1, keepdim=True)).div_(lam[:, None])
    if M._small_cpu(f):
        e = z.exp()
        s = e.sum(1)
        kl = torch.linalg.vecdot(e, z).div_(s).sub_(s.log()).add_(logk).clamp_(0.0, logk)
    else:
        q = torch.softmax(z, dim=1)
        kl = (torch.linalg.vecdot(q, z) + q.amax(1).log_() + logk).clamp_(0.0, logk)
    return kl.mul_(-lam0 / (alpha * logk)).add_(lam0).clamp_(lam0 * (1.0 - 1.0 / alpha), lam0)


@pytest.mark.parametrize("shape", [(8, 5), (512, 1000)])
def test_aldr_lambda_update_values_unchanged(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(shape, generator=g) * 3
    lam = torch.rand(shape[0], generator=g) + 0.5
    assert torch.equal(M.aldr_kl_lambda(f, lam, 1.5, 2.0), _reference_lambda(f, lam, 1.5, 2.0))


def test_aldr_lambda_update_allocates_two_full_size_buffers_at_most() -> None:
    # shifted logits and their softmax; the KL's product is taken in place (it was a third N x C buffer).
    f, lam = torch.randn(512, 1000), torch.ones(512)
    with _FullSizeAllocs((512, 1000)) as mode:
        M.aldr_kl_lambda(f, lam, 1.0, 2.0)
    assert len(mode.ops) <= 2, mode.ops


class _FreshFullSize(TorchDispatchMode):
    """Records the ops that return a freshly allocated tensor of ``shape`` (no in-place, ``out=`` or view op)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape, self.ops = shape, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        name = func._schema.name.split("::")[-1]
        fresh = not name.endswith("_") and "out" not in func._overloadname
        if fresh and isinstance(out, torch.Tensor) and tuple(out.shape) == self.shape:
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            if out.untyped_storage().data_ptr() not in inputs:  # a view (detach, ...) allocates nothing
                self.ops.append(name)
        return out


@pytest.mark.parametrize("shape", [(64, 10), (512, 1000)])  # both paths (K <= 64 on CPU / larger K)
def test_aldr_forward_backward_allocates_three_full_size_buffers(shape: tuple[int, int]) -> None:
    # the temperature update's two work buffers, then the loss writes u and its softmax into them: three
    # N x C allocations in all (shifted logits, softmax, gradient); it was five (u and softmax fresh).
    g = torch.Generator().manual_seed(0)
    f = (torch.randn(shape, generator=g) * 3).requires_grad_(True)
    y = torch.randint(0, shape[1], (shape[0],), generator=g)
    lam = torch.rand(shape[0], generator=g) + 0.5
    with _FreshFullSize(shape) as mode:
        M.aldr_kl(f, y, lam0=1.0, alpha=2.0, margin=0.1, lam=lam).backward()
    assert len(mode.ops) <= 3, mode.ops


@pytest.mark.parametrize("shape", [(64, 10), (512, 1000)])
@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_aldr_values_and_gradients_unchanged_by_buffer_reuse(shape: tuple[int, int], margin: float) -> None:
    g = torch.Generator().manual_seed(1)
    f0 = torch.randn(shape, generator=g) * 3
    y = torch.randint(0, shape[1], (shape[0],), generator=g)
    lam = torch.rand(shape[0], generator=g) + 0.5
    new = M.aldr_kl_lambda(f0, lam, 1.0, 2.0)
    penalty = (new - 1.0).square_().mul_(2.0 * math.log(shape[1]) / 2.0)
    ref_f = f0.clone().requires_grad_(True)
    ref = M._ldr(ref_f, y, new, margin) - penalty  # fresh buffers
    ref.sum().backward()
    got_f = f0.clone().requires_grad_(True)
    got = M.aldr_kl(got_f, y, lam0=1.0, alpha=2.0, margin=margin, lam=lam, reduction="none")
    got.sum().backward()
    assert torch.equal(got.detach(), ref.detach()) and torch.equal(got_f.grad, ref_f.grad)
