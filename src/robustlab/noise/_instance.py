"""Instance-dependent (part-dependent) label noise driven by the features ``x``."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_in_range
from ._base import NoiseModel, register_noise

__all__ = ["InstanceNoise", "truncated_normal"]


def truncated_normal(n: int, mean: float, std: float, low: float, high: float,
                     generator: torch.Generator | None) -> torch.Tensor:
    """``n`` float64 draws of N(mean, std^2) truncated to [low, high], by inverse CDF."""
    a = torch.special.ndtr(torch.tensor((low - mean) / std, dtype=torch.float64))
    b = torch.special.ndtr(torch.tensor((high - mean) / std, dtype=torch.float64))
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    p = (a + u * (b - a)).clamp(1e-300, 1 - 1e-16)
    return (mean + std * torch.special.ndtri(p)).clamp(low, high)


@register_noise("instance", tags={"instance", "needs_x"},
                reference="Xia et al., Part-dependent label noise, NeurIPS 2020 (arXiv:2006.07836), Alg. 2",
                example_kwargs={"rate": 0.4, "num_classes": 4})
class InstanceNoise(NoiseModel):
    """Instance-dependent noise from random projections of the features (Xia et al., 2020).

    1. Per-sample flip rates :math:`q_i \\sim \\mathcal{N}(r, \\text{std}^2)` truncated to [0, 1].
    2. Per-class projections :math:`W_c \\in \\mathbb{R}^{d \\times C}`, entries N(0, 1).
    3. :math:`p_i = q_i\\,\\mathrm{softmax}(x_i W_{y_i})` with the true class masked out (-inf),
       then :math:`p_{i, y_i} = 1 - q_i`; the noisy label is drawn from :math:`p_i`.

    ``x`` (N, ...) is flattened. All randomness (q, W, the draw) comes from ``generator``.
    The reported ``transition`` is the per-class mean of the rows :math:`p_i`. Rate 0 is the identity.
    """

    kind = "instance"
    needs_x = True

    def __init__(self, *, rate: float, num_classes: int, std: float = 0.1) -> None:
        super().__init__(rate=rate, num_classes=num_classes)
        check_in_range(std, "std", 0.0, None, closed="neither", owner=self.owner)
        self.std = float(std)

    def row_probs(self, y: torch.Tensor, x: torch.Tensor | None,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert x is not None  # check_inputs ran
        c = self.num_classes
        n = y.shape[0]
        feats = x.reshape(n, -1).to(dtype=torch.float64, device="cpu")
        d = feats.shape[1]
        q = truncated_normal(n, self.rate, self.std, 0.0, 1.0, generator)
        y_cpu = y.cpu()
        scores = torch.empty(n, c, dtype=torch.float64)
        for k in range(c):  # one projection and one matmul per class (not per sample); memory O(N C + d C)
            w_k = torch.randn(d, c, generator=generator, dtype=torch.float64)
            rows = y_cpu == k
            scores[rows] = feats[rows] @ w_k
        scores.scatter_(1, y_cpu[:, None], float("-inf"))
        probs = q[:, None] * torch.softmax(scores, dim=1)
        probs.scatter_(1, y_cpu[:, None], (1.0 - q)[:, None])
        t = torch.eye(c, dtype=torch.float64)
        counts = torch.bincount(y_cpu, minlength=c).double()
        sums = torch.zeros(c, c, dtype=torch.float64).index_add_(0, y_cpu, probs)
        present = counts > 0
        t[present] = sums[present] / counts[present, None]
        return probs.to(y.device), t

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "std": self.std}
