"""Pre-training, linear probe and RCAL through the one run pipeline: the two-stage objectives ``pretrain`` and
``rcal`` (fit's ``prepare`` hook), the shipped ``repr`` spec, and a bench sweep end to end on tiny data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustlab import data, models, noise, pipeline, training
from robustlab._validation import InvalidParameterError
from robustlab.bench import ResultStore, expand, load_spec, run_sweep


def _noisy_longtail(n_train: int = 300) -> data.ClassificationData:
    d = data.load("digits", longtail=0.1).subset(n_train=n_train, n_test=200)
    ny = noise.inject(d.y_train, kind="symmetric", rate=0.4, num_classes=10, generator=torch.Generator().manual_seed(0))
    return d.with_train_labels(ny.labels)


def _mlp(d: data.ClassificationData, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(32,))


def test_fit_runs_the_first_stage_of_pretrain_and_freezes_the_body_for_the_probe():
    d = _noisy_longtail()
    model = _mlp(d)
    init = copy.deepcopy(model)
    obj = training.OBJECTIVES.get("pretrain", pretrain_epochs=2, pretrain_kw={"batch_size": 64})
    training.fit(model, d, objective=obj, epochs=2, batch_size=64, lr=0.05, progress=False)
    assert obj.pretrain_history["epoch"] == [1, 2]  # the contrastive stage ran inside fit
    body_moved = any(not torch.equal(a, b) for a, b in zip(model[1].parameters(), init[1].parameters()))
    assert body_moved
    # the probe stage trains the last layer only: the body equals its state right after pre-training
    model2, obj2 = _mlp(d), training.OBJECTIVES.get("pretrain", pretrain_epochs=2, pretrain_kw={"batch_size": 64})
    obj2.prepare(model=model2, x=d.x_train, y=d.y_train, num_classes=10, seed=0)
    pre = copy.deepcopy(model2)
    obj3 = training.OBJECTIVES.get("pretrain", pretrain_epochs=2, pretrain_kw={"batch_size": 64})
    model3 = _mlp(d)
    training.fit(model3, d, objective=obj3, epochs=2, batch_size=64, lr=0.05, progress=False, seed=0)
    assert torch.equal(model3[1].weight, pre[1].weight)
    assert not torch.equal(model3[-1].weight, pre[-1].weight)


def test_rcal_objective_removes_outliers_calibrates_the_tail_and_trains():
    d = _noisy_longtail()
    obj = training.OBJECTIVES.get("rcal", pretrain_epochs=2, pretrain_kw={"batch_size": 64}, lof_k=5)
    model = _mlp(d)
    res = training.fit(model, d, objective=obj, epochs=3, batch_size=64, optimizer="adam", lr=1e-2, progress=False)
    assert 0.5 < obj.kept_fraction < 1.0  # LOF dropped some (mostly mislabelled) examples
    assert obj.tail and max(obj.tail) == 9  # the rarest classes are calibrated
    assert obj._s_x.shape[0] > 0 and set(obj._s_y.tolist()) >= set(obj.tail)
    assert all(torch.isfinite(torch.tensor(res.history["loss"])))
    reg = next(v for k, v in res.history.items() if k.endswith("repr_reg"))
    assert reg[0] > 0.0  # the individual calibration pulls the features back towards f0


def test_two_stage_objectives_refuse_what_they_cannot_split_or_read():
    d = _noisy_longtail(120)
    obj = training.OBJECTIVES.get("rcal", pretrain_epochs=1)
    with pytest.raises(InvalidParameterError, match=r"nn.Sequential ending in nn.Linear.*Got Identity"):
        obj.prepare(model=nn.Identity(), x=d.x_train, y=d.y_train, num_classes=10)
    with pytest.raises(InvalidParameterError, match=r"pretrain_kw.*takes.*Got \['bogus'\]"):
        training.OBJECTIVES.get("pretrain", pretrain_kw={"bogus": 1})
    with pytest.raises(ValueError, match="isogclr"):
        training.OBJECTIVES.get("rcal", pretrain_loss="isogcrl")  # "Did you mean"
    with pytest.raises(InvalidParameterError, match="in-memory data"):
        training.OBJECTIVES.get("pretrain").prepare(model=_mlp(d), x=None, y=None, num_classes=10)


def test_same_seed_same_numbers_through_the_pipeline():
    cfg = {"data": {"name": "digits", "options": {"longtail": 0.1}, "n_train": 200, "n_test": 100},
           "noise": "symmetric:0.4", "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
           "objective": {"name": "rcal", "kwargs": {"pretrain_epochs": 1, "pretrain_kw": {"batch_size": 64}, "lof_k": 5}},
           "train": {"epochs": 2, "batch_size": 64, "lr": 0.05}, "evaluations": [{"name": "longtail"}]}
    a = pipeline.run(cfg, checkpoint=False, progress=False)
    b = pipeline.run(cfg, checkpoint=False, progress=False)
    assert [m for m in a.metrics if m[0] == "acc/tail"] == [m for m in b.metrics if m[0] == "acc/tail"]
    assert a.resolved["objective"]["pretrain_epochs"] == 1 and a.resolved["objective"]["alpha"] == 0.1


def test_the_shipped_repr_spec_runs_end_to_end_on_tiny_data(tmp_path):
    s = load_spec("repr")
    names = {rc.config["objective"]["name"] for rc in expand(s)}
    assert names == {"standard", "pretrain", "rcal", "robust_self_training"}
    raw = {"name": "repr_tiny", "data": [{"name": "digits", "longtail": 0.1, "n_train": 200, "n_test": 100}],
           "noise": ["symmetric:0.4"], "models": [{"name": "mlp", "hidden": [32]}], "losses": ["ce"],
           "objectives": ["standard",
                          {"name": "pretrain", "label": "probe", "pretrain_epochs": 1, "pretrain_kw": {"batch_size": 64}},
                          {"name": "rcal", "pretrain_epochs": 1, "pretrain_kw": {"batch_size": 64}, "lof_k": 5}],
           "seeds": [0], "train": {"epochs": 2, "batch_size": 64, "lr": 0.05}, "evaluations": ["clean", "longtail"]}
    out = tmp_path / "out"
    res = run_sweep(raw, out, workers=1, threads=1, progress=False)
    assert (res.completed, res.failed) == (3, 0)
    with ResultStore(out, readonly=True) as st:
        final = st.final_metrics()
    assert len(final) == 3 and all(0.0 <= m["acc/tail"] <= 1.0 and "acc/head" in m for m in final.values())


def test_a_class_without_examples_is_left_out_by_the_objective_and_an_error_in_defences_rcal():
    from robustlab import defences

    f = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0] * 30 + [1] * 10)  # class 2 absent (a grid check's one-batch dry run)
    with pytest.raises(InvalidParameterError, match="class 2 has no training example"):
        defences.calibrate(f, y, 3, lof_k=3)
    cal = defences.calibrate(f, y, 3, lof_k=3, allow_empty=True)
    assert cal.tail == [1]
    xs, ys = cal.sample(torch.Generator().manual_seed(0))
    assert 2 not in ys.tolist() and (ys == 1).sum() == int(cal.counts[0] - cal.counts[1])


def test_robust_self_training_runs_from_a_config_teacher_and_shifted_pool_built_in_fit():
    cfg = {"data": {"name": "digits", "n_train": 200, "n_test": 100}, "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
           "objective": {"name": "robust_self_training",
                         "kwargs": {"unlabeled": {"kind": "feature_noise", "severity": 2, "n": 150},
                                    "teacher_kw": {"epochs": 3}, "steps": 1}},
           "train": {"epochs": 2, "batch_size": 64, "lr": 0.05}, "evaluations": [{"name": "clean"}]}
    res = pipeline.run(cfg, checkpoint=False, progress=False)
    assert any(n == "train/train_unlabeled_loss" for n, _, _ in res.metrics)
    assert res.resolved["objective"]["teacher_kw"] == {"epochs": 3}
    with pytest.raises(InvalidParameterError, match="has no teacher or no unlabeled pool yet"):
        obj = training.OBJECTIVES.get("robust_self_training", unlabeled={"kind": "feature_noise"})
        obj.setup(model=nn.Linear(2, 2), epochs=1, steps_per_epoch=1, num_classes=2, num_train=4,
                  generator=torch.Generator())
    with pytest.raises(ValueError, match="rotate"):
        training.OBJECTIVES.get("robust_self_training", unlabeled={"kind": "rotat"})
    with pytest.raises(InvalidParameterError, match="teacher_kw"):
        training.OBJECTIVES.get("robust_self_training", unlabeled={"kind": "none"}, teacher_kw={"loss": "gce"})
