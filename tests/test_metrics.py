"""robustlab.metrics against scikit-learn and an independent ECE loop."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from robustlab import metrics


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 6, generator=g) * 2
    y = torch.randint(0, 6, (300,), generator=g)
    y[:5] = 5  # make sure the last class is present
    return logits, y


def test_accuracy_and_top_k(scores):
    logits, y = scores
    pred = logits.argmax(1)
    assert metrics.accuracy(logits, y) == pytest.approx(skm.accuracy_score(y, pred))
    assert metrics.accuracy(pred, y) == pytest.approx(skm.accuracy_score(y, pred))  # 1-D predictions
    for k in (1, 2, 4):
        ref = skm.top_k_accuracy_score(y.numpy(), logits.numpy(), k=k, labels=np.arange(6))
        assert metrics.top_k_accuracy(logits, y, k=k) == pytest.approx(ref)
    with pytest.raises(ValueError, match="'k' parameter of top_k_accuracy"):
        metrics.top_k_accuracy(logits, y, k=7)


def test_confusion_and_per_class(scores):
    logits, y = scores
    pred = logits.argmax(1)
    cm = metrics.confusion_matrix(logits, y, 6)
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(y, pred, labels=np.arange(6)))
    rec = skm.recall_score(y, pred, labels=np.arange(6), average=None, zero_division=0)
    np.testing.assert_allclose(metrics.per_class_accuracy(logits, y, 6).numpy(), rec)
    assert metrics.worst_class_accuracy(logits, y, 6) == pytest.approx(rec.min())


def test_per_class_absent_class_is_nan():
    logits = torch.eye(3)[[0, 1, 1]]
    y = torch.tensor([0, 1, 0])
    pc = metrics.per_class_accuracy(logits, y, 3)
    assert torch.isnan(pc[2]) and pc[0] == 0.5 and pc[1] == 1.0
    assert metrics.worst_class_accuracy(logits, y, 3) == 0.5


def _ece_loop(probs, y, n_bins):
    conf, pred = probs.max(1)
    total = 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf.numpy() > lo) & (conf.numpy() <= hi)
        if m.any():
            acc = (pred.numpy()[m] == y.numpy()[m]).mean()
            total += m.mean() * abs(acc - conf.numpy()[m].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_loop(scores, n_bins):
    logits, y = scores
    probs = logits.softmax(1).double()
    assert metrics.expected_calibration_error(probs, y, n_bins) == pytest.approx(_ece_loop(probs, y, n_bins), abs=1e-9)


def test_ece_perfect_calibration_is_zero():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.expected_calibration_error(probs, torch.tensor([0, 1])) == 0.0


def test_errors(scores):
    logits, y = scores
    with pytest.raises(ValueError, match="rows"):
        metrics.accuracy(logits, y[:-1])
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(logits, y, 3)
