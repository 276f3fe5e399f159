"""Objective ``elastic_quant``: one model trained to stay accurate at several weight bit-widths.

After EQ-Net (Xu et al., ICCV 2023, arXiv:2308.07650): each step draws a bit-width from ``bits``, runs the
forward pass with fake-quantized weights (the very rounding of :func:`robustlab.shift.quantize`, with a
straight-through gradient) and adds a weight-distribution regulariser. The regulariser here is the
skewness/kurtosis form (each layer's weights pushed towards a symmetric distribution of kurtosis
``kurtosis_target``; 1.8 is the uniform distribution's, as in KURE, Shkolnik et al. 2020): EQ-Net's
WDR-Loss as we understand it, not its code. EQ-Net's GPG-Loss, elastic granularity/symmetry and its
mixed-precision search are not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call

from ..._validation import InvalidParameterError, check_in_range
from ...shift._quantize import QUANT_LAYERS, check_bits, check_scheme, fake_quantize
from .._objectives import Batch, Objective, compute_loss, register_objective

__all__ = ["ElasticQuantization", "weight_distribution_loss"]


def weight_distribution_loss(model: nn.Module, *, kurtosis_target: float = 1.8) -> torch.Tensor:
    r"""Mean over Conv/Linear layers of ``skew(W)² + (kurt(W) − kurtosis_target)²``.

    ``skew = E[z³]``, ``kurt = E[z⁴]`` with ``z = (W − mean) / std`` over the layer's weights: 0 for a
    symmetric distribution, and 1.8 for a uniform one (which a uniform quantization grid fits best).
    """
    terms = []
    for m in model.modules():
        weight = cast(torch.Tensor, getattr(m, "weight", None))
        if isinstance(m, QUANT_LAYERS) and weight.numel() > 1:
            w = weight.flatten()
            z = (w - w.mean()) / (w.std(unbiased=False) + 1e-8)
            terms.append(z.pow(3).mean().square() + (z.pow(4).mean() - kurtosis_target).square())
    if not terms:
        raise InvalidParameterError(f"weight_distribution_loss: the model ({type(model).__name__}) has no Linear or "
                                    "Conv layer with more than one weight.")
    return torch.stack(terms).mean()


class ElasticQuantization(Objective):
    """Elastic quantization training (after EQ-Net, Xu et al. 2023): a random weight bit-width per step.

    Each step draws ``b`` uniformly from ``bits`` (``fit``'s seeded generator), computes
    ``L(f_{Q_b(W)}(x), y) + wdr_weight · WDR(W)`` where ``Q_b`` is the symmetric ``scheme`` fake
    quantization of :func:`robustlab.shift.fake_quantize` applied to every Conv/Linear weight (biases stay
    float) with a straight-through gradient, and ``WDR`` is :func:`weight_distribution_loss`. At test time
    ``shift.quantize(model, bits=b)`` gives exactly the network trained at ``b``. Activations are not
    quantized in training. Metrics: ``acc`` (at the drawn width), ``bits``, ``wdr``.
    Cost: 1 forward + 1 backward pass per step (plus one rounding of the weights).
    """

    passes_per_step = 1.0

    def __init__(self, *, bits: Sequence[int] = (8, 6, 4, 3, 2), scheme: str = "per_channel",
                 wdr_weight: float = 0.01, kurtosis_target: float = 1.8) -> None:
        owner = "ElasticQuantization"
        if isinstance(bits, (int, str)) or not isinstance(bits, Sequence) or not bits:
            raise InvalidParameterError(f"The 'bits' parameter of {owner} must be a non-empty list of ints in [2, 16]. "
                                        f"Got {bits!r} instead.")
        self.bits = tuple(check_bits(b, owner) for b in bits)
        self.scheme = check_scheme(scheme, owner)
        self.wdr_weight = float(check_in_range(wdr_weight, "wdr_weight", 0.0, None, owner=owner))
        self.kurtosis_target = float(check_in_range(kurtosis_target, "kurtosis_target", 1.0, None, owner=owner))
        self.generator: Any = None  # set by setup

    def _draw(self) -> int:
        gen = self.generator
        i = int(torch.randint(len(self.bits), (1,), generator=gen)) if gen is not None else 0
        return self.bits[i]

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = self._draw()
        quantized = {f"{name}.weight" if name else "weight": fake_quantize(cast(torch.Tensor, m.weight), b, scheme=self.scheme, ste=True)
                     for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
        if not quantized:
            raise InvalidParameterError("elastic_quant needs a model with Linear or Conv layers to quantize.")
        logits = functional_call(model, quantized, (batch.x,), strict=False)
        value = compute_loss(loss, logits, batch.y, batch.index)
        dev = logits.device
        metrics = {"acc": (logits.detach().argmax(1) == batch.y).float().mean(),
                   "bits": torch.tensor(float(b), device=dev)}
        if self.wdr_weight > 0:
            wdr = weight_distribution_loss(model, kurtosis_target=self.kurtosis_target)
            value = value + self.wdr_weight * wdr
            metrics["wdr"] = wdr.detach()
        return value, metrics


register_objective("elastic_quant", tags={"quantization"}, reference="Xu et al. 2023 (EQ-Net), arXiv:2308.07650",
                   example_kwargs={"bits": [8, 4, 2]})(ElasticQuantization)
