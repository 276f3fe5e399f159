"""Margin losses: Crammer-Singer and Weston-Watkins hinges, comp-sum, Z-loss and EnsLoss."""

from __future__ import annotations

from numbers import Integral
from types import MappingProxyType
from typing import Any

import torch

from .._constraints import Interval
from . import _fn_margin as M
from ._base import Loss, register_loss

__all__ = ["CompSumLoss", "CrammerSingerLoss", "EnsLoss", "WestonWatkinsLoss", "ZLoss"]


@register_loss("cs", tags={"hinge"}, reference="Crammer & Singer, JMLR 2001", example_kwargs={"margin": 1.0})
class CrammerSingerLoss(Loss):
    """Crammer-Singer hinge :math:`\\max(0,\\max_{k\\ne y}(c+f_k-f_y))`.

    Args: ``margin`` c >= 0, default 1. Crammer & Singer, JMLR 2001.
    """

    functional = staticmethod(M.cs)

    def __init__(self, margin: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(margin=margin)


@register_loss("ww", tags={"hinge"}, reference="Weston & Watkins, ESANN 1999", example_kwargs={"margin": 1.0})
class WestonWatkinsLoss(Loss):
    """Weston-Watkins hinge :math:`\\sum_{k\\ne y}\\max(0,c+f_k-f_y)`.

    Args: ``margin`` c >= 0, default 1. Weston & Watkins, ESANN 1999.
    """

    functional = staticmethod(M.ww)

    def __init__(self, margin: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(margin=margin)


@register_loss("comp_sum", tags=set(), reference="Mao, Mohri & Zhong, ICML 2023 (arXiv:2304.07288)",
               example_kwargs={"tau": 1.5})
class CompSumLoss(Loss):
    """Comp-sum loss :math:`(p_y^{\\tau-1}-1)/(1-\\tau)` (CE at :math:`\\tau=1`).

    Args: ``tau`` >= 0, default 1.5 (0 sum-exponential, 1 CE, 1.5 GCE(q=0.5), 2 MAE/2; bounded iff
    tau > 1). Mao, Mohri & Zhong, ICML 2023.
    """

    functional = staticmethod(M.comp_sum)

    def __init__(self, tau: float = 1.5, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(tau=tau)


@register_loss("zloss", tags={"bounded"}, reference="de Brebisson & Vincent, arXiv:1604.08859",
               example_kwargs={"a": 1.0, "b": 0.0})
class ZLoss(Loss):
    """Z-loss :math:`\\mathrm{softplus}(a(b-z_y))/a`, :math:`z` the per-row standardised logits.

    Args: ``a`` > 0 (default 1), ``b`` real (default 0). Shift- and scale-invariant, bounded.
    de Brebisson & Vincent, arXiv:1604.08859.
    """

    functional = staticmethod(M.zloss)

    def __init__(self, a: float = 1.0, b: float = 0.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(a=a, b=b)


@register_loss("ensloss", tags={"stochastic"}, reference="Dai, ICML 2025 (arXiv:2409.00908)",
               example_kwargs={"n_draws": 1, "seed": 0},
               known_failures={"check_per_sample_independence":
                               "EnsLoss assigns its random derivatives by the rank of the margin within the "
                               "batch (the published algorithm), so samples are coupled by design."})
class EnsLoss(Loss):
    """EnsLoss: random convex calibrated loss-derivatives on the margin, redrawn at every call.

    Binary (one logit column, target in {0, 1}) as published; for K >= 2 our documented extension on the
    margin :math:`f_y-\\max_{j\\ne y}f_j`. See :func:`robustlab.losses.functional.ensloss` for the formula.
    Args: ``n_draws`` >= 1 (default 1: draws averaged per call), ``seed`` (int, default 0) of the private
    generator whose state is the buffer ``rng_state`` (saved in ``state_dict``; every call advances it).
    Dai, ICML 2025.
    """

    functional = staticmethod(M.ensloss)
    module_constraints = MappingProxyType({"seed": Interval(Integral, 0, None)})
    rng_state: torch.Tensor
    n_draws: int
    seed: int

    def __init__(self, n_draws: int = 1, *, seed: int = 0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(n_draws=n_draws, seed=seed)
        self.register_buffer("rng_state", torch.Generator().manual_seed(self.seed).get_state())

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.set_state(self.rng_state.cpu())
        return g

    def functional_kwargs(self, index: torch.Tensor | None = None) -> dict[str, Any]:
        return {"n_draws": self.n_draws, "generator": self._generator()}

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        g = self._generator()
        v = M.ensloss(logits, target, n_draws=self.n_draws, generator=g, reduction="none")
        self.rng_state.copy_(g.get_state())
        return v
