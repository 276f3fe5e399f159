"""Objective ``elastic_quant``: one model trained to stay accurate at several weight bit-widths and granularities.

After EQ-Net (Xu et al., ICCV 2023, arXiv:2308.07650), whose elastic quantization space has three axes (bit-width,
granularity, symmetry) and two losses (WDR and GPG). Each step draws a bit-width from ``bits`` and, with several
``scheme`` values, a granularity (per-channel or per-tensor scales: EQ-Net's elastic granularity), runs the
forward pass with fake-quantized weights (the very rounding of :func:`robustlab.shift.quantize`, with a
straight-through gradient) and adds

* the weight-distribution regulariser (WDR): each layer's weights pushed towards a symmetric distribution of
  kurtosis ``kurtosis_target`` (skewness² + (kurtosis − target)²; 1.8 is the uniform distribution's, as in
  KURE, Shkolnik et al. 2020): EQ-Net's WDR-Loss as we understand it from the paper, not its code;
* with ``guidance_weight > 0``, progressive guidance in the spirit of EQ-Net's GPG-Loss: the next wider
  bit-width of ``bits`` (same granularity) is run too, trained on the labels, and the drawn width's
  predictions are pulled towards its (stop-gradient) soft predictions by ``guidance_weight · KL``, so each
  width learns from its wider neighbour (the widest from the labels only). EQ-Net groups sub-networks and
  guides groups; here each group is one bit-width.

Not implemented: elastic symmetry (``shift.quantize`` has symmetric grids only), EQ-Net's mixed-precision search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..._validation import InvalidParameterError, check_in_range
from ...shift._quantize import QUANT_LAYERS, QUANT_SCHEMES, check_bits, check_scheme, fake_quantize
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

    Each step draws ``b`` uniformly from ``bits`` and a granularity ``g`` from ``scheme`` (a name or a list of
    them; ``fit``'s seeded generator), computes ``L(f_{Q_{b,g}(W)}(x), y) + wdr_weight · WDR(W)`` where
    ``Q_{b,g}`` is the symmetric fake quantization of :func:`robustlab.shift.fake_quantize` applied to every
    Conv/Linear weight (biases stay float) with a straight-through gradient, and ``WDR`` is
    :func:`weight_distribution_loss`. With ``guidance_weight`` λ > 0 and ``b`` not the widest, the next wider
    width ``b'`` of ``bits`` is run too: ``L(f_{b'}, y) + L(f_b, y) + λ·KL(stopgrad p_{b'} ‖ p_b)``.
    At test time ``shift.quantize(model, bits=b, scheme=g)`` gives exactly the network trained at ``(b, g)``.
    Activations are not quantized in training. Metrics: ``acc`` (at the drawn width), ``bits``, ``wdr``, and
    ``per_tensor`` (1 when that granularity was drawn) with several schemes, ``guidance`` (the KL) with λ > 0.
    Cost: 1 forward + 1 backward pass per step, 2 with guidance (plus the rounding of the weights).
    """

    passes_per_step = 1.0

    def __init__(self, *, bits: Sequence[int] = (8, 6, 4, 3, 2), scheme: str | Sequence[str] = "per_channel",
                 wdr_weight: float = 0.01, kurtosis_target: float = 1.8, guidance_weight: float = 0.0) -> None:
        owner = "ElasticQuantization"
        if isinstance(bits, (int, str)) or not isinstance(bits, Sequence) or not bits:
            raise InvalidParameterError(f"The 'bits' parameter of {owner} must be a non-empty list of ints in [2, 16]. "
                                        f"Got {bits!r} instead.")
        self.bits = tuple(check_bits(b, owner) for b in bits)
        if isinstance(scheme, str):
            self.schemes: tuple[str, ...] = (check_scheme(scheme, owner),)
        elif isinstance(scheme, Sequence) and scheme:
            self.schemes = tuple(dict.fromkeys(check_scheme(s, owner) for s in scheme))
        else:
            raise InvalidParameterError(f"The 'scheme' parameter of {owner} must be one of {list(QUANT_SCHEMES)} or a "
                                        f"non-empty list of them. Got {scheme!r} instead.")
        self.scheme = self.schemes[0]
        self.wdr_weight = float(check_in_range(wdr_weight, "wdr_weight", 0.0, None, owner=owner))
        self.kurtosis_target = float(check_in_range(kurtosis_target, "kurtosis_target", 1.0, None, owner=owner))
        self.guidance_weight = float(check_in_range(guidance_weight, "guidance_weight", 0.0, None, owner=owner))
        if self.guidance_weight > 0:
            self.passes_per_step = 2.0
        self.generator: Any = None  # set by setup

    def _pick(self, options: tuple[Any, ...]) -> Any:
        gen = self.generator
        if len(options) == 1:  # no draw: a single option leaves the generator's stream as it was
            return options[0]
        i = int(torch.randint(len(options), (1,), generator=gen)) if gen is not None else 0
        return options[i]

    def _draw(self) -> int:
        gen = self.generator
        i = int(torch.randint(len(self.bits), (1,), generator=gen)) if gen is not None else 0
        return self.bits[i]

    def wider(self, bits: int) -> int | None:
        """The next wider bit-width of ``self.bits`` than ``bits`` (its guide), or None for the widest."""
        above = [b for b in self.bits if b > bits]
        return min(above) if above else None

    @staticmethod
    def _forward(model: nn.Module, x: torch.Tensor, bits: int, scheme: str) -> torch.Tensor:
        quantized = {f"{name}.weight" if name else "weight": fake_quantize(cast(torch.Tensor, m.weight), bits, scheme=scheme, ste=True)
                     for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
        if not quantized:
            raise InvalidParameterError("elastic_quant needs a model with Linear or Conv layers to quantize.")
        return cast(torch.Tensor, functional_call(model, quantized, (x,), strict=False))

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = self._draw()
        scheme = self._pick(self.schemes)
        logits = self._forward(model, batch.x, b, scheme)
        value = compute_loss(loss, logits, batch.y, batch.index)
        dev = logits.device
        metrics = {"acc": (logits.detach().argmax(1) == batch.y).float().mean(),
                   "bits": torch.tensor(float(b), device=dev)}
        if len(self.schemes) > 1:
            metrics["per_tensor"] = torch.tensor(float(scheme == "per_tensor"), device=dev)
        guide = self.wider(b) if self.guidance_weight > 0 else None
        if guide is not None:
            teacher = self._forward(model, batch.x, guide, scheme)
            kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher.detach(), 1), log_target=True,
                          reduction="batchmean")
            value = value + compute_loss(loss, teacher, batch.y, batch.index) + self.guidance_weight * kl
            metrics["guidance"] = kl.detach()
        if self.wdr_weight > 0:
            wdr = weight_distribution_loss(model, kurtosis_target=self.kurtosis_target)
            value = value + self.wdr_weight * wdr
            metrics["wdr"] = wdr.detach()
        return value, metrics


register_objective("elastic_quant", tags={"quantization"}, reference="Xu et al. 2023 (EQ-Net), arXiv:2308.07650",
                   example_kwargs={"bits": [8, 4, 2]})(ElasticQuantization)
