"""IBP over sample blocks against the whole batch, in one process (``bench_certify.py --only blocks``).

``certify.interval_bounds`` (IBP, L∞ ε = 0.02, 256 MNIST-shaped points, no gradient) on the benchmark models of
``_certify_models.py``, timed in paired rounds that alternate their order: blocks of ``IBP_BLOCK_BYTES`` (the
default) against one block (``IBP_BLOCK_BYTES`` set huge). Prints the minimum and median time of each and the
median of the per-round ratios, and the largest bound difference between the two.
"""

from __future__ import annotations

import statistics
import time

import torch
from _certify_models import build

from robustlab.certify import ibp as I
from robustlab.certify import interval_bounds


def run(rounds: int = 40) -> None:
    x = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    blocks = I.IBP_BLOCK_BYTES
    print(f"\n== IBP sample blocks ({blocks >> 10} KB) vs the whole batch, {rounds} paired rounds ==")
    print(f"{'model':<8}{'whole min ms':>14}{'med':>8}{'blocks min ms':>15}{'med':>8}{'ratio':>8}{'max |diff|':>12}")
    try:
        for name in ("mlp", "cnn", "rescnn"):
            model = build(name).eval()
            times: dict[bool, list[float]] = {True: [], False: []}
            with torch.no_grad():
                out = {}
                for cut in (True, False):
                    I.IBP_BLOCK_BYTES = blocks if cut else 1 << 62
                    out[cut] = interval_bounds(model, x, eps=0.02)  # warm-up (and the fx trace)
                for r in range(rounds):
                    for cut in ((True, False) if r % 2 else (False, True)):
                        I.IBP_BLOCK_BYTES = blocks if cut else 1 << 62
                        t0 = time.perf_counter()
                        interval_bounds(model, x, eps=0.02)
                        times[cut].append(time.perf_counter() - t0)
            diff = max(float((a - b).abs().max()) for a, b in zip(out[True], out[False]))
            ratio = statistics.median(a / b for a, b in zip(times[True], times[False]))
            print(f"{name:<8}{1e3 * min(times[False]):>14.1f}{1e3 * statistics.median(times[False]):>8.1f}"
                  f"{1e3 * min(times[True]):>15.1f}{1e3 * statistics.median(times[True]):>8.1f}{ratio:>8.3f}"
                  f"{diff:>12.2e}", flush=True)
    finally:
        I.IBP_BLOCK_BYTES = blocks
