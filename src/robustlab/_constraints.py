"""Declarative parameter constraints, declared once and read by every entry point (scikit-learn's habit).

A constraint says what a parameter accepts; :func:`validate_params` checks a dict of values against a dict
of constraints and raises :class:`~robustlab._validation.InvalidParameterError` in the one message style
of :mod:`robustlab._validation`::

    >>> from numbers import Real
    >>> CONSTRAINTS = {"q": Interval(Real, 0, 1, closed="right"), "mode": Options({"a", "b"})}
    >>> validate_params(CONSTRAINTS, {"q": 0.7, "mode": "a"}, owner="gce")
    {'q': 0.7, 'mode': 'a'}
    >>> validate_params(CONSTRAINTS, {"q": 0}, owner="gce")
    Traceback (most recent call last):
    ...
    robustlab._validation.InvalidParameterError: The 'q' parameter of gce must be a float in (0, 1]. Got 0 instead.

Stable API: :class:`Constraint` (``is_satisfied_by``, ``describe``, ``invalid_examples``, ``convert``),
:class:`Interval`, :class:`Options`, :class:`Boolean`, :class:`AnyOf`, :func:`validate_params`,
:func:`validate_param`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from ._validation import InvalidParameterError

__all__ = ["AnyOf", "Boolean", "Constraint", "Interval", "ListOf", "Name", "Options", "validate_param",
           "validate_params"]

_CLOSED = ("both", "left", "right", "neither")


class Constraint:
    """What one parameter accepts. Subclasses implement the four methods below."""

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is accepted."""
        raise NotImplementedError

    def describe(self) -> str:
        """The accepted values in words, completing "must be ...": ``"a float in (0, 1]"``."""
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """The canonical form of an accepted ``value`` (``float`` for real intervals, ``int`` for integer ones)."""
        return value

    def invalid_examples(self) -> list[Any]:
        """A few values this constraint rejects (used by conformance checks to probe every parameter)."""
        return ["bad"]

    def hint(self, value: Any) -> str:
        """An extra sentence for the error about a rejected ``value`` (e.g. "Did you mean 'pgd'?"), or ""."""
        return ""


class Interval(Constraint):
    """A real (``type_=numbers.Real``) or integer (``numbers.Integral``) number in an interval.

    ``left``/``right`` ``None`` mean an open infinite end, so +-inf and NaN are always rejected unless a
    bound is ``math.inf`` itself and that end is closed. ``closed`` in {"both", "left", "right", "neither"}.
    bool is never a number here. Example: ``Interval(Real, 0, None, closed="neither")`` is "a float in (0, inf)".
    """

    def __init__(self, type_: type, left: float | None, right: float | None, *, closed: str = "both") -> None:
        if type_ not in (numbers.Real, numbers.Integral):
            raise TypeError(f"Interval type_ must be numbers.Real or numbers.Integral. Got {type_!r} instead.")
        if closed not in _CLOSED:
            raise ValueError(f"Interval closed must be one of {_CLOSED}. Got {closed!r} instead.")
        if left is not None and right is not None and left > right:
            raise ValueError(f"Interval left bound {left} exceeds the right bound {right}.")
        self.type = type_
        self.left, self.right, self.closed = left, right, closed

    def _closed_left(self) -> bool:
        return self.left is not None and self.closed in ("both", "left")

    def _closed_right(self) -> bool:
        return self.right is not None and self.closed in ("both", "right")

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.type):
            return False
        v = float(value)
        if math.isnan(v):
            return False
        lo = -math.inf if self.left is None else self.left
        hi = math.inf if self.right is None else self.right
        if v < lo or (v == lo and not self._closed_left()):
            return False
        return not (v > hi or (v == hi and not self._closed_right()))

    def describe(self) -> str:
        kind = "an int" if self.type is numbers.Integral else "a float"
        lo = "-inf" if self.left is None else f"{self.left:g}"
        hi = "inf" if self.right is None else f"{self.right:g}"
        return f"{kind} in {'[' if self._closed_left() else '('}{lo}, {hi}{']' if self._closed_right() else ')'}"

    def convert(self, value: Any) -> Any:
        return int(value) if self.type is numbers.Integral else float(value)

    def invalid_examples(self) -> list[Any]:
        out: list[Any] = ["bad", float("nan"), True]
        out.append(float("inf") if not (self.right == math.inf and self._closed_right()) else -math.inf)
        if self.left is not None and math.isfinite(self.left):
            out.append(self.left - 1 if not self._closed_left() else self.left - 1e-3 * max(1.0, abs(self.left)))
        if self.right is not None and math.isfinite(self.right):
            out.append(self.right + 1 if not self._closed_right() else self.right + 1e-3 * max(1.0, abs(self.right)))
        if self.type is numbers.Integral:
            out.append(0.5 if self.is_satisfied_by(0) or self.is_satisfied_by(1) else 1.5)
        return out

    def __repr__(self) -> str:
        t = "Integral" if self.type is numbers.Integral else "Real"
        return f"Interval({t}, {self.left!r}, {self.right!r}, closed={self.closed!r})"


class Options(Constraint):
    """One of a fixed set of values (``None`` allowed as an option). Listed in the given order."""

    def __init__(self, options: Iterable[Any]) -> None:
        self.options = tuple(options)
        if not self.options:
            raise ValueError("Options needs at least one option.")

    def is_satisfied_by(self, value: Any) -> bool:
        # `==` alone would accept 1.0 for 1 and True for 1; options are matched by type too
        return any(value is o or (type(value) is type(o) and value == o) for o in self.options)

    def describe(self) -> str:
        named = [o for o in self.options if o is not None]
        kind = "a str" if named and all(isinstance(o, str) for o in named) else "a value"
        return f"{kind} among {{{', '.join(repr(o) for o in self.options)}}}"

    def invalid_examples(self) -> list[Any]:
        return [v for v in ("bad", 1.5, object()) if not self.is_satisfied_by(v)][:2]

    def __repr__(self) -> str:
        return f"Options({self.options!r})"


class Boolean(Constraint):
    """``True`` or ``False`` (not 0/1)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "a bool"

    def invalid_examples(self) -> list[Any]:
        return ["bad", 1]

    def __repr__(self) -> str:
        return "Boolean()"


class AnyOf(Constraint):
    """Accepted when any of ``constraints`` accepts (the first that does converts the value)."""

    def __init__(self, *constraints: Constraint) -> None:
        if not constraints:
            raise ValueError("AnyOf needs at least one constraint.")
        self.constraints = constraints

    def is_satisfied_by(self, value: Any) -> bool:
        return any(c.is_satisfied_by(value) for c in self.constraints)

    def describe(self) -> str:
        parts = [c.describe() for c in self.constraints]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]

    def convert(self, value: Any) -> Any:
        return next(c for c in self.constraints if c.is_satisfied_by(value)).convert(value)

    def invalid_examples(self) -> list[Any]:
        return [v for c in self.constraints for v in c.invalid_examples() if not self.is_satisfied_by(v)]

    def __repr__(self) -> str:
        return f"AnyOf{self.constraints!r}"


class ListOf(Constraint):
    """A list of values each accepted by ``item``, at least ``min_len`` long; a bare value is read as ``[value]``.

    Example: ``ListOf(Interval(Real, 0, None, closed="neither"))`` accepts ``[0.05, 0.1]`` and ``0.1``.
    """

    def __init__(self, item: Constraint, *, min_len: int = 1) -> None:
        self.item, self.min_len = item, min_len

    @staticmethod
    def _as_list(value: Any) -> list[Any]:
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def is_satisfied_by(self, value: Any) -> bool:
        v = self._as_list(value)
        return len(v) >= self.min_len and all(self.item.is_satisfied_by(e) for e in v)

    def describe(self) -> str:
        size = "a non-empty list" if self.min_len == 1 else f"a list of at least {self.min_len}" if self.min_len else "a list"
        return f"{size} of values each {self.item.describe()}"

    def convert(self, value: Any) -> Any:
        return [self.item.convert(e) for e in self._as_list(value)]

    def invalid_examples(self) -> list[Any]:
        return ([[]] if self.min_len else []) + [[e] for e in self.item.invalid_examples()]

    def hint(self, value: Any) -> str:
        bad = [e for e in self._as_list(value) if not self.item.is_satisfied_by(e)]
        return self.item.hint(bad[0]) if bad else ""

    def __repr__(self) -> str:
        return f"ListOf({self.item!r}, min_len={self.min_len})"


class Name(Constraint):
    """A name registered in ``module.attr`` (a :class:`~robustlab._registry.Registry`, imported on first use)."""

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr

    def _registry(self) -> Any:
        import importlib

        return getattr(importlib.import_module(self.module), self.attr)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self._registry()

    def describe(self) -> str:
        reg = self._registry()
        return f"a registered {reg.kind} name ({', '.join(reg)})"

    def invalid_examples(self) -> list[Any]:
        return ["no_such_name", 3]

    def hint(self, value: Any) -> str:
        import difflib

        close = difflib.get_close_matches(str(value), list(self._registry()), n=1, cutoff=0.5)
        return f" Did you mean '{close[0]}'?" if close else ""

    def __repr__(self) -> str:
        return f"Name({self.module!r}, {self.attr!r})"


def validate_param(constraint: Constraint, value: Any, name: str, owner: str | None = None) -> Any:
    """Check one ``value`` against ``constraint`` and return its canonical form.

    Raises :class:`InvalidParameterError`: "The 'q' parameter of gce must be a float in (0, 1]. Got 0 instead."
    """
    if not constraint.is_satisfied_by(value):
        where = f" of {owner}" if owner else ""
        raise InvalidParameterError(
            f"The '{name}' parameter{where} must be {constraint.describe()}. Got {value!r} instead."
            + constraint.hint(value)
        )
    return constraint.convert(value)


def validate_params(constraints: Mapping[str, Constraint], values: Mapping[str, Any],
                    owner: str | None = None) -> dict[str, Any]:
    """Validate ``values`` (a subset of the names in ``constraints``) and return them converted, in order.

    A name without a declared constraint is an :class:`InvalidParameterError` (a typo or an undeclared
    parameter), so declarations cannot silently fall behind the signature.
    """
    unknown = [k for k in values if k not in constraints]
    if unknown:
        where = f" of {owner}" if owner else ""
        raise InvalidParameterError(
            f"Unknown parameter(s) {', '.join(repr(k) for k in unknown)}{where}; accepted: "
            f"{', '.join(constraints) or '(none)'}."
        )
    return {k: validate_param(constraints[k], v, k, owner) for k, v in values.items()}
