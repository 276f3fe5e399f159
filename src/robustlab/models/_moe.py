"""Mixture-of-experts convolutions: :class:`MoEConv2d` (top-k gated experts), ``moe_lenet`` and ``moe_resnet``.

The router is part of the model: attacks differentiate through it, so they may change the routing. Each
layer keeps the Switch-Transformer load-balancing loss of its last forward in ``aux_loss`` and the chosen
experts in ``last_routing`` (see :func:`load_balancing_loss`, :func:`routing`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int
from ._base import register_model
from ._cnn import image_shape, kaiming_init
from ._resnet import Residual, _conv3, _head, _out_size

__all__ = ["MoEConv2d", "load_balancing_loss", "moe_lenet", "moe_resnet", "routing"]


class MoEConv2d(nn.Module):
    """``experts`` parallel convolutions mixed per sample by a top-``top_k`` softmax router.

    Router: a linear map of the input's global average pool, softmax over experts; the ``top_k`` largest
    probabilities are renormalised to gates, the others are 0 (Shazeer et al., ICLR 2017). Output:
    Σ_e gate_e · conv_e(x). The experts are one convolution with ``experts * out_channels`` outputs (one
    parameter tensor). Load balancing (Fedus et al., *Switch Transformers*, JMLR 2022):
    ``aux_loss = E · Σ_e frac_e · mean_prob_e`` with frac_e the share of samples whose top expert is e
    (1 when balanced). Shape: (N, C_in, H, W) -> (N, C_out, H', W').
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, experts: int = 4, top_k: int = 2,
                 stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.num_experts = check_int(experts, "experts", 1, None, owner="MoEConv2d")
        self.top_k = check_int(top_k, "top_k", 1, self.num_experts, owner="MoEConv2d")
        self.out_channels = int(out_channels)
        self.experts = nn.Conv2d(in_channels, self.num_experts * self.out_channels, kernel_size, stride=stride,
                                 padding=padding, bias=bias)
        self.router = nn.Linear(in_channels, self.num_experts)
        self.aux_loss = torch.zeros(())
        self.last_routing = torch.zeros(0, self.top_k, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(self.router(x.mean((2, 3))), dim=1)  # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=1)
        gates = torch.zeros_like(probs).scatter(1, top_i, top_p / top_p.sum(1, keepdim=True))
        out = self.experts(x)
        n, _, h, w = out.shape
        y = (gates[:, :, None, None, None] * out.view(n, self.num_experts, self.out_channels, h, w)).sum(1)
        frac = F.one_hot(top_i[:, 0], self.num_experts).to(probs.dtype).mean(0)
        self.aux_loss = self.num_experts * (frac * probs.mean(0)).sum()
        self.last_routing = top_i.detach()
        return y


def load_balancing_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the MoE layers' load-balancing losses from the last forward (0 for a model without MoE layers)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoEConv2d)]
    return torch.stack(losses).sum() if losses else torch.zeros(())


def routing(model: nn.Module) -> list[torch.Tensor]:
    """The experts each MoE layer chose in the last forward, ``(N, top_k)`` per layer (router robustness:
    compare them on clean and adversarial inputs)."""
    return [m.last_routing for m in model.modules() if isinstance(m, MoEConv2d)]


@register_model("moe_lenet", tags={"ibp", "image", "cnn", "moe"},
                reference="Zhang et al., Robust Mixture-of-Expert Training for Convolutional Neural Networks "
                          "(AdvMoE), ICCV 2023 (arXiv:2308.10110); Shazeer et al., ICLR 2017",
                example_kwargs={"input_shape": (1, 8, 8), "num_classes": 10, "channels": (4, 8), "hidden": (16,),
                                "experts": 3, "top_k": 2})
def moe_lenet(*, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (6, 16),
              hidden: Sequence[int] = (120, 84), experts: int = 4, top_k: int = 2) -> nn.Module:
    """LeNet-5 with every convolution a :class:`MoEConv2d` (``experts`` 5x5 experts, top-``top_k`` routing).

    Same stages as ``lenet`` ([MoEConv5x5(pad 2) - ReLU - AvgPool2] x 2, MLP head); He-normal initialisation.
    IBP bounds each MoE layer by the extreme convex combinations of its experts' bounds under router-derived
    gate intervals (sound for any routing; loose once the routing is undecided on the box); CROWN / CROWN-IBP
    relax the gated sum linearly (``certify._moe_crown``: exact where the routing is decided).
    """
    c, h, w = image_shape(input_shape, "moe_lenet")
    layers: list[nn.Module] = []
    cin = c
    for i, ch in enumerate(channels):
        check_int(ch, f"channels[{i}]", 1, None, owner="moe_lenet")
        layers += [MoEConv2d(cin, int(ch), 5, experts=experts, top_k=top_k, padding=2), nn.ReLU(), nn.AvgPool2d(2)]
        cin, h, w = int(ch), h // 2, w // 2
        if min(h, w) < 1:
            raise ValueError(f"moe_lenet: input {tuple(input_shape)} is too small for {len(channels)} pooling stages.")
    layers.append(nn.Flatten())
    d = cin * h * w
    for i, units in enumerate(hidden):
        check_int(units, f"hidden[{i}]", 1, None, owner="moe_lenet")
        layers += [nn.Linear(d, int(units)), nn.ReLU()]
        d = int(units)
    layers.append(nn.Linear(d, num_classes))
    model = nn.Sequential(*layers)
    kaiming_init(model, mode="fan_in")
    return model


def _moe_block(cin: int, cout: int, stride: int, moe: bool, experts: int, top_k: int) -> nn.Module:
    """Pre-activation block whose two 3x3 convolutions are MoE layers when ``moe`` (1x1 shortcut stays dense)."""
    def conv(i: int, o: int, s: int) -> nn.Module:
        if not moe:
            return _conv3(i, o, s)
        return MoEConv2d(i, o, 3, experts=experts, top_k=top_k, stride=s, padding=1, bias=False)

    inner: list[nn.Module] = [conv(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(), conv(cout, cout, 1)]
    if stride != 1 or cin != cout:
        shortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), Residual(nn.Sequential(*inner), shortcut))
    return Residual(nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), *inner), nn.Identity())


@register_model("moe_resnet", tags={"ibp", "image", "cnn", "moe", "residual", "batchnorm"},
                reference="Zhang et al., Robust Mixture-of-Expert Training for Convolutional Neural Networks "
                          "(AdvMoE), ICCV 2023 (arXiv:2308.10110); He et al., ECCV 2016",
                example_kwargs={"input_shape": (3, 8, 8), "num_classes": 10, "width": 4, "blocks": (1, 1, 1),
                                "moe_stages": 2, "experts": 3, "top_k": 2})
def moe_resnet(*, input_shape: Sequence[int] = (3, 32, 32), num_classes: int, width: int = 16,
               blocks: Sequence[int] = (2, 2, 2, 2), moe_stages: int = 2, experts: int = 4,
               top_k: int = 2) -> nn.Module:
    """Pre-activation ResNet whose last ``moe_stages`` stages use :class:`MoEConv2d` 3x3 convolutions.

    3x3 stem, ``len(blocks)`` stages of ``blocks[i]`` pre-activation blocks with ``width * 2**i`` channels
    (strides 1, 2, 2, ...), BN-ReLU, global average pool, Linear. The defaults are a ResNet-18 layout with
    MoE (``experts`` experts, top-``top_k``) in stages 3-4, as AdvMoE's MoE-ResNet-18 on CIFAR-10
    (3x32x32); use a small width for tests. IBP-certifiable with the loose MoE rule (see ``moe_lenet``).
    """
    c, h, w = image_shape(input_shape, "moe_resnet")
    check_int(width, "width", 1, None, owner="moe_resnet")
    blocks = tuple(blocks)
    if not blocks:
        raise ValueError("The 'blocks' parameter of moe_resnet must name at least one stage, e.g. (2, 2, 2, 2). "
                         "Got () instead.")
    for i, b in enumerate(blocks):
        check_int(b, f"blocks[{i}]", 1, None, owner="moe_resnet")
    check_int(moe_stages, "moe_stages", 0, len(blocks), owner="moe_resnet")
    check_int(experts, "experts", 1, None, owner="moe_resnet")
    check_int(top_k, "top_k", 1, experts, owner="moe_resnet")
    layers: list[nn.Module] = [_conv3(c, width)]
    cin = width
    for i, n in enumerate(blocks):
        cout, moe = width * 2**i, i >= len(blocks) - moe_stages
        for j in range(int(n)):
            s = (1 if i == 0 else 2) if j == 0 else 1
            layers.append(_moe_block(cin, cout, s, moe, experts, top_k))
            h, w = _out_size(h, s), _out_size(w, s)
            cin = cout
    layers += _head(cin, h, w, num_classes)
    model = nn.Sequential(*layers)
    kaiming_init(model, mode="fan_out")
    return model
