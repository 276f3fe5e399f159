"""Attack correctness against closed forms (linear models), a finite estimator check and torchattacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import attacks
from robustlab.attacks import functional as AF
from robustlab.attacks._square import p_selection
from robustlab.attacks._zoo import rge


def _binary_linear(d: int = 20, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=g))
        lin.bias.copy_(torch.randn(2, generator=g) * 0.1)
    x = 0.3 + 0.4 * torch.rand(64, d, generator=g)  # interior, so the [0, 1] box never binds below
    y = torch.randint(0, 2, (64,), generator=g)
    return lin, x, y


def _margin_and_v(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = lin.weight.detach(), lin.bias.detach()
    v = w[y] - w[1 - y]  # margin = v·x + c
    c = b[y] - b[1 - y]
    return (v * x).sum(1) + c, v


def _margin(lin: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = lin(x)
    return z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)


@pytest.mark.parametrize("name,kw", [
    ("fgsm", {}),
    ("pgd", {"steps": 20, "step_size": 0.05}),
    ("pgd", {"steps": 20, "step_size": 0.05, "random_start": False}),
    ("apgd_ce", {"steps": 20}),
])
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.2)])
def test_reaches_closed_form_optimum_on_linear_model(name, kw, norm, eps):
    lin, x, y = _binary_linear()
    m0, v = _margin_and_v(lin, x, y)
    # binary CE is monotone in the margin, so the CE maximiser minimises the margin:
    # min over the L∞ ball: m0 − ε‖v‖₁ ; over the L2 ball: m0 − ε‖v‖₂ (the box [0, 1] does not bind)
    dual = v.abs().sum(1) if norm == "linf" else v.norm(dim=1)
    expected = m0 - eps * dual
    kw = dict(kw)
    if "step_size" in kw and norm == "l2":
        kw["step_size"] = eps / 4
    x_adv = attacks.get(name, eps=eps, norm=norm, **kw)(lin, x, y, generator=torch.Generator().manual_seed(0))
    got = _margin(lin, x_adv, y)
    tol = 1e-4 * (1 + dual)
    assert torch.allclose(got, expected, atol=float(tol.max()) * 10), (got - expected).abs().max()


def test_linf_optimum_with_box_constraint_active():
    # x near the [0, 1] boundary: the optimum per coordinate is the end of [max(0, x−ε), min(1, x+ε)]
    lin, x, y = _binary_linear(seed=1)
    x = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    eps = 0.1
    m0, v = _margin_and_v(lin, x, y)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_star = torch.where(v > 0, lo, hi)
    expected = (v * x_star).sum(1) + (m0 - (v * x).sum(1))
    for name, kw in [("fgsm", {}), ("pgd", {"steps": 15, "step_size": 0.02})]:
        got = _margin(lin, attacks.get(name, eps=eps, **kw)(lin, x, y, generator=torch.Generator().manual_seed(0)), y)
        assert torch.allclose(got, expected, atol=1e-4), (name, (got - expected).abs().max())


def test_cw_l2_finds_minimal_norm_on_linear_model():
    lin, x, y = _binary_linear(d=10, seed=2)
    m0, v = _margin_and_v(lin, x, y)
    keep = (m0 > 0) & (m0 / v.norm(dim=1) < 0.15)  # correct, and the minimal adversarial point stays inside [0, 1]
    x, y, m0, v = x[keep], y[keep], m0[keep], v[keep]
    assert x.shape[0] >= 5
    x_adv = AF.cw_l2(lin, x, y, steps=300, binary_search_steps=8, c=1.0, lr=0.01)
    found = (x_adv - x).norm(dim=1)
    minimal = m0 / v.norm(dim=1)
    fooled = _margin(lin, x_adv, y) <= 1e-3
    assert bool(fooled.all())
    assert bool((found >= minimal - 1e-3).all())  # nothing beats the closed form
    assert bool((found <= minimal * 1.1 + 1e-3).all()), torch.stack([found, minimal], 1)


def test_pgd_restarts_keep_the_strongest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 5))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    one = AF.pgd(model, x, y, eps=0.05, step_size=0.01, steps=3, generator=torch.Generator().manual_seed(7))
    many = AF.pgd(model, x, y, eps=0.05, step_size=0.01, steps=3, restarts=4,
                  generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        f_one = model(one).argmax(1) != y
        f_many = model(many).argmax(1) != y
        ce = nn.functional.cross_entropy
        l_one = ce(model(one), y, reduction="none")
        l_many = ce(model(many), y, reduction="none")
    assert bool((f_many | ~f_one).all())  # every example broken by the first restart stays broken
    unbroken = ~f_many & ~f_one
    assert bool((l_many[unbroken] >= l_one[unbroken] - 1e-6).all())


def test_dlr_loss_closed_form_and_invariance():
    z = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.0]])
    y = torch.tensor([0, 0])
    # row 0: −(3 − 1)/(3 − 0.5); row 1: −(0 − 2)/(2 − 0)
    expected = torch.tensor([-2 / 2.5, 1.0])
    assert torch.allclose(attacks.dlr_loss(z, y), expected)
    assert torch.allclose(attacks.dlr_loss(5 * z + 3, y), expected, atol=1e-6)
    t = torch.tensor([2, 3])
    # targeted: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)
    exp_t = torch.tensor([-(3 - 0.5) / (3 - (0.5 - 1) / 2), -(0 - 0) / (2 - 0)])
    assert torch.allclose(attacks.targeted_dlr_loss(z, y, t), exp_t)
    assert torch.isfinite(attacks.dlr_loss(torch.tensor([[1e4, -1e4, 0.0]]), torch.tensor([1]))).all()


def test_apgd_t_with_three_classes_runs_and_two_classes_explains():
    torch.manual_seed(0)
    three = nn.Sequential(nn.Linear(6, 3))
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    out = AF.apgd_t(three, x, y, eps=0.1, steps=5)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="at least 3 classes"):
        AF.apgd_dlr(nn.Linear(6, 2), x, y % 2, eps=0.1, steps=5)


def test_square_p_schedule():
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 51, 10000) == 0.2
    assert p_selection(0.8, 8001, 10000) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 2, 1000) == 0.8 / 2  # rescaled to a 10 000-query budget


def test_random_gradient_estimate_points_along_the_gradient():
    a = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))

    def f(z: torch.Tensor) -> torch.Tensor:
        return (z * a.repeat_interleave(z.shape[0] // 3, 0)).sum(1)

    z = torch.rand(3, 50, generator=torch.Generator().manual_seed(1))
    g = rge(f, z, q=4000, mu=1e-3, generator=torch.Generator().manual_seed(2))
    cos = nn.functional.cosine_similarity(g, a, dim=1)
    assert bool((cos > 0.8).all()), cos
    # unbiased for a linear function: E[d·(u·a)u] = a
    assert torch.allclose(g.norm(dim=1), a.norm(dim=1), rtol=0.15)


def test_black_box_attacks_use_no_gradients():
    class NoGrad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert not torch.is_grad_enabled(), "a black-box attack asked for gradients"
            return self.lin(x.flatten(1))

    m = NoGrad()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        y = m(x).argmax(1)
    for name in ("square", "zoo"):
        attacks.get(name, eps=0.1, n_queries=50, **({"n_samples": 5} if name == "zoo" else {}))(m, x, y)


def test_registry_and_functional_names():
    names = attacks.available()
    for n in ("fgsm", "pgd", "apgd_ce", "apgd_dlr", "apgd_t", "square", "zoo", "cw_l2"):
        assert n in names and hasattr(AF, n)
        assert attacks.ATTACKS.spec(n).reference
    assert attacks.available(tags=("black_box",)) == ["square", "zoo"]
    with pytest.raises(KeyError, match="Did you mean 'pgd'"):
        attacks.get("pgdd")


def test_finite_for_huge_logits():
    lin = nn.Linear(8, 3)
    with torch.no_grad():
        lin.weight.mul_(1e4)
    x = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1])
    for name in ("fgsm", "pgd", "apgd_ce", "apgd_dlr"):
        out = attacks.get(name, eps=0.1, steps=3)(lin, x, y) if name != "fgsm" else AF.fgsm(lin, x, y, eps=0.1)
        assert torch.isfinite(out).all(), name


# --------------------------------------------------------------------------- torchattacks (peer, test-only)
@pytest.fixture(scope="module")
def trained_digits():
    from robustlab import data, models, training

    d = data.load("digits")
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(64,))
    training.fit(m, d, epochs=10, batch_size=64, lr=0.1, progress=False, seed=0)
    return m.eval(), d.x_test, d.y_test


def _acc(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((m(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_agrees_with_torchattacks(trained_digits, eps):
    ta = pytest.importorskip("torchattacks")
    m, x, y = trained_digits
    ours_f = _acc(m, AF.fgsm(m, x, y, eps=eps), y)
    theirs_f = _acc(m, ta.FGSM(m, eps=eps)(x, y), y)
    assert abs(ours_f - theirs_f) <= 0.01, (ours_f, theirs_f)
    for rs in (False, True):
        ours = _acc(m, AF.pgd(m, x, y, eps=eps, step_size=eps / 4, steps=20, random_start=rs,
                              generator=torch.Generator().manual_seed(0)), y)
        torch.manual_seed(0)
        theirs = _acc(m, ta.PGD(m, eps=eps, alpha=eps / 4, steps=20, random_start=rs)(x, y), y)
        assert abs(ours - theirs) <= 0.01, (rs, ours, theirs)
    assert _acc(m, x, y) > ours_f  # the attack does something on this model


# --------------------------------------------------------------------------- FAB-T
def test_fab_box_projection_is_minimal():
    from scipy.optimize import linprog, minimize

    from robustlab.attacks._fab import box_projection

    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 5, generator=g, dtype=torch.float64)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    c = torch.randn(6, generator=g, dtype=torch.float64) * 0.3
    d2 = box_projection(p, w, c, "l2", iters=60)
    dinf = box_projection(p, w, c, "linf", iters=60)
    for i in range(6):
        pi, wi, ci = p[i].numpy(), w[i].numpy(), float(c[i])
        bounds = list(zip(-pi, 1 - pi))
        ref = minimize(lambda d: (d ** 2).sum(), np.zeros(5), bounds=bounds, method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda d, wi=wi, ci=ci: float(wi @ d - ci)}])
        if ref.success and abs(wi @ ref.x - ci) < 1e-8:
            assert float(d2[i].norm()) == pytest.approx(float(np.linalg.norm(ref.x)), rel=1e-5, abs=1e-8)
            assert float((w[i] * d2[i]).sum()) == pytest.approx(ci, abs=1e-7)
        # L∞: min t s.t. |d_j| <= t, box, w·d = c  (variables d_1..d_5, t)
        a_ub = np.vstack([np.hstack([np.eye(5), -np.ones((5, 1))]), np.hstack([-np.eye(5), -np.ones((5, 1))])])
        lp = linprog(np.r_[np.zeros(5), 1.0], A_ub=a_ub, b_ub=np.zeros(10), A_eq=np.r_[wi, 0.0][None, :], b_eq=[ci],
                     bounds=bounds + [(0, None)])
        if lp.success:
            assert float(dinf[i].abs().max()) == pytest.approx(lp.x[-1], rel=1e-5, abs=1e-8)
        assert bool(((p[i] + dinf[i]) >= -1e-12).all() and ((p[i] + dinf[i]) <= 1 + 1e-12).all())


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.15)])
def test_fab_t_breaks_exactly_the_points_inside_eps_on_linear_model(norm, eps):
    lin, x, y = _binary_linear(d=10, seed=3)
    m0, v = _margin_and_v(lin, x, y)
    crit = m0 / (v.abs().sum(1) if norm == "linf" else v.norm(dim=1))
    x_adv = attacks.get("fab_t", eps=eps, norm=norm, steps=30)(lin, x, y)
    broken = _margin(lin, x_adv, y) < 0
    correct = m0 > 0
    assert not bool((broken & (crit > eps)).any())  # nothing outside the ball
    assert bool(broken[correct & (crit < 0.9 * eps)].all())  # everything clearly inside is found


def test_apgd_ce_linf_trajectory_matches_the_autoattack_reference(trained_digits):
    # torchattacks' APGD is a copy of AutoAttack's autopgd_base.py (step 2ε, momentum 0.75, checkpoints
    # 0.22/0.03/0.06·N, ρ = 0.75, reset to the best point). From the same start (torch.rand with seed 0 in
    # both) one APGD-CE L∞ run must end on the same best points; a changed step size, momentum, halving,
    # reset or checkpoint schedule moves them (checked by mutating the implementation).
    ta = pytest.importorskip("torchattacks")
    from robustlab.attacks._apgd import apgd_run

    m, x, y = trained_digits
    x, y = x[:200], y[:200]
    with torch.no_grad():
        keep = m(x).argmax(1) == y
    x, y = x[keep], y[keep]
    eps, steps = 0.02, 30
    ref = ta.APGD(m, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=0, loss="ce", rho=0.75)
    torch.manual_seed(0)
    x_best_ref, acc_ref, _, _ = ref.attack_single_run(x, y)
    with torch.enable_grad():
        out, success = apgd_run(m, x, y, None, eps=eps, norm="linf", steps=steps, rho=0.75, loss="ce",
                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(success, ~acc_ref.bool())
    unbroken = ~success
    assert int(unbroken.sum()) > 50
    torch.testing.assert_close(out[unbroken], x_best_ref[unbroken], rtol=0, atol=1e-6)
