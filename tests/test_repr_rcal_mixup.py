"""RCAL's mixup in the classifier stage (issue 15): off by default and bit-identical to the plain combination,
on = the mixed-target cross-entropy on one seeded draw (both ``defences.rcal`` and the ``rcal`` objective)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import data, defences, models, noise, training
from robustlab._validation import InvalidParameterError


@pytest.fixture(scope="module")
def noisy_lt() -> data.ClassificationData:
    d = data.load("digits", longtail=0.1).subset(n_train=300, n_test=200)
    ny = noise.inject(d.y_train, kind="symmetric", rate=0.4, num_classes=10, generator=torch.Generator().manual_seed(0))
    return d.with_train_labels(ny.labels)


def _mlp(d: data.ClassificationData, out: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=out, hidden=(32,))


def _prepared(d: data.ClassificationData, mixup: float, seed: int = 3):
    """An rcal objective after its first stage (no pre-training, frozen body) and a batch of 64 examples."""
    model = _mlp(d)
    obj = training.OBJECTIVES.get("rcal", pretrain_epochs=0, lof_k=5, finetune=False, mixup=mixup)
    obj.prepare(model=model, x=d.x_train, y=d.y_train, num_classes=10, seed=0)
    obj.setup(model=model, epochs=1, steps_per_epoch=5, num_classes=10, num_train=300,
              generator=torch.Generator().manual_seed(seed))
    idx = torch.arange(64)
    batch = training.Batch(d.x_train[idx], d.y_train[idx], idx)
    return model, obj, batch


def test_mixup_off_is_the_kept_plus_sampled_cross_entropy(noisy_lt):
    model, obj, batch = _prepared(noisy_lt, mixup=0.0)
    state = obj.generator.get_state()
    value, _ = obj(model, batch, F.cross_entropy)
    g = torch.Generator()
    g.set_state(state)
    j = torch.randint(0, obj._s_x.shape[0], (obj._s_batch,), generator=g)
    keep = obj._kept[batch.index]
    with torch.no_grad():
        f = model[:-1](batch.x).flatten(1)
    head = model[-1]
    n_keep = int(keep.sum())
    expected = (F.cross_entropy(head(f[keep]), batch.y[keep]) * n_keep
                + F.cross_entropy(head(obj._s_x[j]), obj._s_y[j], reduction="sum")) / (n_keep + obj._s_batch)
    assert obj._s_batch > 0 and 0 < n_keep < 64
    assert torch.allclose(value, expected, rtol=1e-6, atol=1e-7)


def test_mixup_on_is_the_mixed_target_cross_entropy_of_one_seeded_draw(noisy_lt):
    alpha = 0.4
    model, obj, batch = _prepared(noisy_lt, mixup=alpha)
    state = obj.generator.get_state()
    value, _ = obj(model, batch, F.cross_entropy)
    g = torch.Generator()
    g.set_state(state)  # replay the step's draws: sampled features, then the permutation and lambda
    j = torch.randint(0, obj._s_x.shape[0], (obj._s_batch,), generator=g)
    keep = obj._kept[batch.index]
    with torch.no_grad():
        f = model[:-1](batch.x).flatten(1)
    z = torch.cat([f[keep], obj._s_x[j]])
    y = torch.cat([batch.y[keep], obj._s_y[j]])
    perm = torch.randperm(z.shape[0], generator=g)
    lam = float(np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g))).beta(alpha, alpha))
    logp = torch.log_softmax(model[-1](lam * z + (1 - lam) * z[perm]), dim=1)
    rows = torch.arange(z.shape[0])
    expected = -(lam * logp[rows, y] + (1 - lam) * logp[rows, y[perm]]).mean()
    assert 0.0 < lam < 1.0
    assert torch.allclose(value, expected, rtol=1e-6, atol=1e-7)
    # a different draw gives a different value: the mixing is live, not a no-op
    _, obj2, _ = _prepared(noisy_lt, mixup=alpha, seed=4)
    assert not torch.allclose(obj2(model, batch, F.cross_entropy)[0], value)


def test_rcal_mixup_trains_deterministically_and_differs_from_off(noisy_lt):
    d = noisy_lt
    kw = {"pretrain_epochs": 0, "epochs": 30, "lr": 0.05, "finetune": False, "lof_k": 5, "seed": 2}
    a = defences.rcal(d, _mlp(d, 16), mixup=1.0, **kw)
    b = defences.rcal(d, _mlp(d, 16), mixup=1.0, **kw)
    off = defences.rcal(d, _mlp(d, 16), **kw)
    assert torch.equal(a.head.weight, b.head.weight) and a.history == b.history
    assert not torch.equal(a.head.weight, off.head.weight)
    assert all(np.isfinite(a.history["loss"])) and a.history["loss"][-1] < a.history["loss"][0]
    assert a.accuracy(d.x_test, d.y_test) > 0.25  # chance is 0.1 (frozen random features, 40% noise)


def test_mixed_cross_entropy_at_lambda_one_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    perm, lam = defences.mixup_draw(6, 0.5, torch.Generator().manual_seed(1))
    perm2, lam2 = defences.mixup_draw(6, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(perm, perm2) and lam == lam2 and sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(defences.mixed_cross_entropy(logits, y, perm, 1.0),
                          F.cross_entropy(logits, y, reduction="sum"))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "1"])
def test_bad_mixup_is_refused_by_name(noisy_lt, bad):
    with pytest.raises(InvalidParameterError, match="'mixup' parameter of rcal"):
        defences.rcal(noisy_lt, _mlp(noisy_lt, 16), pretrain_epochs=0, mixup=bad)
    with pytest.raises(InvalidParameterError, match="'mixup' parameter of rcal"):
        training.OBJECTIVES.get("rcal", mixup=bad)
