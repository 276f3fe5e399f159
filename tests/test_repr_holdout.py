"""Robust self-training's unlabeled pool held out of the labelled examples (issue 15): a seeded stratified
split declared once in ``robustlab.data`` (``holdout_split`` / ``split_and_shift`` / ``check_pool_spec``),
the same from a spec, ``fit`` and ``data.unlabeled_shifted``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlab import data, models, noise, training
from robustlab._validation import InvalidParameterError
from robustlab.bench import expand, load_spec


def _noisy_lt(n_train: int = 400) -> data.ClassificationData:
    d = data.load("digits", longtail=0.1).subset(n_train=n_train, n_test=100)
    ny = noise.inject(d.y_train, kind="symmetric", rate=0.4, num_classes=10, generator=torch.Generator().manual_seed(0))
    return d.with_train_labels(ny.labels)


def test_stratified_holdout_is_disjoint_complete_per_class_and_reproducible_by_seed():
    y = _noisy_lt().y_train
    n = 150
    lab, held = data.holdout_split(y, n, torch.Generator().manual_seed(5))
    assert held.numel() == n and lab.numel() + n == y.numel()
    assert not set(lab.tolist()) & set(held.tolist())
    assert sorted(lab.tolist() + held.tolist()) == list(range(y.numel()))
    for c in torch.unique(y).tolist():
        count, out = int((y == c).sum()), int((y[held] == c).sum())
        assert abs(out - n * count / y.numel()) < 1.0 + 1e-9  # each class gives its share (rounded)
        assert out < count  # and keeps a labelled example
    lab2, held2 = data.holdout_split(y, n, torch.Generator().manual_seed(5))
    assert torch.equal(held, held2) and torch.equal(lab, lab2)
    assert not torch.equal(held, data.holdout_split(y, n, torch.Generator().manual_seed(6))[1])


def test_a_class_of_one_example_stays_labelled():
    y = torch.tensor([0] * 10 + [1] * 10 + [2])
    lab, held = data.holdout_split(y, 10, torch.Generator().manual_seed(0))
    assert 20 in lab.tolist() and held.numel() == 10


def test_the_unstratified_split_is_the_one_unlabeled_shifted_always_drew():
    d = data.load("digits")
    total, n = d.x_train.shape[0], 300
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(3))
    lab, unl = data.unlabeled_shifted(d, kind="none", severity=0, n=n, seed=3)
    assert torch.equal(unl.x, d.x_train[perm[total - n:].sort().values])
    assert torch.equal(lab.x_train, d.x_train[perm[: total - n].sort().values])


def _mlp(d: data.ClassificationData) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(32,))


def test_fit_holds_the_pool_out_the_same_way_as_unlabeled_shifted():
    d = _noisy_lt()
    spec = {"kind": "feature_noise", "severity": 2, "fraction": 0.5}
    obj = training.OBJECTIVES.get("robust_self_training", unlabeled=spec, teacher_kw={"epochs": 1}, steps=1)
    training.fit(_mlp(d), d, objective=obj, epochs=1, batch_size=64, lr=0.05, seed=7, progress=False)
    lab, unl = data.unlabeled_shifted(d, kind="feature_noise", severity=2, fraction=0.5, seed=7, stratify=True)
    mask = obj._labelled
    assert int(mask.sum()) == 200 and obj.num_unlabeled == 200
    assert torch.equal(d.x_train[mask], lab.x_train) and torch.equal(obj._x_unl, unl.x)
    # the pool's inputs (before the shift) are exactly the rows left out of the labelled ones
    _, held, _ = data.split_and_shift(d.x_train, d.y_train, data.check_pool_spec(spec, "t"), 7)
    assert torch.equal(torch.nonzero(~mask).flatten(), held)
    obj2 = training.OBJECTIVES.get("robust_self_training", unlabeled=spec, teacher_kw={"epochs": 1}, steps=1)
    training.fit(_mlp(d), d, objective=obj2, epochs=1, batch_size=64, lr=0.05, seed=8, progress=False)
    assert not torch.equal(obj2._labelled, mask)  # another seed, another split


def test_the_labelled_loss_never_reads_the_labels_of_held_out_rows():
    d = _noisy_lt(200)
    model = _mlp(d)
    obj = training.OBJECTIVES.get("robust_self_training", unlabeled={"kind": "none", "n": 80},
                                  teacher_kw={"epochs": 1}, gamma=None)
    obj.prepare(model=model, x=d.x_train, y=d.y_train, num_classes=10, seed=0)
    obj.setup(model=model, epochs=1, steps_per_epoch=1, num_classes=10, num_train=200,
              generator=torch.Generator().manual_seed(1))
    idx = torch.arange(64)
    held = ~obj._labelled[idx]
    assert 0 < int(held.sum()) < 64
    y_other = d.y_train[idx].clone()
    y_other[held] = (y_other[held] + 1) % 10  # relabel only the held-out rows
    state = obj.generator.get_state()
    a, _ = obj(model, training.Batch(d.x_train[idx], d.y_train[idx], idx), F.cross_entropy)
    obj.generator.set_state(state)
    b, _ = obj(model, training.Batch(d.x_train[idx], y_other, idx), F.cross_entropy)
    assert torch.equal(a, b)


def test_the_repr_spec_declares_a_held_out_pool_and_a_no_unlabeled_baseline():
    rows = [rc.config["objective"] for rc in expand(load_spec("repr"))
            if rc.config["objective"]["name"] == "robust_self_training"]
    pools = {str(r["kwargs"]["unlabeled"]) for r in rows}
    assert len(pools) == 1 and "fraction" in next(iter(pools))
    assert sorted(float(r["kwargs"].get("lam", 1.0)) for r in rows)[0] == 0.0


@pytest.mark.parametrize("spec, match", [
    ({"kind": "none", "n": 5, "fraction": 0.5}, "'n' or 'fraction', not both"),
    ({"kind": "none", "fraction": 1.0}, "'fraction' parameter"),
    ({"kind": "none", "size": 5}, r"takes \{'kind': str"),
    ({"kind": "none", "n": 0}, "'n' parameter"),
])
def test_bad_pool_specs_are_refused_by_name(spec, match):
    with pytest.raises(InvalidParameterError, match=match):
        training.OBJECTIVES.get("robust_self_training", unlabeled=spec)


def test_a_pool_as_large_as_the_split_is_refused_when_the_split_is_known():
    d = _noisy_lt(100)
    obj = training.OBJECTIVES.get("robust_self_training", unlabeled={"kind": "none", "n": 100})
    with pytest.raises(InvalidParameterError, match="holds out 100 of 100 training examples"):
        obj.prepare(model=_mlp(d), x=d.x_train, y=d.y_train, num_classes=10, seed=0)


def test_the_shift_sweep_spec_holds_every_pool_out_and_grows_the_shift():
    runs = expand(load_spec("repr-selftrain"))
    assert len(runs) == 60  # 10 objective rows x clean/noisy x 3 seeds
    kws = [rc.config["objective"]["kwargs"] for rc in runs if rc.config["objective"]["name"] == "robust_self_training"]
    assert all(k["unlabeled"]["fraction"] == 0.5 for k in kws)
    assert {k["unlabeled"]["severity"] for k in kws} == {0, 2, 4, 8}


@pytest.mark.parametrize("kw, match", [({"n": 10, "fraction": 0.5}, "'n' or 'fraction', not both"),
                                       ({"fraction": 0.0}, "'fraction' parameter of unlabeled_shifted"),
                                       ({"stratify": "yes"}, "'stratify' parameter of unlabeled_shifted")])
def test_unlabeled_shifted_refuses_bad_split_arguments_by_name(kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        data.unlabeled_shifted(data.load("digits"), kind="none", **kw)
