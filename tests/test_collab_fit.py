"""collab.split, CollabSetup and the one-process collab.fit."""

import pytest
import torch

from robustlab import collab, data, models
from robustlab._validation import InvalidParameterError


@pytest.fixture(scope="module")
def digits():
    return data.load("digits").subset(n_train=400, n_test=150)


def _mlp(d, seed=0):
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(32,))


def test_iid_split_is_a_seeded_partition():
    y = torch.arange(103) % 10
    parts = collab.split(y, 10, seed=1)
    allidx = torch.cat(parts).sort().values
    assert torch.equal(allidx, torch.arange(103)) and {len(p) for p in parts} == {10, 11}
    assert all(torch.equal(a, b) for a, b in zip(parts, collab.split(y, 10, seed=1)))
    assert not all(torch.equal(a, b) for a, b in zip(parts, collab.split(y, 10, seed=2)))


def test_dirichlet_split_skews_labels_more_for_small_alpha():
    y = torch.arange(2000) % 10

    def classes_per_worker(alpha):
        parts = collab.split(y, 10, alpha=alpha, seed=0)
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(2000))
        # classes holding >= 5% of a worker's data
        return sum(int((torch.bincount(y[p], minlength=10) >= 0.05 * len(p)).sum()) for p in parts) / 10

    skewed, near_iid = classes_per_worker(0.1), classes_per_worker(100.0)
    assert skewed < 4 and near_iid > 9
    assert all(torch.equal(a, b) for a, b in zip(collab.split(y, 10, alpha=1.0, seed=4),
                                                 collab.split(y, 10, alpha=1.0, seed=4)))


def test_split_and_heterogeneity_errors():
    y = torch.arange(10) % 2
    with pytest.raises(InvalidParameterError, match="Cannot split 10 training samples across 6 workers"):
        collab.split(y, 6)
    with pytest.raises(InvalidParameterError, match="'alpha' parameter of split"):
        collab.split(y, 2, alpha=0.0)
    for bad in ("dirichlet:-1", "dirichlet:x", "skewed", 0):
        with pytest.raises(InvalidParameterError, match="'heterogeneity'.*'iid' or 'dirichlet:<alpha>'"):
            collab.parse_heterogeneity(bad)
    assert collab.parse_heterogeneity("dirichlet:0.5") == 0.5


def test_setup_errors_name_the_argument():
    with pytest.raises(InvalidParameterError, match="'f' parameter of collab must be < workers / 2 = 5 .*'krum'"):
        collab.CollabSetup(workers=10, f=5, aggregator="krum")
    with pytest.raises(InvalidParameterError, match="needs workers >= 2f \\+ 3 = 9"):
        collab.CollabSetup(workers=8, f=3, aggregator="krum")
    with pytest.raises(InvalidParameterError, match="'f' parameter of collab must be < workers = 4"):
        collab.CollabSetup(workers=4, f=4, aggregator="mean")
    with pytest.raises(KeyError, match="Did you mean 'monna'"):
        collab.CollabSetup(aggregator="monnna")
    with pytest.raises(KeyError, match="Did you mean 'sign_flip'"):
        collab.CollabSetup(byzantine="signflip")
    with pytest.raises(InvalidParameterError, match="'exchange'"):
        collab.CollabSetup(exchange="gossip")
    assert collab.CollabSetup(aggregator="monna").mode == "params"
    assert collab.CollabSetup(aggregator="krum").mode == "momentum"
    assert collab.CollabSetup(heterogeneity="dirichlet:1.0").heterogeneity == "dirichlet:1"


def test_fit_is_deterministic_and_batched_matches_loop(digits):
    kw = dict(workers=5, f=1, aggregator="trimmed_mean", byzantine="alie", epochs=2, lr=0.5, seed=1)
    a = collab.fit(_mlp(digits), digits, **kw)
    b = collab.fit(_mlp(digits), digits, **kw)
    assert a.history == b.history
    loop = collab.fit(_mlp(digits), digits, batched=False, **kw)
    assert loop.history["test_acc"] == pytest.approx(a.history["test_acc"], abs=0.02)
    for p, q in zip(a.model.parameters(), loop.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    assert set(a.history) >= {"epoch", "train_loss", "test_acc", "honest_acc_min", "honest_spread"}
    assert a.history["honest_spread"] == [0.0, 0.0]  # one aggregate: every honest worker holds the same model


@pytest.mark.parametrize("aggregator", ["monna", "trimmed_mean"])
def test_robust_rule_survives_gaussian_workers_where_the_mean_does_not(digits, aggregator):
    kw = dict(workers=7, f=2, byzantine="gaussian", epochs=6, lr=0.5, batch_size=8, seed=0)
    clean = collab.fit(_mlp(digits), digits, aggregator="mean", **{**kw, "f": 0})
    robust = collab.fit(_mlp(digits), digits, aggregator=aggregator, **kw)
    naive = collab.fit(_mlp(digits), digits, aggregator="mean", **kw)
    assert clean.history["test_acc"][-1] > 0.7
    assert robust.history["test_acc"][-1] > clean.history["test_acc"][-1] - 0.15
    assert naive.history["test_acc"][-1] < 0.3


def test_divergence_stops_cleanly(digits):
    res = collab.fit(_mlp(digits), digits, workers=5, f=1, aggregator="mean", byzantine="gaussian",
                     byzantine_kw={"sigma": 1e30}, epochs=2, lr=0.5)
    assert "diverged_step" in res.history and len(res.history["test_acc"]) == 2


def test_fit_refuses_bad_models_and_arguments(digits):
    bn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10))
    with pytest.raises(InvalidParameterError, match="without buffers"):
        collab.fit(bn, digits, workers=3)
    with pytest.raises(InvalidParameterError, match="'lr' parameter of collab.fit"):
        collab.fit(_mlp(digits), digits, workers=3, lr=0)
    with pytest.raises(InvalidParameterError, match="either 'setup' or"):
        collab.fit(_mlp(digits), digits, setup=collab.CollabSetup(), workers=3)


def test_schedule_and_eval_every(digits):
    from robustlab.collab._fit import _lr_at

    assert [_lr_at(t, 4, 1.0, "cosine") for t in range(4)] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    assert [_lr_at(t, 4, 1.0, "step") for t in range(4)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    res = collab.fit(_mlp(digits), digits, workers=3, epochs=3, eval_every=2, schedule="cosine")
    assert res.history["epoch"] == [2, 3]
    res = collab.fit(_mlp(digits), digits, workers=3, epochs=2, eval_every=0)
    assert res.history["epoch"] == [2]
    with pytest.raises(InvalidParameterError, match="'schedule' parameter of collab.fit"):
        collab.fit(_mlp(digits), digits, workers=3, schedule="linear")
