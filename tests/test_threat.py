"""The one threat-model module (robustlab.attacks.threat): projection, random starts, the PGD loop with a
per-example ε, and that attacks, objectives, curves and defences all perturb through it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import attacks
from robustlab.attacks import threat
from robustlab.evaluate import _curve
from robustlab.training import Batch, objectives
from robustlab.training.objectives import _adversarial


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def test_threat_module_is_public_and_documented():
    import inspect

    assert "threat" in attacks.__all__ and attacks.threat is threat
    for name in threat.__all__:
        obj = getattr(threat, name)
        if inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_norms_are_declared_once():
    from robustlab.certify import ibp

    assert attacks.NORMS is threat.NORMS
    assert _adversarial.NORMS is threat.NORMS
    assert _curve.NORMS is threat.NORMS
    assert ibp.NORMS is threat.BOUND_NORMS and set(threat.NORMS) < set(threat.BOUND_NORMS)


@pytest.mark.parametrize("norm, scale", [("linf", 0.2), ("l2", 1.0)])
def test_project_with_per_example_eps(norm, scale):
    x, _ = _data()
    eps = torch.linspace(0.0, scale, x.shape[0])
    far = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 4 - 2
    p = threat.project(far, x, eps, norm)
    assert bool((_size(p - x, norm) <= eps + 1e-6).all())
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    assert torch.equal(p[0], x[0])  # eps = 0: the clean point
    # a constant tensor is the float radius, bit for bit
    assert torch.equal(threat.project(far, x, torch.full((x.shape[0],), scale), norm),
                       threat.project(far, x, scale, norm))


@pytest.mark.parametrize("norm, scale", [("linf", 0.2), ("l2", 1.0)])
@pytest.mark.parametrize("start", threat.STARTS)
def test_random_start_stays_in_the_ball(norm, scale, start):
    x, _ = _data()
    eps = torch.linspace(0.0, scale, x.shape[0])
    s = threat.random_start(x, eps, norm, torch.Generator().manual_seed(2), start)
    assert bool((_size(s - x, norm) <= eps + 1e-6).all())
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    assert (start == "none") == torch.equal(s, x)


@pytest.mark.parametrize("norm, scale", [("linf", 0.15), ("l2", 0.8)])
def test_pgd_per_example_eps(norm, scale):
    model = _model()
    x, y = _data()
    eps = torch.linspace(0.0, scale, x.shape[0])
    out = threat.pgd(model, x, threat.ce_sum(y), eps=eps, step_size=eps * 0.25, steps=6, norm=norm,
                     generator=torch.Generator().manual_seed(3))
    d = _size(out - x, norm)
    assert bool((d <= eps + 1e-6).all()) and float(d[-1]) > 0.5 * scale
    assert torch.equal(out[0], x[0])
    # a constant (N,) radius gives the float radius's result (exactly for L∞; L2 up to float rounding)
    const = threat.pgd(model, x, threat.ce_sum(y), eps=torch.full((x.shape[0],), scale),
                       step_size=torch.full((x.shape[0],), scale / 4), steps=6, norm=norm,
                       generator=torch.Generator().manual_seed(3))
    ref = threat.pgd(model, x, threat.ce_sum(y), eps=scale, step_size=scale / 4, steps=6, norm=norm,
                     generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(const, ref, rtol=0, atol=1e-6 if norm == "l2" else 0)


def test_pgd_zero_eps_is_the_input_without_a_draw():
    model = _model()
    x, y = _data()
    g = torch.Generator().manual_seed(4)
    state = g.get_state()
    assert torch.equal(threat.pgd(model, x, threat.ce_sum(y), eps=0.0, step_size=0.1, steps=3, generator=g), x)
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.7)])
def test_attack_objective_and_defence_share_the_loop(norm, eps):
    """PGD attack, the pgd_at inner maximisation and RiFT's adversarial data are the same computation."""
    from robustlab.defences._rift import _adversarial as rift_adversarial

    model = _model()
    x, y = _data()
    ref = threat.pgd(model, x, threat.ce_sum(y), eps=eps, step_size=eps / 4, steps=5, norm=norm,
                     generator=torch.Generator().manual_seed(5))
    atk = attacks.get("pgd", eps=eps, norm=norm, steps=5, step_size=eps / 4)
    out = atk(model, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, threat.project(ref, x, eps, norm))  # the attack's final projection
    obj = objectives.get("pgd_at", eps=eps, norm=norm, steps=5, step_size=eps / 4)
    obj.generator = torch.Generator().manual_seed(5)
    assert torch.equal(obj.perturb(model, x, threat.ce_sum(y)), ref)
    rift = rift_adversarial(model, x, y, eps=eps, step_size=eps / 4, steps=5, norm=norm,
                            generator=torch.Generator().manual_seed(5))
    assert torch.equal(rift, ref)


def test_curve_bisection_uses_the_per_example_loop():
    model = _model()
    x, y = _data()
    eps = torch.linspace(0.01, 0.2, x.shape[0])
    ref = threat.pgd(model, x, threat.ce_sum(y), eps=eps, step_size=eps * (2.5 / 4), steps=4, norm="linf",
                     generator=torch.Generator().manual_seed(6))
    got = _curve._pgd_per_example(model, x, y, eps, "linf", 4, torch.Generator().manual_seed(6))
    assert torch.equal(got, ref)


def test_pgd_leaves_model_mode_and_parameter_grads_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)).train()
    x, y = _data()
    stats = model[2].running_mean.clone()
    threat.pgd(model, x, threat.ce_sum(y), eps=0.1, step_size=0.03, steps=3, start="normal",
               generator=torch.Generator().manual_seed(0))
    assert model.training and torch.equal(model[2].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())
    v, _ = objectives.get("trades", eps=0.1, steps=2)(model, Batch(x, y, torch.arange(x.shape[0])),
                                                       nn.CrossEntropyLoss())
    assert torch.isfinite(v)


@pytest.mark.parametrize("kw, match", [
    ({"norm": "l7"}, "norm"),
    ({"start": "gaussian"}, "start"),
    ({"steps": -1}, "steps"),
    ({"eps": -0.1}, "eps"),
    ({"eps": float("nan")}, "eps"),
    ({"eps": torch.ones(3)}, r"shape \(24,\)"),
    ({"step_size": torch.ones(24, 1)}, "step_size"),
])
def test_pgd_refuses_bad_options(kw, match):
    from robustlab._validation import InvalidParameterError

    x, y = _data()
    args = {"eps": 0.1, "step_size": 0.02, "steps": 2, **kw}
    with pytest.raises(InvalidParameterError, match=match):
        threat.pgd(_model(), x, threat.ce_sum(y), **args)


def test_project_and_random_start_refuse_unknown_options():
    from robustlab._validation import InvalidParameterError

    x, _ = _data()
    with pytest.raises(InvalidParameterError, match="norm"):
        threat.project(x, x, 0.1, "linfinity")
    with pytest.raises(InvalidParameterError, match="kind"):
        threat.random_start(x, 0.1, "linf", None, "gauss")
