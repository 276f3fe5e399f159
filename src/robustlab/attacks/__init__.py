"""Adversarial attacks: ``get(name, **kw)``, ``available()``, ``functional`` and the :class:`Attack` base.

An attack is configured at construction and called as ``attack(model, x, y, *, targets=None,
generator=None) -> x_adv`` on inputs in [0, 1]. Registered: ``fgsm``, ``pgd``, ``apgd_ce``, ``apgd_dlr``,
``apgd_t``, ``fab_t``, ``square``, ``zoo``, ``cw_l2`` (see ``available()``). Tags: ``linf``/``l2``, ``targeted``,
``white_box``/``black_box``, ``gradient``.

Inputs: NaN/inf in ``x`` and labels outside the model's classes are errors; labels of any integer dtype work.
Gradient attacks (``uses_gradients``) on a model whose graph is cut (no input gradient) raise
:class:`NoInputGradientError` naming the gradient-free attacks; ``progress=`` on a call shows a bar over
restarts, target classes or queries (None: when stderr is a TTY).

Budgets: each attack class declares the constructor parameter that sets its budget (``budget_param``):
``steps`` (iterations) for the gradient attacks, ``n_queries`` (model queries per example) for Square and
ZOO, none for FGSM; :func:`budget_params` lists them and :func:`get` rejects an option an attack does not
take with a message naming which attacks take it.

Threat model: :mod:`robustlab.attacks.threat` holds the norms, the projection onto the ε-ball ∩ [0, 1], random
starts and the PGD loop (per-example ε) that attacks, training objectives, curves and defences share.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from .._validation import InvalidParameterError

# One module per attack family; each registers its attacks on import.
from . import functional, threat
from ._apgd import APGD, APGDT
from ._base import (
    ATTACKS,
    BUDGETS,
    NORMS,
    Attack,
    NoInputGradientError,
    dlr_loss,
    has_input_gradient,
    margin,
    project,
    register_attack,
    targeted_dlr_loss,
)
from ._cw import CWL2
from ._fab import FABT
from ._pgd import FGSM, PGD
from ._square import Square
from ._zoo import ZOO

__all__ = [
    "APGD", "APGDT", "ATTACKS", "Attack", "BUDGETS", "CWL2", "FABT", "FGSM", "NORMS", "NoInputGradientError", "PGD",
    "Square", "ZOO", "available", "budget_params", "check_options", "dlr_loss", "functional", "get",
    "has_input_gradient", "margin", "options", "project", "register_attack", "targeted_dlr_loss", "threat",
]


def get(name: str, **kw: Any) -> Attack:
    """Build the attack registered under ``name`` with its options (e.g. ``get("pgd", eps=0.1, steps=40)``).

    An option the attack does not take is an :class:`~robustlab._validation.InvalidParameterError` that lists
    the options it takes and, for a budget option (``steps`` / ``n_queries``), which attacks take which.
    """
    check_options(name, kw)
    return ATTACKS.get(name, **kw)


def options(name: str) -> list[str]:
    """The keyword options the attack ``name`` takes (its factory's parameters)."""
    params = inspect.signature(ATTACKS.spec(name).factory).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


@functools.cache
def _budget_param(name: str) -> str | None:
    spec = ATTACKS.spec(name)
    return getattr(spec.create(**spec.example_kwargs), "budget_param", None)


def budget_params() -> dict[str, str | None]:
    """``{attack name: the budget option it takes}`` (``"steps"``, ``"n_queries"`` or None), as each class declares."""
    return {n: _budget_param(n) for n in ATTACKS}


def budget_help() -> str:
    """One sentence saying which attacks take which budget option."""
    by: dict[str, list[str]] = {}
    for n, b in budget_params().items():
        by.setdefault(b or "", []).append(n)
    parts = [f"'{b}' ({BUDGETS[b]}) is taken by {', '.join(by[b])}" for b in BUDGETS if by.get(b)]
    if by.get(""):
        parts.append(f"{', '.join(by[''])} {'takes' if len(by['']) == 1 else 'take'} no budget option")
    return "; ".join(parts) + "."


def check_options(name: str, kw: dict[str, Any]) -> None:
    """Raise :class:`InvalidParameterError` when ``kw`` holds an option the attack ``name`` does not take."""
    spec = ATTACKS.spec(name)  # unknown names: the registry's "Did you mean" message
    params = inspect.signature(spec.factory).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return
    accepted = options(name)
    for k in kw:
        if k not in accepted:
            hint = f" Budget options: {budget_help()}" if k in BUDGETS else ""
            raise InvalidParameterError(
                f"The attack '{name}' takes no parameter {k!r}; it takes {', '.join(accepted)}.{hint}")


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered attack names matching ``pattern`` and carrying all ``tags``."""
    return ATTACKS.available(pattern, tags=tags)

