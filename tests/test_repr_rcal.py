"""RCAL on noisy long-tailed data: LOF, robust statistics, tail calibration, classifier (issue 15)."""

from __future__ import annotations

import pytest
import torch

from robustlab import data, defences, models, noise
from robustlab._validation import InvalidParameterError


@pytest.fixture(scope="module")
def noisy_lt():
    d = data.load("digits", longtail=0.1)
    ny = noise.inject(d.y_train, kind="symmetric", rate=0.3, num_classes=10, generator=torch.Generator().manual_seed(0))
    return d, d.with_train_labels(ny.labels), ny.is_noisy


def _enc(d):
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=16, hidden=(32,))


def test_lof_equals_scikit_learn():
    pytest.importorskip("sklearn")
    from sklearn.neighbors import LocalOutlierFactor

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 3, generator=g, dtype=torch.float64), 6 + torch.randn(3, 3, generator=g,
                                                                                         dtype=torch.float64)])
    ours = defences.local_outlier_factor(x, k=5)
    ref = -LocalOutlierFactor(n_neighbors=5).fit(x.numpy()).negative_outlier_factor_
    assert torch.allclose(ours, torch.from_numpy(ref), rtol=1e-6)


def test_rcal_removes_mostly_noisy_labels_and_trains(noisy_lt):
    d, dn, is_noisy = noisy_lt
    r = defences.rcal(dn, _enc(d), pretrain_epochs=3, pretrain_kw={"batch_size": 128}, epochs=20, seed=0)
    assert r.kept.shape == dn.y_train.shape and 0 < int(r.kept.sum()) < len(r.kept)
    clean_kept = float((~is_noisy[r.kept]).float().mean())
    clean_all = float((~is_noisy).float().mean())
    assert clean_kept > clean_all, "LOF removal kept noisy labels as often as clean ones"
    assert r.tail and all(t >= 3 for t in r.tail)  # class 0 is the head of the profile
    acc = r.accuracy(d.x_test, d.y_test)
    assert 0.3 < acc <= 1.0
    assert r.history["loss"][-1] < r.history["loss"][0]
    assert r.predict_logits(d.x_test[:4]).shape == (4, 10)


def test_rcal_tail_calibration_borrows_head_statistics(noisy_lt):
    d, dn, _ = noisy_lt
    enc = _enc(d)
    plain = defences.rcal(dn, enc, pretrain_epochs=0, n_borrow=0, alpha=0.0, epochs=1, finetune=False)
    cal = defences.rcal(dn, enc, pretrain_epochs=0, n_borrow=1, alpha=0.5, epochs=1, finetune=False)
    t = cal.tail[-1]
    heads = [k for k in range(10) if k not in cal.tail and k != t]
    near = min(heads, key=lambda h: float((plain.means[h] - plain.means[t]).norm()))
    assert torch.allclose(cal.means[t], (plain.means[t] + plain.means[near]) / 2, atol=1e-5)
    eye = torch.eye(plain.covs.shape[1])
    assert torch.allclose(cal.covs[t], plain.covs[near] + 0.5 * eye, atol=1e-5)
    head = [k for k in range(10) if k not in cal.tail][0]
    assert torch.equal(cal.means[head], plain.means[head])


def test_rcal_is_deterministic_and_leaves_the_encoder_alone(noisy_lt):
    d, dn, _ = noisy_lt
    enc = _enc(d)
    before = [p.clone() for p in enc.parameters()]
    a = defences.rcal(dn, enc, pretrain_epochs=1, epochs=3, seed=1)
    b = defences.rcal(dn, enc, pretrain_epochs=1, epochs=3, seed=1)
    assert torch.equal(a.head.weight, b.head.weight)
    assert all(torch.equal(p, q) for p, q in zip(before, enc.parameters()))


@pytest.mark.parametrize("kw, match", [({"lof_threshold": 0.5}, "'lof_threshold' parameter of rcal"),
                                       ({"alpha": -1}, "'alpha'"), ({"epochs": 0}, "'epochs'"),
                                       ({"finetune": "yes"}, "'finetune'")])
def test_rcal_bad_arguments(noisy_lt, kw, match):
    d, dn, _ = noisy_lt
    with pytest.raises(InvalidParameterError, match=match):
        defences.rcal(dn, _enc(d), pretrain_epochs=0, **kw)


def test_rcal_refuses_non_data():
    with pytest.raises(InvalidParameterError, match="'data' parameter of rcal"):
        defences.rcal(torch.zeros(3), torch.nn.Linear(2, 2))
