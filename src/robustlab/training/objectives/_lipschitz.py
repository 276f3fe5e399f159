"""``lipschitz_margin``: margin losses for Lipschitz-by-construction networks.

For an L-Lipschitz network the certified L2 radius is ``margin/(√2·L)`` (:func:`robustlab.certify.lipschitz`),
so training maximises margins instead of attacking. Three losses from the Lipschitz-training literature,
written as in deel-torchlip (Serrurier et al., CVPR 2021; Béthune et al., NeurIPS 2022):

- ``"ce"``: ``CE(τ·f(x), y) / τ`` (``TauCrossEntropyLoss``): the temperature τ trades accuracy (large τ)
  against margin (small τ), Béthune et al. "Pay attention to your loss".
- ``"hinge"``: multiclass hinge with margin m: ``mean_c relu(m/2 − s_c·f_c)`` with ``s_c = +1`` for the label
  (weighted by C − 1) and −1 otherwise (deel-torchlip's ``hinge_multiclass_loss``).
- ``"hkr"``: hinge–Kantorovich-Rubinstein, ``α·hinge − (1 − α)·KR`` with
  ``KR = mean_c (E[f_c | y = c] − E[f_c | y ≠ c])`` over the batch (``HKRMulticlassLoss``).

``orth_weight`` λ > 0 adds ``λ·orthogonality_penalty(model)``, the OCNN regulariser of Wang et al. (CVPR 2020,
``‖conv(K, K, stride) − I_{r0}‖²_F`` per convolution, ``‖WᵀW − I‖²_F`` per Linear; Achour et al., JMLR 2022,
show it is a stable measure of orthogonality), for ordinary Conv2d/Linear models certified with the
power-iteration bound of :func:`robustlab.certify.lipschitz`: λ trades accuracy against orthogonality.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..._validation import check_in_range, check_option
from ...certify.lipschitz import orthogonality_penalty
from .._objectives import Batch, Objective, register_objective

__all__ = ["LipschitzMargin", "lipschitz_margin_loss"]

MODES = ("ce", "hinge", "hkr")


def _hinge(z: torch.Tensor, onehot: torch.Tensor, margin: float) -> torch.Tensor:
    sign = onehot * 2 - 1
    h = torch.relu(margin / 2 - sign * z)
    h = torch.where(onehot > 0, h * (z.shape[1] - 1), h)
    return h.mean(1)


def _kr(z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per-sample terms whose batch mean is ``mean_c (E[f_c | y=c] − E[f_c | y≠c])`` (0 for an absent side)."""
    pos = onehot.mean(0)
    pos_factor = torch.nan_to_num(1.0 / pos, posinf=0.0)
    neg_factor = -torch.nan_to_num(1.0 / (1.0 - pos), posinf=0.0)
    return (torch.where(onehot > 0, pos_factor, neg_factor) * z).mean(1)


def lipschitz_margin_loss(logits: torch.Tensor, y: torch.Tensor, *, mode: str = "ce", temperature: float = 8.0,
                          margin: float = 0.5, alpha: float = 0.98) -> torch.Tensor:
    """Batch-mean margin loss (see the module docstring for the three ``mode`` formulas). Shape: (N, C), (N,) -> ()."""
    z = logits.float()
    if mode == "ce":
        return nn.functional.cross_entropy(temperature * z, y) / temperature
    onehot = nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    hinge = _hinge(z, onehot, margin).mean()
    if mode == "hinge":
        return hinge
    return alpha * hinge - (1 - alpha) * _kr(z, onehot).mean()


class LipschitzMargin(Objective):
    """Margin loss for Lipschitz networks: temperature cross-entropy, multiclass hinge or HKR (deel-torchlip).

    ``mode`` in {"ce", "hinge", "hkr"}; ``temperature`` τ > 0 (ce), ``margin`` m > 0 (hinge, hkr: logit margin
    between the label and the others; certified radius m/(√2·L)), ``alpha`` in [0, 1] (hkr's hinge weight).
    Replaces ``fit``'s loss (the ``loss`` argument is not used). Metrics: ``acc`` and ``margin``, the mean of
    ``f_y − max_{j≠y} f_j``. ``orth_weight`` λ ≥ 0: adds ``λ·orthogonality_penalty(model)`` (the OCNN
    regulariser, for unconstrained Conv2d/Linear layers; metric ``orth``, the penalty). Cost: 1 forward + 1 backward
    pass per step (+ one small self-convolution per Conv2d and one Gram matrix per Linear when λ > 0).
    """

    passes_per_step = 1.0

    def __init__(self, *, mode: str = "ce", temperature: float = 8.0, margin: float = 0.5, alpha: float = 0.98,
                 orth_weight: float = 0.0) -> None:
        owner = "lipschitz_margin"
        self.mode = check_option(mode, "mode", MODES, owner=owner)
        for name, value in (("temperature", temperature), ("margin", margin), ("alpha", alpha),
                            ("orth_weight", orth_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"The '{name}' parameter of {owner} must be a float. Got {value!r} instead.")
        self.temperature = float(check_in_range(temperature, "temperature", 0.0, None, closed="neither", owner=owner))
        self.margin = float(check_in_range(margin, "margin", 0.0, None, closed="neither", owner=owner))
        self.alpha = float(check_in_range(alpha, "alpha", 0.0, 1.0, owner=owner))
        self.orth_weight = float(check_in_range(orth_weight, "orth_weight", 0.0, None, owner=owner))

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch.x)
        value = lipschitz_margin_loss(logits, batch.y, mode=self.mode, temperature=self.temperature,
                                      margin=self.margin, alpha=self.alpha)
        penalty = orthogonality_penalty(model) if self.orth_weight > 0 else None
        if penalty is not None:
            value = value + self.orth_weight * penalty
        if not self.track_metrics:
            return value, {}
        z = logits.detach().float()
        true = z.gather(1, batch.y[:, None]).squeeze(1)
        other = z.scatter(1, batch.y[:, None], float("-inf")).amax(1)
        metrics = {"acc": (z.argmax(1) == batch.y).float().mean(), "margin": (true - other).mean()}
        if penalty is not None:
            metrics["orth"] = penalty.detach()
        return value, metrics


register_objective("lipschitz_margin", tags={"certified", "lipschitz"},
                   reference="Béthune et al., NeurIPS 2022 (arXiv:2104.05097); Serrurier et al., CVPR 2021 (HKR)",
                   example_kwargs={"mode": "ce", "temperature": 8.0})(LipschitzMargin)
