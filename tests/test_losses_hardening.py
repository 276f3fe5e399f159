"""Issue 11, "Losses": low-precision gradients, RCE's log 0 constant, constraints declared once."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab import losses
from robustlab._validation import InvalidParameterError
from robustlab.losses import functional as LF
from robustlab.losses._fn_prob import RCE_LOG_ZERO, RCE_LOG_ZERO_CODE


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mae_gradient_survives_half_precision(dtype):
    # the repro: p_y ~ 1e-3, bf16 gave grad -0.0 (float32: -2.017e-3)
    x = torch.zeros(1, 10, dtype=dtype)
    x[0, 0] = -4.7
    x.requires_grad_()
    v = LF.mae(x, torch.tensor([0]))
    v.backward()
    ref = x.detach().float().requires_grad_()  # -4.7 rounds to -4.6875 in bf16
    LF.mae(ref, torch.tensor([0])).backward()
    assert v.dtype == dtype and x.grad.dtype == dtype
    assert float(x.grad[0, 0]) == pytest.approx(float(ref.grad[0, 0]), rel=1e-2)
    assert float(x.grad[0, 0]) == pytest.approx(-2.017e-3, rel=2e-2)


@pytest.mark.parametrize("name", ["mae", "rce", "sce", "nce_rce", "gce", "tgce", "comp_sum"])
def test_probability_losses_keep_gradient_in_bf16(name):
    kw = {"num_samples": 4} if name == "tgce" else {}
    loss = losses.get(name, reduction="sum", **kw)
    x = torch.zeros(4, 10)
    x[:, 0] = torch.tensor([-4.7, -6.0, -7.0, -8.0])  # p_y from ~1e-3 down to ~4e-5
    y = torch.zeros(4, dtype=torch.long)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        xi = x.to(torch.bfloat16).to(dtype).detach().requires_grad_()  # both from the same rounded logits
        loss(xi, y, **({"index": torch.arange(4)} if name == "tgce" else {})).float().backward()
        grads.append(xi.grad.float()[:, 0])
    assert bool((grads[1] < 0).all()), grads
    torch.testing.assert_close(grads[1], grads[0], rtol=2e-2, atol=0)


def test_rce_log_zero_default_and_code_value():
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g)
    one_minus = 1 - torch.softmax(f, 1).gather(1, y[:, None]).squeeze(1)
    assert RCE_LOG_ZERO == -4.0 and RCE_LOG_ZERO_CODE == pytest.approx(-9.210340371976182)
    torch.testing.assert_close(LF.rce(f, y, reduction="none"), 4 * one_minus)
    # the official SCE/APL code: -sum_k clamp(p, 1e-7, 1) log clamp(e_y, 1e-4, 1)
    p = torch.softmax(f, 1).clamp(1e-7, 1.0)
    code = -(p * torch.log(torch.nn.functional.one_hot(y, 5).double().clamp(1e-4, 1.0))).sum(1)
    torch.testing.assert_close(LF.rce(f, y, log_zero=math.log(1e-4), reduction="none"), code, rtol=1e-6, atol=1e-6)
    ce = torch.nn.functional.cross_entropy(f, y, reduction="none")
    torch.testing.assert_close(LF.sce(f, y, alpha=0.1, beta=1.0, log_zero=math.log(1e-4), reduction="none"),
                               0.1 * ce + code, rtol=1e-6, atol=1e-6)
    m = losses.get("nce_rce", log_zero=RCE_LOG_ZERO_CODE, reduction="none")
    assert m.log_zero == RCE_LOG_ZERO_CODE and "log_zero=" in repr(m)
    torch.testing.assert_close(m(f, y) - LF.nce(f, y, reduction="none"), -RCE_LOG_ZERO_CODE * one_minus)


@pytest.mark.parametrize("name", ["rce", "sce", "nce_rce"])
@pytest.mark.parametrize("bad", [0.0, 1.0, float("nan"), float("-inf"), "x"])
def test_log_zero_must_be_negative_and_finite(name, bad):
    with pytest.raises(InvalidParameterError, match=rf"'log_zero' parameter of {name} must be a float in \(-inf, 0\)"):
        losses.get(name, log_zero=bad)
    with pytest.raises(InvalidParameterError, match="'log_zero'"):
        getattr(LF, name)(torch.zeros(2, 3), torch.tensor([0, 1]), log_zero=bad)


def test_constraints_are_declared_once_on_the_functional():
    # the module reads the functional's declaration: one object, not a copy
    assert losses.GCELoss.parameter_constraints()["q"] is LF.gce.parameter_constraints["q"]
    assert set(losses.TruncatedGCELoss.parameter_constraints()) == {"q", "k", "num_samples", "min_kept"}
    with pytest.raises(InvalidParameterError, match=r"^The 'q' parameter of gce must be a float in \(0, 1\]. Got 0 instead.$"):
        losses.get("gce", q=0)
    with pytest.raises(InvalidParameterError, match="'num_samples' parameter of TruncatedGCELoss"):
        losses.get("tgce", num_samples=0)


def test_paper_settings_use_the_codes_log_zero():
    from robustlab.bench.spec import expand

    cfgs = [r.config["loss"] for r in expand("paper-ldr") if r.config["loss"]["name"] == "nce_rce"]
    assert cfgs and all(c["kwargs"]["log_zero"] == pytest.approx(math.log(1e-4)) for c in cfgs)


@pytest.mark.parametrize("name", ["ce", "tgce", "aldr_kl", "cs"])
def test_int32_targets_and_indices_are_accepted(name):
    kw = {"num_samples": 6} if name in ("tgce", "aldr_kl") else {}
    f = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    a, b = losses.get(name, **kw), losses.get(name, **kw)
    idx = {"index": torch.arange(6)} if kw else {}
    idx32 = {"index": torch.arange(6, dtype=torch.int32)} if kw else {}
    torch.testing.assert_close(a(f, y.int(), **idx32), b(f, y, **idx))
    if name == "tgce":
        assert float(a.prune(f, y.int(), torch.arange(6, dtype=torch.int32))) == float(b.prune(f, y, torch.arange(6)))
    with pytest.raises(TypeError, match="integer class indices"):
        a(f, y.float(), **idx)
