"""Adversarial attacks: ``get(name, **kw)``, ``available()``, ``functional`` and the :class:`Attack` base.

An attack is configured at construction and called as ``attack(model, x, y, *, targets=None,
generator=None) -> x_adv`` on inputs in [0, 1]. Registered: ``fgsm``, ``pgd``, ``apgd_ce``, ``apgd_dlr``,
``apgd_t``, ``fab_t``, ``square``, ``zoo``, ``cw_l2`` (see ``available()``). Tags: ``linf``/``l2``, ``targeted``,
``white_box``/``black_box``, ``gradient``.
"""

from __future__ import annotations

from typing import Any

# One module per attack family; each registers its attacks on import.
from . import functional
from ._apgd import APGD, APGDT
from ._base import ATTACKS, NORMS, Attack, dlr_loss, margin, project, register_attack, targeted_dlr_loss
from ._cw import CWL2
from ._fab import FABT
from ._pgd import FGSM, PGD
from ._square import Square
from ._zoo import ZOO

__all__ = [
    "APGD", "APGDT", "ATTACKS", "Attack", "CWL2", "FABT", "FGSM", "NORMS", "PGD", "Square", "ZOO", "available",
    "dlr_loss", "functional", "get", "margin", "project", "register_attack", "targeted_dlr_loss",
]


def get(name: str, **kw: Any) -> Attack:
    """Build the attack registered under ``name`` with its options (e.g. ``get("pgd", eps=0.1, steps=40)``)."""
    return ATTACKS.get(name, **kw)


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered attack names matching ``pattern`` and carrying all ``tags``."""
    return ATTACKS.available(pattern, tags=tags)

