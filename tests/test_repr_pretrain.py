"""Contrastive pre-training, view augmentations, classifier heads and the learning curve (issue 15)."""

from __future__ import annotations

import pytest
import torch

from robustlab import data, models, training
from robustlab._validation import InvalidParameterError


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _encoder(d, dim=16):
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=dim, hidden=(32,))


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("loss", ["infonce", "sogclr", "isogclr"])
def test_pretrain_runs_deterministic_and_label_free(digits, loss):
    sub = digits.subset(n_train=200)
    a = training.pretrain(_encoder(sub), sub, loss=loss, epochs=2, batch_size=64, seed=1)
    b = training.pretrain(_encoder(sub), sub.with_train_labels(torch.zeros_like(sub.y_train)), loss=loss, epochs=2,
                          batch_size=64, seed=1)
    assert torch.equal(_params(a.encoder), _params(b.encoder)), "same seed, labels changed -> different encoder"
    assert len(a.history["loss"]) == 2 and all(map(torch.isfinite, torch.tensor(a.history["loss"])))
    assert not a.encoder.training
    if loss != "infonce":
        assert a.loss.num_samples == 200  # filled in from the data
    if loss == "isogclr":
        assert "tau_mean" in a.history and a.history["tau_mean"][-1] != pytest.approx(0.7, abs=1e-6)
    c = training.pretrain(_encoder(sub), sub, loss=loss, epochs=2, batch_size=64, seed=2)
    assert not torch.equal(_params(a.encoder), _params(c.encoder))


def test_pretrain_decreases_the_contrastive_loss(digits):
    sub = digits.subset(n_train=300)
    res = training.pretrain(_encoder(sub), sub, loss="infonce", loss_kw={"temperature": 0.5}, epochs=6,
                            batch_size=100, lr=3e-3)
    assert res.history["loss"][-1] < res.history["loss"][0] - 0.05


def test_pretrain_takes_tensors_unlabeled_and_lists_of_augmentations(digits):
    _, unl = data.unlabeled_shifted(digits, kind="rotate", severity=1, n=100)
    r = training.pretrain(_encoder(digits), unl, epochs=1, batch_size=50, augment=["resized_crop", "noise"])
    assert r.history["epoch"] == [1]
    flat = data.load("gaussians")
    enc = models.create("mlp", input_shape=flat.input_shape, num_classes=8, hidden=(16,))
    r = training.pretrain(enc, flat.x_train[:64], epochs=1, batch_size=32)  # auto = noise for flat inputs
    assert training.encode(r.encoder, flat.x_test[:5]).shape == (5, 8)


@pytest.mark.parametrize("kw, match", [({"augment": None}, "needs an augmentation"),
                                       ({"batch_size": 1}, "'batch_size' parameter of pretrain"),
                                       ({"loss": "infonc"}, "Did you mean 'infonce'"),
                                       ({"loss": "ce"}, "Unknown contrastive loss 'ce'"),
                                       ({"projection": (0, 3)}, "'projection'"),
                                       ({"epochs": 0}, "'epochs'")])
def test_pretrain_bad_arguments(digits, kw, match):
    with pytest.raises((InvalidParameterError, KeyError), match=match):
        training.pretrain(_encoder(digits), digits, **kw)


def test_pretrain_rejects_labels_only_input():
    with pytest.raises(InvalidParameterError, match="'data' parameter of pretrain"):
        training.pretrain(torch.nn.Linear(2, 2), torch.arange(10))


def test_resized_crop_identity_at_full_scale_and_random_otherwise():
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    same = training.augment.get("resized_crop", scale=1.0, ratio=1.0)(x, torch.Generator().manual_seed(1))
    assert torch.allclose(same, x, atol=1e-5)
    out = training.augment.get("resized_crop", scale=0.4)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, x)
    with pytest.raises(InvalidParameterError, match="'scale' parameter of resized_crop"):
        training.augment.get("resized_crop", scale=0.0)


def test_linear_probe_heads_and_few_labels(digits):
    enc = _encoder(digits, dim=32)
    full = training.linear_probe(enc, digits, head="logistic")
    assert 0.5 < full.test_acc <= 1.0 and full.train_acc >= full.test_acc - 0.1
    few = training.linear_probe(enc, digits, head="gaussian_nb", n_per_class=5, seed=0)
    assert 0.1 < few.test_acc < full.test_acc + 0.05
    with pytest.raises(InvalidParameterError, match="n_per_class=500 exceeds"):
        training.linear_probe(enc, digits, head="lda", n_per_class=500)
    with pytest.raises(KeyError, match="Did you mean 'lda'"):
        training.linear_probe(enc, digits, head="ldaa")


def test_generative_heads_equal_scikit_learn(digits):
    sk = pytest.importorskip("sklearn")
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.naive_bayes import GaussianNB

    del sk
    x, y = digits.x_train.flatten(1), digits.y_train
    xt = digits.x_test.flatten(1)
    nb = training.HEADS.get("gaussian_nb").fit(x, y, 10)
    ref = GaussianNB().fit(x.double().numpy(), y.numpy())
    assert (nb.predict(xt).numpy() == ref.predict(xt.double().numpy())).all()
    assert torch.allclose(torch.log_softmax(nb.predict_logits(xt), 1),
                          torch.from_numpy(ref.predict_log_proba(xt.double().numpy())), atol=1e-6)
    lda = training.HEADS.get("lda", shrinkage=0.1).fit(x, y, 10)
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(x.double().numpy(), y.numpy())
    assert (lda.predict(xt).numpy() == ref.predict(xt.double().numpy())).mean() > 0.995


def test_logistic_head_equals_scikit_learn(digits):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    x, y = digits.x_train.flatten(1).double(), digits.y_train
    xt = digits.x_test.flatten(1).double()
    lam = 1e-2
    head = training.HEADS.get("logistic", l2=lam, max_iter=500).fit(x, y, 10)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    ref = LogisticRegression(C=1.0 / (lam * x.shape[0]), max_iter=5000, tol=1e-10).fit(((x - mean) / std).numpy(),
                                                                                        y.numpy())
    p_ref = torch.from_numpy(ref.predict_proba(((xt - mean) / std).numpy()))
    p = torch.softmax(head.predict_logits(xt), 1)
    assert float((p - p_ref).abs().max()) < 1e-3


def test_learning_curve_rows_and_shared_samples(digits):
    x, y = digits.x_train.flatten(1), digits.y_train
    rows = training.learning_curve(x, y, digits.x_test.flatten(1), digits.y_test, n_per_class=[2, 20], seeds=[0, 1])
    assert len(rows) == 2 * 2 * 3 and {r["head"] for r in rows} == {"logistic", "gaussian_nb", "lda"}
    err = {(r["head"], r["n_per_class"]): [] for r in rows}
    for r in rows:
        err[(r["head"], r["n_per_class"])].append(r["error"])
    for h in ("logistic", "gaussian_nb", "lda"):
        assert sum(err[(h, 20)]) < sum(err[(h, 2)])
    again = training.learning_curve(x, y, digits.x_test.flatten(1), digits.y_test, n_per_class=[2, 20], seeds=[0, 1])
    assert again == rows
    with pytest.raises(InvalidParameterError, match="n_per_class"):
        training.learning_curve(x, y, x, y, n_per_class=[0])
    with pytest.raises(KeyError, match="Unknown head"):
        training.learning_curve(x, y, x, y, heads=["svm"])


def test_cli_lists_heads_and_contrastive_losses(capsys):
    from robustlab.cli import main

    assert main(["list", "heads"]) == 0
    out = capsys.readouterr().out
    assert all(h in out for h in ("logistic", "gaussian_nb", "lda")) and ":math:" not in out
    assert main(["list", "contrastive_losses", "--tag", "stateful"]) == 0
    out = capsys.readouterr().out
    assert "sogclr" in out and "isogclr" in out and "infonce" not in out
