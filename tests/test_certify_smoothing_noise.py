"""Noise drawing of SmoothedClassifier: exact stream, reused buffers, model dtype."""

from __future__ import annotations

import pytest
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
    # noise="independent" (the stream before shared noise, bit for bit): one torch.randn per chunk from
    # the same generator, sigma * eps + x[idx] (mul then add).
    torch.manual_seed(0)
    x = torch.rand(3, 1, 3, 4)
    num, bs, sigma = 7, 5, 0.3
    model = _Recorder()
    SmoothedClassifier(model, sigma=sigma, num_classes=3, noise="independent").sample_counts(
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


def test_shared_noise_uses_one_block_of_draws_for_every_point() -> None:
    # noise="shared": each forward pass is p points x d draws; the d draws are one N(0, sigma^2) block
    # from the generator (normal_(0, sigma)), added to every point (x_i + sigma * eps_j).
    torch.manual_seed(0)
    x = torch.rand(3, 1, 3, 4)
    num, bs, sigma = 7, 8, 0.3  # p = 3 points, d = 2 draws per pass: blocks of 2, 2, 2, 1 draws
    model = _Recorder()
    counts = SmoothedClassifier(model, sigma=sigma, num_classes=3).sample_counts(
        x, num, batch_size=bs, generator=torch.Generator().manual_seed(11))
    assert [t.shape[0] for t in model.seen] == [6, 6, 6, 3]
    g = torch.Generator().manual_seed(11)
    preds = []
    for d0, got in zip(range(0, num, 2), model.seen, strict=True):
        eps = torch.empty((min(2, num - d0), *x.shape[1:])).normal_(0.0, sigma, generator=g)
        ref = (x[:, None] + eps[None]).flatten(0, 1)
        assert torch.equal(got, ref)
        preds.append(model.lin(ref.flatten(1)).argmax(1).view(3, -1))
    pred = torch.cat(preds, 1)  # (points, draws)
    assert torch.equal(counts, torch.nn.functional.one_hot(pred, 3).sum(1))


def test_one_point_draws_the_same_stream_in_both_modes() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(1, 12)
    got = {mode: SmoothedClassifier(net, sigma=0.4, num_classes=3, noise=mode).certify(
        x, n0=30, n=500, batch_size=64, generator=torch.Generator().manual_seed(5)) for mode in ("shared", "independent")}
    assert torch.equal(got["shared"][0], got["independent"][0]) and torch.equal(got["shared"][1], got["independent"][1])


def test_many_points_fewer_than_one_per_batch_and_bad_mode() -> None:
    # more points than batch_size: each pass is batch_size points x 1 draw; counts still sum to num
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    counts = SmoothedClassifier(net, sigma=0.4, num_classes=3).sample_counts(
        torch.rand(7, 12), 5, batch_size=3, generator=torch.Generator().manual_seed(1))
    assert counts.sum(1).tolist() == [5] * 7
    with pytest.raises(ValueError, match=r"'noise' parameter of SmoothedClassifier .*'shared', 'independent'.*'fresh'"):
        SmoothedClassifier(net, sigma=0.4, num_classes=3, noise="fresh")
