"""shift.quantize / shift.quantization_error: post-training fake quantization."""

import pytest
import torch
from torch import nn

from robustlab import models, shift
from robustlab._validation import InvalidParameterError


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,)).eval()


def _qlayers(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if isinstance(x, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("scheme", ["per_channel", "per_tensor"])
def test_weights_take_at_most_2_pow_bits_values(bits, scheme):
    m = _lenet()
    q = shift.quantize(m, bits=bits, scheme=scheme)
    for layer in _qlayers(q):
        w = layer.weight.detach()
        groups = w.flatten(1) if scheme == "per_channel" else w.flatten()[None]
        for row in groups:
            assert len(torch.unique(row)) <= 2 ** bits - 1  # symmetric grid: 2^b - 1 levels
        if scheme == "per_tensor":  # one scale for the whole layer: every value is a multiple of it
            s = w.abs().max() / (2 ** (bits - 1) - 1)
            torch.testing.assert_close(w / s, torch.round(w / s), atol=1e-4, rtol=0)
    # the input model is unchanged, biases stay float
    for a, b in zip(_qlayers(m), _qlayers(q)):
        assert not torch.equal(a.weight, b.weight) or bits == 8
        assert torch.equal(a.bias, b.bias)
    assert q.robustlab_quantization == {"bits": bits, "scheme": scheme, "symmetry": "symmetric", "activations": False}


def test_per_channel_keeps_small_channels():
    """Per-channel scales keep a channel of tiny weights alive where one per-tensor scale zeroes it."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.5, 0.25, 0.1], [1e-3, -2e-3, 5e-4, 0.0]]))
    pc = shift.quantize(lin, bits=3, scheme="per_channel").weight.detach()
    pt = shift.quantize(lin, bits=3, scheme="per_tensor").weight.detach()
    assert bool((pt[1] == 0).all()) and bool((pc[1] != 0).any())
    assert float(pc[1].abs().max()) == pytest.approx(2e-3)


def test_8_bit_equals_float_within_tolerance(trained_digits_mlp):
    model, d = trained_digits_mlp
    x = d.x_test[:200]
    for act in (False, True):
        q = shift.quantize(model, bits=8, activations=act, calibration=d.x_train[:256] if act else None)
        with torch.no_grad():
            a, b = model(x), q(x)
        assert float((a - b).abs().max()) <= 0.02 * float(a.abs().max())
        assert float((a.argmax(1) == b.argmax(1)).float().mean()) >= 0.99


def test_accuracy_per_bit_width(trained_digits_mlp):
    model, d = trained_digits_mlp
    res = shift.quantization_error(model, d, bits=[8, 4, 2], n_test=300)
    assert list(res.clean) == [8, 4, 2] and res.num_examples == 300 and res.robust is None
    assert abs(res.clean[8] - res.float_clean) <= 0.01
    assert res.clean[2] < res.clean[8]  # 2-bit weights of a float-trained model lose accuracy
    assert "float" in res.table() and res.to_dict()["clean"]["4"] == res.clean[4]


def test_robust_accuracy_with_an_attack(trained_digits_mlp):
    model, d = trained_digits_mlp
    res = shift.quantization_error(model, d, bits=[8, 3], n_test=100, attack="fgsm", eps=0.1)
    assert res.robust is not None and set(res.robust) == {8, 3}
    for b in (8, 3):
        assert 0 <= res.robust[b] <= res.clean[b] + 1e-9
    assert res.float_robust is not None and res.float_robust < res.float_clean


def test_activation_quantization_uses_the_calibration_range():
    lin = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    calib = torch.tensor([[0.0, 0.5, 1.0]])
    q = shift.quantize(lin, bits=2, activations=True, calibration=calib)  # inputs >= 0: levels {0, 1/3, 2/3, 1}
    x = torch.tensor([[0.2, 0.9, 5.0]])
    assert float(q(x).detach()) == pytest.approx(1 / 3 + 1.0 + 1.0)  # 0.2 -> 1/3, 0.9 -> 1, 5 clipped to 1
    x.requires_grad_(True)
    q(x).sum().backward()  # straight-through: the input still gets a gradient
    assert x.grad is not None and bool((x.grad != 0).all())


@pytest.mark.parametrize("kw, text", [
    ({"bits": 1}, "'bits' parameter of quantize must be an int in [2, 16]"),
    ({"bits": 33}, "'bits'"), ({"bits": 4.0}, "'bits'"), ({"bits": True}, "'bits'"),
    ({"scheme": "per_row"}, "'scheme' parameter of quantize must be a str among {'per_channel', 'per_tensor'}"),
    ({"activations": "yes"}, "'activations'"),
    ({"activations": True}, "'calibration' parameter of quantize must be a floating-point batch"),
    ({"calibration": torch.zeros(2, 1, 8, 8)}, "only used with activations=True"),
])
def test_bad_arguments_raise(kw, text):
    with pytest.raises(InvalidParameterError, match=text.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{")
                       .replace("}", r"\}")):
        shift.quantize(_lenet(), **kw)


def test_bad_arguments_of_quantization_error(trained_digits_mlp):
    model, d = trained_digits_mlp
    for kw, text in (({"bits": []}, "non-empty list"), ({"bits": 8}, "non-empty list"), ({"bits": [8, 1]}, "'bits'"),
                     ({"scheme": "x"}, "'scheme'"), ({"attack": "fgsm"}, "'eps'")):
        with pytest.raises(InvalidParameterError, match=text):
            shift.quantization_error(model, d, **kw)
    with pytest.raises(InvalidParameterError, match="no Linear or Conv layer"):
        shift.quantize(nn.ReLU())
    with pytest.raises(TypeError, match="'model'"):
        shift.quantize("runs/x")  # type: ignore[arg-type]
