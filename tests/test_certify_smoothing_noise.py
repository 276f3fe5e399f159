"""Noise drawing of SmoothedClassifier: exact stream, reused buffers, model dtype."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.certify import SmoothedClassifier


class _Recorder(nn.Module):
    """Linear classifier that records (a copy of) every batch it sees."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 3).to(dtype)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.lin(x.flatten(1))


def test_noisy_inputs_equal_the_reference_stream_across_chunks() -> None:
    # Reference: one torch.randn per chunk from the same generator, sigma * eps + x[idx] (mul then add).
    torch.manual_seed(0)
    x = torch.rand(3, 1, 3, 4)
    num, bs, sigma = 7, 5, 0.3
    model = _Recorder()
    SmoothedClassifier(model, sigma=sigma, num_classes=3).sample_counts(
        x, num, batch_size=bs, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    total = x.shape[0] * num
    assert [t.shape[0] for t in model.seen] == [5, 5, 5, 5, 1]
    for start, got in zip(range(0, total, bs), model.seen, strict=True):
        idx = torch.arange(start, min(start + bs, total)) // num
        ref = torch.randn((idx.shape[0], *x.shape[1:]), generator=g).mul_(sigma).add_(x[idx])
        assert torch.equal(got, ref)


def test_noise_is_drawn_in_the_models_dtype() -> None:
    # A float64 model fed float32 inputs: the noisy copies are built in float64 (the model's dtype),
    # with the same counts as when the caller passes float64 inputs.
    torch.manual_seed(0)
    model = _Recorder(torch.float64)
    smooth = SmoothedClassifier(model, sigma=0.5, num_classes=3)
    x = torch.rand(2, 12)
    got = smooth.sample_counts(x, 40, batch_size=16, generator=torch.Generator().manual_seed(2))
    assert all(t.dtype == torch.float64 for t in model.seen)
    ref = smooth.sample_counts(x.double(), 40, batch_size=16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, ref) and int(got.sum()) == 80
    classes, _ = smooth.certify(x, n0=10, n=50, alpha=0.01, generator=torch.Generator().manual_seed(2))
    assert classes.shape == (2,)
