"""ALDR-KL hot path at few classes: what one training call dispatches (each tensor op costs a fixed few us at
(512, 10), which is what the cost is made of there) and the clear errors that the CPU path builds only when a
kernel's own bound check fails."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robustlab import losses


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops.append(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


def _batch(n: int = 64, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


def test_module_call_dispatches_at_most_40_ops() -> None:
    # forward + backward of a training call (state read and write included); it was 47, CE's is 13
    logits, y = _batch()
    loss = losses.get("aldr_kl", num_samples=64)
    loss(logits.clone().requires_grad_(True), y, index=torch.arange(64)).backward()  # warm caches
    x = logits.clone().requires_grad_(True)
    with _Ops() as mode:
        loss(x, y, index=torch.arange(64)).backward()
    assert len(mode.ops) <= 40, mode.ops


def test_module_call_on_cpu_reads_no_index_or_label_range() -> None:
    # the range checks cost a reduction per tensor and a sync; on CPU the kernels check bounds themselves
    logits, y = _batch()
    loss = losses.get("aldr_kl", num_samples=64)
    with _Ops() as mode:
        loss(logits.clone().requires_grad_(True), y, index=torch.arange(64)).backward()
    assert not {"aminmax", "amin", "min", "max", "stack"} & set(mode.ops), mode.ops


BAD = [
    ("index", torch.arange(64) + 1, None,
     "index of AdaptiveLDRKLLoss holds data-set indices outside [0, 64) (num_samples): min 1, max 64."),
    ("index", torch.arange(64) - 1, None,
     "index of AdaptiveLDRKLLoss holds data-set indices outside [0, 64) (num_samples): min -1, max 62."),
    ("target", None, 10, "target of aldr_kl holds class indices outside [0, 10) for logits with 10 classes: "
                         "min 0, max 10."),
    ("target", None, -1, "target of aldr_kl holds class indices outside [0, 10) for logits with 10 classes: "
                         "min -1, max 9."),
]


@pytest.mark.parametrize(("what", "index", "label", "message"), BAD, ids=["index>=n", "index<0", "y>=K", "y<0"])
def test_out_of_range_index_or_label_is_a_clear_error_and_writes_no_state(
        what: str, index: torch.Tensor | None, label: int | None, message: str) -> None:
    logits, y = _batch()
    if label is not None:
        y = y.clone()
        y[5] = label
        y[6] = 9 if label < 0 else 0
    loss = losses.get("aldr_kl", num_samples=64)
    before = loss.lam.clone()
    with pytest.raises(ValueError) as info:
        loss(logits.requires_grad_(True), y, index=torch.arange(64) if index is None else index)
    assert str(info.value) == message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # not the kernel's error as well
    assert torch.equal(loss.lam, before)


def test_index_is_reported_before_label() -> None:
    logits, y = _batch()
    y = y.clone()
    y[0] = 10
    loss = losses.get("aldr_kl", num_samples=64)
    with pytest.raises(ValueError, match="index of AdaptiveLDRKLLoss"):
        loss(logits, y, index=torch.arange(64) + 1)
    with pytest.raises(ValueError, match="index of AdaptiveLDRKLLoss"):
        loss._check_ranges(logits, y, torch.arange(64) + 1, "aldr_kl")  # the one-sync check of other devices
    with pytest.raises(ValueError, match="target of aldr_kl"):
        loss._check_ranges(logits, y, torch.arange(64), "aldr_kl")
