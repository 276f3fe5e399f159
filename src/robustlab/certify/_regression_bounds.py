r"""Certified output intervals of regression models: IBP/CROWN bounds on a one-output network.

For a model with one output per sample, :func:`robustlab.certify.interval_bounds` over the ε-ball around ``x``
gives :math:`f(x') \in [\ell, u]` for every :math:`x'` in the ball. From it: the certified maximum deviation
:math:`\max(u - f(x), f(x) - \ell) \ge |f(x') - f(x)|` and the certified worst-case squared error
:math:`\max((u - y)^2, (\ell - y)^2) \ge (f(x') - y)^2` (an upper bound on any attack's MSE). IBP: Gowal et al.
2018 (arXiv:1810.12715); CROWN: Zhang et al. 2018.

Example::

    lo, up = regression_output_bounds(model, x, eps=0.05)          # (N,), (N,)
    dev = certified_deviation(model, x, eps=0.05)                  # (N,) >= |f(x') - f(x)|
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError

__all__ = ["certified_deviation", "certified_worst_mse", "regression_output_bounds"]


def _one_output(out: torch.Tensor, owner: str) -> torch.Tensor:
    if out.dim() not in (1, 2) or out.reshape(out.shape[0], -1).shape[1] != 1:
        raise InvalidParameterError(f"{owner} needs a regression model with one output per sample; it gave shape "
                                    f"{tuple(out.shape)}.")
    return out.reshape(-1)


def regression_output_bounds(model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf",
                             method: str = "ibp", clip: tuple[float, float] | None = (0.0, 1.0),
                             **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)``, each (N,): bounds on the one-output ``model`` over the ε-ball (``norm`` linf/l2/l1)
    around each row of ``x`` (``method`` ibp, crown_ibp or crown; ``clip`` the valid input box for linf).
    Arguments are checked by :func:`robustlab.certify.interval_bounds`."""
    from .ibp import interval_bounds

    lo, up = interval_bounds(model, x, eps=eps, norm=norm, method=method, clip=clip, **kw)
    owner = "regression_output_bounds"
    return _one_output(lo, owner), _one_output(up, owner)


def certified_deviation(model: nn.Module, x: torch.Tensor, *, eps: float, **kw: Any) -> torch.Tensor:
    """(N,) certified bound on ``|f(x') - f(x)|`` over the ε-ball: ``max(upper - f(x), f(x) - lower)``."""
    was = model.training
    model.eval()
    with torch.no_grad():
        lo, up = regression_output_bounds(model, x, eps=eps, **kw)
        f = _one_output(model(x), "certified_deviation")
    model.train(was)
    return torch.maximum(up - f, f - lo).clamp_min(0.0)


def certified_worst_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, **kw: Any) -> float:
    """Upper bound on the MSE of ``model`` on ``(x, y)`` under any perturbation in the ε-ball:
    the mean over samples of ``max((upper - y)^2, (lower - y)^2)``."""
    with torch.no_grad():
        lo, up = regression_output_bounds(model, x, eps=eps, **kw)
    y = y.reshape(-1).to(lo)
    if y.shape[0] != lo.shape[0]:
        raise InvalidParameterError(f"certified_worst_mse: y has {y.shape[0]} targets for {lo.shape[0]} inputs.")
    return float(torch.maximum((up - y) ** 2, (lo - y) ** 2).mean())
