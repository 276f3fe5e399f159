"""fit(precision=...): autocast on the training step only; weights and evaluation stay float32."""

import pytest
import torch
from _helpers import flat_params as _params
from _helpers import tiny_mlp

from robustlab import data
from robustlab._validation import InvalidParameterError
from robustlab.training import Objective, fit, predict_logits


@pytest.fixture(scope="module")
def digits():
    return data.load("digits").subset(n_train=300, n_test=100)


def _model(d, seed=0):
    return tiny_mlp(d, seed, hidden=(32,))


class _DtypeSpy(Objective):
    def __init__(self):
        self.dtypes = []

    def __call__(self, model, batch, loss):
        logits = model(batch.x)
        self.dtypes.append(logits.dtype)
        return loss(logits, batch.y), {}


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_training_step_runs_in_the_requested_precision(digits, precision, dtype):
    spy = _DtypeSpy()
    res = fit(_model(digits), digits, objective=spy, precision=precision, epochs=1, batch_size=100, progress=False)
    assert set(spy.dtypes) == {dtype}
    assert all(p.dtype == torch.float32 for p in res.model.parameters())
    assert predict_logits(res.model, digits.x_test).dtype == torch.float32  # evaluation stays float32


def test_bf16_learns_is_seeded_and_differs_from_fp32(digits):
    kw = dict(epochs=6, batch_size=32, lr=0.05, progress=False, seed=3)
    a = fit(_model(digits), digits, precision="bf16", **kw)
    b = fit(_model(digits), digits, precision="bf16", **kw)
    full = fit(_model(digits), digits, **kw)
    assert torch.equal(_params(a.model), _params(b.model))
    assert not torch.equal(_params(a.model), _params(full.model))
    assert a.history["test_acc"][-1] > 0.6 and abs(a.history["test_acc"][-1] - full.history["test_acc"][-1]) < 0.05


def test_fp16_uses_a_grad_scaler_and_learns(digits, monkeypatch):
    steps = []
    real = torch.amp.GradScaler.step

    def counted(self, opt, *a, **k):
        steps.append(self.get_scale())
        return real(self, opt, *a, **k)

    monkeypatch.setattr(torch.amp.GradScaler, "step", counted)
    h = fit(_model(digits), digits, precision="fp16", epochs=6, batch_size=32, lr=0.05, progress=False).history
    assert len(steps) == 6 * 10 and steps[0] > 1  # every step went through the scaler, with a loss scale
    assert h["test_acc"][-1] > 0.6


def test_adversarial_objective_under_bf16(digits):
    h = fit(_model(digits), digits, objective="pgd_at", objective_kw={"eps": 0.1, "steps": 2}, precision="bf16",
            epochs=2, batch_size=100, progress=False).history
    assert all(torch.isfinite(torch.tensor(h["loss"])))


def test_bad_precision(digits):
    with pytest.raises(InvalidParameterError, match=r"'precision' parameter of fit must be a str among \{'fp32', 'bf16', 'fp16'\}. Got 'fp8'"):
        fit(_model(digits), digits, precision="fp8", progress=False)


def _loss_names():
    from robustlab.losses import LOSSES

    return LOSSES.available()


@pytest.mark.parametrize("name", _loss_names())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_loss_keeps_a_correct_gradient_under_half_precision_logits(name, dtype):
    """What autocast hands a loss: half-precision logits. The gradient must be finite, non-zero and within 10% of
    the float32 one (relative L2); a loss that computes in half precision where it matters fails this."""
    import inspect

    from robustlab.losses import LOSSES

    spec = LOSSES.spec(name)
    n, c = 64, 10
    kw = dict(spec.example_kwargs)
    if "num_samples" in inspect.signature(spec.factory).parameters:
        kw["num_samples"] = n
    g = torch.Generator().manual_seed(0)
    base, y = 3 * torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)
    grads = []
    for dt in (torch.float32, dtype):
        loss = spec.create(**kw)
        x = base.clone().to(dt).requires_grad_(True)
        extra = {"index": torch.arange(n)} if getattr(loss, "needs_index", False) else {}
        value = loss(x, y, **extra)
        assert torch.isfinite(value.float()), f"{name}: non-finite loss under {dt}"
        value.backward()
        grads.append(x.grad.float())
    ref, half = grads
    assert bool(torch.isfinite(half).all()) and float(half.abs().sum()) > 0
    assert float((half - ref).norm() / ref.norm()) < 0.1
