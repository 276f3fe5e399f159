"""Bench evaluation ``quantization``: clean and robust accuracy per bit-width, declared with its metrics."""

from __future__ import annotations

import pytest

from robustlab import data, pipeline, shift
from robustlab.bench.evaluations import resolve_metric


def _spec(**ev):
    return {"data": {"name": "digits", "n_train": 400, "n_test": 150}, "model": {"name": "linear"},
            "train": {"epochs": 3}, "seed": 0, "evaluations": [{"name": "quantization", "bits": [8, 2], "n_test": 60, **ev}]}


def test_robust_accuracy_per_bit_width_matches_quantization_error():
    res = pipeline.run(_spec(attack="fgsm", eps=0.1))
    got = {n: v for n, v, _ in res.metrics if n.startswith("quant_")}
    prefix = "quant_robust_acc/fgsm/eps=0.1"
    assert set(got) == {"quant_acc/bits=8", "quant_acc/bits=2", "quant_acc/worst", f"{prefix}/bits=8",
                        f"{prefix}/bits=2", f"{prefix}/float", f"{prefix}/worst"}
    want = shift.quantization_error(res.model.eval(), data.load("digits").subset(n_train=400, n_test=150), bits=[8, 2],
                                    attack="fgsm", eps=0.1, n_test=60)
    assert got[f"{prefix}/bits=2"] == pytest.approx(want.robust[2]) and got[f"{prefix}/bits=8"] == pytest.approx(want.robust[8])
    assert got[f"{prefix}/float"] == pytest.approx(want.float_robust)
    assert got[f"{prefix}/worst"] == min(got[f"{prefix}/bits=8"], got[f"{prefix}/bits=2"])
    assert all(got[f"{prefix}/bits={b}"] <= got[f"quant_acc/bits={b}"] + 1e-9 for b in (8, 2))
    for name in got:  # every name the evaluation writes is one of its declared metrics
        assert resolve_metric(name).evaluation == "quantization", name


def test_clean_only_and_bad_attack():
    res = pipeline.run(_spec(attack=None))
    assert not [n for n, _, _ in res.metrics if n.startswith("quant_robust_acc/")]
    with pytest.raises(ValueError, match="attack"):
        pipeline.run(_spec(attack="no_such_attack"))
    from robustlab._constraints import validate_params
    from robustlab.bench._eval_quant import Quantization

    for bad in ({"eps": 0.0}, {"attack": "nope"}, {"norm": "l1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            validate_params(Quantization.constraints, {**Quantization.defaults, **bad}, owner="evaluation 'quantization'")
    assert validate_params(Quantization.constraints, {**Quantization.defaults, "attack": None}, owner="q")["attack"] is None


def test_symmetry_reaches_quantization_error():
    res = pipeline.run(_spec(attack=None, symmetry="asymmetric"))
    got = {n: v for n, v, _ in res.metrics if n.startswith("quant_acc/")}
    d = data.load("digits").subset(n_train=400, n_test=150)
    want = shift.quantization_error(res.model.eval(), d, bits=[8, 2], symmetry="asymmetric", n_test=60)
    sym = shift.quantization_error(res.model.eval(), d, bits=[8, 2], n_test=60)
    assert got["quant_acc/bits=2"] == pytest.approx(want.clean[2])
    assert got["quant_acc/bits=2"] != pytest.approx(sym.clean[2])  # the two grids differ on this model
    with pytest.raises(ValueError, match="symmetry"):
        pipeline.run(_spec(attack=None, symmetry="affine"))
