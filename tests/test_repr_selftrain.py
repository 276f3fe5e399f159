"""Robust self-training with out-of-domain unlabeled data, and the Gaussian-mixture diagnostic (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab import data, models, training
from robustlab._validation import InvalidParameterError
from robustlab.training.objectives import gaussian_mixture_diagnostic
from robustlab.training.objectives._selftrain import wrm_perturb


@pytest.fixture(scope="module")
def split():
    d = data.load("digits")
    lab, unl = data.unlabeled_shifted(d, kind="rotate", severity=1, n=600, seed=0)
    torch.manual_seed(0)
    teacher = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(32,))
    training.fit(teacher, lab, epochs=3, batch_size=64, progress=False)
    return lab, unl, teacher.eval()


def _student(d):
    torch.manual_seed(1)
    return models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(32,))


def test_objective_in_fit_and_pseudo_labels(split):
    lab, unl, teacher = split
    obj = training.objectives.get("robust_self_training", teacher=teacher, unlabeled=unl, steps=2)
    res = training.fit(_student(lab), lab, objective=obj, epochs=2, batch_size=64, progress=False)
    assert len(res.history["train_unlabeled_loss"]) == 2
    with torch.no_grad():
        assert torch.equal(obj._pseudo, teacher(unl.x).argmax(1))
    assert obj.passes_per_step == 4.0
    plain = training.objectives.get("robust_self_training", teacher=teacher, unlabeled=unl.x, gamma=None)
    assert plain.passes_per_step == 2.0


def test_objective_is_deterministic(split):
    lab, unl, teacher = split

    def run():
        obj = training.objectives.get("robust_self_training", teacher=teacher, unlabeled=unl, steps=1)
        m = training.fit(_student(lab), lab, objective=obj, epochs=1, batch_size=64, progress=False, seed=3).model
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    assert torch.equal(run(), run())


def test_wrm_perturb_ascends_the_penalised_loss(split):
    lab, unl, teacher = split
    for q in teacher.parameters():
        q.grad = None
    with torch.no_grad():
        x, y = unl.x[:16], teacher(unl.x[:16]).argmax(1)
    z = wrm_perturb(teacher, x, y, gamma=1.0, steps=5, step_size=0.05)

    @torch.no_grad()
    def obj(t):
        return float(torch.nn.functional.cross_entropy(teacher(t), y, reduction="sum") - ((t - x) ** 2).sum())

    assert obj(z) > obj(x) and not z.requires_grad
    assert all(p.grad is None for p in teacher.parameters())


def test_unlabeled_from_an_npz_file(split, tmp_path):
    lab, unl, teacher = split
    p = tmp_path / "unl.npz"
    np.savez(p, x=unl.x.numpy())
    obj = training.objectives.get("robust_self_training", teacher=teacher, unlabeled=str(p))
    assert obj.num_unlabeled == len(unl)
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros(3))
    with pytest.raises(InvalidParameterError, match="holding an array 'x'"):
        training.objectives.get("robust_self_training", teacher=teacher, unlabeled=str(bad))


@pytest.mark.parametrize("kw, err, match", [
    ({"unlabeled": None}, TypeError, "needs 'unlabeled'"),
    ({"unlabeled": torch.zeros(0, 1, 8, 8)}, InvalidParameterError, "non-empty float tensor"),
    ({"gamma": 0.0}, InvalidParameterError, "'gamma' parameter of robust_self_training"),
    ({"lam": -1}, InvalidParameterError, "'lam'"),
    ({"unlabeled_batch": 0}, InvalidParameterError, "'unlabeled_batch'"),
])
def test_bad_arguments(split, kw, err, match):
    lab, unl, teacher = split
    with pytest.raises(err, match=match):
        training.objectives.get("robust_self_training", **{"teacher": teacher, "unlabeled": unl, **kw})


def test_unlabeled_of_the_wrong_shape_is_named_at_setup(split):
    lab, _, teacher = split
    obj = training.objectives.get("robust_self_training", teacher=teacher, unlabeled=torch.rand(5, 3))
    with pytest.raises(InvalidParameterError, match="cannot read the unlabeled inputs of shape \\(3,\\)"):
        training.fit(_student(lab), lab, objective=obj, epochs=1, progress=False)


def test_gaussian_mixture_diagnostic_unlabeled_data_helps_in_domain():
    gm = data.gaussian_mixture_shift(dim=50, n_labelled=20, n_unlabeled=1000, snr=1.5, shift=0.0, seed=0)
    out = gaussian_mixture_diagnostic(gm, epochs=100, rounds=2, seed=0)
    assert set(out) == {"labelled_only", "self_training", "robust_self_training", "bayes"}
    assert out["bayes"] < out["self_training"] < out["labelled_only"]
    none = gaussian_mixture_diagnostic(data.gaussian_mixture_shift(n_unlabeled=0, seed=0), epochs=20)
    assert none["self_training"] == none["labelled_only"]
