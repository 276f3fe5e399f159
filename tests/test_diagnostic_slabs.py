"""The ``slabs`` data set (Shah et al. 2020) and the randomized-feature AUC evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from robustlab import data, models, shift, training
from robustlab.data._diagnostic import make_slab_coordinate


def _intervals(kind, b=1.0, g=0.1):
    """Analytic supports {label: [(lo, hi), ...]} of the positive half-axis (the sets are symmetric)."""
    if kind == 3:
        w = (2 * b - 4 * g) / 3
        return {0: [(0, w / 2)], 1: [(w / 2 + 2 * g, w / 2 + 2 * g + w)]}
    if kind == 5:
        w = (2 * b - 8 * g) / 5
        return {0: [(0, w / 2), ((3 * b + 8 * g) / 5, b)], 1: [((b + 6 * g) / 5, (b + 6 * g) / 5 + w)]}
    w = (2 * b - 12 * g) / 7
    return {0: [(0, w / 2), (1.5 * w + 4 * g, 2.5 * w + 4 * g)],
            1: [(0.5 * w + 2 * g, 1.5 * w + 2 * g), (2.5 * w + 6 * g, b)]}


@pytest.mark.parametrize("kind", [3, 5, 7])
def test_slab_supports_and_masses(kind):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=40000)
    x = make_slab_coordinate(kind, y, rng)
    iv = _intervals(kind)
    for label in (0, 1):
        a = np.abs(x[y == label])
        inside = np.zeros(a.shape, dtype=bool)
        for lo, hi in iv[label]:
            inside |= (a >= lo - 1e-12) & (a <= hi + 1e-12)
            # each interval is filled up to its ends
            sel = a[(a >= lo - 1e-12) & (a <= hi + 1e-12)]
            assert sel.min() < lo + 0.01 * (hi - lo) + 1e-9 and sel.max() > hi - 0.01 * (hi - lo)
        assert inside.all(), f"{kind}-slab label {label}: points outside the analytic slabs"
    assert np.abs(x).max() <= 1.0 + 1e-12
    if kind == 5:  # class-conditional mass of the centre slab for negatives: p5 = 3/4
        w = 0.24
        assert np.mean(np.abs(x[y == 0]) <= w / 2) == pytest.approx(0.75, abs=0.01)
    if kind == 7:  # positives in the inner slabs with p7 = 7/8; negatives centre 1/2
        w = (2 - 1.2) / 7
        assert np.mean(np.abs(x[y == 1]) <= 1.5 * w + 0.2 + 1e-12) == pytest.approx(0.875, abs=0.01)
        assert np.mean(np.abs(x[y == 0]) <= w / 2) == pytest.approx(0.5, abs=0.01)


def test_linear_coordinate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=5000)
    x = make_slab_coordinate("linear", y, rng)
    assert (x[y == 1] >= 0.1).all() and (x[y == 1] <= 1).all() and (x[y == 0] <= -0.1).all()


def _unrotated(d):
    m = {k: torch.tensor(d.meta[k], dtype=torch.float64) for k in ("scale", "offset", "rotation")}
    x = torch.cat([d.x_test, d.x_train]).double()
    return (x * m["scale"] + m["offset"]) @ m["rotation"].T


def test_slabs_dataset_structure():
    d = data.load("slabs", n_train=3000, n_test=1000, dim=8, seed=3)
    assert d.x_train.shape == (3000, 8) and d.num_classes == 2 and d.meta["variant"] == "LMS-5"
    w = torch.tensor(d.meta["rotation"], dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, torch.eye(8, dtype=torch.float64), atol=1e-10, rtol=0)
    xs = _unrotated(d)
    y = torch.cat([d.y_test, d.y_train])
    # in the un-rotated basis coordinate 0 is the linear one: it separates the classes exactly at 0
    assert bool(((xs[:, 0] > 0) == (y == 1)).all())
    assert float(xs[y == 1, 0].min()) >= 0.1 - 1e-6
    # the others are 5-slabs: |x| in [.32, .56] for positives
    a = xs[y == 1, 1:].abs()
    assert float(a.min()) >= 0.32 - 1e-6 and float(a.max()) <= 0.56 + 1e-6
    e = data.load("slabs", n_train=3000, n_test=1000, dim=8, seed=3)
    assert torch.equal(d.x_train, e.x_train) and torch.equal(d.y_test, e.y_test)
    ms = data.load("slabs", kind="ms", n_train=500, n_test=100, dim=6, rotate=False)
    assert ms.meta["variant"] == "MS-(5,7)"
    torch.testing.assert_close(torch.tensor(ms.meta["rotation"], dtype=torch.float64), torch.eye(6, dtype=torch.float64))
    import json

    json.dumps(ms.meta)  # meta stays JSON-able
    with pytest.raises(ValueError, match="kind"):
        data.load("slabs", kind="xyz")
    with pytest.raises(ValueError, match="corrupt_linear"):
        data.load("slabs", kind="ms", corrupt_linear=0.1)


def test_corrupt_linear_fraction():
    d = data.load("slabs", n_train=4000, n_test=1000, dim=4, corrupt_linear=0.2, seed=1)
    xs = _unrotated(d)
    inside = (xs[:, 0].abs() < 0.1).double().mean()
    assert float(inside) == pytest.approx(0.2, abs=1e-3)


def test_binary_auc_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (500,), generator=g)
    s = y.double() * 0.7 + torch.randn(500, generator=g, dtype=torch.float64)
    s[:50] = s[:50].round()  # ties
    assert shift.binary_auc(s, y) == pytest.approx(roc_auc_score(y.numpy(), s.numpy()), abs=1e-12)
    assert shift.binary_auc(torch.zeros(4), torch.tensor([0, 1, 0, 1])) == 0.5
    assert shift.binary_auc(torch.zeros(3), torch.zeros(3, dtype=torch.long)) != shift.binary_auc(
        torch.zeros(3), torch.zeros(3, dtype=torch.long))  # NaN


def test_randomize_features_keeps_marginals():
    d = data.load("slabs", n_train=200, n_test=500, dim=6, seed=2)
    xr = shift.randomize_features(d, "simple", generator=torch.Generator().manual_seed(0))
    m = {k: torch.tensor(d.meta[k], dtype=torch.float64) for k in ("scale", "offset", "rotation")}
    before = (d.x_test.double() * m["scale"] + m["offset"]) @ m["rotation"].T
    after = (xr.double() * m["scale"] + m["offset"]) @ m["rotation"].T
    torch.testing.assert_close(after[:, 1:], before[:, 1:], atol=1e-5, rtol=0)  # complex coords untouched
    torch.testing.assert_close(after[:, 0].sort().values, before[:, 0].sort().values, atol=1e-5, rtol=0)
    assert not torch.allclose(after[:, 0], before[:, 0])
    with pytest.raises(ValueError, match="slab metadata"):
        shift.randomize_features(data.load("gaussians", n_train=20, n_test=10), "simple")


def test_linear_model_relies_only_on_linear_coordinate():
    """A linear model cannot use slabs, so it reaches ~100% only through the linear coordinate:
    S-randomized AUC ~ 0.5 and S^c-randomized AUC ~ 1 (both randomizations tested)."""
    torch.manual_seed(0)
    d = data.load("slabs", n_train=2000, n_test=1000, dim=10, seed=0)
    mean, std = d.x_train.mean(0), d.x_train.std(0)
    m = models.create("linear", input_shape=d.input_shape, num_classes=2, normalize=(mean, std))
    training.fit(m, d, epochs=15, lr=0.1, batch_size=128, weight_decay=0.0, progress=False)
    auc = shift.slab_randomization_auc(m, d, generator=torch.Generator().manual_seed(1))
    assert auc.standard > 0.995
    assert abs(auc.s_randomized - 0.5) < 0.06
    assert auc.sc_randomized > 0.99
    acc = float((training.predict_logits(m, d.x_test).argmax(1) == d.y_test).float().mean())
    assert acc > 0.98
