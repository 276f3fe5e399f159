"""Attack inputs, options and budgets: clear errors instead of silent or raw failures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import attacks
from robustlab._validation import InvalidParameterError


def _model_and_data(n: int = 8):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x = torch.rand(n, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 10
    return m.eval(), x, y


def test_budget_option_an_attack_does_not_take_names_which_attacks_take_it():
    with pytest.raises(InvalidParameterError) as e:
        attacks.get("square", eps=0.1, steps=5)
    msg = str(e.value)
    assert "'square' takes no parameter 'steps'" in msg and "n_queries" in msg
    assert "'steps' (iterations) is taken by apgd_ce" in msg and "'n_queries'" in msg and "square, zoo" in msg
    with pytest.raises(InvalidParameterError, match="'fgsm' takes no parameter 'n_queries'.*fgsm takes no budget"):
        attacks.get("fgsm", eps=0.1, n_queries=5)
    with pytest.raises(InvalidParameterError, match="takes no parameter 'stepz'"):
        attacks.get("pgd", eps=0.1, stepz=5)
    m, x, y = _model_and_data()
    with pytest.raises(InvalidParameterError, match="'square' takes no parameter 'steps'"):
        attacks.functional.square(m, x, y, eps=0.1, steps=5)
    assert attacks.functional.square(m, x, y, eps=0.1, n_queries=3, progress=False).shape == x.shape


def test_budget_params_are_declared_by_the_classes():
    b = attacks.budget_params()
    assert b["pgd"] == b["apgd_ce"] == b["apgd_t"] == b["fab_t"] == b["cw_l2"] == "steps"
    assert b["square"] == b["zoo"] == "n_queries" and b["fgsm"] is None
    assert attacks.get("square", eps=0.1, n_queries=7).budget() == {"n_queries": 7}


def test_int32_labels_work_and_match_int64():
    m, x, y = _model_and_data()
    a = attacks.get("pgd", eps=0.1, steps=3)
    ref = a(m, x, y, generator=torch.Generator().manual_seed(0))
    out = a(m, x, y.int(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, ref)
    t = attacks.get("apgd_ce", eps=0.1, steps=3)(m, x, y, targets=((y + 1) % 10).int())
    assert t.shape == x.shape


def test_nan_and_out_of_range_labels_are_errors():
    m, x, y = _model_and_data()
    a = attacks.get("fgsm", eps=0.1)
    xn = x.clone()
    xn[2, 3] = float("nan")
    with pytest.raises(ValueError, match="'x' of fgsm contains 1 NaN"):
        a(m, xn, y)
    with pytest.raises(ValueError, match=r"'y' of fgsm holds labels outside \[0, 10\): min 10, max 10"):
        a(m, x, torch.full((8,), 10))
    with pytest.raises(TypeError, match="integer class indices"):
        a(m, x, y.float())
    zero = attacks.get("pgd", eps=0.0)
    with pytest.raises(ValueError, match=r"'y' of pgd holds labels outside \[0, 10\)"):
        zero(m, x, torch.full((8,), 10))  # eps = 0 returns x, but only for valid labels
    assert torch.equal(zero(m, x, y.int()), x)


def test_gradient_attack_on_graph_cutting_model_is_a_clear_error():
    m, x, y = _model_and_data()

    class Cut(nn.Module):
        def forward(self, z):
            return m((z > 0.5).float())

    with pytest.raises(attacks.NoInputGradientError, match="no input gradient.*square"):
        attacks.get("pgd", eps=0.1)(Cut(), x, y)
    assert not attacks.has_input_gradient(Cut(), x[:1]) and attacks.has_input_gradient(m, x[:1])
    out = attacks.get("square", eps=0.1, n_queries=20)(Cut(), x, y, generator=torch.Generator().manual_seed(0))
    assert float((out - x).abs().max()) <= 0.1 + 1e-6


def test_progress_bar_only_on_request(monkeypatch):
    import io
    import sys

    class TTY(io.StringIO):
        def isatty(self):
            return True

    m, x, y = _model_and_data()
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    a = attacks.get("square", eps=0.05, n_queries=30)
    a(m, x, y, generator=torch.Generator().manual_seed(0), progress=False)
    assert err.getvalue() == ""
    ref = a(m, x, y, generator=torch.Generator().manual_seed(0), progress=None)  # auto: a TTY here
    assert "square queries" in err.getvalue()
    err.truncate(0)
    out = attacks.get("apgd_ce", eps=0.05, steps=3, restarts=2)(m, x, y, progress=True)
    assert "apgd_ce restarts" in err.getvalue() and out.shape == x.shape
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY: auto shows nothing, same numbers
    assert torch.equal(a(m, x, y, generator=torch.Generator().manual_seed(0)), ref)
    with pytest.raises(InvalidParameterError, match="'progress'"):
        a(m, x, y, progress="yes")
