"""The corruption registry, the :class:`Corruption` callable and :func:`corrupt`.

A corruption is a function ``fn(x, params, rng) -> x'`` on a float batch (N, C, H, W) in [0, 1] plus a
table of five parameter tuples (severities 1..5). ``CORRUPTIONS.get(name, severity=s)`` builds a
:class:`Corruption` (``params=`` overrides the table, e.g. identity parameters); calling it applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .._registry import Registry
from .._validation import InvalidParameterError, check_image_batch, check_int

__all__ = ["CORRUPTIONS", "Corruption", "SUITES", "available", "corrupt", "register_corruption", "suite"]

CORRUPTIONS: Registry[Corruption] = Registry("corruption", checks="robustlab.testing._corruptions")

#: Named lists of corruptions; filled by the modules defining them.
SUITES: dict[str, list[str]] = {}

Fn = Callable[[torch.Tensor, tuple[Any, ...], np.random.Generator], torch.Tensor]


class Corruption:
    """One corruption at one severity (or with explicit ``params``); call it on a batch (N, C, H, W).

    Attributes: ``name``, ``severity`` (0 = identity, 1..5; ``None`` when ``params`` are explicit),
    ``params`` (the parameter tuple used), ``faithful`` (``False`` for documented approximations of the
    reference implementation), ``note`` (what differs).
    """

    def __init__(self, name: str, fn: Fn, table: Sequence[tuple[Any, ...]], *, severity: int | None = 1,
                 params: tuple[Any, ...] | None = None, faithful: bool = True, note: str = "") -> None:
        self.name = name
        self.faithful = faithful
        self.note = note
        self._fn = fn
        if params is not None:
            self.severity: int | None = None
            self.params: tuple[Any, ...] | None = tuple(params)
        else:
            sev = check_int(severity, "severity", 0, len(table), owner=f"corruption '{name}'")
            self.severity = sev
            self.params = None if sev == 0 else tuple(table[sev - 1])

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x, f"corruption '{self.name}'")
        if self.params is None or x.shape[0] == 0:
            return x.clone()
        rng = _numpy_rng(generator)
        out = self._fn(x.detach(), self.params, rng)
        return out.clamp_(0.0, 1.0).to(dtype=x.dtype, device=x.device)

    def __repr__(self) -> str:
        what = f"severity={self.severity}" if self.severity is not None else f"params={self.params}"
        return f"Corruption({self.name!r}, {what})"


def _check_batch(x: torch.Tensor, owner: str) -> None:
    check_image_batch(x, "x", owner=owner)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"'x' of {owner} must be an image batch of shape (N, C, H, W) with C in {{1, 3}}. "
            f"Got shape {tuple(x.shape)} instead; add a channel dimension with x.unsqueeze(1) for (N, H, W)."
        )
    if min(x.shape[-2:]) < 8:
        raise ValueError(f"'x' of {owner} must have images of at least 8x8 pixels. Got {tuple(x.shape[-2:])}.")


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy Generator seeded from ``generator`` (or from torch's global RNG when ``None``)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def register_corruption(
    name: str,
    table: Sequence[tuple[Any, ...]],
    *,
    tags: Iterable[str] = (),
    reference: str = "",
    faithful: bool = True,
    note: str = "",
    identity: tuple[Any, ...] | None = None,
    known_failures: dict[str, str] | None = None,
) -> Callable[[Fn], Fn]:
    """Register ``fn(x, params, rng)`` under ``name`` with its five-severity ``table``.

    ``identity`` are parameters for which the corruption is the identity (checked by the battery).
    Tags: ``random`` when the output depends on the generator; ``faithful``/``approximate``.
    """
    if len(table) != 5:
        raise ValueError(f"Corruption '{name}' needs 5 severities. Got {len(table)}.")

    def deco(fn: Fn) -> Fn:
        def factory(*, severity: int | None = 1, params: tuple[Any, ...] | None = None) -> Corruption:
            return Corruption(name, fn, table, severity=severity, params=params, faithful=faithful, note=note)

        factory.__doc__ = fn.__doc__
        factory.identity_params = identity  # type: ignore[attr-defined]
        all_tags = set(tags) | {"faithful" if faithful else "approximate"}
        CORRUPTIONS.register(name, tags=all_tags, reference=reference, example_kwargs={"severity": 3},
                             known_failures=known_failures)(factory)
        return fn

    return deco


def available(pattern: str = "*", *, tags: Iterable[str] = ()) -> list[str]:
    """Sorted names of the registered corruptions (fnmatch ``pattern``, all ``tags`` required)."""
    return CORRUPTIONS.available(pattern, tags=tags)


def suite(name: str) -> list[str]:
    """The corruption names of the suite ``name`` (``common``, ``common_extra``, ``mnist_c``, ``all``)."""
    if name == "all":
        return available()
    if name not in SUITES:
        raise InvalidParameterError(
            f"The 'suite' parameter must be a str among {{{', '.join(repr(s) for s in [*SUITES, 'all'])}}}. "
            f"Got {name!r} instead."
        )
    return list(SUITES[name])


def corrupt(x: torch.Tensor, name: str, *, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the corruption ``name`` at ``severity`` (0 = unchanged, 1..5) to a batch (N, C, H, W) in [0, 1].

    Returns a new tensor of the same shape, dtype and device, values in [0, 1]. Random corruptions draw
    only from ``generator`` (one numpy generator is seeded from it), so a seeded generator makes the
    output reproducible. See :func:`available` for the names.
    """
    return CORRUPTIONS.get(name, severity=severity)(x, generator=generator)


# -- small shared helpers (torch <-> numpy, sizes) ------------------------------------------------

def to_numpy(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float64 numpy copy on the CPU."""
    return x.detach().to("cpu", torch.float64).numpy().copy()


def from_numpy(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype=like.dtype, device=like.device)


def size_scale(x: torch.Tensor, base: int = 32) -> float:
    """``min(H, W) / base``: pixel-unit parameters given for ``base``-px images are multiplied by it."""
    return min(int(x.shape[-2]), int(x.shape[-1])) / base
