"""Conformance checks for every registered attack (``attacks.ATTACKS``).

Each check builds the attack from its ``example_kwargs`` (L2 variants get ``eps=1``) and runs it on a
tiny fixture: a 1-hidden-layer MLP trained for a second on the embedded ``digits`` set (8×8 images,
10 classes), cached for the session. Rules every attack inherits: the threat model, determinism per
generator, eval mode and untouched parameter ``.grad``, NaN/inf inputs and out-of-range labels refused, any
integer label dtype accepted, ``uses_gradients`` matching the ``gradient`` tag (gradient attacks refuse a
graph-cutting model), a declared budget parameter.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import nn

from .._registry import Spec
from .._validation import InvalidParameterError
from . import check

__all__ = ["GraphCuttingModel"]

_N = 48


@functools.lru_cache(maxsize=1)
def _fixture() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from ..data import load
    from ..models import create
    from ..training import fit

    data = load("digits")
    torch.manual_seed(0)  # only initialisation; attacks get explicit generators
    model = create("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=(32,))
    fit(model, data, epochs=8, batch_size=64, lr=0.1, progress=False, seed=0)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, data.x_test[:_N].clone(), data.y_test[:_N].clone()


def _norms(spec: Spec[Any]) -> list[str]:
    return [n for n in ("linf", "l2") if n in spec.tags]


def _build(spec: Spec[Any], norm: str | None = None, **over: Any) -> Any:
    kw = dict(spec.example_kwargs)
    norm = norm or _norms(spec)[0]
    kw["norm"] = norm
    if norm == "l2" and "eps" not in over:
        kw["eps"] = max(float(kw.get("eps", 1.0)), 1.0)
        if "step_size" in kw:
            kw["step_size"] = kw["eps"] / 4
    kw.update(over)
    return spec.create(**kw)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@check()
def check_output_contract(spec: Spec[Any]) -> None:
    """Same shape/dtype/device as x, x unchanged, output detached."""
    model, x, y = _fixture()
    for norm in _norms(spec):
        x0 = x.clone()
        xr = x.clone().requires_grad_(True)
        out = _build(spec, norm)(model, xr, y, generator=_gen())
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device, (out.shape, out.dtype)
        assert torch.equal(xr.detach(), x0), f"{spec.name} modified its input"
        assert not out.requires_grad and out.grad_fn is None, f"{spec.name} returned a tensor attached to a graph"
        assert xr.grad is None, f"{spec.name} wrote x.grad"


@check()
def check_threat_model(spec: Spec[Any]) -> None:
    """‖x_adv − x‖_p ≤ eps (+1e-6) and x_adv ∈ [0, 1], for each supported norm."""
    model, x, y = _fixture()
    for norm in _norms(spec):
        atk = _build(spec, norm)
        out = atk(model, x, y, generator=_gen())
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, f"{spec.name}/{norm} left [0, 1]"
        d = (out - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= atk.eps * (1 + 1e-6) + 1e-6, f"{spec.name}/{norm}: {float(size.max())} > eps {atk.eps}"


@check()
def check_eps_zero_returns_x(spec: Spec[Any]) -> None:
    """eps = 0 returns x exactly."""
    model, x, y = _fixture()
    for norm in _norms(spec):
        out = _build(spec, norm, eps=0.0)(model, x, y, generator=_gen())
        assert torch.equal(out, x), f"{spec.name}/{norm} changed x at eps=0"


class _Spy(nn.Module):
    """Wraps a model and records the train/eval mode seen by each forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.inner(x)


@check()
def check_mode_and_grads_restored(spec: Spec[Any]) -> None:
    """The attack runs the model in eval mode, restores train mode, and leaves parameter .grad alone."""
    model, x, y = _fixture()
    spy = _Spy(model)
    grads = []
    for p in spy.parameters():
        p.grad = torch.full_like(p, 0.5)
        grads.append(p.grad.clone())
    try:
        spy.train()
        _build(spec)(spy, x[:8], y[:8], generator=_gen())
        assert spy.training and all(m.training for m in spy.modules()), f"{spec.name} did not restore train mode"
        assert spy.modes and not any(spy.modes), f"{spec.name} ran the model in train mode"
        for p, g in zip(spy.parameters(), grads):
            assert p.grad is not None and torch.equal(p.grad, g), f"{spec.name} touched parameter .grad"
        spy.eval()
        _build(spec)(spy, x[:8], y[:8], generator=_gen())
        assert not spy.training, f"{spec.name} left an eval-mode model in train mode"
    finally:
        for p in spy.parameters():
            p.grad = None
        model.eval()


@check()
def check_batch_of_one(spec: Spec[Any]) -> None:
    """A batch of one example works and stays within the threat model."""
    model, x, y = _fixture()
    atk = _build(spec)
    out = atk(model, x[:1], y[:1], generator=_gen())
    assert out.shape == x[:1].shape
    assert float((out - x[:1]).abs().max()) <= atk.eps + 1e-6


@check()
def check_same_generator_same_output(spec: Spec[Any]) -> None:
    """The same generator seed (at call or at construction) gives the same output."""
    model, x, y = _fixture()
    atk = _build(spec)
    a = atk(model, x, y, generator=_gen(3))
    b = atk(model, x, y, generator=_gen(3))
    assert torch.equal(a, b), f"{spec.name}: same generator, different output"
    c = _build(spec, generator=_gen(3))(model, x, y)
    assert torch.equal(a, c), f"{spec.name}: generator at construction differs from generator at call"


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@check()
def check_robust_le_clean(spec: Spec[Any]) -> None:
    """On the trained fixture, robust accuracy ≤ clean accuracy (and the attack breaks something at large eps)."""
    model, x, y = _fixture()
    clean = _acc(model, x, y)
    for norm in _norms(spec):
        eps = 0.15 if norm == "linf" else 1.5
        over: dict[str, Any] = {"eps": eps}
        if "step_size" in spec.example_kwargs:
            over["step_size"] = eps / 4
        rob = _acc(model, _build(spec, norm, **over)(model, x, y, generator=_gen()), y)
        assert rob <= clean, f"{spec.name}/{norm}: robust {rob} > clean {clean}"
        assert rob < clean, f"{spec.name}/{norm} broke nothing at eps={eps} (clean {clean})"


@check(requires={"targeted"})
def check_targeted_hits_targets(spec: Spec[Any]) -> None:
    """With ``targets=``, the target hit rate beats that of the untargeted attack."""
    model, x, y = _fixture()
    targets = (y + 1) % 10
    over: dict[str, Any] = {"eps": 0.3}
    if "step_size" in spec.example_kwargs:
        over["step_size"] = 0.3 / 4
    atk = _build(spec, "linf" if "linf" in spec.tags else "l2", **({} if "linf" not in spec.tags else over))
    with torch.no_grad():
        hit_t = float((model(atk(model, x, y, targets=targets, generator=_gen())).argmax(1) == targets).float().mean())
        hit_u = float((model(atk(model, x, y, generator=_gen())).argmax(1) == targets).float().mean())
    assert hit_t > hit_u, f"{spec.name}: targeted hit rate {hit_t} <= untargeted {hit_u}"


@check()
def check_validation(spec: Spec[Any]) -> None:
    """Bad eps / norm raise InvalidParameterError; inputs outside [0, 1] raise a ValueError naming Normalize."""
    model, x, y = _fixture()
    norm = _norms(spec)[0]
    for bad in (-0.1, float("nan"), "0.1"):
        try:
            _build(spec, norm, eps=bad)
        except InvalidParameterError as e:
            assert "'eps' parameter" in str(e), str(e)
        else:
            raise AssertionError(f"{spec.name} accepted eps={bad!r}")
    if norm == "linf":
        try:
            _build(spec, "linf", eps=1.5)
        except InvalidParameterError:
            pass
        else:
            raise AssertionError(f"{spec.name} accepted an L∞ eps of 1.5")
    try:
        _build(spec, norm="l7")
    except (InvalidParameterError, ValueError):
        pass
    else:
        raise AssertionError(f"{spec.name} accepted norm='l7'")
    atk = _build(spec)
    try:
        atk(model, (x - 0.5) / 0.25, y)
    except ValueError as e:
        assert "[0, 1]" in str(e) and "Normalize" in str(e), str(e)
    else:
        raise AssertionError(f"{spec.name} accepted inputs outside [0, 1]")
    try:
        atk(model, x, y[:-1])
    except ValueError:
        pass
    else:
        raise AssertionError(f"{spec.name} accepted y of the wrong length")


@check()
def check_warns_on_probabilities(spec: Spec[Any]) -> None:
    """A model ending in softmax (rows summing to 1) triggers a UserWarning naming logits."""
    model, x, y = _fixture()
    probs = nn.Sequential(model, nn.Softmax(dim=1))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _build(spec)(probs, x[:4], y[:4], generator=_gen())
    assert any("logits" in str(m.message) for m in w), f"{spec.name} did not warn about probabilities"


@check(requires={"dlr"})
def check_dlr_needs_three_classes(spec: Spec[Any]) -> None:
    """DLR-based attacks refuse a 2-class model with a message saying 3 classes are needed."""
    torch.manual_seed(0)
    two = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    _, x, y = _fixture()
    try:
        _build(spec)(two, x[:4], (y[:4] % 2), generator=_gen())
    except ValueError as e:
        assert "3 classes" in str(e), str(e)
    else:
        raise AssertionError(f"{spec.name} ran DLR on 2 classes")


@check()
def check_repr_shows_hyperparameters(spec: Spec[Any]) -> None:
    """repr names the class and the eps."""
    r = repr(_build(spec))
    assert "eps=" in r, r


@check()
def check_rejects_nonfinite_inputs(spec: Spec[Any]) -> None:
    """NaN or ±inf anywhere in x is a ValueError naming NaN, never a result."""
    model, x, y = _fixture()
    atk = _build(spec)
    for bad in (float("nan"), float("inf"), float("-inf")):
        xb = x[:4].clone()
        xb[1, 0] = bad
        try:
            atk(model, xb, y[:4], generator=_gen())
        except ValueError as e:
            assert "NaN" in str(e) and "'x'" in str(e), str(e)
        else:
            raise AssertionError(f"{spec.name} accepted an input holding {bad}")


@check()
def check_accepts_any_integer_labels(spec: Spec[Any]) -> None:
    """int32 / int16 / uint8 labels give exactly the int64 result (no raw dtype error from a loss)."""
    model, x, y = _fixture()
    atk = _build(spec)
    ref = atk(model, x[:8], y[:8], generator=_gen())
    for dt in (torch.int32, torch.int16, torch.uint8):
        out = atk(model, x[:8], y[:8].to(dt), generator=_gen())
        assert torch.equal(out, ref), f"{spec.name}: {dt} labels changed the result"


@check()
def check_rejects_bad_labels(spec: Spec[Any]) -> None:
    """Labels outside [0, C), float labels and (for targeted attacks) out-of-range targets are clear errors."""
    model, x, y = _fixture()
    atk = _build(spec)
    for bad in (torch.full((4,), 10), torch.tensor([0, -1, 2, 3])):
        try:
            atk(model, x[:4], bad, generator=_gen())
        except ValueError as e:
            assert "'y'" in str(e) and "[0, 10)" in str(e), str(e)
        else:
            raise AssertionError(f"{spec.name} accepted labels {bad.tolist()} for a 10-class model")
    try:
        atk(model, x[:4], y[:4].float(), generator=_gen())
    except TypeError as e:
        assert "integer" in str(e), str(e)
    else:
        raise AssertionError(f"{spec.name} accepted float labels")
    if atk.supports_targets:
        try:
            atk(model, x[:4], y[:4], targets=torch.full((4,), 12), generator=_gen())
        except ValueError as e:
            assert "'targets'" in str(e), str(e)
        else:
            raise AssertionError(f"{spec.name} accepted targets outside the model's classes")
        try:
            atk(model, x[:4], y[:4], targets=y[:4].clone(), generator=_gen())
        except ValueError as e:
            assert "'targets'" in str(e) and "true label" in str(e), str(e)
        else:
            raise AssertionError(f"{spec.name} accepted targets equal to the true labels")


class GraphCuttingModel(nn.Module):
    """A model that cuts the autograd graph to its input: binarised input (``x > 0.5``), then ``inner``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x > 0.5).float())


@check()
def check_gradient_declaration(spec: Spec[Any]) -> None:
    """``uses_gradients`` agrees with the ``gradient`` tag; on a graph-cutting model gradient attacks raise
    NoInputGradientError naming the gradient-free attacks, and gradient-free attacks still run."""
    from ..attacks import NoInputGradientError

    model, x, y = _fixture()
    atk = _build(spec)
    assert atk.uses_gradients == ("gradient" in spec.tags), (
        f"{spec.name}: uses_gradients={atk.uses_gradients} but tags {sorted(spec.tags)}")
    cut = GraphCuttingModel(model)
    if atk.uses_gradients:
        try:
            atk(cut, x[:4], y[:4], generator=_gen())
        except NoInputGradientError as e:
            assert "no input gradient" in str(e) and "square" in str(e), str(e)
        else:
            raise AssertionError(f"{spec.name} ran on a model without input gradient")
    else:
        out = atk(cut, x[:4], y[:4], generator=_gen())
        assert out.shape == x[:4].shape


@check()
def check_budget_declared(spec: Spec[Any]) -> None:
    """``budget_param`` is None or a common budget option (``BUDGETS``) taken by the factory, and ``budget()`` reads it."""
    import inspect

    from ..attacks import BUDGETS

    atk = _build(spec)
    bp = atk.budget_param
    if bp is None:
        assert atk.budget() == {}
        return
    assert bp in BUDGETS, f"{spec.name}: budget_param {bp!r} is not one of {sorted(BUDGETS)}"
    assert bp in inspect.signature(spec.factory).parameters, f"{spec.name}: the factory takes no {bp!r}"
    value = spec.example_kwargs.get(bp)
    if value is not None:
        assert atk.budget() == {bp: value}, (atk.budget(), value)


@check()
def check_probability_warning_can_be_quieted(spec: Spec[Any]) -> None:
    """Inside ``quiet_probability_warning()`` (used by evaluations, which flag it once) no per-call warning."""
    from ..attacks._base import quiet_probability_warning

    model, x, y = _fixture()
    probs = nn.Sequential(model, nn.Softmax(dim=1))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with quiet_probability_warning():
            _build(spec)(probs, x[:4], y[:4], generator=_gen())
    assert not any("logits" in str(m.message) for m in w), f"{spec.name} warned inside quiet_probability_warning"
