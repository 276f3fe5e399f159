"""Sanity checks that flag gradient masking (Athalye et al. 2018; Carlini et al. 2019 checklist).

Robust accuracy must not increase with ε or with more attack steps, a black-box attack must not beat the
white-box one, input gradients must not vanish, and the model must return logits, not probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import check_in_range, check_int, check_option
from ..attacks import NORMS
from ..attacks._base import NO_INPUT_GRADIENT_FLAG, looks_like_probabilities, quiet_probability_warning
from ._robust import model_device, prepare_data, robust_accuracy

__all__ = ["SanityCheck", "SanityReport", "sanity_checks"]


@dataclass
class SanityCheck:
    """One check: ``name``, ``passed``, a human-readable ``detail`` and the measured ``values``.

    ``skipped`` checks could not run (e.g. PGD-based checks on a model without input gradient); they count as
    passed, and the check that explains why fails.
    """

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


@dataclass
class SanityReport:
    """All checks; ``passed`` is True when every check passed; ``str()`` says which failed and why."""

    checks: list[SanityCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[SanityCheck]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"passed": self.passed, "checks": [vars(c) for c in self.checks]}

    def __str__(self) -> str:
        lines = [f"{'SKIP' if c.skipped else 'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        head = "all sanity checks passed" if self.passed else f"{len(self.failures)} sanity check(s) FAILED"
        return "\n".join([head, *lines])


def sanity_checks(
    model: nn.Module,
    data: Any,
    *,
    eps: float,
    norm: str = "linf",
    eps_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0),
    steps: tuple[int, int] = (10, 50),
    n_queries: int = 1000,
    tolerance: float = 0.01,
    n: int | None = 256,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> SanityReport:
    """Run the gradient-masking checks with PGD and Square on up to ``n`` test points.

    - ``logits_not_probabilities``: output rows must not be non-negative and sum to 1;
    - ``nonzero_gradients``: the model has an input gradient (its graph is not cut) and the CE input gradient
      is non-zero for every correctly classified point;
    - ``monotone_in_eps``: PGD robust accuracy at ``eps·eps_factors`` does not increase (± ``tolerance``);
    - ``monotone_in_steps``: PGD with ``steps[1]`` steps is not weaker than with ``steps[0]`` (± tolerance);
    - ``black_box_not_stronger``: Square (``n_queries``) robust accuracy ≥ that of PGD-CE then PGD-margin − ``tolerance``.

    Without an input gradient the PGD-based checks are skipped (``SanityCheck.skipped``) and Square still runs.
    ``progress``: a bar over the checks (None: when stderr is a TTY).
    """
    owner = "sanity_checks"
    check_option(norm, "norm", NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, 1.0 if norm == "linf" else None, closed="right", owner=owner)
    check_in_range(tolerance, "tolerance", 0.0, 1.0, owner=owner)
    check_int(n_queries, "n_queries", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    device = model_device(model)
    was = model.training
    model.eval()
    try:
        x, y, _ = prepare_data(model, data, n, owner)
        xb, yb = x[:batch_size].to(device).clone().requires_grad_(True), y[:batch_size].to(device)
        with torch.enable_grad():
            logits = model(xb)
            g = None
            if logits.requires_grad:
                (g,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xb, allow_unused=True)
    finally:
        model.train(was)
    checks: list[SanityCheck] = []
    lg = logits.detach()
    probs = looks_like_probabilities(lg)
    checks.append(SanityCheck("logits_not_probabilities", not probs,
                              "outputs look like probabilities (rows sum to 1): attacks need logits" if probs
                              else "outputs are logits"))
    if g is None:
        checks.append(SanityCheck("nonzero_gradients", False, NO_INPUT_GRADIENT_FLAG,
                                  {"zero_gradient_points": int(yb.numel()), "input_gradient": False}))
    else:
        correct = lg.argmax(1) == yb
        zero = (g.flatten(1).abs().amax(1) == 0) & correct
        nz = int(zero.sum())
        checks.append(SanityCheck("nonzero_gradients", nz == 0,
                                  f"{nz} correctly classified point(s) have an exactly zero input gradient" if nz
                                  else "input gradients are non-zero", {"zero_gradient_points": nz}))
    bar = progress_bar(4, "sanity checks", enabled=progress)

    def acc(attack: Any, e: float) -> float:
        res = robust_accuracy(model, (x, y), attack, eps=e, norm=norm, batch_size=batch_size, seed=seed,
                              progress=False)
        return res.robust_accuracy

    with bar, quiet_probability_warning():
        if g is None:
            checks.extend(_square_only(acc, eps, n_queries, bar))
            return SanityReport(checks)
        checks.extend(_pgd_and_square(acc, eps, norm, eps_factors, steps, n_queries, tolerance, bar))
    return SanityReport(checks)


def _square_only(acc: Callable[[Any, float], float], eps: float, n_queries: int, bar: Any) -> list[SanityCheck]:
    why = "not run: the model has no input gradient, so PGD cannot run"
    out = [SanityCheck("monotone_in_eps", True, why, skipped=True),
           SanityCheck("monotone_in_steps", True, why, skipped=True)]
    bar.update(2)
    a_bb = acc(("square", {"n_queries": n_queries}), eps)
    bar.update(2)
    out.append(SanityCheck("black_box_not_stronger", True,
                           f"{why}; Square robust accuracy {a_bb:.4f} (the only valid attack here)",
                           {"black_box": a_bb, "white_box": None}, skipped=True))
    return out


def _pgd_and_square(acc: Callable[[Any, float], float], eps: float, norm: str, eps_factors: tuple[float, ...],
                    steps: tuple[int, int], n_queries: int, tolerance: float, bar: Any) -> list[SanityCheck]:
    checks: list[SanityCheck] = []
    eps_max = 1.0 if norm == "linf" else float("inf")
    grid = sorted({min(eps * f, eps_max) for f in eps_factors})
    accs = [acc(("pgd", {"steps": steps[0]}), e) for e in grid]
    bar.update(1)
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + tolerance]
    checks.append(SanityCheck(
        "monotone_in_eps", not rises,
        (f"robust accuracy increases with eps between {rises}: {dict(zip(grid, accs))}" if rises
         else f"robust accuracy non-increasing over eps {grid}: {[round(a, 4) for a in accs]}"),
        {"eps": grid, "robust_accuracy": accs}))
    a_few = accs[grid.index(min(grid, key=lambda e: abs(e - eps)))]
    a_many = acc(("pgd", {"steps": steps[1]}), eps)
    bar.update(1)
    ok = a_many <= a_few + tolerance
    checks.append(SanityCheck(
        "monotone_in_steps", ok,
        f"PGD-{steps[1]} robust accuracy {a_many:.4f} vs PGD-{steps[0]} {a_few:.4f}"
        + ("" if ok else ": more steps made the attack weaker"),
        {"few": a_few, "many": a_many}))
    a_bb = acc(("square", {"n_queries": n_queries}), eps)
    bar.update(1)
    # white-box reference: PGD on CE then on the margin loss (CE alone is weak on under-confident models)
    a_wb = min(a_few, a_many, acc([("pgd", {"steps": steps[1]}), ("pgd", {"steps": steps[1], "loss": "margin"})], eps))
    bar.update(1)
    ok = a_bb >= a_wb - tolerance
    checks.append(SanityCheck(
        "black_box_not_stronger", ok,
        f"Square robust accuracy {a_bb:.4f} vs PGD (CE, margin) {a_wb:.4f}"
        + ("" if ok else ": the black-box attack beats the white-box one, a sign of gradient masking"),
        {"black_box": a_bb, "white_box": a_wb}))
    return checks
