"""iSogCLR's temperature update with momentum (Qiu et al., ICML 2023, Algorithm 1 steps 7-9), against an
independent float64 recursion: G_a = dF_a/dtau_a (finite differences of F_a(tau) = tau log g_a(tau) + tau rho),
m_a <- (1 - beta) m_a + beta G_a from m = 0, tau_a <- clip(tau_a - eta m_a)."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab import losses, training
from robustlab._validation import InvalidParameterError


def _log_g(z1: torch.Tensor, z2: torch.Tensor, tau: list[float]) -> list[float]:
    """log of the mean over the 2N-2 negatives of exp((s_ak - s_ap) / tau_a), per anchor (2N,), float64 loops."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    out = []
    for a in range(n2):
        p = (a + n) % n2
        terms = [math.exp(float(z[a] @ z[k] - z[a] @ z[p]) / tau[a]) for k in range(n2) if k not in (a, p)]
        out.append(math.log(sum(terms) / len(terms)))
    return out


def _dF(z1, z2, tau, rho, h=1e-6):
    up = _log_g(z1, z2, [t + h for t in tau])
    dn = _log_g(z1, z2, [t - h for t in tau])
    return [((t + h) * (a + rho) - (t - h) * (b + rho)) / (2 * h) for t, a, b in zip(tau, up, dn)]


@pytest.mark.parametrize("beta", [0.9, 0.3])
def test_temperature_update_is_the_papers_momentum_step(beta):
    n, rho, eta, t0 = 4, 0.3, 0.05, 0.5
    loss = losses.contrastive("isogclr", num_samples=n, rho=rho, tau_init=t0, eta=eta, beta=beta, gamma=1.0,
                              tau_min=0.01, tau_max=5.0)
    tau, m = [t0] * (2 * n), [0.0] * (2 * n)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # three calls on the same samples, fresh views each time
        z1, z2 = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)
        grad = _dF(z1, z2, tau, rho)
        m = [(1 - beta) * mi + beta * gi for mi, gi in zip(m, grad)]
        tau = [min(5.0, max(0.01, t - eta * mi)) for t, mi in zip(tau, m)]
        loss(z1, z2, index=torch.arange(n))
        got = torch.cat([loss.tau[:, 0], loss.tau[:, 1]]).tolist()
        assert got == pytest.approx(tau, rel=1e-5)
        assert torch.cat([loss.tau_grad[:, 0], loss.tau_grad[:, 1]]).tolist() == pytest.approx(m, rel=1e-4, abs=1e-7)


def test_momentum_differs_from_the_plain_step_and_eval_mode_updates_nothing():
    z1, z2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    plain = losses.contrastive("isogclr", num_samples=4, beta=1.0, eta=0.1)
    mom = losses.contrastive("isogclr", num_samples=4, eta=0.1)
    assert mom.beta == 0.9 and mom.hparams()["beta"] == 0.9
    for _ in range(2):
        plain(z1, z2, index=torch.arange(4))
        mom(z1, z2, index=torch.arange(4))
    assert not torch.allclose(plain.tau, mom.tau)
    frozen = mom.tau.clone(), mom.tau_grad.clone()
    mom.eval()
    mom(z1, z2, index=torch.arange(4))
    assert torch.equal(mom.tau, frozen[0]) and torch.equal(mom.tau_grad, frozen[1])


def test_beta_is_validated():
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InvalidParameterError, match="'beta' parameter of isogclr"):
            losses.contrastive("isogclr", num_samples=4, beta=bad)


def test_pretrain_with_isogclr_moves_the_temperatures():
    from robustlab import data, models

    d = data.load("digits").subset(n_train=200, n_test=10)
    torch.manual_seed(0)
    enc = models.create("mlp", input_shape=d.input_shape, num_classes=16, hidden=(32,))
    res = training.pretrain(enc, d, loss="isogclr", loss_kw={"eta": 0.05}, epochs=3, batch_size=64)
    assert res.history["tau_mean"][-1] != pytest.approx(0.7, abs=1e-4)
    assert res.loss.tau_grad.abs().sum() > 0
