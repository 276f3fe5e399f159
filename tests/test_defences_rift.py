"""Robust critical fine-tuning: criticality scan, module choice, validation-only interpolation."""

import copy
from dataclasses import replace

import pytest
import torch

from robustlab import data, models, training
from robustlab.defences import module_robust_criticality, robust_critical_fine_tuning


@pytest.fixture(scope="module")
def robust_digits():
    d = data.load("digits")
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(64, 64))
    training.fit(m, d, objective="pgd_at", objective_kw={"eps": 0.2, "steps": 5}, epochs=20, batch_size=64,
                 lr=0.1, progress=False, seed=0)
    return d, m.eval()


def test_criticality_is_nonnegative_and_grows_with_the_weight_ball(robust_digits):
    d, m = robust_digits
    before = copy.deepcopy(m.state_dict())
    x, y = d.x_train[:256], d.y_train[:256]
    small = module_robust_criticality(m, x, y, eps=0.2, steps=5, weight_ratio=0.01, epochs=2,
                                      generator=torch.Generator().manual_seed(0))
    large = module_robust_criticality(m, x, y, eps=0.2, steps=5, weight_ratio=0.3, epochs=2,
                                      generator=torch.Generator().manual_seed(0))
    assert list(small) == ["1", "3", "5"]
    for k in small:
        assert 0 <= small[k] < large[k]
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # the model is not modified
    with pytest.raises(ValueError, match="unknown modules"):
        module_robust_criticality(m, x, y, eps=0.2, modules=["7"])


def test_rift_chooses_on_validation_and_never_reads_the_test_split(robust_digits):
    d, m = robust_digits
    kw = dict(eps=0.2, steps=5, lr=0.01, epochs=4, mrc_examples=256, mrc_epochs=2, interpolation=6, seed=0)
    res = robust_critical_fine_tuning(m, d, **kw)
    assert res.module == min(res.criticality, key=res.criticality.get)
    assert [r["alpha"] for r in res.records] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    chosen = next(r for r in res.records if r["alpha"] == res.alpha)
    assert chosen["val_robust_acc"] >= res.records[0]["val_robust_acc"]
    assert chosen["val_acc"] == max(r["val_acc"] for r in res.records
                                    if r["val_robust_acc"] >= res.records[0]["val_robust_acc"])
    # the chosen weights are the interpolation, only the fine-tuned module moved
    base = m.state_dict()
    for k, v in res.model.state_dict().items():
        if not k.startswith(res.module + "."):
            assert torch.equal(v, base[k]), k
    # a different test split changes nothing: selection never looks at it
    g = torch.Generator().manual_seed(5)
    other = replace(d, x_test=torch.rand(d.x_test.shape, generator=g), y_test=d.y_test.flip(0))
    res2 = robust_critical_fine_tuning(m, other, **kw)
    assert res2.alpha == res.alpha and res2.records == res.records and res2.module == res.module
    # a fixed module is honoured
    res3 = robust_critical_fine_tuning(m, d, **{**kw, "interpolation": 2}, module="1")
    assert res3.module == "1"
    with pytest.raises(ValueError, match="unknown module"):
        robust_critical_fine_tuning(m, d, **kw, module="9")
