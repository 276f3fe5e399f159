"""The shared ε schedule of adversarial and certified objectives (eps_schedule, eps_warmup_epochs)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlab import data, training
from robustlab._validation import InvalidParameterError
from robustlab.attacks import threat
from robustlab.training import Batch, objectives


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _batch(n: int = 32) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.rand(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g), torch.arange(n))


def _setup(obj, model, epochs=4, spe=5):
    obj.setup(model=model, epochs=epochs, steps_per_epoch=spe, num_classes=3, num_train=32,
              generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["pgd_at", "trades", "mart", "dro_at"])
def test_linear_eps_at_start_mid_and_after_warmup(name):
    """Warm-up over 2 of 4 epochs, 5 steps each: ε = eps·(s+1)/10 at global step s, then eps."""
    eps = 0.2
    model = _model()
    obj = objectives.get(name, eps=eps, steps=3, eps_schedule="linear", eps_warmup_epochs=2)
    _setup(obj, model)
    ce = nn.CrossEntropyLoss() if name != "dro_at" else __import__("robustlab").losses.get("ce")
    seen = {}
    for epoch in range(4):
        obj.on_epoch_start(epoch)
        for step in range(5):
            _, metrics = obj(model, _batch(), ce)
            seen[(epoch, step)] = float(metrics["eps"])
    assert seen[(0, 0)] == pytest.approx(eps / 10)  # epoch 0, first step
    assert seen[(1, 0)] == pytest.approx(eps * 6 / 10)  # mid warm-up
    assert seen[(1, 4)] == pytest.approx(eps)  # the warm-up's last step reaches eps
    assert all(seen[(e, s)] == pytest.approx(eps, abs=1e-7) for e in (2, 3) for s in range(5))
    assert obj.current_eps() == (eps, obj.step_size)  # after the warm-up: exactly the configured values


def test_scheduled_perturbation_stays_in_the_scheduled_ball():
    model = _model()
    obj = objectives.get("pgd_at", eps=0.3, steps=4, eps_schedule="linear", eps_warmup_epochs=1)
    _setup(obj, model, epochs=2, spe=4)
    obj.on_epoch_start(0)
    b = _batch()
    sizes = []
    for _ in range(4):
        x_adv = obj.perturb(model, b.x, threat.ce_sum(b.y))
        sizes.append(float((x_adv - b.x).abs().amax()))
    for k, size in enumerate(sizes):
        assert size <= 0.3 * (k + 1) / 4 + 1e-6
    assert sizes[0] < sizes[-1]


def test_constant_schedule_is_unchanged_and_silent():
    model = _model()
    b = _batch()
    values = []
    for kw in ({}, {"eps_schedule": "constant"}, {"eps_schedule": "constant", "eps_warmup_epochs": 0}):
        obj = objectives.get("pgd_at", eps=0.1, steps=3, **kw)
        _setup(obj, model)
        obj.on_epoch_start(0)
        value, metrics = obj(model, b, nn.CrossEntropyLoss())
        assert "eps" not in metrics
        values.append(value.detach())
    assert torch.equal(values[0], values[1]) and torch.equal(values[0], values[2])


def test_schedule_outside_fit_is_the_full_eps():
    obj = objectives.get("pgd_at", eps=0.1, steps=3, eps_schedule="linear", eps_warmup_epochs=3)
    assert obj.current_eps() == (0.1, obj.step_size)


@pytest.mark.parametrize("kw, match", [
    ({"eps_schedule": "cosine"}, "eps_schedule"),
    ({"eps_schedule": "constant", "eps_warmup_epochs": 3}, "eps_schedule='linear'"),
    ({"eps_schedule": "linear"}, "eps_warmup_epochs"),
    ({"eps_schedule": "linear", "eps_warmup_epochs": -1}, "eps_warmup_epochs"),
])
def test_bad_schedules_are_clear_errors(kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        objectives.get("pgd_at", eps=0.1, **kw)


def test_ibp_default_ramp_is_unchanged():
    """IBP's warm-up/ramp fractions give the same factors as before the schedule was shared."""
    obj = objectives.get("ibp", eps=0.1)
    obj.setup(model=_model(), epochs=10, steps_per_epoch=7, num_classes=3, num_train=32,
              generator=torch.Generator().manual_seed(0))
    total = 70
    w, r = math.floor(0.1 * total), max(1, math.ceil(0.5 * total))
    for step in range(total):
        assert obj.progress(step) == min(1.0, max(0.0, (step - w + 1) / r))


def test_ibp_takes_eps_warmup_epochs_and_constant():
    obj = objectives.get("ibp", eps=0.1, eps_warmup_epochs=2, warmup=0.0)
    obj.setup(model=_model(), epochs=5, steps_per_epoch=4, num_classes=3, num_train=32,
              generator=torch.Generator().manual_seed(0))
    assert obj.progress(0) == pytest.approx(1 / 8) and obj.progress(7) == 1.0
    const = objectives.get("ibp", eps=0.1, eps_schedule="constant")
    const.setup(model=_model(), epochs=5, steps_per_epoch=4, num_classes=3, num_train=32,
                generator=torch.Generator().manual_seed(0))
    assert const.schedule(0) == (pytest.approx(0.11), 0.5)


def test_fit_drives_the_ramp_per_epoch():
    d = data.load("gaussians", num_classes=3, dim=6, n_train=48, n_test=24, separation=4.0, seed=0)
    obj = objectives.get("pgd_at", eps=0.2, steps=2, eps_schedule="linear", eps_warmup_epochs=2)
    res = training.fit(_model(), d, objective=obj, epochs=4, batch_size=16, lr=0.05, progress=False, seed=0)
    eps = res.history["train_eps"]
    assert eps[0] < eps[1] < eps[2] == eps[3] == pytest.approx(0.2)
    assert eps[0] == pytest.approx(0.2 * (1 + 2 + 3) / 3 / 6)  # mean of steps 1..3 of a 6-step ramp


def test_cli_takes_the_schedule_and_refuses_a_bad_one(tmp_path, capsys):
    from robustlab.cli import main

    tiny = ["train", "--data", "gaussians", "--data-arg", "n_train=60", "--data-arg", "n_test=30", "--data-arg",
            "dim=4", "--model-arg", "hidden=8", "--epochs", "2", "--batch-size", "32", "--no-progress",
            "--objective", "pgd_at", "--eps", "0.1", "--steps", "2"]
    out = tmp_path / "run"
    assert main([*tiny, "--eps-schedule", "linear", "--eps-warmup-epochs", "1", "--out", str(out)]) == 0
    assert "eps_schedule=linear" in capsys.readouterr().out
    import json

    eps = json.loads((out / "metrics.json").read_text())["history"]["train_eps"]
    assert eps[0] < eps[1] == pytest.approx(0.1)
    assert main([*tiny, "--eps-schedule", "cosine"]) == 2
    assert "eps_schedule" in capsys.readouterr().err
