"""Contrastive losses against independent computations (issue 15)."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab import losses
from robustlab._validation import InvalidParameterError


def _views(n=5, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_infonce_equals_a_plain_loop():
    z1, z2 = _views()
    n, tau = z1.shape[0], 0.3
    z = torch.cat([z1, z2])
    per_anchor = []
    for a in range(2 * n):
        p = (a + n) % (2 * n)
        denom = sum(math.exp(_cos(z[a], z[k]) / tau) for k in range(2 * n) if k != a)
        per_anchor.append(-math.log(math.exp(_cos(z[a], z[p]) / tau) / denom))
    expected = [(per_anchor[i] + per_anchor[i + n]) / 2 for i in range(n)]
    got = losses.infonce(z1, z2, temperature=tau, reduction="none")
    assert got.tolist() == pytest.approx(expected, rel=1e-10)
    assert float(losses.contrastive("infonce", temperature=tau)(z1, z2)) == pytest.approx(sum(per_anchor) / (2 * n))


def test_infonce_equals_cross_entropy_closed_form():
    """NT-Xent is the CE of the positive among the 2N-1 others (the SimCLR reference form)."""
    z1, z2 = _views(n=7, d=4, seed=1)
    n, tau = 7, 0.5
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    ref = torch.nn.functional.cross_entropy(logits, target)
    assert float(losses.infonce(z1, z2, temperature=tau)) == pytest.approx(float(ref), rel=1e-12)


def _log_g(z1, z2, tau):
    """Per-anchor log of the mean of exp((s_neg - s_pos) / tau) over the 2N-2 negatives, by a loop."""
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    out = []
    for a in range(2 * n):
        p = (a + n) % (2 * n)
        t = tau[a] if isinstance(tau, list) else tau
        vals = [math.exp((_cos(z[a], z[k]) - _cos(z[a], z[p])) / t) for k in range(2 * n) if k not in (a, p)]
        out.append(math.log(sum(vals) / len(vals)))
    return out


def test_sogclr_moving_average_and_value():
    z1, z2 = _views()
    n, tau, gamma = 5, 0.4, 0.7
    loss = losses.contrastive("sogclr", num_samples=10, temperature=tau, gamma=gamma, reduction="none")
    idx = torch.arange(2, 7)
    v1 = loss(z1, z2, index=idx)
    lg1 = _log_g(z1, z2, tau)
    assert v1.tolist() == pytest.approx([tau * (lg1[i] + lg1[i + n]) / 2 for i in range(n)], rel=1e-10)  # u = g
    z1b, z2b = _views(seed=3)
    v2 = loss(z1b, z2b, index=idx)
    lg2 = _log_g(z1b, z2b, tau)
    u = [(1 - gamma) * math.exp(a) + gamma * math.exp(b) for a, b in zip(lg1, lg2)]
    assert v2.tolist() == pytest.approx([tau * (math.log(u[i]) + math.log(u[i + n])) / 2 for i in range(n)], rel=1e-6, abs=1e-7)
    assert loss.log_u[idx, 0].tolist() == pytest.approx([math.log(x) for x in u[:n]], rel=1e-6)
    assert bool(loss.seen[idx].all()) and not bool(loss.seen[:2].any())


def test_sogclr_gradient_is_the_moving_average_estimator():
    """grad = tau * grad(g) / u with u the updated moving average (not the mini-batch g)."""
    z1, z2 = _views()
    tau, gamma = 0.5, 0.5
    loss = losses.contrastive("sogclr", num_samples=5, temperature=tau, gamma=gamma, reduction="sum")
    idx = torch.arange(5)
    loss(*_views(seed=4), index=idx)  # a first visit fills u
    a = z1.clone().requires_grad_(True)
    lu_before = loss.log_u.clone()
    loss(a, z2, index=idx).backward()
    # reference: d/dz of sum_a tau * g_a(z) / u_a (u fixed at its updated value), halved per sample
    b = z1.clone().requires_grad_(True)
    zz = torch.nn.functional.normalize(torch.cat([b, z2]), dim=1)
    sim = zz @ zz.T
    n = 5
    part = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    pos = sim[torch.arange(2 * n), part]
    mask = torch.ones(2 * n, 2 * n, dtype=torch.bool)
    mask[torch.arange(2 * n), torch.arange(2 * n)] = False
    mask[torch.arange(2 * n), part] = False
    g = (torch.exp((sim - pos[:, None]) / tau) * mask).sum(1) / (2 * n - 2)
    u_new = torch.exp(torch.cat([loss.log_u[:, 0], loss.log_u[:, 1]]))
    assert not torch.equal(lu_before, loss.log_u)
    (0.5 * tau * (g / u_new)).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-9)  # the state is float32


def test_isogclr_temperature_step_is_the_dro_gradient():
    """One training call moves tau_a by -eta * dF_a/dtau with F_a(tau) = tau log g_a(tau) + tau rho (gamma = 1)."""
    z1, z2 = _views()
    n, rho, eta, t0 = 5, 0.3, 0.05, 0.5
    loss = losses.contrastive("isogclr", num_samples=n, rho=rho, tau_init=t0, eta=eta, gamma=1.0, tau_min=0.01,
                              beta=1.0)  # beta = 1: the plain step (tests/test_repr_isogclr.py: the momentum)
    loss(z1, z2, index=torch.arange(n))

    def F(t):
        return [t * lg + t * rho for lg in _log_g(z1, z2, t)]

    h = 1e-6
    grad = [(a - b) / (2 * h) for a, b in zip(F(t0 + h), F(t0 - h))]
    expected = [t0 - eta * gr for gr in grad]
    got = torch.cat([loss.tau[:, 0], loss.tau[:, 1]]).tolist()
    assert got == pytest.approx(expected, rel=1e-5)


def test_isogclr_temperatures_stay_in_bounds_and_value_is_the_dro_objective():
    z1, z2 = _views()
    loss = losses.contrastive("isogclr", num_samples=5, rho=5.0, eta=10.0, tau_min=0.1, tau_max=0.9, reduction="none")
    v = loss(z1, z2, index=torch.arange(5))
    lg = _log_g(z1, z2, 0.7)
    assert v.tolist() == pytest.approx([0.7 * ((lg[i] + 5.0) + (lg[i + 5] + 5.0)) / 2 for i in range(5)], rel=1e-6)
    assert float(loss.tau.min()) >= 0.1 and float(loss.tau.max()) <= 0.9


@pytest.mark.parametrize("name, kw, match", [
    ("infonce", {"temperature": -1}, "'temperature' parameter of infonce"),
    ("sogclr", {"num_samples": 0}, "'num_samples' parameter of sogclr"),
    ("isogclr", {"num_samples": 4, "tau_init": 2.0}, "'tau_init' parameter of isogclr"),
    ("isogclr", {"num_samples": 4, "tau_min": 0.5, "tau_max": 0.1}, "'tau_max'"),
])
def test_bad_hyperparameters(name, kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        losses.contrastive(name, **kw)


def test_unknown_contrastive_loss_suggests():
    with pytest.raises(KeyError, match="Did you mean 'sogclr'"):
        losses.contrastive("sogclrr")
