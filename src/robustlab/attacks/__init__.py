"""Adversarial attacks: ``get(name, **kw)``, ``available()``, ``functional`` and the :class:`Attack` base.

An attack is configured at construction and called as ``attack(model, x, y, *, targets=None,
generator=None) -> x_adv`` on inputs in [0, 1]. Registered: ``fgsm``, ``pgd``, ``apgd_ce``, ``apgd_dlr``,
``apgd_t``, ``fab_t``, ``square``, ``zoo``, ``cw_l2`` (see ``available()``). Tags: ``linf``/``l2``, ``targeted``,
``white_box``/``black_box``, ``gradient``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import ATTACKS, NORMS, Attack, dlr_loss, margin, project, register_attack, targeted_dlr_loss
from ._pgd import FGSM, PGD

# One module per attack family; a module not written yet is skipped.
for _m in ("_apgd", "_square", "_zoo", "_cw", "_fab"):
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_m}":
            raise

from . import functional  # noqa: E402

__all__ = [
    "ATTACKS", "Attack", "FGSM", "NORMS", "PGD", "available", "dlr_loss", "functional", "get", "margin",
    "project", "register_attack", "targeted_dlr_loss",
]


def get(name: str, **kw: Any) -> Attack:
    """Build the attack registered under ``name`` with its options (e.g. ``get("pgd", eps=0.1, steps=40)``)."""
    return ATTACKS.get(name, **kw)


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered attack names matching ``pattern`` and carrying all ``tags``."""
    return ATTACKS.available(pattern, tags=tags)


def __getattr__(name: str) -> Any:
    # classes from the optional modules (APGD, APGDT, FABT, Square, ZOO, CWL2) without hard imports above
    for mod in ("_apgd", "_square", "_zoo", "_cw", "_fab"):
        m = importlib.import_module(f"{__name__}.{mod}")
        if hasattr(m, name):
            return getattr(m, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
