"""lipschitz_margin objective: the three losses against hand formulas, validation, and certified training."""

import pytest
import torch

from robustlab import data, models, training
from robustlab.certify import lipschitz
from robustlab.training.objectives import get
from robustlab.training.objectives._lipschitz import lipschitz_margin_loss

Z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -0.2], [-1.0, 0.0, 1.0], [0.4, 0.4, 0.0]])
Y = torch.tensor([0, 1, 1, 2])


def test_temperature_cross_entropy():
    want = torch.nn.functional.cross_entropy(4.0 * Z, Y) / 4.0
    torch.testing.assert_close(lipschitz_margin_loss(Z, Y, mode="ce", temperature=4.0), want)


def test_multiclass_hinge_as_deel_torchlip():
    m = 0.6
    total = 0.0
    for z, y in zip(Z.tolist(), Y.tolist()):  # per sample: mean over classes, the label's term weighted by C - 1
        terms = [max(0.0, m / 2 - (1 if c == y else -1) * z[c]) * (2 if c == y else 1) for c in range(3)]
        total += sum(terms) / 3
    got = lipschitz_margin_loss(Z, Y, mode="hinge", margin=m)
    assert float(got) == pytest.approx(total / 4, rel=1e-6)


def test_hkr_is_hinge_minus_kantorovich_rubinstein():
    alpha, m = 0.9, 0.5
    hinge = lipschitz_margin_loss(Z, Y, mode="hinge", margin=m)
    kr = 0.0
    for c in range(3):  # E[f_c | y = c] - E[f_c | y != c], averaged over the classes
        pos, neg = Z[Y == c, c], Z[Y != c, c]
        kr += float(pos.mean()) - float(neg.mean())
    kr /= 3
    got = lipschitz_margin_loss(Z, Y, mode="hkr", margin=m, alpha=alpha)
    assert float(got) == pytest.approx(alpha * float(hinge) - (1 - alpha) * kr, rel=1e-6)


def test_hkr_with_an_absent_class_is_finite():
    got = lipschitz_margin_loss(Z[:2], Y[:2], mode="hkr")  # class 2 absent from the batch
    assert bool(torch.isfinite(got))


@pytest.mark.parametrize("bad,kind,text", [
    (dict(mode="bogus"), ValueError, "mode"), (dict(temperature=0.0), ValueError, "temperature"),
    (dict(margin=-1.0), ValueError, "margin"), (dict(alpha=1.5), ValueError, "alpha"),
    (dict(temperature="8"), TypeError, "temperature"), (dict(margin=True), TypeError, "margin")])
def test_bad_hyperparameters(bad, kind, text):
    with pytest.raises(kind, match=text):
        get("lipschitz_margin", **bad)


def test_training_a_lipschitz_mlp_certifies_digits():
    """A few epochs of lipschitz_margin on digits give a 1-Lipschitz model with certified points at r = 0.3."""
    d = data.load("digits")
    torch.manual_seed(0)
    m = models.create("lipschitz_mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(64,))
    res = training.fit(m, d, objective="lipschitz_margin", objective_kw={"mode": "hinge", "margin": 1.0},
                       epochs=6, batch_size=64, optimizer="adam", lr=0.01, progress=False, seed=0)
    assert res.history["train_margin"][-1] > res.history["train_margin"][0]
    cert = lipschitz(m, d.x_test, d.y_test)
    assert cert.bound.method == "by_construction"
    assert cert.certified_accuracy(0.0) > 0.85
    assert cert.certified_accuracy(0.3) > 0.6
