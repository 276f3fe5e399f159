"""Objective ``elastic_quant``: one model trained to stay accurate at several weight bit-widths, granularities and
symmetries (an elastic quantization supernet).

After EQ-Net (Xu et al., ICCV 2023, arXiv:2308.07650), whose elastic quantization space has three axes (bit-width,
granularity, symmetry) and two losses (WDR and GPG). Each step draws a bit-width from ``bits`` (one for the whole
network, or with ``layerwise=True`` one per layer: EQ-Net's random sub-network), and with several values a
granularity from ``scheme`` (per-channel or per-tensor scales) and a symmetry from ``symmetry`` (symmetric grid,
or affine with a zero point), runs the forward pass with fake-quantized weights (the very rounding of
:func:`robustlab.shift.quantize`, with a straight-through gradient) and adds

* the weight-distribution regulariser (WDR-Loss): per Conv/Linear layer ``skew_weight·skew² + kurtosis_weight·
  (kurt − 1.8)²`` of the standardised weights, averaged over the layers;
* with ``guidance_weight`` λ > 0, group progressive guidance (GPG-Loss): the sandwich chain widest → drawn →
  narrowest width is run, the widest on the labels, each next one on ``ℓ + λ·KL(stopgrad p_prev ‖ p)`` with
  ``p_prev`` the previous network of the chain; the terms are averaged over the chain.

Checked against the authors' code (github.com/xuke225/EQ-Net, ``runner/criterion.py``, ``runner/trainer.py``,
``configs/train-supernet.yaml``, ``module/qat_model.py``): WDR is their ``KurtosisLoss`` (target 1.8) and
``SkewnessLoss`` (target 0), each a mean over Conv/Linear layers of the squared deviation of the standardised
moment (unbiased std), weighted 0.015 and 1.0 (``kurt_rate``, ``skew_rate``): our defaults. Their WDR leaves out
the first layer, which their sub-networks keep at 8 bits; here every layer is quantized at the drawn width, so
every layer is regularised. GPG in their trainer is the chain biggest → random → smallest sub-network
(``num_subnet: 3``), each guided by the previous one's detached logits with ``0.5·KL + 0.5·CE``
(``KLLossSoft``, ``alpha=0.5``): λ = 1 here gives the same ratio (twice the scale). They sum the chain's losses
under Adam, where the scale hardly matters; under SGD (``fit``'s default) the sum multiplies the step by the
chain's length: in ``benchmarks/exp_quantization.py`` (MNIST LeNet, 5 epochs, lr 0.05, bits {8, 4, 3, 2}, both
granularities and symmetries; seed 0) the summed form ended at 86.5 % clean / 6.5 % PGD accuracy, the mean at
95.4 % / 70.4 % (float model; over seeds 0-2 the mean gives 96.1 ± 0.8 % / 65.3 ± 5.0 %, docs/results/shift.md).
Their scales are learned
(LSQ, MSE-initialised); ours are the min/max scales of ``shift.quantize``, so the trained network is exactly
the one ``shift.quantize`` gives at test time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..._validation import InvalidParameterError, check_bool, check_in_range
from ...shift._quantize import (
    QUANT_LAYERS,
    QUANT_SCHEMES,
    QUANT_SYMMETRIES,
    check_bits,
    check_scheme,
    check_symmetry,
    fake_quantize,
)
from .._objectives import Batch, Objective, compute_loss, register_objective

__all__ = ["ElasticQuantization", "weight_distribution_loss"]


def weight_distribution_loss(model: nn.Module, *, kurtosis_target: float = 1.8, skew_weight: float = 1.0,
                             kurtosis_weight: float = 0.015) -> torch.Tensor:
    r"""EQ-Net's WDR-Loss: mean over Conv/Linear layers of ``skew_weight·skew(W)² + kurtosis_weight·(kurt(W) − t)²``.

    ``skew = E[z³]``, ``kurt = E[z⁴]`` with ``z = (W − mean) / std`` (unbiased std) over the layer's weights: 0
    for a symmetric distribution, and 1.8 for a uniform one (which a uniform quantization grid fits best).
    The default weights are the authors' (``skew_rate`` 1.0, ``kurt_rate`` 0.015).
    """
    skews, kurts = [], []
    for m in model.modules():
        weight = cast(torch.Tensor, getattr(m, "weight", None))
        if isinstance(m, QUANT_LAYERS) and weight.numel() > 1:
            w = weight.flatten()
            z = (w - w.mean()) / (w.std() + 1e-8)
            skews.append(z.pow(3).mean().square())
            kurts.append((z.pow(4).mean() - kurtosis_target).square())
    if not skews:
        raise InvalidParameterError(f"weight_distribution_loss: the model ({type(model).__name__}) has no Linear or "
                                    "Conv layer with more than one weight.")
    return skew_weight * torch.stack(skews).mean() + kurtosis_weight * torch.stack(kurts).mean()


def _options(value: Any, name: str, accepted: tuple[str, ...], check: Any, owner: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (check(value, owner),)
    if isinstance(value, Sequence) and value:
        return tuple(dict.fromkeys(check(v, owner) for v in value))
    raise InvalidParameterError(f"The '{name}' parameter of {owner} must be one of {list(accepted)} or a non-empty "
                                f"list of them. Got {value!r} instead.")


class ElasticQuantization(Objective):
    """Elastic quantization training (after EQ-Net, Xu et al. 2023): a random weight quantization per step.

    Each step draws ``b`` uniformly from ``bits`` (per layer with ``layerwise``), a granularity ``g`` from
    ``scheme`` and a symmetry ``s`` from ``symmetry`` (names or lists of them; ``fit``'s seeded generator; a
    single option is not drawn), computes ``L(f_{Q_{b,g,s}(W)}(x), y) + wdr_weight · WDR(W)`` where
    ``Q_{b,g,s}`` is :func:`robustlab.shift.fake_quantize` applied to every Conv/Linear weight (biases stay float)
    with a straight-through gradient, and ``WDR`` is :func:`weight_distribution_loss`. With ``guidance_weight``
    λ > 0 (GPG): the mean of ``L(f_{b_max}, y)`` and ``L(f_{b_k}, y) + λ·KL(stopgrad p_{b_{k-1}} ‖ p_{b_k})``
    over the chain ``b_max → b → b_min`` (widths equal to their predecessor are skipped). At test time
    ``shift.quantize(model, bits=b, scheme=g, symmetry=s)`` gives exactly the network trained at ``(b, g, s)``.
    Activations are not quantized in training. Metrics: ``acc`` (at the drawn width), ``bits`` (its mean over
    layers), ``wdr``; ``per_tensor`` / ``asymmetric`` (1 when drawn) with several options; ``guidance`` (the
    KL summed over the chain) with λ > 0. Cost: 1 forward + 1 backward pass per step, up to 3 with guidance.
    """

    passes_per_step = 1.0

    def __init__(self, *, bits: Sequence[int] = (8, 6, 4, 3, 2), scheme: str | Sequence[str] = "per_channel",
                 symmetry: str | Sequence[str] = "symmetric", layerwise: bool = False, wdr_weight: float = 1.0,
                 skew_weight: float = 1.0, kurtosis_weight: float = 0.015, kurtosis_target: float = 1.8,
                 guidance_weight: float = 0.0) -> None:
        owner = "ElasticQuantization"
        if isinstance(bits, (int, str)) or not isinstance(bits, Sequence) or not bits:
            raise InvalidParameterError(f"The 'bits' parameter of {owner} must be a non-empty list of ints in [2, 16]. "
                                        f"Got {bits!r} instead.")
        self.bits = tuple(check_bits(b, owner) for b in bits)
        self.schemes = _options(scheme, "scheme", QUANT_SCHEMES, check_scheme, owner)
        self.symmetries = _options(symmetry, "symmetry", QUANT_SYMMETRIES, check_symmetry, owner)
        self.scheme, self.symmetry = self.schemes[0], self.symmetries[0]
        self.layerwise = check_bool(layerwise, "layerwise", owner=owner)
        self.wdr_weight = float(check_in_range(wdr_weight, "wdr_weight", 0.0, None, owner=owner))
        self.skew_weight = float(check_in_range(skew_weight, "skew_weight", 0.0, None, owner=owner))
        self.kurtosis_weight = float(check_in_range(kurtosis_weight, "kurtosis_weight", 0.0, None, owner=owner))
        self.kurtosis_target = float(check_in_range(kurtosis_target, "kurtosis_target", 1.0, None, owner=owner))
        self.guidance_weight = float(check_in_range(guidance_weight, "guidance_weight", 0.0, None, owner=owner))
        if self.guidance_weight > 0:
            self.passes_per_step = float(min(3, len(set(self.bits))))
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

    def _draw_layers(self, names: list[str]) -> dict[str, int]:
        gen = self.generator
        idx = torch.randint(len(self.bits), (len(names),), generator=gen) if gen is not None else [0] * len(names)
        return {n: self.bits[int(i)] for n, i in zip(names, idx)}

    def chain(self, bits: int | dict[str, int]) -> list[int | dict[str, int]]:
        """GPG's sandwich chain for the drawn ``bits``: widest, drawn, narrowest, each step a change of network."""
        out: list[int | dict[str, int]] = []
        for b in (max(self.bits), bits, min(self.bits)):
            if not out or b != out[-1]:
                out.append(b)
        return out

    @staticmethod
    def _forward(model: nn.Module, x: torch.Tensor, bits: int | dict[str, int], scheme: str,
                 symmetry: str = "symmetric") -> torch.Tensor:
        quantized = {f"{name}.weight" if name else "weight": fake_quantize(
            cast(torch.Tensor, m.weight), bits if isinstance(bits, int) else bits[name], scheme=scheme,
            symmetry=symmetry, ste=True) for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
        if not quantized:
            raise InvalidParameterError("elastic_quant needs a model with Linear or Conv layers to quantize.")
        return cast(torch.Tensor, functional_call(model, quantized, (x,), strict=False))

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.layerwise:
            b: int | dict[str, int] = self._draw_layers(
                [n for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)])
        else:
            b = self._draw()
        scheme = self._pick(self.schemes)
        symmetry = self._pick(self.symmetries)
        mean_bits = float(b) if isinstance(b, int) else sum(b.values()) / max(len(b), 1)
        if self.guidance_weight > 0 and len(set(self.bits)) > 1:
            value, logits, kl, prev = None, None, None, None
            chain = self.chain(b)
            for width in chain:
                out = self._forward(model, batch.x, width, scheme, symmetry)
                term = compute_loss(loss, out, batch.y, batch.index)
                if prev is not None:
                    k = F.kl_div(F.log_softmax(out, 1), F.log_softmax(prev, 1), log_target=True, reduction="batchmean")
                    term = term + self.guidance_weight * k
                    kl = k.detach() if kl is None else kl + k.detach()
                value = term if value is None else value + term
                prev = out.detach()
                if width == b:
                    logits = out
            assert value is not None and logits is not None
            value = value / len(chain)  # a mean: the step size of one pass under SGD (the authors sum, under Adam)
        else:
            logits = self._forward(model, batch.x, b, scheme, symmetry)
            value, kl = compute_loss(loss, logits, batch.y, batch.index), None
        dev = logits.device
        metrics = {"acc": (logits.detach().argmax(1) == batch.y).float().mean(),
                   "bits": torch.tensor(mean_bits, device=dev)}
        if len(self.schemes) > 1:
            metrics["per_tensor"] = torch.tensor(float(scheme == "per_tensor"), device=dev)
        if len(self.symmetries) > 1:
            metrics["asymmetric"] = torch.tensor(float(symmetry == "asymmetric"), device=dev)
        if self.guidance_weight > 0:
            metrics["guidance"] = kl if kl is not None else torch.zeros((), device=dev)
        if self.wdr_weight > 0:
            wdr = weight_distribution_loss(model, kurtosis_target=self.kurtosis_target, skew_weight=self.skew_weight,
                                           kurtosis_weight=self.kurtosis_weight)
            value = value + self.wdr_weight * wdr
            metrics["wdr"] = wdr.detach()
        return value, metrics


register_objective("elastic_quant", tags={"quantization"}, reference="Xu et al. 2023 (EQ-Net), arXiv:2308.07650",
                   example_kwargs={"bits": [8, 4, 2]})(ElasticQuantization)
