"""Robust critical fine-tuning (RiFT): fine-tune the least robust-critical module, then interpolate.

Reference: Zhu, Hu, Wang, Xie, Yang, "Improving Generalization of Adversarial Training via Robust
Critical Fine-Tuning", ICCV 2023 (arXiv:2308.02533). Deviations from the released code (on purpose):
the adversarial set for the criticality scan is a held-out *training* subset, the weight projection
is applied after every step, and the interpolation is chosen on a validation split, never the test split.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import check_progress, progress_bar, progress_enabled
from .._validation import check_in_range, check_int, check_option
from ..attacks import threat

__all__ = ["RiFTResult", "module_robust_criticality", "robust_critical_fine_tuning"]

_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float | None,
                 steps: int, norm: str, generator: torch.Generator, batch_size: int = 512) -> torch.Tensor:
    step = float(step_size) if step_size is not None else 2.5 * eps / steps
    out = []
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        out.append(threat.pgd(model, xb, threat.ce_sum(yb), eps=eps, step_size=step, steps=steps, norm=norm,
                              start="uniform", generator=generator))
    return torch.cat(out)


@torch.no_grad()
def _mean_ce_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    loss, correct = 0.0, 0
    for s in range(0, x.shape[0], batch_size):
        lg = model(x[s:s + batch_size])
        loss += float(F.cross_entropy(lg, y[s:s + batch_size], reduction="sum"))
        correct += int((lg.argmax(1) == y[s:s + batch_size]).sum())
    n = max(x.shape[0], 1)
    return loss / n, correct / n


def module_robust_criticality(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float | None = None,
    steps: int = 10, norm: str = "linf", weight_ratio: float = 0.1, epochs: int = 3, lr: float = 1.0,
    batch_size: int = 64, modules: list[str] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> dict[str, float]:
    r"""Module robust criticality: the worst rise of adversarial loss when one module's weight moves.

    .. math:: \mathrm{MRC}(\theta^{(i)}) = \max_{\|\Delta\theta^{(i)}\|\le \rho\|\theta^{(i)}\|}
              \mathcal L_{adv}(\theta + \Delta\theta^{(i)}) - \mathcal L_{adv}(\theta)

    ``rho`` = ``weight_ratio``. The adversarial set is PGD(``eps``, ``steps``) on ``(x, y)`` built once;
    the max is approximated by ``epochs`` of SGD ascent (``lr``) on that module's weight, projected onto
    the ball after every step. Returns ``{module name: MRC}`` for every Linear/Conv module (or ``modules``).
    ``progress``: a bar over the scanned modules (``None``: shown when stderr is a TTY).
    """
    owner = "module_robust_criticality"
    check_progress(progress, owner=owner)
    check_option(norm, "norm", threat.NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, 1.0 if norm == "linf" else None, owner=owner)
    steps = check_int(steps, "steps", 1, None, owner=owner)
    check_in_range(weight_ratio, "weight_ratio", 0.0, None, closed="neither", owner=owner)
    check_int(epochs, "epochs", 1, None, owner=owner)
    check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    names = [n for n, m in model.named_modules() if isinstance(m, _MODULES)]
    if modules is not None:
        unknown = [m for m in modules if m not in names]
        if unknown:
            raise ValueError(f"{owner}: unknown modules {unknown}; Linear/Conv modules: {', '.join(names)}.")
        names = list(modules)
    gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
    was = model.training
    model.eval()
    try:
        x_adv = _adversarial(model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm, generator=gen)
        base_loss, _ = _mean_ce_acc(model, x_adv, y)
        out: dict[str, float] = {}
        for name in progress_bar(names, "RiFT criticality scan", progress, unit="module"):
            probe = copy.deepcopy(model).eval()
            for p in probe.parameters():
                p.requires_grad_(False)
            w: torch.Tensor = probe.get_submodule(name).weight  # type: ignore[assignment]
            w0 = w.detach().clone()
            radius = weight_ratio * float(w0.norm())
            w.requires_grad_(True)
            opt = torch.optim.SGD([w], lr=lr)
            worst = base_loss
            for _ in range(epochs):
                for s in range(0, x_adv.shape[0], batch_size):
                    loss = -F.cross_entropy(probe(x_adv[s:s + batch_size]), y[s:s + batch_size])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        d = w - w0
                        n = float(d.norm())
                        if n > radius:
                            w.copy_(w0 + d * (radius / n))
                worst = max(worst, _mean_ce_acc(probe, x_adv, y)[0])
            out[name] = worst - base_loss
    finally:
        model.train(was)
    return out


class RiFTResult(NamedTuple):
    """``model`` (interpolated copy), ``module`` fine-tuned, chosen ``alpha``, ``criticality`` (MRC per
    module) and ``records`` (one dict per alpha: ``alpha``, ``val_acc``, ``val_robust_acc``)."""

    model: nn.Module
    module: str
    alpha: float
    criticality: dict[str, float]
    records: list[dict[str, float]]


@dataclass
class _Split:
    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def _split(data: Any, val_fraction: float, seed: int) -> _Split:
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_fraction * n)))
    va, tr = perm[:n_val], perm[n_val:]
    return _Split(data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va])


def _interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    return {k: (torch.lerp(a[k], b[k], t) if a[k].is_floating_point() else a[k]) for k in a}


def robust_critical_fine_tuning(
    model: nn.Module, data: Any, *, eps: float, step_size: float | None = None, steps: int = 10,
    norm: str = "linf", module: str | None = None, lr: float = 1e-3, epochs: int = 10, batch_size: int = 128,
    val_fraction: float = 0.2, interpolation: int = 11, tolerance: float = 0.0, mrc_examples: int = 512,
    mrc_epochs: int = 3, seed: int = 0, progress: bool | None = None,
) -> RiFTResult:
    r"""RiFT: scan module robust criticality, fine-tune the least critical module on clean data,
    interpolate :math:`\theta_t = t\,\theta_{ft} + (1-t)\,\theta_{AT}` and pick ``t`` on a validation split.

    ``data`` is a ``ClassificationData``; a seeded ``val_fraction`` of its *training* split is held out
    (the test split is never used). The criticality scan uses ``mrc_examples`` of the remaining training
    examples. Fine-tuning trains only ``module``'s parameters (the least critical one if None) with SGD
    (``lr``, momentum 0.9, lr /10 at half and three quarters of ``epochs``). Among the ``interpolation``
    evenly spaced ``t`` in [0, 1], the chosen one has the best validation accuracy among those whose
    validation PGD accuracy is at least that of ``t = 0`` minus ``tolerance`` (ties: smaller ``t``).
    ``model`` is not modified; the result holds an interpolated copy in eval mode. For an unbiased choice
    the validation examples should be unseen by ``model``: train it on ``data`` minus the same split
    (``val_fraction`` and ``seed`` make it reproducible) or pass data whose training split it never saw.
    ``progress``: bars over the criticality scan, fine-tuning and the interpolation sweep (``None``: TTY).
    """
    from ..data import ClassificationData
    from ..training import fit

    owner = "robust_critical_fine_tuning"
    if not isinstance(data, ClassificationData):
        raise TypeError(f"The 'data' parameter of {owner} must be a ClassificationData. Got {type(data).__name__}.")
    check_option(norm, "norm", threat.NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, 1.0 if norm == "linf" else None, owner=owner)
    check_in_range(val_fraction, "val_fraction", 0.0, 1.0, closed="neither", owner=owner)
    check_int(interpolation, "interpolation", 2, None, owner=owner)
    check_in_range(tolerance, "tolerance", 0.0, 1.0, owner=owner)
    check_int(mrc_examples, "mrc_examples", 1, None, owner=owner)
    check_int(epochs, "epochs", 1, None, owner=owner)
    check_int(steps, "steps", 1, None, owner=owner)
    check_progress(progress, owner=owner)
    sp = _split(data, val_fraction, seed)
    dev_gen = lambda: torch.Generator(device=sp.x_val.device).manual_seed(seed + 1)  # noqa: E731
    criticality = module_robust_criticality(
        model, sp.x_tr[:mrc_examples], sp.y_tr[:mrc_examples], eps=eps, step_size=step_size, steps=steps,
        norm=norm, epochs=mrc_epochs, generator=dev_gen(), progress=progress)
    if module is None:
        module = min(criticality, key=lambda k: criticality[k])
    elif module not in criticality:
        raise ValueError(f"{owner}: unknown module '{module}'; Linear/Conv modules: {', '.join(criticality)}.")

    tuned = copy.deepcopy(model)
    target = tuned.get_submodule(module)
    trainable = {id(p) for p in target.parameters()}
    for p in tuned.parameters():
        p.requires_grad_(id(p) in trainable)
    train = replace(data, x_train=sp.x_tr, y_train=sp.y_tr, x_test=sp.x_val[:0], y_test=sp.y_val[:0])
    fit(tuned, train, epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9, weight_decay=5e-4,
        schedule="step", seed=seed, eval_every=0, progress=progress_enabled(progress))
    for p in tuned.parameters():
        p.requires_grad_(True)

    at_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ft_state = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    probe = copy.deepcopy(model).eval()
    records = []
    for t in progress_bar(torch.linspace(0, 1, interpolation).tolist(), "RiFT interpolation", progress, unit="alpha"):
        probe.load_state_dict(_interpolate(at_state, ft_state, t))
        _, acc = _mean_ce_acc(probe, sp.x_val, sp.y_val)
        x_adv = _adversarial(probe, sp.x_val, sp.y_val, eps=eps, step_size=step_size, steps=steps, norm=norm,
                             generator=dev_gen())
        _, rob = _mean_ce_acc(probe, x_adv, sp.y_val)
        records.append({"alpha": float(t), "val_acc": acc, "val_robust_acc": rob})
    floor = records[0]["val_robust_acc"] - tolerance
    ok = [r for r in records if r["val_robust_acc"] >= floor - 1e-12]
    best = max(ok, key=lambda r: (r["val_acc"], -r["alpha"]))
    probe.load_state_dict(_interpolate(at_state, ft_state, best["alpha"]))
    return RiFTResult(probe.eval(), module, best["alpha"], criticality, records)

