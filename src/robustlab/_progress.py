"""One progress-bar helper for every long loop (attacks, evaluations, certification, conformal, shift).

``progress_bar(iterable_or_total, desc, enabled)`` wraps :func:`tqdm.tqdm`. ``enabled=None`` (the default
everywhere in the Python API, spelled ``progress=None``) means "auto": show a bar only when stderr is a TTY,
so logs, pipes, CI and tests stay clean. A disabled bar is still a working iterator / context manager, so
callers never branch on it.

Example::

    from robustlab._progress import progress_bar
    for xb, yb in progress_bar(batches, "PGD batches", enabled=progress):
        ...
    with progress_bar(total=n, desc="certify", enabled=progress) as bar:
        bar.update(k)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled", "check_progress"]


def progress_enabled(enabled: bool | None = None) -> bool:
    """Resolve a ``progress=`` argument: ``None`` → stderr is a TTY; otherwise the bool itself."""
    if enabled is None:
        try:
            return bool(sys.stderr.isatty())
        except (AttributeError, ValueError):  # replaced or closed stderr
            return False
    return bool(enabled)


def check_progress(value: Any, name: str = "progress", *, owner: str | None = None) -> bool | None:
    """Validate a ``progress=`` argument (``None``, ``True`` or ``False``) and return it unchanged."""
    if value is not None and not isinstance(value, bool):
        from robustlab._validation import InvalidParameterError

        where = f" of {owner}" if owner else ""
        raise InvalidParameterError(
            f"The '{name}' parameter{where} must be a bool or None (auto: shown when stderr is a TTY). "
            f"Got {value!r} instead."
        )
    return value


def progress_bar(
    iterable: Iterable[Any] | int | None = None,
    desc: str | None = None,
    enabled: bool | None = None,
    *,
    total: int | None = None,
    leave: bool = False,
    unit: str = "it",
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual bar of ``total`` steps when given an int), shown only if enabled.

    ``enabled`` is ``True``/``False`` or ``None`` for auto (stderr is a TTY). The bar writes to stderr and
    is removed when done (``leave=False``) so nested loops (restarts inside batches) do not pile up lines.
    """
    if isinstance(iterable, int) and not isinstance(iterable, bool):
        total, iterable = iterable, None
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not progress_enabled(enabled),
        leave=leave,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        **kwargs,
    )
