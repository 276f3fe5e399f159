"""evaluate.*: inputs, labels, output width, probability and no-gradient flags, x_adv, budgets, suites, progress."""

from __future__ import annotations

import io
import json
import sys
import warnings

import pytest
import torch
from torch import nn

from robustlab import attacks, evaluate
from robustlab._validation import InvalidParameterError
from robustlab.testing._attacks import GraphCuttingModel


@pytest.fixture(scope="module")
def digits_model(trained_digits_mlp):
    m, d = trained_digits_mlp
    return m, d.subset(n_test=60)


def _entries(m, x, y):
    """Every public evaluate entry point, called cheaply on (x, y)."""
    return {
        "robust_accuracy": lambda: evaluate.robust_accuracy(m, (x, y), "fgsm", eps=0.1),
        "robustness_curve": lambda: evaluate.robustness_curve(m, (x, y), eps_grid=[0.05, 0.1], attack="fgsm",
                                                              bootstrap=0),
        "sanity_checks": lambda: evaluate.sanity_checks(m, (x, y), eps=0.1, steps=(1, 2), n_queries=2),
        "minimal_epsilon": lambda: evaluate.minimal_epsilon(m, x, y, eps_hi=0.2, bisection_steps=1, steps=1),
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_every_entry_point_rejects_nonfinite_inputs(digits_model, bad):
    m, d = digits_model
    x, y = d.x_test[:8].clone(), d.y_test[:8]
    x[3, 0, 2, 2] = bad
    for name, call in _entries(m, x, y).items():
        with pytest.raises(ValueError, match=f"'x' of {name} contains 1 NaN"):
            call()


def test_every_entry_point_rejects_out_of_range_labels(digits_model):
    m, d = digits_model
    x = d.x_test[:8]
    for bad in (torch.full((8,), 10), torch.tensor([0, 1, 2, -1, 4, 5, 6, 7])):
        for name, call in _entries(m, x, bad).items():
            with pytest.raises(ValueError, match=rf"'y' of {name} holds labels outside \[0, 10\)"):
                call()
    # the repro: 0% robust and worst class "nan (class -1)" before
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\): min 10, max 10"):
        evaluate.robust_accuracy(m, (x, torch.full((8,), 10)), "apgd_ce", eps=0.1)
    with pytest.raises(TypeError, match="integer class indices"):
        evaluate.robust_accuracy(m, (x, d.y_test[:8].float()), "fgsm", eps=0.1)


def test_int32_labels_give_the_int64_result(digits_model):
    m, d = digits_model
    kw = dict(eps=0.06, suite_kw={"steps": 5})
    ref = evaluate.robust_accuracy(m, (d.x_test, d.y_test), ["apgd_ce", "pgd"], **kw)
    for dt in (torch.int32, torch.uint8):
        got = evaluate.robust_accuracy(m, (d.x_test, d.y_test.to(dt)), ["apgd_ce", "pgd"], **kw)
        assert torch.equal(got.robust, ref.robust) and got.per_class == ref.per_class
    c = evaluate.robustness_curve(m, (d.x_test, d.y_test.int()), eps_grid=[0.05, 0.1], bootstrap=0)
    assert c.robust_error.shape == (2,)


def test_output_width_must_match_the_classes(digits_model):
    _, d = digits_model
    wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 11))
    for call in (lambda: evaluate.robust_accuracy(wide, d, "fgsm", eps=0.1),
                 lambda: evaluate.robustness_curve(wide, d, eps_grid=[0.1], attack="fgsm"),
                 lambda: evaluate.sanity_checks(wide, d, eps=0.1)):
        with pytest.raises(InvalidParameterError, match="returns 11 outputs per example but the data have 10 classes"):
            call()


def test_softmax_model_is_flagged_once_in_the_result_and_its_json(digits_model):
    m, d = digits_model
    probs = nn.Sequential(m, nn.Softmax(1))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = evaluate.robust_accuracy(probs, d, ["fgsm", ("pgd", {"steps": 2})], eps=0.1, batch_size=16)
    assert sum("probabilities" in str(x.message) for x in w) == 1  # once per evaluation, not per attack call
    assert [f for f in res.flags if "probabilities" in f] == [res.flags[0]] and "softmax" in res.flags[0]
    assert "probabilities" in json.dumps(res.to_dict())
    assert not any("probabilities" in f for f in evaluate.robust_accuracy(m, d, "fgsm", eps=0.1).flags)
    with pytest.warns(UserWarning, match="probabilities"):
        curve = evaluate.robustness_curve(probs, d, eps_grid=[0.05, 0.1], attack="fgsm", bootstrap=0)
    assert any("probabilities" in f for f in curve.to_dict()["flags"])


def test_graph_cutting_model_flags_no_input_gradient_and_runs_square(digits_model):
    m, d = digits_model
    cut = GraphCuttingModel(m)
    res = evaluate.robust_accuracy(cut, d, "standard", eps=0.1, suite_kw={"steps": 2, "n_queries": 20})
    assert list(res.per_attack) == ["square"]
    assert res.skipped == {"apgd_ce": "no input gradient", "apgd_t": "no input gradient",
                           "fab_t": "no input gradient"}
    assert any(f.startswith("no input gradient") for f in res.to_dict()["flags"])
    assert res.robust_accuracy <= res.clean_accuracy
    with pytest.raises(attacks.NoInputGradientError, match="needs input gradients.*square"):
        evaluate.robust_accuracy(cut, d, ["pgd", "apgd_ce"], eps=0.1)
    with pytest.raises(attacks.NoInputGradientError):
        evaluate.minimal_epsilon(cut, d.x_test, d.y_test, eps_hi=0.2)
    rep = evaluate.sanity_checks(cut, d, eps=0.1, n_queries=20)
    by = {c.name: c for c in rep.checks}
    assert not by["nonzero_gradients"].passed and "no input gradient" in by["nonzero_gradients"].detail
    assert by["monotone_in_eps"].skipped and by["monotone_in_steps"].skipped
    assert "black_box" in by["black_box_not_stronger"].values and not rep.passed
    assert "SKIP monotone_in_eps" in str(rep)


def test_return_adv_gives_verifiable_adversarial_examples(digits_model):
    m, d = digits_model
    eps = 0.08
    for norm, e in (("linf", eps), ("l2", 0.8)):
        res = evaluate.robust_accuracy(m, d, ["fgsm", ("apgd_ce", {"steps": 5})], eps=e, norm=norm,
                                       batch_size=16, return_adv=True)
        x, y = d.x_test, d.y_test
        assert res.x_adv is not None and res.x_adv.shape == x.shape
        delta = (res.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= e + 1e-6 and 0 <= float(res.x_adv.min()) and float(res.x_adv.max()) <= 1
        with torch.no_grad():
            ok = m(res.x_adv).argmax(1) == y
        assert torch.equal(ok, res.robust)  # re-verified: misclassified exactly where not robust
        broken = res.clean & ~res.robust
        assert bool(broken.any()) and bool((size[broken] > 0).all())
        assert torch.equal(res.x_adv[res.robust], x[res.robust])  # robust points: x itself
    assert evaluate.robust_accuracy(m, d, "fgsm", eps=eps).x_adv is None  # only on request
    with pytest.raises(InvalidParameterError, match="'return_adv'"):
        evaluate.robust_accuracy(m, d, "fgsm", eps=eps, return_adv="yes")


def test_save_adv_round_trips_without_code(digits_model, tmp_path):
    m, d = digits_model
    res = evaluate.robust_accuracy(m, d, "fgsm", eps=0.08, return_adv=True)
    path = tmp_path / "adv.pt"
    res.save_adv(path)
    doc = torch.load(path, weights_only=True)
    assert torch.equal(doc["x_adv"], res.x_adv) and torch.equal(doc["robust"], res.robust)
    assert doc["eps"] == 0.08 and doc["norm"] == "linf"
    with pytest.raises(ValueError, match="return_adv=True"):
        evaluate.robust_accuracy(m, d, "fgsm", eps=0.08).save_adv(tmp_path / "none.pt")
    assert not (tmp_path / "none.pt").exists()


def test_common_budget_options_map_per_attack(digits_model):
    m, d = digits_model
    res = evaluate.robust_accuracy(m, d, ["apgd_ce", "square"], eps=0.05, suite_kw={"steps": 3, "n_queries": 11})
    assert res.attacks["apgd_ce"]["steps"] == 3 and res.attacks["square"]["n_queries"] == 11
    assert res.to_dict()["attacks"]["square"] == res.attacks["square"]
    built = evaluate.resolve_attacks(["apgd_ce", "square"], eps=0.05, norm="linf",
                                     suite_kw={"steps": 3, "n_queries": None})
    assert [a.budget() for a in built] == [{"steps": 3}, {"n_queries": 5000}]  # None keeps each attack's default
    with pytest.raises(InvalidParameterError, match="'square' takes no parameter 'steps'.*is taken by.*square, zoo"):
        evaluate.robust_accuracy(m, d, [("square", {"steps": 5})], eps=0.05)
    with pytest.raises(InvalidParameterError, match="'steps' is taken by none of the attacks.*'n_queries'"):
        evaluate.robust_accuracy(m, d, ["square"], eps=0.05, suite_kw={"steps": 5})
    with pytest.raises(InvalidParameterError, match="built with steps=10 but 'suite_kw' asks for steps=3"):
        evaluate.robust_accuracy(m, d, [attacks.get("pgd", eps=0.05)], eps=0.05, suite_kw={"steps": 3})
    r = evaluate.robust_accuracy(m, d, "standard", eps=0.05, n=20,
                                 suite_kw={"steps": 2, "n_queries": 7, "n_target_classes": 2})
    assert {k: v.get("steps", v.get("n_queries")) for k, v in r.attacks.items()} == {
        "apgd_ce": 2, "apgd_t": 2, "fab_t": 2, "square": 7}
    assert r.suite == "standard" and r.to_dict()["suite"] == "standard"
    with pytest.raises(InvalidParameterError, match="'stepz' is taken by none of the attacks of the 'standard' suite"):
        evaluate.robust_accuracy(m, d, "standard", eps=0.05, suite_kw={"stepz": 2})
    with pytest.raises(InvalidParameterError, match="'suite_kw' parameter must be a dict"):
        evaluate.robust_accuracy(m, d, "fast", eps=0.05, suite_kw=[("steps", 2)])


def test_suites_standard_is_autoattack_and_fast_is_the_old_cascade(digits_model):
    m, d = digits_model
    assert evaluate.SUITES["standard"].names() == ["apgd_ce", "apgd_t", "fab_t", "square"]
    std = {n: kw for n, kw in evaluate.SUITES["standard"].attacks}
    assert std["square"] == {"n_queries": 5000} and std["apgd_t"]["n_target_classes"] == 9
    assert std["fab_t"] == {"steps": 100, "n_target_classes": 9}
    assert evaluate.SUITES["fast"].names() == ["apgd_ce", "apgd_t", "square"]
    assert evaluate.suite_names() == ["fast", "standard"]
    kw = {"steps": 4, "n_queries": 30, "n_target_classes": 2}
    fast = evaluate.robust_accuracy(m, d, "fast", eps=0.06, seed=1, suite_kw=kw)
    explicit = evaluate.robust_accuracy(m, d, [("apgd_ce", {"steps": 4}), ("apgd_t", {"steps": 4, "n_target_classes": 2}),
                                               ("square", {"n_queries": 30})], eps=0.06, seed=1)
    assert torch.equal(fast.robust, explicit.robust) and fast.per_attack == explicit.per_attack
    with pytest.raises(ValueError, match="Unknown attack or suite 'standrd'. Did you mean 'standard'"):
        evaluate.robust_accuracy(m, d, "standrd", eps=0.06)


def test_progress_bars_only_on_request(digits_model, monkeypatch):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    m, d = digits_model
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    a = evaluate.robust_accuracy(m, d, ["fgsm", "pgd"], eps=0.05, batch_size=16, progress=False)
    evaluate.robustness_curve(m, d, eps_grid=[0.05], attack="fgsm", bootstrap=0, progress=False)
    assert err.getvalue() == ""
    b = evaluate.robust_accuracy(m, d, ["fgsm", "pgd"], eps=0.05, batch_size=16)  # auto: stderr is a TTY here
    assert "pgd (2/2) batches" in err.getvalue()
    assert torch.equal(a.robust, b.robust)
    evaluate.robustness_curve(m, d, eps_grid=[0.05], attack="fgsm", bootstrap=0, progress=True)
    assert "fgsm over eps" in err.getvalue()
    evaluate.sanity_checks(m, d, eps=0.05, steps=(1, 2), n_queries=5, progress=True)
    assert "sanity checks" in err.getvalue()
    with pytest.raises(InvalidParameterError, match="'progress'"):
        evaluate.robust_accuracy(m, d, "fgsm", eps=0.05, progress=1)


def test_fit_power_law_rejects_nonfinite_or_negative_values():
    for eps, err, bad in (([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3], "'eps'"),
                          ([0.1, 0.2, 0.3], [0.1, float("inf"), 0.3], "'err'"),
                          ([0.1, 0.2, 0.3], [0.1, -0.2, 0.3], "'err'")):
        with pytest.raises(InvalidParameterError, match=bad):
            evaluate.fit_power_law(eps, err)


def test_apgd_t_left_out_below_three_classes_is_flagged_and_wrong_shapes_are_clear():
    torch.manual_seed(0)
    two = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.rand(12, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 2
    res = evaluate.robust_accuracy(two, (x, y), "fast", eps=0.1, suite_kw={"steps": 2, "n_queries": 5})
    assert list(res.per_attack) == ["apgd_ce", "square"]
    assert any("APGD-T" in f and "left out" in f for f in res.to_dict()["flags"])
    with pytest.raises(InvalidParameterError, match=r"model fails on inputs of shape \(15,\).*mat1 and mat2"):
        evaluate.robust_accuracy(two, (x[:, :15], y), "fgsm", eps=0.1)
