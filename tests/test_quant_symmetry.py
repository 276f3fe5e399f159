"""Elastic symmetry (after EQ-Net): the affine grid with a zero point beside the symmetric one, and per-layer
bit-widths (mixed precision) in ``shift.quantize``."""

import re

import pytest
import torch
from torch import nn

from robustlab import models, shift
from robustlab._validation import InvalidParameterError


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return models.create("lenet", input_shape=(1, 8, 8), num_classes=10, channels=(4, 8), hidden=(16,)).eval()


def test_asymmetric_grid_closed_form():
    # row 0: min -1, max 2 at 2 bits: s = 3/3 = 1, z = 1, grid {-1, 0, 1, 2}
    # row 1: all positive: the range is [0, max] (0 stays on the grid), s = 3/3, z = 0, grid {0, 1, 2, 3}
    w = torch.tensor([[-1.0, -0.4, 0.3, 0.6, 2.0], [0.5, 1.4, 1.6, 2.2, 3.0]])
    q = shift.fake_quantize(w, 2, symmetry="asymmetric", ste=False)
    torch.testing.assert_close(q, torch.tensor([[-1.0, 0.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 2.0, 3.0]]))
    # per tensor: one grid over [-1, 3], s = 4/3, z = round(0.75) = 1
    s = 4 / 3
    qt = shift.fake_quantize(w, 2, scheme="per_tensor", symmetry="asymmetric", ste=False)
    want = (torch.clamp(torch.round(w / s) + 1, 0, 3) - 1) * s
    torch.testing.assert_close(qt, want)
    torch.testing.assert_close(torch.unique(qt), torch.tensor([-s, 0.0, s, 2 * s]))


def test_symmetric_grid_closed_form_is_unchanged():
    w = torch.tensor([[-1.0, -0.4, 0.3, 0.6, 2.0]])  # s = 2 / 1 at 2 bits: {-2, 0, 2}
    torch.testing.assert_close(shift.fake_quantize(w, 2, ste=False), torch.tensor([[0.0, 0.0, 0.0, 0.0, 2.0]]))
    s = 2.0 / 3  # 3 bits: s = max|w| / 3
    torch.testing.assert_close(shift.fake_quantize(w, 3, ste=False), torch.round(w / s).clamp(-3, 3) * s)


def test_zero_point_rounding_moves_the_range_ends_by_less_than_half_a_step():
    # [-0.4, 1.0] at 2 bits: s = 1.4/3, -min/s = 0.857 -> z = 1, so the grid is s*{-1, 0, 1, 2}:
    # 0 is exact, -0.4 goes to -s = -0.467 and 1.0 is clipped to 2s = 0.933
    w = torch.tensor([-0.4, 0.0, 1.0])
    s = 1.4 / 3
    q = shift.fake_quantize(w, 2, symmetry="asymmetric", ste=False)
    torch.testing.assert_close(q, torch.tensor([-s, 0.0, 2 * s]))
    assert float(q[1]) == 0.0
    assert float((q - w).abs().max()) < s / 2 + 1e-6


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_asymmetric_uses_2_pow_b_levels_symmetric_2_pow_b_minus_1(bits):
    w = torch.linspace(-3.0, 3.0, 4001)[None]  # dense enough to hit every level
    assert len(torch.unique(shift.fake_quantize(w, bits, symmetry="symmetric", ste=False))) == 2 ** bits - 1
    assert len(torch.unique(shift.fake_quantize(w, bits, symmetry="asymmetric", ste=False))) == 2 ** bits
    w = torch.linspace(-1.0, 3.0, 4001)[None]
    sym = shift.fake_quantize(w, bits, symmetry="symmetric", ste=False)
    asym = shift.fake_quantize(w, bits, symmetry="asymmetric", ste=False)
    assert len(torch.unique(asym)) == 2 ** bits
    # the affine grid fits a skewed range better (its step is ~ (max - min) / 2^b instead of 2 max|w| / 2^b)
    assert float((asym - w).abs().max()) < float((sym - w).abs().max())


def test_straight_through_gradient():
    w = torch.randn(3, 5, requires_grad=True)
    for symmetry in ("symmetric", "asymmetric"):
        q = shift.fake_quantize(w, 3, symmetry=symmetry)
        (q * torch.arange(15.0).view(3, 5)).sum().backward()
        torch.testing.assert_close(w.grad, torch.arange(15.0).view(3, 5))
        w.grad = None


def test_quantize_and_quantization_error_take_symmetry(trained_digits_mlp):
    m = _lenet()
    q = shift.quantize(m, bits=3, symmetry="asymmetric")
    assert q.robustlab_quantization["symmetry"] == "asymmetric"
    for a, b in zip((x for x in m.modules() if isinstance(x, (nn.Linear, nn.Conv2d))),
                    (x for x in q.modules() if isinstance(x, (nn.Linear, nn.Conv2d)))):
        torch.testing.assert_close(b.weight, shift.fake_quantize(a.weight, 3, symmetry="asymmetric", ste=False))
        for row in b.weight.detach().flatten(1):
            assert len(torch.unique(row)) <= 8
    model, d = trained_digits_mlp
    res = shift.quantization_error(model, d, bits=[8, 2], symmetry="asymmetric", n_test=200)
    assert res.meta["symmetry"] == "asymmetric" and "asymmetric" in res.table()
    assert abs(res.clean[8] - res.float_clean) <= 0.01
    with pytest.raises(InvalidParameterError, match="'symmetry' parameter of quantize must be a str among"):
        shift.quantize(m, symmetry="affine")
    with pytest.raises(InvalidParameterError, match="'symmetry' parameter of quantization_error"):
        shift.quantization_error(model, d, symmetry=True)


def test_asymmetric_activation_grid_on_signed_inputs():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0]]))
    calib = torch.tensor([[-1.0, 0.0], [2.0, 0.0]])  # signed range [-1, 2]
    sym = shift.quantize(lin, bits=8, activations=True, calibration=calib)  # symmetric: [-2, 2], 255 levels
    asym = shift.quantize(lin, bits=2, activations=True, calibration=calib, symmetry="asymmetric")  # {-1, 0, 1, 2}
    x = torch.tensor([[-0.7, 0.0], [0.4, 0.0], [1.6, 0.0], [5.0, 0.0]])
    with torch.no_grad():
        torch.testing.assert_close(asym(x).flatten(), torch.tensor([-1.0, 0.0, 2.0, 2.0]))
        assert float((sym(x[:3]) - x[:3, :1]).abs().max()) < 2 / 127
    # non-negative inputs keep the unsigned grid whatever the symmetry
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    a = shift.quantize(lin, bits=2, activations=True, calibration=pos, symmetry="asymmetric")
    b = shift.quantize(lin, bits=2, activations=True, calibration=pos)
    xx = torch.rand(6, 2)
    with torch.no_grad():
        torch.testing.assert_close(a(xx), b(xx))


def test_per_layer_bits_dict_and_list():
    m = _lenet()
    names = shift.quantizable_layers(m)
    assert names == ["0", "3", "7", "9"]  # conv, conv, linear, linear (a Sequential)
    widths = [8, 2, 4, 3]
    q_list = shift.quantize(m, bits=widths)
    q_dict = shift.quantize(m, bits=dict(zip(names, widths)))
    mods = dict(m.named_modules())
    for name, b in zip(names, widths):
        want = shift.fake_quantize(mods[name].weight, b, ste=False)
        torch.testing.assert_close(dict(q_list.named_modules())[name].weight, want)
        torch.testing.assert_close(dict(q_dict.named_modules())[name].weight, want)
    assert q_list.robustlab_quantization["bits"] == dict(zip(names, widths))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(shift.quantize(m, bits=[3] * 4)(x), shift.quantize(m, bits=3)(x))


def test_bad_per_layer_bits():
    m = _lenet()
    names = shift.quantizable_layers(m)
    for bits, text in (([8, 4], "one bit-width per Conv/Linear layer"), ([8, 4, 1, 4], r"bits\[2\]"),
                       ({names[0]: 4}, "Missing"), ({**dict.fromkeys(names, 4), "nope": 4}, r"unknown \['nope'\]"),
                       ({**dict.fromkeys(names, 4), names[1]: 17}, re.escape("'bits['3']' parameter of quantize must be an int in [2, 16]. Got 17"))):
        with pytest.raises(InvalidParameterError, match=text):
            shift.quantize(m, bits=bits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_low_precision_weights_and_all_zero_rows(dtype):
    w = torch.randn(4, 6, dtype=dtype, requires_grad=True)
    for symmetry in ("symmetric", "asymmetric"):
        for scheme in ("per_channel", "per_tensor"):
            q = shift.fake_quantize(w, 3, scheme=scheme, symmetry=symmetry)
            q.sum().backward()
            assert q.dtype == dtype and w.grad.dtype == dtype and bool(torch.isfinite(q).all())
            w.grad = None
    zero = torch.zeros(3, 4, dtype=dtype)  # a zero range: no division by zero, zeros stay zeros
    assert bool((shift.fake_quantize(zero, 2, symmetry="asymmetric", ste=False) == 0).all())
    assert bool((shift.fake_quantize(zero, 2, ste=False) == 0).all())
