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


def test_elastic_granularity_draws_both_schemes_and_each_matches_post_training_quantization():
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,))
    obj = get("elastic_quant", bits=[3, 2], scheme=["per_channel", "per_tensor"], wdr_weight=0.0)
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=10, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    seen = set()
    for _ in range(40):
        gen_state = obj.generator.get_state()
        bits, scheme = obj._draw(), obj._pick(obj.schemes)
        obj.generator.set_state(gen_state)  # replay the same draw inside the step
        value, metrics = obj(m.eval(), Batch(x, y, torch.arange(8)), nn.CrossEntropyLoss())
        assert float(metrics["bits"]) == bits and float(metrics["per_tensor"]) == float(scheme == "per_tensor")
        with torch.no_grad():
            want = nn.functional.cross_entropy(shift.quantize(m, bits=bits, scheme=scheme)(x), y)
        torch.testing.assert_close(value.detach(), want)
        seen.add((bits, scheme))
    assert seen == {(b, s) for b in (3, 2) for s in ("per_channel", "per_tensor")}
    with pytest.raises(ValueError, match="'scheme'"):
        get("elastic_quant", scheme=[])
    with pytest.raises(ValueError, match="'scheme'"):
        get("elastic_quant", scheme=["per_channel", "per_row"])


def test_a_single_scheme_keeps_the_bit_width_draws_unchanged():
    m = nn.Linear(3, 2)
    draws = []
    for scheme in ("per_channel", ["per_channel"]):
        obj = get("elastic_quant", bits=[8, 4, 2], scheme=scheme)
        obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=2, num_train=4, generator=torch.Generator().manual_seed(5))
        batch = Batch(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), torch.arange(4))
        draws.append([float(obj(m, batch, nn.CrossEntropyLoss())[1]["bits"]) for _ in range(20)])
    assert draws[0] == draws[1]
    assert obj.passes_per_step == 1.0


def test_guidance_pulls_the_drawn_width_towards_its_wider_neighbour():
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    obj = get("elastic_quant", bits=[8, 4, 2], guidance_weight=2.0, wdr_weight=0.0)
    assert obj.passes_per_step == 2.0 and obj.wider(2) == 4 and obj.wider(4) == 8 and obj.wider(8) is None
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=3, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    ce = nn.CrossEntropyLoss()
    for _ in range(12):
        state = obj.generator.get_state()
        b = obj._draw()
        obj.generator.set_state(state)
        value, metrics = obj(m, Batch(x, y, torch.arange(8)), ce)
        with torch.no_grad():
            low = shift.quantize(m, bits=b)(x)
            if b == 8:
                want = ce(low, y)
                assert "guidance" not in metrics
            else:
                high = shift.quantize(m, bits=obj.wider(b))(x)
                kl = nn.functional.kl_div(low.log_softmax(1), high.log_softmax(1), log_target=True, reduction="batchmean")
                want = ce(low, y) + ce(high, y) + 2.0 * kl
                torch.testing.assert_close(metrics["guidance"], kl)
        torch.testing.assert_close(value.detach(), want)
    with pytest.raises(ValueError, match="'guidance_weight'"):
        get("elastic_quant", guidance_weight=-1.0)
