"""Named attack suites (declared once in ``SUITES``) and turning ``attacks=`` arguments into attack lists.

``standard`` is AutoAttack's standard suite (Croce & Hein, ICML 2020, arXiv:2003.01690): APGD-CE, APGD-T
(9 target classes), FAB-T (9 target classes), Square (5000 queries), 100 iterations each, one restart.
``fast`` drops FAB-T (APGD-CE, APGD-T, Square): cheaper, and on most models the same number, since FAB-T
rarely breaks a point both APGD runs missed.

Common budget options (``suite_kw``): ``steps`` goes to every attack whose budget is iterations, ``n_queries``
to every attack whose budget is queries (each attack class declares which, ``Attack.budget_param``), any
other key to the attacks that take it (e.g. ``n_target_classes``); a key that no attack of the suite takes is
an error naming which attacks take which budget.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._validation import InvalidParameterError, check_option
from ..attacks import ATTACKS, NORMS, Attack, budget_help, check_options, options

__all__ = ["SUITES", "Suite", "fast_ensemble", "resolve_attacks", "standard_ensemble", "suite_names"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suite:
    """A named cascade: ``attacks`` is a tuple of ``(attack name, default options)`` run in this order."""

    name: str
    attacks: tuple[tuple[str, dict[str, Any]], ...]
    doc: str

    def names(self) -> list[str]:
        """The attack names, in cascade order."""
        return [a for a, _ in self.attacks]


_AA = "Croce & Hein 2020, arXiv:2003.01690"
SUITES: dict[str, Suite] = {
    s.name: s for s in (
        Suite("standard", (("apgd_ce", {"steps": 100}), ("apgd_t", {"steps": 100, "n_target_classes": 9}),
                           ("fab_t", {"steps": 100, "n_target_classes": 9}), ("square", {"n_queries": 5000})),
              f"AutoAttack's standard suite: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square-5000 ({_AA})"),
        Suite("fast", (("apgd_ce", {"steps": 100}), ("apgd_t", {"steps": 100, "n_target_classes": 9}),
                       ("square", {"n_queries": 5000})),
              "cheaper cascade: APGD-CE, APGD-T (9 targets), Square-5000 (the standard suite without FAB-T)"),
    )
}


def suite_names() -> list[str]:
    """Names of the attack suites, sorted."""
    return sorted(SUITES)


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, [*SUITES, *ATTACKS], n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (f"Unknown attack or suite '{name}'.{hint} Suites: {', '.join(suite_names())}. "
            f"Attacks: {', '.join(ATTACKS)}.")


def _check_suite_kw(suite_kw: Any) -> dict[str, Any]:
    if suite_kw is None:
        return {}
    if not isinstance(suite_kw, dict) or not all(isinstance(k, str) for k in suite_kw):
        raise InvalidParameterError(f"The 'suite_kw' parameter must be a dict of attack options (e.g. "
                                    f"{{'steps': 50, 'n_queries': 1000}}) or None. Got {suite_kw!r} instead.")
    return {k: v for k, v in suite_kw.items() if v is not None}  # None: keep each attack's default


def _build_suite(suite: Suite, eps: float, norm: str, num_classes: int | None, kw: dict[str, Any],
                 notes: list[str]) -> list[Attack]:
    out: list[Attack] = []
    for name, defaults in suite.attacks:
        a_kw = {**defaults, **{k: v for k, v in kw.items() if k in options(name)}}
        if name in ("apgd_t", "fab_t") and num_classes is not None:
            if name == "apgd_t" and num_classes < 3:
                note = f"{suite.name} suite: {num_classes} classes, so APGD-T (targeted DLR, needs 3) is left out"
                log.warning(note)
                notes.append(note)
                continue
            a_kw["n_target_classes"] = max(1, min(int(a_kw["n_target_classes"]), num_classes - 1))
        out.append(ATTACKS.get(name, eps=eps, norm=norm, **a_kw))
    return out


def _unused_keys(kw: dict[str, Any], taken: set[str], where: str) -> None:
    for k in kw:
        if k not in taken:
            hint = f" Budget options: {budget_help()}" if k in ("steps", "n_queries") else ""
            raise InvalidParameterError(f"The 'suite_kw' option {k!r} is taken by none of the attacks of {where}."
                                        f"{hint}")


def resolve_attacks(attacks: Any, *, eps: float, norm: str, num_classes: int | None = None,
                    suite_kw: dict[str, Any] | None = None, notes: list[str] | None = None) -> list[Attack]:
    """Turn ``attacks`` into a list of :class:`Attack` for the threat model ``(eps, norm)``.

    ``attacks``: a suite name (``"standard"``, ``"fast"``), a registered attack name, an :class:`Attack`, a
    ``(name, options)`` pair, or a non-empty sequence of names / attacks / pairs. ``suite_kw`` holds options
    for every attack that takes them (budgets: ``steps``, ``n_queries``; per-attack options win); ``notes``
    (a list) receives what was left out.
    """
    notes = [] if notes is None else notes
    kw = _check_suite_kw(suite_kw)
    check_option(norm, "norm", NORMS, owner="resolve_attacks")
    if isinstance(attacks, str) and attacks in SUITES:
        suite = SUITES[attacks]
        _unused_keys(kw, {o for n in suite.names() for o in options(n)}, f"the {attacks!r} suite ({', '.join(suite.names())})")
        return _build_suite(suite, eps, norm, num_classes, kw, notes)
    if isinstance(attacks, (str, Attack)) or (isinstance(attacks, tuple) and len(attacks) == 2
                                             and isinstance(attacks[1], dict)):
        attacks = [attacks]
    if not isinstance(attacks, Sequence) or isinstance(attacks, str) or not attacks:
        raise TypeError("The 'attacks' parameter of robust_accuracy must be a suite name "
                        f"({', '.join(suite_names())}), an attack name, an Attack, or a non-empty list of them. "
                        f"Got {attacks!r} instead.")
    out: list[Attack] = []
    taken: set[str] = set()
    for a in attacks:
        if isinstance(a, Attack):
            for k, v in kw.items():
                if hasattr(a, k):
                    taken.add(k)
                    if getattr(a, k) != v:
                        raise InvalidParameterError(
                            f"The attack {a!r} was built with {k}={getattr(a, k)!r} but 'suite_kw' asks for "
                            f"{k}={v!r}: build it with that value, or pass its name so the suite options apply.")
            out.append(a)
            continue
        own: dict[str, Any]
        if isinstance(a, str):
            name, own = a, {}
        elif isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], dict):
            name, own = a
        else:
            raise TypeError(f"Cannot turn {a!r} into an attack: use a name, an Attack or (name, options).")
        if name not in ATTACKS:
            raise InvalidParameterError(_unknown(name))
        check_options(name, own)  # per-attack options: an option the attack does not take is an error
        accepted = set(options(name))
        taken |= accepted
        a_kw = {"eps": eps, "norm": norm, **{k: v for k, v in kw.items() if k in accepted}, **own}
        out.append(ATTACKS.get(name, **a_kw))
    _unused_keys(kw, taken, "this list")
    return out


def standard_ensemble(eps: float, norm: str = "linf", *, num_classes: int | None = None, steps: int = 100,
                      n_queries: int = 5000, n_target_classes: int = 9, include_fab: bool = True) -> list[Attack]:
    """AutoAttack's standard suite: APGD-CE, APGD-T, FAB-T (top-9 targets each), Square (5000 queries).

    ``include_fab=False`` gives the ``fast`` suite (no FAB-T). APGD-T needs ≥ 3 classes; with fewer it is
    left out (a warning is logged); the number of target classes is capped at ``num_classes − 1``.
    Croce & Hein, ICML 2020, arXiv:2003.01690.
    """
    check_option(norm, "norm", NORMS, owner="standard_ensemble")
    if not math.isfinite(float(eps)):
        raise InvalidParameterError(f"The 'eps' parameter of standard_ensemble must be finite. Got {eps!r} instead.")
    kw = {"steps": steps, "n_queries": n_queries, "n_target_classes": n_target_classes}
    return _build_suite(SUITES["standard" if include_fab else "fast"], eps, norm, num_classes, kw, [])


def fast_ensemble(eps: float, norm: str = "linf", *, num_classes: int | None = None, steps: int = 100,
                  n_queries: int = 5000, n_target_classes: int = 9) -> list[Attack]:
    """The ``fast`` suite: APGD-CE, APGD-T (top-9 targets), Square (5000 queries) — standard without FAB-T."""
    return standard_ensemble(eps, norm, num_classes=num_classes, steps=steps, n_queries=n_queries,
                             n_target_classes=n_target_classes, include_fab=False)
