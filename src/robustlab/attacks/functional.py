"""Functional forms: ``attacks.functional.<name>(model, x, y, *, ...) -> x_adv``.

Each function builds the registered attack with the keyword options and calls it once, so validation,
eval-mode switching and projection are the same as for the class form (``progress=`` is passed to the call).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._base import ATTACKS

__all__ = ["apgd_ce", "apgd_dlr", "apgd_t", "cw_l2", "fab_t", "fgsm", "pgd", "square", "zoo"]


def _call(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
          generator: torch.Generator | None, kw: dict[str, Any]) -> torch.Tensor:
    from . import check_options

    progress = kw.pop("progress", None)
    check_options(name, kw)  # an option the attack does not take: a message naming which attacks take it
    return ATTACKS.get(name, **kw)(model, x, y, targets=targets, generator=generator, progress=progress)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
         generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """FGSM (see :class:`robustlab.attacks.FGSM`): ``x + ε·sign(∇ₓ CE)``, clipped to [0, 1]."""
    return _call("fgsm", model, x, y, targets, generator, kw)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """PGD (see :class:`robustlab.attacks.PGD`): ``norm``, ``eps``, ``step_size``, ``steps``, ``random_start``, ``restarts``."""
    return _call("pgd", model, x, y, targets, generator, kw)


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
            generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """APGD on cross-entropy (see :class:`robustlab.attacks.APGD`), Croce & Hein 2020."""
    return _call("apgd_ce", model, x, y, targets, generator, kw)


def apgd_dlr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
             generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """APGD on the DLR loss (see :class:`robustlab.attacks.APGD`); needs ≥ 3 classes."""
    return _call("apgd_dlr", model, x, y, targets, generator, kw)


def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
           generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """Targeted APGD-DLR over the top-``n_target_classes`` runner-up classes (see :class:`robustlab.attacks.APGDT`)."""
    return _call("apgd_t", model, x, y, targets, generator, kw)


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
           generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """Square Attack, score-based black box (see :class:`robustlab.attacks.Square`)."""
    return _call("square", model, x, y, targets, generator, kw)


def zoo(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """Zeroth-order PGD with random gradient estimates (see :class:`robustlab.attacks.ZOO`)."""
    return _call("zoo", model, x, y, targets, generator, kw)


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
          generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """Carlini–Wagner L2 (see :class:`robustlab.attacks.CWL2`)."""
    return _call("cw_l2", model, x, y, targets, generator, kw)


def fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: torch.Tensor | None = None,
          generator: torch.Generator | None = None, **kw: Any) -> torch.Tensor:
    """Targeted FAB over the top runner-up classes (see :class:`robustlab.attacks.FABT`)."""
    return _call("fab_t", model, x, y, targets, generator, kw)
