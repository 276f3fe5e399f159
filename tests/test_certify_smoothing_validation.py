"""Randomized and adaptive smoothing refuse NaN/Inf inputs and bad labels; smoothing certify has a progress bar."""

import pytest
import torch
from torch import nn

from robustlab import models
from robustlab.certify import SmoothedClassifier, certified_accuracy_curve
from robustlab.defences import (
    AdaptiveSmoothing,
    MixingNetwork,
    lipschitz_certified_radius,
    smoothing_certified_radius,
    train_mixing_network,
)


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_smoothed_classifier_refuses_non_finite_inputs(bad):
    smooth = SmoothedClassifier(_linear(), sigma=0.25, num_classes=3)
    x = torch.rand(3, 4)
    x[1, 2] = bad
    for fn in (lambda: smooth.certify(x, n0=10, n=20), lambda: smooth.predict(x, n=20),
               lambda: smooth.sample_counts(x, 5)):
        with pytest.raises(ValueError, match="'x' of SmoothedClassifier.* contains 1 NaN or infinite"):
            fn()


def test_smoothed_classifier_refuses_a_model_returning_nan():
    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("nan"))

    smooth = SmoothedClassifier(NaNModel(), sigma=0.25, num_classes=3)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        smooth.certify(torch.rand(2, 4), n0=5, n=10)


def test_certify_progress_bar_changes_nothing(capsys):
    smooth = SmoothedClassifier(_linear(1), sigma=0.25, num_classes=3)
    x = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    quiet = smooth.certify(x, n0=10, n=50, batch_size=16, generator=torch.Generator().manual_seed(1), progress=False)
    assert capsys.readouterr().err == ""
    loud = smooth.certify(x, n0=10, n=50, batch_size=16, generator=torch.Generator().manual_seed(1), progress=True)
    err = capsys.readouterr().err
    assert "smoothing certify: 4 points x 10+50 draws" in err and "/240" in err
    assert all(torch.equal(a, b) for a, b in zip(quiet, loud))
    assert smooth.predict(x, n=20, progress=True).shape == (4,)
    assert "smoothing: 4 points x 20 draws" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'progress'"):
        smooth.certify(x, n0=10, n=50, progress="on")


def test_certified_accuracy_curve_validates_its_arguments():
    classes, radii = torch.tensor([0, 1, -1]), torch.tensor([0.5, 0.2, 0.0])
    assert certified_accuracy_curve(classes, radii, torch.tensor([0, 1, 2], dtype=torch.int32), [0.0, 0.3]).tolist() \
        == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(TypeError, match="integer class indices"):
        certified_accuracy_curve(classes, radii, torch.tensor([0.0, 1, 2]), [0.0])
    with pytest.raises(ValueError, match="negative labels"):
        certified_accuracy_curve(classes, radii, torch.tensor([0, -1, 2]), [0.0])
    with pytest.raises(ValueError, match="one shape"):
        certified_accuracy_curve(classes, radii, torch.tensor([0, 1]), [0.0])
    with pytest.raises(ValueError, match="NaN"):
        certified_accuracy_curve(classes, torch.tensor([0.5, float("nan"), 0.0]), torch.tensor([0, 1, 2]), [0.0])


def _pair(seed=0, d=6, c=4):
    torch.manual_seed(seed)
    return (models.create("mlp", input_shape=(d,), num_classes=c, hidden=(8,)),
            models.create("mlp", input_shape=(d,), num_classes=c, hidden=(8,)))


def test_adaptive_smoothing_refuses_nan_inputs():
    std, rob = _pair()
    x = torch.rand(5, 6)
    x[0, 0] = float("nan")
    for alpha in (0.5, MixingNetwork((6,))):
        with pytest.raises(ValueError, match="'x' of AdaptiveSmoothing contains 1 NaN"):
            AdaptiveSmoothing(std, rob, alpha)(x)


def test_train_mixing_network_validates_inputs_and_labels():
    std, rob = _pair(1)
    model = AdaptiveSmoothing(std, rob, MixingNetwork((6,)))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
    kw = dict(eps=0.05, steps=1, epochs=1, batch_size=8)
    bad = x.clone()
    bad[3, 3] = float("inf")
    with pytest.raises(ValueError, match="'x' of train_mixing_network contains 1 NaN or infinite"):
        train_mixing_network(model, bad, y, **kw)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        train_mixing_network(model, x, y.index_fill(0, torch.tensor([2]), 4), **kw)
    with pytest.raises(TypeError, match="integer class indices"):
        train_mixing_network(model, x, y.float(), **kw)
    with pytest.raises(ValueError, match=r"shape \(16,\)"):
        train_mixing_network(model, x, y[:3], **kw)
    hist = train_mixing_network(model, x, y.to(torch.int32), **kw, generator=torch.Generator().manual_seed(1))
    assert len(hist) == 1


def test_radius_helpers_refuse_nan_and_bad_labels():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    nan = probs.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'robust_probs' of lipschitz_certified_radius contains 1 NaN"):
        lipschitz_certified_radius(nan, torch.tensor([0, 2]), 0.8, 1.0)
    with pytest.raises(ValueError, match=r"'pred' of lipschitz_certified_radius holds labels outside \[0, 3\)"):
        lipschitz_certified_radius(probs, torch.tensor([0, 3]), 0.8, 1.0)
    r32 = lipschitz_certified_radius(probs, torch.tensor([0, 2], dtype=torch.int32), 0.8, 1.0)
    torch.testing.assert_close(r32, lipschitz_certified_radius(probs, torch.tensor([0, 2]), 0.8, 1.0))
    with pytest.raises(ValueError, match="'p_a' of smoothing_certified_radius contains 1 NaN"):
        smoothing_certified_radius(torch.tensor([float("nan"), 0.9]), torch.tensor([0.1, 0.05]), 0.8, 0.25)
    with pytest.raises(ValueError, match="'p_b' of smoothing_certified_radius must hold probabilities"):
        smoothing_certified_radius(torch.tensor([0.8, 0.9]), torch.tensor([1.5, 0.05]), 0.8, 0.25)
