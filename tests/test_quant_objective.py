"""Objective elastic_quant (after EQ-Net) and its weight-distribution regulariser."""

import pytest
import torch
from torch import nn

from robustlab import data, models, shift, training
from robustlab.training import Batch
from robustlab.training.objectives import get
from robustlab.training.objectives._quant import weight_distribution_loss


def test_forward_at_the_drawn_width_is_the_post_training_quantized_model():
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,))
    obj = get("elastic_quant", bits=[3], wdr_weight=0.0)
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=10, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    value, metrics = obj(m.eval(), Batch(x, y, torch.arange(8)), nn.CrossEntropyLoss())
    with torch.no_grad():
        want = nn.functional.cross_entropy(shift.quantize(m, bits=3)(x), y)
    torch.testing.assert_close(value.detach(), want)
    assert float(metrics["bits"]) == 3
    value.backward()  # straight-through: the float weights get gradients
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in m.parameters())


def test_bit_widths_are_drawn_from_the_set_reproducibly():
    obj = get("elastic_quant", bits=[8, 4, 2])
    m = nn.Linear(3, 2)
    draws = []
    for _ in range(2):
        obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=2, num_train=4, generator=torch.Generator().manual_seed(5))
        draws.append([obj._draw() for _ in range(30)])
    assert draws[0] == draws[1] and set(draws[0]) == {8, 4, 2}


def test_weight_distribution_loss():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(200, 100)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(100, 200, generator=g) * 2 - 1)  # uniform: skew 0, kurtosis 1.8
    assert float(weight_distribution_loss(lin).detach()) < 1e-3
    with torch.no_grad():
        lin.weight.copy_(torch.randn(100, 200, generator=g))  # Gaussian: kurtosis 3
    assert float(weight_distribution_loss(lin).detach()) == pytest.approx(1.2 ** 2, rel=0.15)
    with pytest.raises(ValueError, match="no Linear or Conv"):
        weight_distribution_loss(nn.ReLU())


def test_elastic_training_beats_post_training_quantization_at_low_bits():
    d = data.load("digits")
    accs = {}
    for name, objective in (("standard", "standard"), ("elastic", get("elastic_quant", bits=[8, 4, 3, 2]))):
        torch.manual_seed(0)
        m = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(32,))
        training.fit(m, d, objective=objective, epochs=8, batch_size=64, lr=0.1, progress=False, seed=0)
        accs[name] = shift.quantization_error(m.eval(), d, bits=[8, 2]).clean
    assert accs["elastic"][2] > accs["standard"][2] + 0.05, accs
    assert accs["elastic"][8] > 0.85, accs
