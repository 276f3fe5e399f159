"""Loss registry, the ``Loss`` module base, the ``loss_function`` declaration and the reduction helper.

Hyper-parameters are declared once, on the functional form (``@loss_function(q=Interval(Real, 0, 1,
closed="right"))``); the functional validates them from that declaration and the module (:class:`Loss`)
reads the same declaration in ``__init__``. Module-only parameters (``num_samples``, ``seed``) are declared
in ``Loss.module_constraints``. The battery checks that the declared names equal the signatures' names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from .._constraints import Constraint, validate_param, validate_params
from .._registry import Registry
from .._validation import check_classification_inputs, check_reduction, check_target_range

__all__ = ["LOSSES", "HALF_DTYPES", "IndexedLoss", "Loss", "as_long_target", "loss_function", "reduce_loss",
           "register_loss"]

#: logits of these dtypes are computed in float32 and the result cast back (the gradient reaches the logits)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def as_long_target(target: Any) -> Any:
    """Integer class indices of any integer dtype (int32, uint8, ...) as int64, which torch's kernels need;
    anything else (float, bool, not a tensor) is returned unchanged for the input checks to refuse."""
    if isinstance(target, torch.Tensor) and target.dtype != torch.int64 and not (
            target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex()):
        return target.long()
    return target


LOSSES: Registry[nn.Module] = Registry("loss", checks="robustlab.testing._losses")
register_loss = LOSSES.register


def reduce_loss(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` in {"none", "mean", "sum"} to a per-sample loss vector."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    check_reduction(reduction)
    raise AssertionError("unreachable")


def loss_function(*, state: tuple[str, ...] = (), **constraints: Constraint) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Declare a functional loss ``f(logits, target, *, <hyper-parameters>, reduction)`` and its constraints.

    The wrapped function validates every declared keyword argument it is given (an
    :class:`~robustlab._validation.InvalidParameterError` naming it) and passes the converted value on;
    integer targets of any dtype are passed as int64; half-precision logits (``HALF_DTYPES``) are computed
    in float32 and the result cast back, so the gradient survives where ``1 - p_y`` would round. ``state``
    names keyword arguments that carry per-sample state (validated by the function itself). The declaration
    is ``f.parameter_constraints`` (read-only); ``f.__wrapped__`` is the undecorated function.

    Example::

        @loss_function(q=Interval(Real, 0, 1, closed="right"))
        def gce(logits, target, *, q=0.7, reduction="mean"): ...
    """

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        owner = fn.__name__
        items = tuple(constraints.items())

        @functools.wraps(fn)
        def wrapper(logits: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            if kwargs:
                for name, c in items:
                    if name in kwargs:
                        kwargs[name] = validate_param(c, kwargs[name], name, owner)
            target = as_long_target(target)
            if isinstance(logits, torch.Tensor) and logits.dtype in HALF_DTYPES:
                return fn(logits.float(), target, **kwargs).to(logits.dtype)
            return fn(logits, target, **kwargs)

        wrapper.parameter_constraints = MappingProxyType(dict(constraints))  # type: ignore[attr-defined]
        wrapper.state_parameters = tuple(state)  # type: ignore[attr-defined]
        return wrapper

    return deco


class Loss(nn.Module):
    """Base of every registered loss: hyper-parameters validated in ``__init__``, one-line forward.

    A subclass's ``__init__`` calls ``super().__init__(reduction)`` then passes its hyper-parameters by
    keyword, in signature order, to ``self._init_hparams(q=q)``; they are validated against
    :meth:`parameter_constraints` (the functional's declaration plus :attr:`module_constraints`) and stored
    as attributes. Subclasses with no functional form implement :meth:`per_sample` returning shape (N,).
    Losses with per-sample state set ``needs_index = True`` and receive the data-set indices of the batch
    as ``index``.
    """

    needs_index: bool = False
    #: the functional form in ``robustlab.losses.functional`` this module wraps (``None``: override per_sample)
    functional: ClassVar[Callable[..., torch.Tensor] | None] = None
    #: constraints of module-only hyper-parameters (e.g. ``num_samples``); the functional's come from it
    module_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({})

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=type(self).__name__)

    def _init_hparams(self, **hparams: Any) -> None:
        """Validate ``hparams`` (passed in signature order) against :meth:`parameter_constraints`; store them."""
        fn_c = self.functional_constraints()
        fn_owner = getattr(type(self).functional, "__name__", type(self).__name__)
        values = {**validate_params(fn_c, {k: v for k, v in hparams.items() if k in fn_c}, fn_owner),
                  **validate_params(type(self).module_constraints, {k: v for k, v in hparams.items() if k not in fn_c},
                                    type(self).__name__)}
        self._hparam_names = tuple(hparams)
        self._functional_names = tuple(k for k in hparams if k in fn_c)
        for k in self._hparam_names:
            setattr(self, k, values[k])

    @classmethod
    def functional_constraints(cls) -> Mapping[str, Constraint]:
        """The hyper-parameter constraints declared on :attr:`functional` (empty without one)."""
        return getattr(cls.functional, "parameter_constraints", MappingProxyType({}))

    @classmethod
    def parameter_constraints(cls) -> dict[str, Constraint]:
        """Every hyper-parameter's constraint: the functional's declaration plus :attr:`module_constraints`."""
        return {**cls.functional_constraints(), **cls.module_constraints}

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        """Keyword arguments of :attr:`functional` equivalent to this module (state included) for ``index``."""
        if not hasattr(type(self).functional, "parameter_constraints"):  # an undeclared functional takes them all
            return self.hparams()
        return {k: getattr(self, k) for k in self.__dict__.get("_functional_names", ())}

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss, shape (N,)."""
        fn = type(self).functional
        if fn is None:
            raise NotImplementedError(f"{type(self).__name__} must define 'functional' or override per_sample.")
        return fn(logits, target, **self.functional_kwargs(index), reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return reduce_loss(self.per_sample(logits, target, index), self.reduction)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (used by ``repr`` and results records)."""
        return {k: getattr(self, k) for k in getattr(self, "_hparam_names", ())}

    def extra_repr(self) -> str:
        items = {**self.hparams(), "reduction": self.reduction}
        return ", ".join(f"{k}={v!r}" for k, v in items.items())


class IndexedLoss(Loss):
    """Base of losses with per-sample state (buffers of length ``num_samples``) read and written by ``index``."""

    needs_index = True
    num_samples: int

    def _batch_size(self, logits: Any) -> int:
        """Rows of ``logits``, after the structural checks (no device sync) that indexing the state needs."""
        owner = type(self).__name__
        if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
            raise TypeError(f"logits of {owner} must be a floating-point tensor. "
                            f"Got {getattr(logits, 'dtype', type(logits).__name__)}.")
        if logits.dim() != 2:
            raise ValueError(f"logits of {owner} must have shape (N, C). Got shape {tuple(logits.shape)}.")
        return int(logits.shape[0])

    def _rows(self, index: torch.Tensor | None, n: int) -> torch.Tensor:
        """Validate the data-set indices of a batch of ``n`` samples and return them."""
        self._index_structure(index)
        if index.numel():  # type: ignore[union-attr]
            self._index_range(*torch.stack(torch.aminmax(index)).tolist())  # one sync
        self._index_length(index, n)  # type: ignore[arg-type]
        return index  # type: ignore[return-value]

    def _rows_and_target(self, logits: torch.Tensor, target: Any, index: torch.Tensor | None, owner: str, *,
                         check_ranges: bool = True) -> torch.Tensor:
        """:meth:`_rows` and :func:`~robustlab._validation.check_classification_inputs` (as ``owner``) for one
        batch, with both range checks read in one device sync (:meth:`_check_ranges`; ``check_ranges=False``
        leaves them to the caller); returns the indices."""
        n = self._batch_size(logits)
        self._index_structure(index)
        self._index_length(index, n)  # type: ignore[arg-type]
        check_classification_inputs(logits, target, owner=owner, check_range=False)
        if check_ranges:
            self._check_ranges(logits, target, index, owner)  # type: ignore[arg-type]
        return index  # type: ignore[return-value]

    def _check_ranges(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor, owner: str) -> None:
        """The index and class-index range checks (index first), read in one device sync."""
        if index.numel():
            lo, hi, t_lo, t_hi = torch.stack([*torch.aminmax(index), *torch.aminmax(target)]).tolist()
            self._index_range(lo, hi)
            check_target_range(t_lo, t_hi, logits.shape[1], owner=owner)

    def _index_structure(self, index: Any) -> None:
        owner = type(self).__name__
        if index is None:
            raise ValueError(
                f"{owner} keeps per-sample state and needs the batch's data-set indices: call "
                "loss(logits, target, index=idx) (robustlab.training.fit passes them)."
            )
        if not isinstance(index, torch.Tensor) or index.dtype.is_floating_point or index.dtype == torch.bool \
                or index.is_complex():
            raise TypeError(f"index of {owner} must be an integer tensor of data-set indices. "
                            f"Got {getattr(index, 'dtype', type(index).__name__)}.")
        if index.dim() != 1:
            raise ValueError(f"index of {owner} must have shape (N,). Got shape {tuple(index.shape)}.")

    def _index_range(self, lo: int, hi: int) -> None:
        if lo < 0 or hi >= self.num_samples:
            raise ValueError(
                f"index of {type(self).__name__} holds data-set indices outside [0, {self.num_samples}) "
                f"(num_samples): min {lo}, max {hi}."
            )

    def _index_length(self, index: torch.Tensor, n: int) -> None:
        if index.shape[0] != n:
            raise ValueError(f"index of {type(self).__name__} has {index.shape[0]} entries for a batch of {n} samples.")
