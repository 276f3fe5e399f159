"""shift.mixed_precision_search (EQ-Net's genetic search over per-layer bit-widths) and shift.average_bits."""

import pytest
import torch
from torch import nn

from robustlab import data, shift
from robustlab._validation import InvalidParameterError


def _toy() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 3-layer MLP whose first layer (256 weights) is far more sensitive to rounding than the others
    (one large weight per row: at few bits its small weights round to 0), labelled by its float predictions."""
    g = torch.Generator().manual_seed(0)
    a, b, c = nn.Linear(8, 32), nn.Linear(32, 64), nn.Linear(64, 4)
    with torch.no_grad():
        a.weight.copy_(torch.rand(32, 8, generator=g) * 2 - 1)
        a.weight[:, 0] *= 20
        b.weight.copy_((torch.rand(64, 32, generator=g) * 2 - 1) / 32 ** 0.5)
        c.weight.copy_((torch.rand(4, 64, generator=g) * 2 - 1) / 8)
        for layer in (a, b, c):
            layer.bias.zero_()
    m = nn.Sequential(a, nn.ReLU(), b, nn.ReLU(), c).eval()
    x = torch.randn(1000, 8, generator=g)
    x[:, 0] *= 0.05
    with torch.no_grad():
        y = m(x).argmax(1)
    return m, x, y


def _acc(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((m(x).argmax(1) == y).double().mean())


def test_average_bits_is_weighted_by_layer_size():
    m, _, _ = _toy()  # 256, 2048 and 256 weights
    assert shift.average_bits(m, 4) == 4.0
    assert shift.average_bits(m, [8, 2, 4]) == pytest.approx((8 * 256 + 2 * 2048 + 4 * 256) / 2560)
    assert shift.average_bits(m, {"0": 8, "2": 2, "4": 4}) == shift.average_bits(m, [8, 2, 4])


def test_search_respects_the_budget_and_beats_uniform_where_one_layer_is_sensitive():
    m, x, y = _toy()
    res = shift.mixed_precision_search(m, (x, y), budget=3.0, bits=[8, 4, 3, 2], population=16, generations=8, seed=0)
    assert res.average_bits <= 3.0 and shift.average_bits(m, res.bits) == pytest.approx(res.average_bits)
    assert res.uniform_at_budget == 3 and set(res.uniform) == {8, 4, 3, 2}
    assert res.uniform[3] == pytest.approx(_acc(shift.quantize(m, bits=3), x, y))
    # the reported accuracy is the post-training-quantized model's at that assignment
    assert res.accuracy == pytest.approx(_acc(shift.quantize(m, bits=res.bits), x, y))
    assert res.bits["0"] > res.bits["2"]  # the sensitive small layer gets more bits than the large robust one
    assert res.accuracy > res.uniform[3] + 0.1, res.table()
    assert res.history == sorted(res.history) and res.history[-1] == res.accuracy
    assert "uniform 3-bit" in res.table() and res.to_dict()["bits"] == res.bits


def test_search_is_reproducible_with_a_seed():
    m, x, y = _toy()
    kw = {"budget": 3.5, "bits": [8, 6, 4, 3, 2], "population": 8, "generations": 4}
    a = shift.mixed_precision_search(m, (x, y), seed=3, **kw)
    b = shift.mixed_precision_search(m, (x, y), seed=3, **kw)
    assert a.to_dict() == b.to_dict()
    assert a.average_bits <= 3.5


def test_never_below_the_uniform_assignment_at_the_budget():
    m, x, y = _toy()
    for budget in (2.0, 2.5, 4.0):
        res = shift.mixed_precision_search(m, (x, y), budget=budget, bits=[8, 4, 2], population=4, generations=1)
        assert res.accuracy >= res.uniform[res.uniform_at_budget] and res.average_bits <= budget
    res = shift.mixed_precision_search(m, (x, y), budget=2.0, bits=[8, 4, 2], population=4, generations=2)
    assert set(res.bits.values()) == {2}  # the only assignment within 2 bits


def test_data_set_uses_its_last_training_examples():
    d = data.load("gaussians", num_classes=3, dim=6, n_train=200, n_test=20, seed=0)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    res = shift.mixed_precision_search(m, d, budget=4.0, bits=[8, 4, 2], population=4, generations=1, n_holdout=50)
    assert res.meta["num_holdout"] == 50
    assert res.uniform[8] == pytest.approx(_acc(shift.quantize(m, bits=8), d.x_train[-50:], d.y_train[-50:]))


@pytest.mark.parametrize("kw, text", [
    ({"budget": 1.5}, "'budget' parameter of mixed_precision_search must be a float in"),
    ({"budget": "3"}, "'budget'"),
    ({"bits": []}, "non-empty list"), ({"bits": 4}, "non-empty list"), ({"bits": [8, 1]}, "'bits'"),
    ({"population": 1}, "'population'"), ({"generations": -1}, "'generations'"),
    ({"parent_ratio": 0.0}, "'parent_ratio'"), ({"mutate_prob": 2.0}, "'mutate_prob'"),
    ({"symmetry": "affine"}, "'symmetry'"), ({"scheme": "per_row"}, "'scheme'"), ({"progress": 1}, "'progress'"),
])
def test_bad_arguments(kw, text):
    m, x, y = _toy()
    with pytest.raises(InvalidParameterError, match=text):
        shift.mixed_precision_search(m, (x, y), **{"budget": 3.0, **kw})


def test_bad_data_and_model():
    m, x, y = _toy()
    with pytest.raises(InvalidParameterError, match="'data' parameter of mixed_precision_search"):
        shift.mixed_precision_search(m, x, budget=3.0)
    with pytest.raises(InvalidParameterError, match="held-out examples"):
        shift.mixed_precision_search(m, (x, y[:10]), budget=3.0)
    with pytest.raises(InvalidParameterError, match="no Linear or Conv"):
        shift.mixed_precision_search(nn.ReLU(), (x, y), budget=3.0)
    with pytest.raises(TypeError, match="'model'"):
        shift.mixed_precision_search("m", (x, y), budget=3.0)  # type: ignore[arg-type]
