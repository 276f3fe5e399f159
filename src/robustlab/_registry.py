"""One small registry class shared by every concept (data, noise, models, losses, attacks, ...)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "Spec", "UnknownNameError"]


class UnknownNameError(KeyError, ValueError):
    """Raised when a registry lookup fails; the message names the closest match and the options."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Spec(Generic[T]):
    """What a registry stores for one name.

    Attributes:
        name: snake_case key, stable because it appears in results files.
        factory: callable building the object (a class or a function).
        tags: free-form labels used to select checks and filter listings.
        reference: paper or arXiv id the implementation follows.
        example_kwargs: keyword arguments that build a small valid instance (used by the battery).
        known_failures: ``{check_name: reason}`` turned into ``xfail`` by the conformance battery.
        doc: one-line summary (defaults to the first line of the factory's docstring).
    """

    name: str
    factory: Callable[..., T]
    tags: frozenset[str] = frozenset()
    reference: str = ""
    example_kwargs: dict[str, Any] = field(default_factory=dict)
    known_failures: dict[str, str] = field(default_factory=dict)
    doc: str = ""

    def create(self, **kwargs: Any) -> T:
        return self.factory(**kwargs)


class Registry(Generic[T]):
    """A name -> :class:`Spec` mapping with helpful errors.

    >>> r = Registry("widget")
    >>> @r.register("foo", tags={"a"}, reference="arXiv:0000.0000")
    ... def make_foo(): return 1
    >>> r.get("foo")
    1
    """

    def __init__(self, kind: str, *, checks: str | tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self.checks = checks  # module path(s) of the conformance battery for this concept
        self._specs: dict[str, Spec[T]] = {}

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        tags: Iterable[str] = (),
        reference: str = "",
        example_kwargs: dict[str, Any] | None = None,
        known_failures: dict[str, str] | None = None,
        doc: str = "",
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``; duplicates raise ``ValueError``."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"A {self.kind} name must be a non-empty string. Got {name!r} instead.")

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(
                Spec(
                    name=name,
                    factory=factory,
                    tags=frozenset(tags),
                    reference=reference,
                    example_kwargs=dict(example_kwargs or {}),
                    known_failures=dict(known_failures or {}),
                    doc=doc or _first_line(factory.__doc__),
                )
            )
            return factory

        return deco

    def add(self, spec: Spec[T]) -> None:
        if spec.name in self._specs:
            old = self._specs[spec.name].factory
            raise ValueError(
                f"The {self.kind} '{spec.name}' is already registered (by {_qualname(old)}); "
                f"refusing to overwrite it with {_qualname(spec.factory)}."
            )
        self._specs[spec.name] = spec

    # -- lookup -------------------------------------------------------------------------------
    def spec(self, name: str) -> Spec[T]:
        if not isinstance(name, str):
            raise TypeError(f"A {self.kind} name must be a str. Got {type(name).__name__} instead.")
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def get(self, name: str, **kwargs: Any) -> T:
        """Build the object registered under ``name`` with ``kwargs``."""
        return self.spec(name).create(**kwargs)

    def available(self, pattern: str = "*", *, tags: Iterable[str] = ()) -> list[str]:
        """Sorted names matching an fnmatch ``pattern`` and carrying every tag in ``tags``."""
        want = set(tags)
        return sorted(
            n for n, s in self._specs.items() if fnmatch.fnmatchcase(n, pattern) and want <= s.tags
        )

    def specs(self) -> list[Spec[T]]:
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._specs)
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"Unknown {self.kind} '{name}'.{hint} Available: {', '.join(names) or '(none)'}."


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0].strip()


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
