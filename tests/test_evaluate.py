"""robust_accuracy (cascade), confidence intervals, robustness curve / power law, sanity checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import attacks, evaluate


@pytest.fixture(scope="module")
def digits_model(trained_digits_mlp):
    m, d = trained_digits_mlp
    return m, d.subset(n_test=120)


def _linear_binary(d: int = 30, n: int = 600, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=g))
        lin.bias.zero_()
    x = 0.3 + 0.4 * torch.rand(n, d, generator=g)
    with torch.no_grad():
        y = lin(x).argmax(1)  # all clean-correct
    return lin, x, y


def test_cascade_is_the_per_example_worst_case(digits_model):
    m, d = digits_model
    x, y = d.x_test, d.y_test
    a1 = attacks.get("fgsm", eps=0.08)
    a2 = attacks.get("pgd", eps=0.08, steps=5, step_size=0.02, random_start=False)  # deterministic per example
    res = evaluate.robust_accuracy(m, d, [a1, a2], eps=0.08, batch_size=32)
    with torch.no_grad():
        clean = m(x).argmax(1) == y
        ok1 = m(a1(m, x, y)).argmax(1) == y
        ok2 = m(a2(m, x, y)).argmax(1) == y
    expected = clean & ok1 & ok2
    assert torch.equal(res.robust, expected)
    assert torch.equal(res.clean, clean)
    assert res.robust_accuracy == pytest.approx(float(expected.float().mean()))
    assert res.per_attack["fgsm"] == pytest.approx(float((clean & ok1).float().mean()))
    assert list(res.per_attack) == ["fgsm", "pgd"]
    # per-class and worst-class from the flags
    per = [float(expected[y == c].float().mean()) for c in range(10)]
    assert res.per_class == pytest.approx(per)
    assert res.worst_class == pytest.approx(min(per)) and res.worst_class_index == int(np.argmin(per))
    assert res.robust_accuracy <= res.clean_accuracy


def test_clopper_pearson_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 10), (3, 10), (10, 10), (57, 120)]:
        lo, hi = evaluate.clopper_pearson(k, n, 0.95)
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_standard_ensemble_is_seeded_and_ordered(digits_model):
    m, d = digits_model
    kw = dict(eps=0.06, n=60, suite_kw={"steps": 8, "n_queries": 60, "n_target_classes": 2})
    r1 = evaluate.robust_accuracy(m, d, "standard", seed=3, **kw)
    r2 = evaluate.robust_accuracy(m, d, "standard", seed=3, **kw)
    assert torch.equal(r1.robust, r2.robust)
    assert list(r1.per_attack) == ["apgd_ce", "apgd_t", "fab_t", "square"]  # AutoAttack's standard suite
    vals = list(r1.per_attack.values())
    assert all(b <= a for a, b in zip(vals, vals[1:]))  # cumulative worst case never goes up
    lo, hi = r1.ci
    assert lo <= r1.robust_accuracy <= hi
    d2 = r1.to_dict()
    assert d2["n"] == 60 and "per_class" in d2
    names = [a.name for a in evaluate.standard_ensemble(0.1, "l2", num_classes=2)]
    assert names == ["apgd_ce", "fab_t", "square"]  # APGD-T left out below 3 classes
    assert [a.name for a in evaluate.fast_ensemble(0.1, "l2", num_classes=2)] == ["apgd_ce", "square"]


def test_robust_accuracy_errors(digits_model):
    m, d = digits_model
    with pytest.raises(ValueError, match="eps"):
        evaluate.robust_accuracy(m, d, "pgd", eps=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\].*Normalize"):
        evaluate.robust_accuracy(m, (d.x_test * 255, d.y_test), "fgsm", eps=0.1)
    with pytest.raises(TypeError):
        evaluate.robust_accuracy(m, d, 3, eps=0.1)
    probs = nn.Sequential(m, nn.Softmax(1))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        evaluate.robust_accuracy(probs, d, "fgsm", eps=0.1, n=10)
    assert any("probabilities" in str(x.message) for x in w)


def test_fit_power_law_recovers_exponent():
    eps = np.geomspace(1e-3, 1e-1, 12)
    err = 3.0 * eps ** 1.7
    fit = evaluate.fit_power_law(eps, err, max_err=0.5, bootstrap=0)
    assert fit.k == pytest.approx(1.7, abs=1e-9) and fit.a == pytest.approx(3.0, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need"):
        evaluate.fit_power_law(eps[:2], err[:2], min_points=3)


def test_power_law_bootstrap_covers_truth():
    # critical eps c = eps0 * U^(1/gamma)  =>  P(c < eps) = (eps/eps0)^gamma
    rng = np.random.default_rng(0)
    gamma, eps0, n = 2.0, 0.2, 4000
    c = eps0 * rng.random(n) ** (1 / gamma)
    grid = np.geomspace(0.01, 0.12, 10)
    fooled = c[:, None] <= grid[None, :]
    fit = evaluate.fit_power_law(grid, fooled.mean(0), fooled=fooled, bootstrap=300)
    assert fit.ci[0] <= gamma <= fit.ci[1]
    assert abs(fit.k - gamma) < 0.15


def test_minimal_epsilon_matches_closed_form_on_linear_model():
    lin, x, y = _linear_binary()
    x, y = x[:80], y[:80]
    w = lin.weight.detach()
    v = w[y] - w[1 - y]
    margin = (v * x).sum(1)
    crit = margin / v.abs().sum(1)  # L∞ critical radius of a linear binary classifier
    hi = 0.02
    got = evaluate.minimal_epsilon(lin, x, y, eps_hi=hi, bisection_steps=12, steps=10,
                                   generator=torch.Generator().manual_seed(0))
    inside = crit < hi * 0.999
    assert bool(torch.isinf(got[~inside]).all())
    assert torch.allclose(got[inside], crit[inside], atol=hi / 2 ** 11)


def test_robustness_curve_linear_model_exponent_near_one():
    lin, x, y = _linear_binary()
    eps_max = float(((lin.weight[0] - lin.weight[1]).detach().abs().sum()) ** -1) * 2  # scale of typical critical radii
    grid = np.geomspace(eps_max * 0.01, eps_max * 0.3, 12)
    curve = evaluate.robustness_curve(lin, (x, y), eps_grid=grid, attack="fgsm", bootstrap=200)
    assert np.all(np.diff(curve.adv_error) >= 0)
    assert curve.fit is not None
    assert curve.fit.ci[0] - 0.1 <= 1.0 <= curve.fit.ci[1] + 0.1, curve.fit
    assert abs(curve.k - 1.0) < 0.25
    # adv_error agrees with the closed-form fraction of critical radii below each eps
    w = lin.weight.detach()
    v = w[y] - w[1 - y]
    crit = ((v * x).sum(1) / v.abs().sum(1)).numpy()
    expected = (crit[:, None] <= grid[None, :]).mean(0)
    assert np.allclose(curve.adv_error, expected, atol=2 / len(y))


def test_robustness_curve_with_bisection_on_model(digits_model):
    m, d = digits_model
    curve = evaluate.robustness_curve(m, d, eps_grid=[0.01, 0.02, 0.04, 0.08, 0.16], attack_kw={"steps": 5},
                                      bootstrap=50, bisection_steps=4, n=60)
    assert curve.critical_eps is not None and curve.critical_eps.shape == (60,)
    assert np.all(np.diff(curve.robust_error) >= 0)
    assert set(curve.to_dict()) >= {"eps", "robust_error", "fit"}


def test_sanity_checks_pass_on_a_plain_model(digits_model):
    m, d = digits_model
    rep = evaluate.sanity_checks(m, d, eps=0.05, n=48, n_queries=100, steps=(5, 20))
    assert rep.passed, str(rep)
    assert "PASS monotone_in_eps" in str(rep)


def test_sanity_checks_flag_gradient_masking(digits_model):
    m, d = digits_model

    class Masked(nn.Module):
        """Quantises its input (zero gradient almost everywhere): a classic gradient-masking defence."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.round(x * 4) / 4)

    rep = evaluate.sanity_checks(Masked(m).eval(), d, eps=0.15, n=48, n_queries=300, steps=(5, 20))
    failed = {c.name for c in rep.failures}
    assert "nonzero_gradients" in failed
    assert "black_box_not_stronger" in failed
    assert "FAIL" in str(rep)


# --------------------------------------------------------------------------- review fixes (attacks-certify)
def _dropout_model_in_train_mode():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5))
    x = torch.rand(200, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = m.eval()(x).argmax(1)  # every point correct in eval mode
    return m.train(), x, y


def test_robust_accuracy_checks_adversarial_points_in_eval_mode():
    # eps = 0 returns x, so robust accuracy must equal clean accuracy (1.0); a final check run in
    # train mode (dropout active) would call random points "broken"
    m, x, y = _dropout_model_in_train_mode()
    res = evaluate.robust_accuracy(m, (x, y), attacks.get("fgsm", eps=0.0), eps=0.0)
    assert res.clean_accuracy == 1.0
    assert res.robust_accuracy == 1.0 and bool(res.robust.all())
    assert m.training  # the caller's mode is restored


def test_robustness_curve_checks_adversarial_points_in_eval_mode():
    m, x, y = _dropout_model_in_train_mode()
    curve = evaluate.robustness_curve(m, (x, y), eps_grid=[0.0], attack="fgsm", bootstrap=0)
    assert curve.clean_accuracy == 1.0
    assert curve.adv_error.tolist() == [0.0] and curve.robust_error.tolist() == [0.0]
    assert m.training


def test_robust_accuracy_rejects_attacks_built_for_another_threat_model(digits_model):
    m, d = digits_model
    with pytest.raises(ValueError, match="eps=0.3"):
        evaluate.robust_accuracy(m, d, attacks.get("pgd", eps=0.3, steps=2), eps=0.05, n=8)
    with pytest.raises(ValueError, match="norm='l2'"):
        evaluate.robust_accuracy(m, d, [attacks.get("fgsm", eps=0.05, norm="l2")], eps=0.05, n=8)
    with pytest.raises(ValueError, match="eps=0.2"):
        evaluate.robust_accuracy(m, d, [("pgd", {"eps": 0.2, "steps": 2})], eps=0.05, n=8)
    # the same eps and norm is accepted
    evaluate.robust_accuracy(m, d, attacks.get("fgsm", eps=0.05), eps=0.05, n=8)


def test_clopper_pearson_validates_its_arguments():
    from robustlab._validation import InvalidParameterError

    for args in [(11, 10), (-1, 10), (3, -2), (2.5, 10), (3, 10, 1.0), (3, 10, 0.0)]:
        with pytest.raises(InvalidParameterError):
            evaluate.clopper_pearson(*args)


def test_fit_power_law_validates_its_arguments():
    from robustlab._validation import InvalidParameterError

    eps = np.geomspace(1e-3, 1e-1, 6)
    err = 2.0 * eps
    with pytest.raises(InvalidParameterError, match="'min_points'"):
        evaluate.fit_power_law(eps[:1], err[:1], min_points=1, bootstrap=0)  # one point has no slope
    with pytest.raises(ValueError, match="same length"):
        evaluate.fit_power_law(eps, err[:-1], bootstrap=0)
    with pytest.raises(ValueError, match="'fooled' must have shape"):
        evaluate.fit_power_law(eps, err, fooled=np.zeros((10, 5), dtype=bool), bootstrap=10)
    with pytest.raises(InvalidParameterError, match="'max_err'"):
        evaluate.fit_power_law(eps, err, max_err=0.0, bootstrap=0)
    with pytest.raises(InvalidParameterError, match="'min_points'"):
        lin, x, y = _linear_binary(n=8)
        evaluate.robustness_curve(lin, (x, y), eps_grid=[0.01, 0.02], attack="fgsm", min_points=1)


def test_minimal_epsilon_keeps_a_success_below_eps_hi():
    # along x1 the class-1 score is s = −1 + 10t − 20t² (t = x1 − 0.2): misclassified for t in (0.138, 0.362)
    # only, so one L2 step to the sphere fails at eps_hi = 0.5 but succeeds at the midpoint 0.25; the
    # bisection then converges to t* = (10 − √20)/40 and must not report "never broken" (inf)
    class Bump(nn.Module):
        def forward(self, x):
            t = x[:, 0] - 0.2
            s = -1 + 10 * t - 20 * t ** 2
            return torch.stack([torch.zeros_like(s), s], 1)

    x = torch.tensor([[0.2, 0.5]])
    y = torch.tensor([0])
    got = evaluate.minimal_epsilon(Bump(), x, y, norm="l2", eps_hi=0.5, bisection_steps=14, steps=1)
    t_star = (10 - 20 ** 0.5) / 40
    assert torch.isfinite(got).all()
    assert float(got[0]) == pytest.approx(t_star, abs=1e-3)
