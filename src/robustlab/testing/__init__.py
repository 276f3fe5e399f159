"""The conformance battery: every registered item runs its concept's checks.

Each concept has a checks module (``Registry(kind, checks="robustlab.testing._losses")``) that
declares checks with :func:`check`. ``iter_checks(registry)`` yields ``(spec, check)`` pairs selected by
tags; :func:`parametrize_checks` turns them into pytest parameters, with ``Spec.known_failures``
turned into ``xfail``. A test module is three lines::

    @parametrize_checks(LOSSES)
    def test_loss(spec, check):
        check(spec)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .._registry import Registry, Spec

__all__ = ["CheckDef", "check", "check_id", "iter_checks", "parametrize_checks"]


@dataclass(frozen=True)
class CheckDef:
    """One declared check: ``fn(spec)`` runs for specs with all ``requires`` tags and no ``excludes`` tag."""

    name: str
    module: str
    fn: Callable[[Spec[Any]], None]
    requires: frozenset[str]
    excludes: frozenset[str]

    def __call__(self, spec: Spec[Any]) -> None:
        self.fn(spec)

    def __repr__(self) -> str:
        return self.name


_CHECKS: dict[str, list[CheckDef]] = {}


def check(*, requires: Iterable[str] = (), excludes: Iterable[str] = ()) -> Callable[[Callable[[Spec[Any]], None]], Callable[[Spec[Any]], None]]:
    """Declare a check in a checks module; it runs for specs carrying all ``requires`` tags and none of ``excludes``."""

    def deco(fn: Callable[[Spec[Any]], None]) -> Callable[[Spec[Any]], None]:
        name = fn.__name__
        _CHECKS.setdefault(fn.__module__, []).append(
            CheckDef(name, fn.__module__, fn, frozenset(requires), frozenset(excludes))
        )
        return fn

    return deco


def iter_checks(registry: Registry[Any]) -> Iterator[tuple[Spec[Any], CheckDef]]:
    """Yield ``(spec, check)`` for every registered item and every check that applies to it."""
    if not registry.checks:
        raise ValueError(f"The {registry.kind} registry declares no checks module.")
    modules = (registry.checks,) if isinstance(registry.checks, str) else tuple(registry.checks)
    checks: list[CheckDef] = []
    for mod in modules:
        importlib.import_module(mod)
        checks += _CHECKS.get(mod, [])
    for spec in registry.specs():
        for c in checks:
            if c.requires <= spec.tags and not (c.excludes & spec.tags):
                yield spec, c


def check_id(value: Any) -> str:
    """pytest id for a ``Spec`` (its name) or a check (its function name)."""
    if isinstance(value, Spec):
        return value.name
    if isinstance(value, CheckDef):
        return value.name
    return str(value)


def parametrize_checks(registry: Registry[Any]) -> Any:
    """``pytest.mark.parametrize("spec, check", ...)`` over :func:`iter_checks`, with xfails applied."""
    import pytest

    params = []
    for spec, c in iter_checks(registry):
        marks = []
        if c.name in spec.known_failures:
            marks.append(pytest.mark.xfail(reason=spec.known_failures[c.name], strict=True))
        params.append(pytest.param(spec, c, marks=marks, id=f"{spec.name}-{c.name}"))
    return pytest.mark.parametrize("spec, check", params)
