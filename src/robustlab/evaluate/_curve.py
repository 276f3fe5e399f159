"""Robust error vs ε, a fitted power law ``err(ε) ≈ A·ε^k`` and per-example minimal ε by bisection.

Cubuk, Zoph, Schoenholz & Le, "Intriguing Properties of Adversarial Examples", ICLR 2018 workshop,
arXiv:1711.02846: adversarial error scales as a power law of ε at small ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._progress import check_progress, progress_bar, progress_enabled
from .._validation import InvalidParameterError, check_in_range, check_int, check_option
from ..attacks import NoInputGradientError, threat
from ..attacks import get as get_attack
from ..attacks._base import NO_INPUT_GRADIENT_FLAG, has_input_gradient, quiet_probability_warning
from ..attacks.threat import NORMS
from ._robust import model_device, prepare_data, prepare_source, probability_flag

__all__ = ["PowerLawFit", "RobustnessCurve", "fit_power_law", "minimal_epsilon", "robustness_curve"]


@dataclass
class PowerLawFit:
    """``err(ε) ≈ A·ε^k`` fitted by least squares of ``log err`` on ``log ε``; ``ci`` is a bootstrap interval for k."""

    k: float
    a: float
    r2: float
    ci: tuple[float, float]
    eps_range: tuple[float, float]
    n_points: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {"k": self.k, "A": self.a, "r2": self.r2, "ci": list(self.ci), "eps_range": list(self.eps_range),
                "n_points": self.n_points}


def _ols_rows(log_eps: np.ndarray, log_err: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise OLS slope/intercept of ``log_err`` on ``log_eps`` restricted to ``mask`` (B, G)."""
    m = mask.astype(float)
    cnt = m.sum(1)
    xs = np.where(mask, log_eps[None, :], 0.0)
    ys = np.where(mask, log_err, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xs.sum(1) / cnt
        my = ys.sum(1) / cnt
        sxx = (m * (log_eps[None, :] - mx[:, None]) ** 2).sum(1)
        sxy = (m * (log_eps[None, :] - mx[:, None]) * (np.where(mask, log_err, 0.0) - my[:, None])).sum(1)
        slope = np.where((cnt >= 2) & (sxx > 0), sxy / sxx, np.nan)
    return slope, my - slope * mx


def fit_power_law(eps: Any, err: Any, *, max_err: float = 0.5, min_points: int = 3,
                  fooled: np.ndarray | None = None, bootstrap: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> PowerLawFit:
    """Fit ``err ≈ A·ε^k`` on the small-ε regime ``0 < err ≤ max_err`` (at least ``min_points`` points).

    ``fooled`` (examples × grid, booleans) enables a bootstrap over examples for the interval of ``k``
    (``bootstrap`` resamples, percentile interval). Raises ``ValueError`` with too few usable points.
    """
    owner = "fit_power_law"
    e = np.asarray(eps, dtype=float)
    r = np.asarray(err, dtype=float)
    if e.ndim != 1 or r.shape != e.shape:
        raise ValueError(f"fit_power_law: 'eps' and 'err' must be 1-D and of the same length. "
                         f"Got shapes {e.shape} and {r.shape}.")
    for name, arr in (("eps", e), ("err", r)):
        if not np.isfinite(arr).all():
            raise InvalidParameterError(f"The '{name}' parameter of {owner} holds {int((~np.isfinite(arr)).sum())} "
                                        "NaN or infinite value(s); pass finite numbers.")
        if (arr < 0).any():
            raise InvalidParameterError(f"The '{name}' parameter of {owner} must be non-negative. Got min {arr.min():g}.")
    check_in_range(max_err, "max_err", 0.0, 1.0, closed="right", owner=owner)
    check_int(min_points, "min_points", 2, None, owner=owner)  # a slope needs two points
    check_int(bootstrap, "bootstrap", 0, None, owner=owner)
    check_in_range(confidence, "confidence", 0.0, 1.0, closed="neither", owner=owner)
    if fooled is not None:
        fooled = np.asarray(fooled)
        if fooled.ndim != 2 or fooled.shape[1] != e.size:
            raise ValueError(f"fit_power_law: 'fooled' must have shape (examples, {e.size}) to match 'eps'. "
                             f"Got {fooled.shape}.")
    mask = (r > 0) & (r <= max_err) & (e > 0)
    if int(mask.sum()) < min_points:
        raise ValueError(f"fit_power_law: only {int(mask.sum())} grid point(s) with 0 < err <= {max_err}; need "
                         f"{min_points}. Use a finer or smaller eps grid.")
    le = np.log(np.where(e > 0, e, 1.0))
    lr = np.log(np.where(r > 0, r, 1.0))
    slope, icpt = _ols_rows(le, lr[None, :], mask[None, :])
    k, b = float(slope[0]), float(icpt[0])
    resid = lr[mask] - (b + k * le[mask])
    ss_tot = float(((lr[mask] - lr[mask].mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    ci = (float("nan"), float("nan"))
    if fooled is not None and bootstrap > 0 and fooled.shape[0] > 0:
        rng = np.random.default_rng(seed)
        nc = fooled.shape[0]
        counts = np.stack([np.bincount(rng.integers(0, nc, nc), minlength=nc) for _ in range(bootstrap)])
        errs = counts @ fooled.astype(float) / nc
        bmask = (errs > 0) & (errs <= max_err) & (e[None, :] > 0) & mask[None, :]
        ks, _ = _ols_rows(le, np.log(np.where(errs > 0, errs, 1.0)), bmask)
        ks = ks[np.isfinite(ks) & (bmask.sum(1) >= min(min_points, 2))]
        if ks.size:
            a = (1 - confidence) / 2
            ci = (float(np.quantile(ks, a)), float(np.quantile(ks, 1 - a)))
    sel = e[mask]
    return PowerLawFit(k=k, a=math.exp(b), r2=r2, ci=ci, eps_range=(float(sel.min()), float(sel.max())),
                       n_points=int(mask.sum()))


def _pgd_per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: str,
                     steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """PGD-CE (:func:`.threat.pgd`) with a per-example radius ``eps`` (N,), step ``2.5·ε/steps``.

    L∞ starts uniformly in the box; L2 starts at ``x``.
    """
    return threat.pgd(model, x, threat.ce_sum(y), eps=eps, step_size=eps * (2.5 / steps), steps=steps, norm=norm,
                      start="uniform" if norm == "linf" else "none", generator=generator)


def minimal_epsilon(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps_hi: float,
                    bisection_steps: int = 10, steps: int = 20, generator: torch.Generator | None = None,
                    batch_size: int = 256, progress: bool | None = None) -> torch.Tensor:
    """Per-example smallest ε at which PGD-CE (``steps`` steps) finds an adversarial example, by bisection.

    Returns (N,): 0 for points misclassified at ε = 0, ``inf`` for points the attack broke at no tried ε
    (``eps_hi`` or a bisection midpoint), else the upper end of the final bisection bracket (so the value is
    an ε at which an attack succeeded). All
    points are bisected together (each with its own radius) in ``bisection_steps + 1`` attack runs.
    ``x`` must be finite in [0, 1] and ``y`` integer labels inside the model's classes; a model without an input
    gradient is a :class:`~robustlab.attacks.NoInputGradientError`. ``progress``: a bar over batches.
    """
    owner = "minimal_epsilon"
    check_option(norm, "norm", NORMS, owner=owner)
    check_in_range(eps_hi, "eps_hi", 0.0, 1.0 if norm == "linf" else None, closed="right", owner=owner)
    check_int(bisection_steps, "bisection_steps", 0, None, owner=owner)
    check_int(steps, "steps", 1, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        x, y, _ = prepare_data(model, (x, y), None, owner)
        batches = ((x[s:s + batch_size].to(device), y[s:s + batch_size].to(device))
                   for s in range(0, x.shape[0], batch_size))
        return _minimal_eps_batches(model, batches, x[:1].to(device), -(-x.shape[0] // batch_size), norm=norm,
                                    eps_hi=eps_hi, bisection_steps=bisection_steps, steps=steps, generator=generator,
                                    progress=progress)
    finally:
        model.train(was_training)


def _minimal_eps_batches(model: nn.Module, batches: Any, x1: torch.Tensor, total: int, *, norm: str, eps_hi: float,
                         bisection_steps: int, steps: int, generator: torch.Generator | None,
                         progress: bool | None) -> torch.Tensor:
    """:func:`minimal_epsilon` over ``(x, y)`` batches already on the model's device (``x1``: a probe input)."""
    if x1.shape[0] and not has_input_gradient(model, x1):
        raise NoInputGradientError(f"minimal_epsilon bisects with PGD, but the model has {NO_INPUT_GRADIENT_FLAG}.")
    out = []
    with torch.enable_grad():
        for xb, yb in progress_bar(batches, "minimal eps batches", enabled=progress, total=total):
            out.append(_bisect(model, xb.detach(), yb, norm, float(eps_hi), bisection_steps, steps, generator).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _bisect(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps_hi: float, iters: int, steps: int,
            generator: torch.Generator | None) -> torch.Tensor:
    def fooled(eps: torch.Tensor) -> torch.Tensor:
        xa = _pgd_per_example(model, x, y, eps, norm, steps, generator)
        with torch.no_grad():
            return model(xa).argmax(1) != y

    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    hi = torch.full((x.shape[0],), eps_hi, dtype=x.dtype, device=x.device)
    lo = torch.zeros_like(hi)
    broken = fooled(hi) | wrong
    for _ in range(iters):
        mid = (lo + hi) / 2
        f = fooled(mid)
        hi = torch.where(f, mid, hi)
        lo = torch.where(f, lo, mid)
        broken |= f  # an attack that fails at eps_hi can still succeed at a smaller eps (it is not monotone)
    crit = torch.where(broken, hi, torch.full_like(hi, math.inf))
    return torch.where(wrong, torch.zeros_like(crit), crit)


@dataclass
class RobustnessCurve:
    """Result of :func:`robustness_curve`.

    ``robust_error[i] = 1 − robust accuracy`` at ``eps[i]`` over all points; ``adv_error[i]`` is the
    fraction of clean-correct points broken at ``eps[i]`` (the definition the power law is fitted to);
    ``fooled`` (clean-correct points × grid) is made monotone in ε (broken at ε' ≤ ε means broken at ε);
    ``raw_robust_accuracy`` is before that envelope (used by the sanity checks);
    ``critical_eps`` holds per-example minimal ε from bisection (or None).
    """

    eps: np.ndarray
    robust_error: np.ndarray
    adv_error: np.ndarray
    raw_robust_accuracy: np.ndarray
    fooled: np.ndarray
    fit: PowerLawFit | None
    critical_eps: torch.Tensor | None = None
    clean_accuracy: float = 0.0
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def k(self) -> float:
        """Fitted power-law exponent (NaN when the fit was not possible)."""
        return self.fit.k if self.fit is not None else float("nan")

    @property
    def k_ci(self) -> tuple[float, float]:
        """Bootstrap interval of the exponent (NaNs when unavailable)."""
        return self.fit.ci if self.fit is not None else (float("nan"), float("nan"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-example arrays)."""
        return {"eps": self.eps.tolist(), "robust_error": self.robust_error.tolist(),
                "adv_error": self.adv_error.tolist(), "clean_accuracy": self.clean_accuracy,
                "fit": None if self.fit is None else self.fit.to_dict(), "notes": self.notes, "flags": self.flags}


def robustness_curve(
    model: nn.Module,
    data: Any,
    *,
    eps_grid: Any,
    attack: str = "pgd",
    norm: str = "linf",
    attack_kw: dict[str, Any] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    n: int | None = None,
    max_err: float = 0.5,
    min_points: int = 3,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    bisection_steps: int = 0,
    progress: bool | None = None,
) -> RobustnessCurve:
    """Robust error vs ε on ``eps_grid`` with the same attack and seed at every ε, and a power-law fit.

    The fit ``adv_error(ε) ≈ A·ε^k`` uses the grid points with ``0 < adv_error ≤ max_err`` and a
    bootstrap over examples for the interval of ``k``. ``bisection_steps > 0`` also computes each point's
    minimal adversarial ε by bisection (:func:`minimal_epsilon`, PGD-CE) up to ``max(eps_grid)``.
    Inputs and labels are validated as in :func:`robust_accuracy`; a model whose outputs look like
    probabilities gets a flag (``flags``, once). ``progress``: bars over the grid and batches (None: TTY).
    Cubuk et al. 2018, arXiv:1711.02846.
    """
    owner = "robustness_curve"
    check_option(norm, "norm", NORMS, owner=owner)
    grid = np.sort(np.asarray(list(eps_grid), dtype=float))
    if grid.size == 0:
        raise ValueError("The 'eps_grid' parameter of robustness_curve must hold at least one value.")
    for e in grid:
        check_in_range(float(e), "eps_grid", 0.0, 1.0 if norm == "linf" else None, owner=owner)
    check_in_range(max_err, "max_err", 0.0, 1.0, closed="right", owner=owner)
    check_int(bootstrap, "bootstrap", 0, None, owner=owner)
    check_int(min_points, "min_points", 2, None, owner=owner)
    check_in_range(confidence, "confidence", 0.0, 1.0, closed="neither", owner=owner)
    check_int(bisection_steps, "bisection_steps", 0, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    device = model_device(model)
    kw = dict(attack_kw or {})
    show = progress_enabled(progress)
    was = model.training
    model.eval()  # the clean pass, the attacks and the check of each x_adv all run in eval mode
    try:
        src, _ = prepare_source(model, data, n, owner)
        flags = probability_flag(model, src.head(64)[0], device, owner) if src.n else []
        with torch.no_grad():
            clean = torch.cat([model(xb).argmax(1).cpu() == yb.cpu() for xb, yb, _ in src.batches(batch_size, device)]
                              or [torch.zeros(0, dtype=torch.bool)])
        idx = clean.nonzero().squeeze(1)
        raw = np.zeros((idx.numel(), grid.size), dtype=bool)
        raw_acc = np.zeros(grid.size)
        for gi, e in enumerate(progress_bar(grid, f"{attack} over eps", enabled=show)):
            atk = get_attack(attack, eps=float(e), norm=norm, **kw)
            gen = torch.Generator(device=device).manual_seed(seed)
            s = 0
            for xb, yb, j in src.batches(batch_size, device, select=clean):
                with quiet_probability_warning():
                    xa = atk(model, xb, yb, generator=gen, progress=False)
                with torch.no_grad():
                    raw[s:s + j.numel(), gi] = (model(xa).argmax(1) != yb).cpu().numpy()
                s += j.numel()
            raw_acc[gi] = (idx.numel() - raw[:, gi].sum()) / max(src.n, 1)
        crit = None
        if bisection_steps > 0:
            gen = torch.Generator(device=device).manual_seed(seed)
            crit = _minimal_eps_batches(
                model, ((xb, yb) for xb, yb, _ in src.batches(batch_size, device)),
                src.head(1)[0].to(device) if src.n else torch.zeros(0), -(-src.n // batch_size), norm=norm,
                eps_hi=float(grid.max()), bisection_steps=bisection_steps, steps=int(kw.get("steps", 20)),
                generator=gen, progress=show)
    finally:
        model.train(was)
    fooled = np.maximum.accumulate(raw, axis=1) if raw.size else raw
    nc = max(idx.numel(), 1)
    adv_error = fooled.sum(0) / nc
    n_all = max(src.n, 1)
    robust_error = 1.0 - (idx.numel() - fooled.sum(0)) / n_all
    notes: list[str] = ["adv_error = fraction of clean-correct points broken (fit target); "
                        "robust_error = 1 - robust accuracy"]
    fit: PowerLawFit | None
    try:
        fit = fit_power_law(grid, adv_error, max_err=max_err, min_points=min_points, fooled=fooled,
                            bootstrap=bootstrap, confidence=confidence, seed=seed)
    except ValueError as err:
        fit = None
        notes.append(str(err))
    return RobustnessCurve(eps=grid, robust_error=robust_error, adv_error=adv_error, raw_robust_accuracy=raw_acc,
                           fooled=fooled, fit=fit, critical_eps=crit,
                           clean_accuracy=float(clean.float().mean()) if clean.numel() else 0.0, notes=notes,
                           flags=flags)
