"""Consistency training: the teacher pass normalises like the student (batch statistics), so the loss does not
depend on the BatchNorm running statistics (the cause of a loss excursion after an epoch's small last batch)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from robustlab import models
from robustlab.defences import DenoisedSmoothing
from robustlab.defences._denoised import _frozen_norm


def _setup():
    torch.manual_seed(0)
    base = models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,)).eval()
    den = models.create("dncnn", input_shape=(1, 8, 8), num_classes=10, width=8, depth=4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in den.modules())
    return base, den, torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_consistency_loss_does_not_depend_on_running_statistics():
    base, den, x = _setup()
    other = copy.deepcopy(den)
    for m in other.modules():  # running statistics far from any batch's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(50.0)
    losses = []
    for d in (den, other):
        fit = DenoisedSmoothing(base, d, 0.25).fit(x, method="consistency", levels=4, epochs=1, batch_size=32,
                                                    generator=torch.Generator().manual_seed(0))
        losses.append(fit.history[0])
    assert losses[0] == losses[1], losses


def test_teacher_pass_leaves_running_statistics_unchanged():
    _, den, x = _setup()
    den.train()
    norms = [m for m in den.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in norms]
    with torch.no_grad(), _frozen_norm(den):
        out = den(x)
    for m, (mean, var, tracked) in zip(norms, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == tracked and m.momentum == 0.1 and m.training
    with torch.no_grad():
        torch.testing.assert_close(out, den(x))  # the same batch-statistics forward as the student's
