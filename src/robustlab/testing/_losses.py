"""Conformance checks run on every registered loss (selected by tags).

Each check builds the loss from ``spec.example_kwargs`` on tiny seeded inputs (N=6, K=5). Losses with
``needs_index`` get ``index=arange(N)`` (their ``num_samples`` example is >= N); every comparison runs on
deep copies so per-sample state (ALDR-KL temperatures, EnsLoss generator state) is identical on both sides.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import pickle
from typing import Any

import torch

from .._registry import Spec
from .._validation import REDUCTIONS, InvalidParameterError
from . import check

__all__ = [
    "check_bad_hyperparameters", "check_bad_target", "check_bounded", "check_declared_constraints",
    "check_finite_extreme_logits", "check_gradcheck", "check_integer_target_dtypes", "check_low_precision_gradient", "check_module_equals_functional", "check_per_sample_independence", "check_pickle_state_dict",
    "check_reductions_agree", "check_repr_shows_hparams", "check_stateful_needs_index", "check_symmetric",
]

N, K = 6, 5


def _inputs(dtype: torch.dtype = torch.float64, scale: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(N, K, generator=g, dtype=dtype)
    target = torch.randint(0, K, (N,), generator=g)
    return logits, target


def _make(spec: Spec[Any], **kw: Any) -> Any:
    return spec.create(**{**spec.example_kwargs, **kw})


def _call(loss: Any, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None,
          per_sample: bool = False) -> torch.Tensor:
    """Call a deep copy of ``loss`` (state untouched), passing indices when it needs them."""
    m = copy.deepcopy(loss)
    kw: dict[str, Any] = {}
    if getattr(m, "needs_index", False):
        kw["index"] = torch.arange(logits.shape[0]) if index is None else index
    return m.per_sample(logits, target, **kw) if per_sample else m(logits, target, **kw)


def _functional(loss: Any, logits: torch.Tensor, target: torch.Tensor, reduction: str = "none",
                index: torch.Tensor | None = None) -> torch.Tensor:
    if getattr(loss, "needs_index", False) and index is None:
        index = torch.arange(logits.shape[0])
    return type(loss).functional(logits, target, **loss.functional_kwargs(index), reduction=reduction)


def _close(a: torch.Tensor, b: torch.Tensor, what: str, rtol: float = 1e-10, atol: float = 1e-10) -> None:
    if not torch.allclose(a, b, rtol=rtol, atol=atol):
        raise AssertionError(f"{what}: {a.tolist()} != {b.tolist()}")


@check()
def check_reductions_agree(spec: Spec[Any]) -> None:
    """'none' is (N,) of the logits' dtype; 'mean'/'sum' equal its mean/sum."""
    logits, target = _inputs()
    per = _call(_make(spec, reduction="none"), logits, target)
    assert per.shape == (N,), f"reduction='none' gave shape {tuple(per.shape)}, expected ({N},)"
    assert per.dtype == logits.dtype, f"dtype {per.dtype} != logits dtype {logits.dtype}"
    _close(_call(_make(spec, reduction="mean"), logits, target), per.mean(), "mean")
    _close(_call(_make(spec, reduction="sum"), logits, target), per.sum(), "sum")
    _close(_call(_make(spec), logits, target), per.mean(), "default reduction is mean")


@check()
def check_module_equals_functional(spec: Spec[Any]) -> None:
    """The module equals its functional form for every reduction."""
    logits, target = _inputs(seed=1)
    loss = _make(spec)
    assert type(loss).functional is not None, "module declares no functional form"
    for r in REDUCTIONS:
        m = _make(spec, reduction=r)
        _close(_call(m, logits, target), _functional(m, logits, target, r), f"module vs functional ({r})")


@check()
def check_per_sample_independence(spec: Spec[Any]) -> None:
    """Row i of the per-sample loss equals the loss of sample i alone."""
    logits, target = _inputs(seed=2)
    loss = _make(spec)
    full = _call(loss, logits, target, per_sample=True)
    for i in range(N):
        one = _call(loss, logits[i:i + 1], target[i:i + 1], index=torch.tensor([i]), per_sample=True)
        _close(one, full[i:i + 1], f"row {i} alone vs in batch")


@check()
def check_finite_extreme_logits(spec: Spec[Any]) -> None:
    """Values and gradients are finite for logits of +-1e4 in float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(3)
        signs = torch.where(torch.rand(N, K, generator=g) < 0.5, -1.0, 1.0)
        signs[0] = 1.0  # all equal
        signs[1] = -1.0
        logits = (1e4 * signs).to(dtype).requires_grad_(True)
        target = torch.randint(0, K, (N,), generator=g)
        loss = _make(spec, reduction="none").to(dtype)
        v = _call(loss, logits, target)
        assert bool(torch.isfinite(v).all()), f"non-finite loss for logits +-1e4 ({dtype}): {v.tolist()}"
        v.sum().backward()
        assert logits.grad is not None and bool(torch.isfinite(logits.grad).all()), (
            f"non-finite gradient for logits +-1e4 ({dtype})")


@check()
def check_gradcheck(spec: Spec[Any]) -> None:
    """torch.autograd.gradcheck of the functional form on a tiny float64 input."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    target = torch.tensor([0, 3, 1])
    loss = _make(spec, reduction="none")
    idx = torch.arange(3)
    assert torch.autograd.gradcheck(lambda f: _functional(loss, f, target, "none", idx), (logits,),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def _raises(fn: Any, exc: type[BaseException] | tuple[type[BaseException], ...], what: str) -> BaseException:
    try:
        fn()
    except exc as e:
        assert str(e), f"{what}: empty error message"
        return e
    raise AssertionError(f"{what}: no {exc} raised")


@check()
def check_bad_target(spec: Spec[Any]) -> None:
    """A (N, 1), out-of-range or floating ``target`` raises a clear error from module and functional."""
    logits, target = _inputs()
    loss = _make(spec)
    bad = {
        "shape (N, 1)": (target[:, None], ValueError),
        "label == K": (torch.full((N,), K), ValueError),
        "label < 0": (torch.full((N,), -1), ValueError),
        "float labels": (target.double(), TypeError),
        "wrong length": (target[:-1], ValueError),
    }
    for what, (t, exc) in bad.items():
        _raises(lambda t=t: _call(loss, logits, t), exc, f"module with {what}")
        _raises(lambda t=t: _functional(loss, logits, t), exc, f"functional with {what}")
    _raises(lambda: _make(spec, reduction="avg"), ValueError, "reduction='avg'")
    _raises(lambda: _functional(loss, logits, target, "avg"), ValueError, "functional reduction='avg'")


@check()
def check_bad_hyperparameters(spec: Spec[Any]) -> None:
    """Every hyper-parameter rejects NaN, +inf and a str with a message naming it (module and functional)."""
    loss = _make(spec)
    logits, target = _inputs()
    for name in loss.hparams():
        for bad in (float("nan"), float("inf"), "bad"):
            e = _raises(lambda name=name, bad=bad: _make(spec, **{name: bad}), (ValueError, TypeError),
                        f"{spec.name}({name}={bad!r})")
            assert f"'{name}'" in str(e), f"message does not name the parameter: {e}"
            kw = loss.functional_kwargs(torch.arange(N))
            if name in kw:
                kw[name] = bad
                _raises(lambda kw=kw: type(loss).functional(logits, target, **kw), (ValueError, TypeError),
                        f"functional {name}={bad!r}")


@check()
def check_pickle_state_dict(spec: Spec[Any]) -> None:
    """Pickle and state_dict round trips give the same values (state included)."""
    logits, target = _inputs(seed=5)
    loss = _make(spec, reduction="none")
    _call(loss, logits, target)  # warm any state on a copy (copy: state unchanged)
    if getattr(loss, "needs_index", False) or list(loss.buffers()):
        loss(logits, target, **({"index": torch.arange(N)} if loss.needs_index else {}))  # advance state
    clone = pickle.loads(pickle.dumps(loss))
    _close(_call(clone, logits, target), _call(loss, logits, target), "after pickle")
    fresh = _make(spec, reduction="none")
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    _close(_call(fresh, logits, target), _call(loss, logits, target), "after state_dict round trip")


@check()
def check_repr_shows_hparams(spec: Spec[Any]) -> None:
    """repr lists every hyper-parameter and the reduction."""
    loss = _make(spec)
    text = repr(loss)
    for name in [*loss.hparams(), "reduction"]:
        assert f"{name}=" in text, f"repr {text!r} does not show {name}"


@check(requires=("bounded",))
def check_bounded(spec: Spec[Any]) -> None:
    """Worst-case logits (f_y = -s, others +s), s = 1e2 .. 1e4: the loss saturates instead of growing with s."""
    loss = _make(spec, reduction="none")
    target = torch.arange(N) % K
    vals = []
    for s in (1e2, 1e3, 1e4):
        logits = torch.full((N, K), s, dtype=torch.float64)
        logits[torch.arange(N), target] = -s
        logits[N - 1] = torch.linspace(-s, s, K, dtype=torch.float64)  # a non-tied row too
        vals.append(_call(loss, logits, target))
    top = float(vals[0].abs().max())
    growth = float((vals[-1] - vals[0]).abs().max())  # unbounded losses grow ~linearly (or like log s)
    assert growth <= 0.1 * (1 + top), f"loss grows with the logit scale: {vals}"


@check(requires=("symmetric",))
def check_symmetric(spec: Spec[Any]) -> None:
    """Symmetric losses: sum over all K labels is the same constant for every logit vector."""
    loss = _make(spec, reduction="none")
    g = torch.Generator().manual_seed(6)
    sums = []
    for scale in (0.1, 1.0, 10.0):
        logits = scale * torch.randn(N, K, generator=g, dtype=torch.float64)
        total = torch.zeros(N, dtype=torch.float64)
        for y in range(K):
            total += _call(loss, logits, torch.full((N,), y))
        sums.append(total)
    allv = torch.cat(sums)
    assert float(allv.max() - allv.min()) <= 1e-9 * (1 + float(allv.abs().max())), f"sums vary: {allv.tolist()}"


@check(requires=("stateful",))
def check_stateful_needs_index(spec: Spec[Any]) -> None:
    """Stateful losses declare needs_index, keep their state in buffers, and reject missing/bad indices."""
    loss = _make(spec)
    assert loss.needs_index, "a 'stateful' loss must set needs_index = True"
    assert len(loss.state_dict()) > 0, "per-sample state must be registered buffers"
    n = loss.num_samples
    assert all(b.shape[0] == n for b in loss.buffers()), "state buffers must have num_samples rows"
    logits, target = _inputs()
    e = _raises(lambda: loss(logits, target), ValueError, "missing index")
    assert "index" in str(e)
    _raises(lambda: loss(logits, target, index=torch.arange(N) + n), ValueError, "index >= num_samples")
    _raises(lambda: loss(logits, target, index=torch.arange(N - 1)), ValueError, "index of the wrong length")
    assert not math.isnan(float(loss(logits, target, index=torch.arange(N))))


def _low_precision_inputs(seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose target probability p_y runs from ~0.2 down to ~1e-5 (target logit pushed down)."""
    g = torch.Generator().manual_seed(seed)
    logits = 0.5 * torch.randn(N, K, generator=g)
    target = torch.arange(N) % K
    logits[torch.arange(N), target] -= torch.tensor([0.0, 2.0, 4.7, 7.0, 9.0, 11.0])[:N]
    return logits, target


@check()
def check_low_precision_gradient(spec: Spec[Any]) -> None:
    """bf16/fp16 logits: the gradient matches the float32 gradient of the same (rounded) logits.

    Where the float32 gradient is non-negligible (> 1e-5) the low-precision one is non-zero, of the same sign
    and within 2% (a loss computed in half precision loses it when ``1 - p_y`` rounds, e.g. p_y < 2e-3 in
    bf16); elsewhere within 2% + 1e-6. The value has the logits' dtype.
    """
    base, target = _low_precision_inputs()
    loss = _make(spec, reduction="none")
    for dtype in (torch.bfloat16, torch.float16):
        low = base.to(dtype).requires_grad_(True)
        ref = low.detach().float().requires_grad_(True)
        v = _call(loss, low, target)
        assert v.dtype == dtype, f"{dtype} logits gave a loss of dtype {v.dtype}"
        v.float().sum().backward()
        _call(loss, ref, target).sum().backward()
        assert low.grad is not None and ref.grad is not None
        g, r = low.grad.float(), ref.grad
        big = r.abs() > 1e-5
        lost = big & ((g == 0) | (torch.sign(g) != torch.sign(r)))
        assert not bool(lost.any()), (
            f"{dtype}: gradient lost or of the wrong sign at {lost.nonzero().tolist()}: "
            f"{g[lost].tolist()} vs float32 {r[lost].tolist()} (compute in float32 and cast back)")
        bad = (g - r).abs() > 2e-2 * r.abs() + 1e-6
        assert not bool(bad.any()), f"{dtype}: gradient {g[bad].tolist()} != float32 {r[bad].tolist()}"


def _hyper_parameters(fn: Any, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p for p in params if p.name not in ("self", "logits", "target", "reduction", *skip)
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


@check()
def check_declared_constraints(spec: Spec[Any]) -> None:
    """Constraints are declared once and match the signatures; every bad value raises InvalidParameterError.

    The functional form is declared with ``losses.loss_function(**constraints)``; its keyword names (less
    ``reduction`` and declared state) equal the declared names, the module's ``__init__`` names equal
    ``parameter_constraints()``, every default satisfies its constraint, and each constraint's
    ``invalid_examples()`` is refused by the module and the functional with a message naming the parameter.
    """
    loss = _make(spec)
    cls, fn = type(loss), type(loss).functional
    assert fn is not None and hasattr(fn, "parameter_constraints"), (
        f"{cls.__name__}.functional must be declared with robustlab.losses.loss_function(...)")
    fn_c = dict(fn.parameter_constraints)
    fn_params = _hyper_parameters(fn, tuple(getattr(fn, "state_parameters", ())))
    assert set(fn_params) == set(fn_c), (
        f"functional {fn.__name__}: signature names {sorted(fn_params)} != declared {sorted(fn_c)}")
    all_c = cls.parameter_constraints()
    var = [p.name for p in inspect.signature(cls).parameters.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert not var, f"{cls.__name__}'s signature takes *{var[0]}: name every hyper-parameter (tools read it)"
    init_params = _hyper_parameters(cls.__init__)
    assert set(init_params) == set(all_c), (
        f"{cls.__name__}.__init__ names {sorted(init_params)} != declared {sorted(all_c)}")
    assert set(loss.hparams()) == set(all_c), f"hparams() {sorted(loss.hparams())} != declared {sorted(all_c)}"
    for params, cons in ((fn_params, fn_c), (init_params, all_c)):
        for name, p in params.items():
            if p.default is not p.empty:
                assert cons[name].is_satisfied_by(p.default), f"default {name}={p.default!r} violates {cons[name]!r}"
    logits, target = _inputs()
    for name, c in all_c.items():
        for bad in c.invalid_examples():
            e = _raises(lambda name=name, bad=bad: _make(spec, **{name: bad}), InvalidParameterError,
                        f"{spec.name}({name}={bad!r})")
            assert f"'{name}'" in str(e), f"message does not name the parameter: {e}"
            if name in fn_c:
                kw = {**loss.functional_kwargs(torch.arange(N)), name: bad}
                e = _raises(lambda kw=kw: fn(logits, target, **kw), InvalidParameterError,
                            f"functional {name}={bad!r}")
                assert f"'{name}'" in str(e), f"message does not name the parameter: {e}"


@check()
def check_integer_target_dtypes(spec: Spec[Any]) -> None:
    """Targets of any integer dtype (int32, int16, int8, uint8) give the int64 values, module and functional."""
    logits, target = _inputs(seed=8)
    loss = _make(spec, reduction="none")
    ref = _call(loss, logits, target)
    for dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        t = target.to(dtype)
        _close(_call(loss, logits, t), ref, f"module with {dtype} target")
        _close(_functional(loss, logits, t), _functional(loss, logits, target), f"functional with {dtype} target")
