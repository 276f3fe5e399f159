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
    # the authors' weights (skew_rate 1.0, kurt_rate 0.015): 0.015 * (3 - 1.8)^2
    assert float(weight_distribution_loss(lin).detach()) == pytest.approx(0.015 * 1.2 ** 2, rel=0.15)
    assert float(weight_distribution_loss(lin, kurtosis_weight=1.0).detach()) == pytest.approx(1.2 ** 2, rel=0.15)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(100, 200, generator=g).pow(4))  # skewed: skewness ~ 1.5
    w = lin.weight.detach().flatten()
    z = (w - w.mean()) / w.std()
    skew, kurt = float(z.pow(3).mean()), float(z.pow(4).mean())
    assert skew > 1.0
    assert float(weight_distribution_loss(lin).detach()) == pytest.approx(skew ** 2 + 0.015 * (kurt - 1.8) ** 2)
    two = nn.Sequential(lin, nn.Linear(200, 3))
    want = (weight_distribution_loss(lin) + weight_distribution_loss(two[1])) / 2  # a mean over the layers
    torch.testing.assert_close(weight_distribution_loss(two), want)
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


def test_guidance_is_the_sandwich_chain_widest_drawn_narrowest():
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    obj = get("elastic_quant", bits=[8, 4, 2], guidance_weight=2.0, wdr_weight=0.0)
    assert obj.passes_per_step == 3.0
    assert obj.chain(4) == [8, 4, 2] and obj.chain(8) == [8, 2] and obj.chain(2) == [8, 2]
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=3, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    ce = nn.CrossEntropyLoss()

    def kl(p, q):  # KL(p_prev || q), both given as logits
        return nn.functional.kl_div(q.log_softmax(1), p.log_softmax(1), log_target=True, reduction="batchmean")

    seen = set()
    for _ in range(15):
        state = obj.generator.get_state()
        b = obj._draw()
        obj.generator.set_state(state)
        value, metrics = obj(m, Batch(x, y, torch.arange(8)), ce)
        with torch.no_grad():
            out = {w: shift.quantize(m, bits=w)(x) for w in (8, 4, 2)}
            chain = [8, 4, 2] if b == 4 else [8, 2]
            want = ce(out[8], y)
            total_kl = 0.0
            for prev, cur in zip(chain, chain[1:]):
                want = want + ce(out[cur], y) + 2.0 * kl(out[prev], out[cur])
                total_kl = total_kl + kl(out[prev], out[cur])
        torch.testing.assert_close(value.detach(), want / len(chain))  # the mean over the chain
        torch.testing.assert_close(metrics["guidance"], total_kl)
        assert float(metrics["acc"]) == float((out[b].argmax(1) == y).float().mean())
        seen.add(b)
    assert seen == {8, 4, 2}
    with pytest.raises(ValueError, match="'guidance_weight'"):
        get("elastic_quant", guidance_weight=-1.0)


def test_elastic_symmetry_draws_both_and_each_matches_post_training_quantization():
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,))
    obj = get("elastic_quant", bits=[3, 2], symmetry=["symmetric", "asymmetric"], wdr_weight=0.0)
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=10, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    seen = set()
    for _ in range(40):
        state = obj.generator.get_state()
        bits, _, sym = obj._draw(), obj._pick(obj.schemes), obj._pick(obj.symmetries)
        obj.generator.set_state(state)
        value, metrics = obj(m.eval(), Batch(x, y, torch.arange(8)), nn.CrossEntropyLoss())
        assert float(metrics["asymmetric"]) == float(sym == "asymmetric") and "per_tensor" not in metrics
        with torch.no_grad():
            want = nn.functional.cross_entropy(shift.quantize(m, bits=bits, symmetry=sym)(x), y)
        torch.testing.assert_close(value.detach(), want)
        seen.add((bits, sym))
    assert seen == {(b, s) for b in (3, 2) for s in ("symmetric", "asymmetric")}
    for bad in ([], ["symmetric", "affine"], 3):
        with pytest.raises(ValueError, match="'symmetry'"):
            get("elastic_quant", symmetry=bad)


def test_a_single_symmetry_keeps_the_draws_unchanged():
    m = nn.Linear(3, 2)
    draws = []
    for symmetry in ("symmetric", ["symmetric"]):
        obj = get("elastic_quant", bits=[8, 4, 2], scheme=["per_channel", "per_tensor"], symmetry=symmetry)
        obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=2, num_train=4, generator=torch.Generator().manual_seed(5))
        batch = Batch(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), torch.arange(4))
        draws.append([(float(r["bits"]), float(r["per_tensor"])) for r in (obj(m, batch, nn.CrossEntropyLoss())[1]
                                                                            for _ in range(20))])
    assert draws[0] == draws[1]


def test_layerwise_draws_one_width_per_layer():
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,))
    obj = get("elastic_quant", bits=[8, 3, 2], layerwise=True, wdr_weight=0.0)
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=10, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    names = shift.quantizable_layers(m)
    mixed = 0
    for _ in range(10):
        state = obj.generator.get_state()
        widths = obj._draw_layers(names)
        obj.generator.set_state(state)
        value, metrics = obj(m.eval(), Batch(x, y, torch.arange(8)), nn.CrossEntropyLoss())
        with torch.no_grad():
            want = nn.functional.cross_entropy(shift.quantize(m, bits=widths)(x), y)
        torch.testing.assert_close(value.detach(), want)
        assert float(metrics["bits"]) == pytest.approx(sum(widths.values()) / len(widths))
        mixed += len(set(widths.values())) > 1
    assert mixed >= 5
    with pytest.raises(ValueError, match="'layerwise'"):
        get("elastic_quant", layerwise="yes")


def test_layerwise_with_guidance_runs_the_chain_around_the_drawn_mix():
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    obj = get("elastic_quant", bits=[8, 4, 2], layerwise=True, guidance_weight=1.0, wdr_weight=0.0)
    obj.setup(model=m, epochs=1, steps_per_epoch=1, num_classes=3, num_train=8, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    ce = nn.CrossEntropyLoss()
    state = obj.generator.get_state()
    widths = obj._draw_layers(shift.quantizable_layers(m))
    obj.generator.set_state(state)
    value, metrics = obj(m, Batch(x, y, torch.arange(8)), ce)
    assert obj.chain(widths) == [8, widths, 2]
    with torch.no_grad():
        out = [shift.quantize(m, bits=b)(x) for b in (8, widths, 2)]
        kl = [nn.functional.kl_div(q.log_softmax(1), p.log_softmax(1), log_target=True, reduction="batchmean")
              for p, q in zip(out, out[1:])]
        want = (ce(out[0], y) + ce(out[1], y) + kl[0] + ce(out[2], y) + kl[1]) / 3
    torch.testing.assert_close(value.detach(), want)
    value.backward()
    assert all(p.grad is not None for p in m.parameters())
