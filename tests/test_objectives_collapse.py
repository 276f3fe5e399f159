"""fit's collapse warning: training accuracy at chance for several epochs names the likely causes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from robustlab import data, training
from robustlab.training import objectives
from robustlab.training._collapse import CollapseMonitor, CollapseWarning

Y = torch.tensor([0] * 40 + [1] * 30 + [2] * 30)  # a constant classifier scores 0.4


def test_warns_once_after_patience_epochs_at_chance():
    mon = CollapseMonitor(Y, lr=0.1, optimizer="sgd")
    assert mon.chance == pytest.approx(0.4)
    assert not mon.update(1, {"train_acc": 0.41, "test_acc": 0.40})
    assert not mon.update(2, {"train_acc": 0.40, "test_acc": 0.39})
    with pytest.warns(CollapseWarning, match=r"chance level .* for 3 epochs \(1-3\).*lr=0.1"):
        assert mon.update(3, {"train_acc": 0.40, "test_acc": 0.40})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        assert not mon.update(4, {"train_acc": 0.40, "test_acc": 0.40})  # once per run


def test_recovery_resets_and_learning_runs_are_silent():
    mon = CollapseMonitor(Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        for e, acc in enumerate([0.4, 0.4, 0.7, 0.4, 0.4, 0.9, 0.95], start=1):
            assert not mon.update(e, {"train_acc": acc, "test_acc": acc})
        # robust accuracy near chance while the clean test accuracy is high is not a collapse
        for e in range(8, 12):
            assert not mon.update(e, {"train_acc": float("nan"), "train_adv_acc": 0.35, "test_acc": 0.8})


def test_adversarial_message_names_lr_and_eps_warmup():
    obj = objectives.get("pgd_at", eps=0.2, steps=7)
    mon = CollapseMonitor(Y, lr=0.1, optimizer="sgd", objective=obj, patience=2)
    mon.update(1, {"train_acc": float("nan"), "train_adv_acc": 0.4, "test_acc": 0.4})
    with pytest.warns(CollapseWarning) as rec:
        mon.update(2, {"train_acc": float("nan"), "train_adv_acc": 0.39, "test_acc": 0.4})
    msg = str(rec[0].message)
    assert "optimizer='adam'" in msg and "lr=1e-3" in msg
    assert "eps_schedule='linear'" in msg and "eps=0.2" in msg


class _Constant(nn.Module):
    """Trainable layer whose output is ignored: always predicts class 0 (a collapsed classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * 0 + torch.tensor([1.0, 0.0, 0.0])


def _data():
    return data.load("gaussians", num_classes=3, dim=6, n_train=48, n_test=24, separation=4.0, seed=0)


def test_fit_warns_on_a_collapsed_run():
    with pytest.warns(CollapseWarning, match="collapsed"):
        training.fit(_Constant(), _data(), epochs=4, batch_size=16, lr=0.1, progress=False, seed=0)


def test_fit_is_silent_on_a_learning_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        res = training.fit(model, _data(), epochs=4, batch_size=16, lr=0.1, progress=False, seed=0)
    assert res.history["train_acc"][-1] > 0.45  # above the 1/3 a constant classifier scores


def test_a_tiny_learning_rate_is_named_as_such():
    mon = CollapseMonitor(Y, lr=1e-4, optimizer="sgd", patience=1)
    with pytest.warns(CollapseWarning, match=r"too small to move the model \(lr=0.0001"):
        mon.update(1, {"train_acc": 0.4})
