"""Monte-Carlo counting for randomized smoothing: the base classifier's argmax over noisy copies.

Two ways to lay out the draws (``SmoothedClassifier(noise=...)``):

- ``"independent"``: every (point, draw) pair gets its own Gaussian vector, the pairs laid out flat
  point-major and evaluated ``batch_size`` at a time (one ``torch.randn`` per chunk, as Cohen et
  al.'s reference code draws per point).
- ``"shared"``: the ``num`` draws ``ε_1..ε_num`` are made once per call and every point ``x_i`` is
  evaluated at ``x_i + σ ε_j`` (common random numbers). For each point the ``num`` draws are still
  i.i.d. ``N(0, σ²I)``, so its counts are exactly ``Binomial(num, p_c(x_i))`` and CERTIFY/PREDICT keep
  their per-point guarantee; only the errors of different points become dependent. Drawing the noise
  once for all the points of a batch instead of once per point divides its cost by the number of
  points, which on a CPU is as large as a small model's forward pass.

Both draw from ``generator`` in a fixed order, so a seed reproduces the counts. With one point the
two layouts draw the same stream in the same chunks and give identical counts.
"""

from __future__ import annotations

import torch
from torch import nn

NOISE_MODES = ("shared", "independent")


def _check_logits(logits: torch.Tensor, c: int) -> None:
    if logits.dim() != 2 or logits.shape[1] != c:  # shape only: no device sync
        raise ValueError(f"The model returns outputs of shape {tuple(logits.shape)} but "
                         f"num_classes={c}; it must return (batch, {c}) logits.")


def _raise_if_not_finite(sums: list[torch.Tensor]) -> None:
    # A float64 sum of the logits is NaN or ±inf iff some logit is (float32/16 logits cannot overflow it).
    if sums and not bool(torch.isfinite(torch.stack(sums)).all()):
        raise ValueError("The model returned NaN or infinite logits on noisy copies of 'x'; "
                         "the smoothed classifier's counts would be meaningless.")


def _draw(buf: torch.Tensor, draw_buf: torch.Tensor, generator: torch.Generator | None, std: float = 1.0) -> None:
    """Fill ``buf`` with N(0, std²) from ``generator``: ``torch.randn(buf.shape, generator=...)`` times ``std``."""
    draw_buf.normal_(0.0, std, generator=generator)  # std = 1: the same values; else ε·std rounded once, like mul_
    if draw_buf is not buf:
        buf.copy_(draw_buf)


def _buffers(shape: tuple[int, ...], dev: torch.device, dtype: torch.dtype,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A noise buffer on the model's device, and one on the generator's device when that differs."""
    noise = torch.empty(shape, device=dev, dtype=dtype)
    gen_dev = dev if generator is None else generator.device
    return noise, (noise if gen_dev == dev else torch.empty(shape, device=gen_dev, dtype=dtype))


def counts_independent(model: nn.Module, x: torch.Tensor, num: int, sigma: float, c: int, batch_size: int,
                       generator: torch.Generator | None, bar: object) -> torch.Tensor:
    """Counts (N, C) with a fresh Gaussian vector for every (point, draw) pair; ``x`` already on the model's device/dtype."""
    dev, dtype = x.device, x.dtype
    n_samples = x.shape[0]
    counts = torch.zeros(n_samples * c, dtype=torch.int64, device=dev)
    sums: list[torch.Tensor] = []
    total = n_samples * num
    # Batch-sized buffers reused by every chunk: no per-chunk allocation (page faults dominate on CPU).
    shape = (min(batch_size, total), *x.shape[1:])
    noise_buf, draw_buf = _buffers(shape, dev, dtype, generator)
    base_buf = torch.empty(shape, device=dev, dtype=dtype)
    for start in range(0, total, batch_size):
        flat = torch.arange(start, min(start + batch_size, total), device=dev)
        idx = flat // num
        m = flat.shape[0]
        noisy = noise_buf[:m]
        _draw(noisy, draw_buf[:m], generator)
        torch.index_select(x, 0, idx, out=base_buf[:m])
        noisy.mul_(sigma).add_(base_buf[:m])  # σ·ε + x, rounded as before
        logits = model(noisy)
        _check_logits(logits, c)
        sums.append(logits.sum(dtype=torch.float64))
        pred = logits.argmax(1)
        counts.index_add_(0, idx * c + pred, torch.ones_like(pred))
        bar.update(m)  # type: ignore[attr-defined]
    _raise_if_not_finite(sums)
    return counts.view(n_samples, c)


def counts_shared(model: nn.Module, x: torch.Tensor, num: int, sigma: float, c: int, batch_size: int,
                  generator: torch.Generator | None, bar: object) -> torch.Tensor:
    """Counts (N, C) with the same ``num`` Gaussian draws for every point (common random numbers).

    Each forward pass evaluates a block of ``p`` points × ``d`` draws (``p·d ≤ batch_size``): the block
    of ``d`` draws is made once, scaled by σ, and added to every group of points by one broadcast.
    """
    dev, dtype = x.device, x.dtype
    n_samples, feat = x.shape[0], tuple(x.shape[1:])
    p = min(n_samples, batch_size)  # points per forward pass
    d = max(1, min(num, batch_size // p))  # draws per forward pass
    counts = torch.zeros((n_samples, c), dtype=torch.int64, device=dev)
    sums: list[torch.Tensor] = []
    eps_buf, draw_buf = _buffers((d, *feat), dev, dtype, generator)
    noisy_buf = torch.empty(p * d * x[0].numel(), device=dev, dtype=dtype)
    flat_x = x.reshape(n_samples, -1)
    row = (torch.arange(p, device=dev) * c)[:, None]  # flat offset of each point's row in counts
    ones = torch.ones(p * d, dtype=torch.int64, device=dev)
    for d0 in range(0, num, d):
        dd = min(d, num - d0)
        eps = eps_buf[:dd]
        _draw(eps, draw_buf[:dd], generator, sigma)  # σ·ε in the draw: no separate pass
        flat_eps = eps.view(dd, -1)
        for p0 in range(0, n_samples, p):
            pp = min(p, n_samples - p0)
            noisy = noisy_buf[: pp * dd * flat_eps.shape[1]].view(pp, dd, -1)
            torch.add(flat_x[p0:p0 + pp, None], flat_eps[None], out=noisy)  # x + σ·ε: rounded as σ·ε + x
            logits = model(noisy.view(pp * dd, *feat))
            _check_logits(logits, c)
            sums.append(logits.sum(dtype=torch.float64))
            key = (row[:pp] + logits.argmax(1).view(pp, dd)).view(-1)
            counts[p0:p0 + pp].view(-1).index_add_(0, key, ones[: pp * dd])
            bar.update(pp * dd)  # type: ignore[attr-defined]
    _raise_if_not_finite(sums)
    return counts
