"""Four bound speed-ups, each against its own absence in one process (``bench_certify.py --only blocks``).

``certify.interval_bounds`` (IBP, L∞ ε = 0.02, 256 MNIST-shaped points, no gradient) on the benchmark models of
``_certify_models.py``, timed in paired rounds that alternate their order:

1. sample blocks of ``IBP_BLOCK_BYTES`` (the default) against one block (``IBP_BLOCK_BYTES`` set huge);
2. the rules' per-call memo (``W/2``, ``|W|/2`` and BatchNorm's halved map derived once per call, halving through
   addmm's alpha) against the rules that recompute ``|W|`` and halve centre and radius on every layer call;
3. layers that overwrite the input bounds they alone hold (``_rules.propagate_owned`` in chains, ``_graph._Owned``
   in fx graphs) against the rules that allocate every output;
4. CROWN-IBP (64 points) with the batched row products of ``_relax.bmv`` taken as (1, K) × (K, S) products against
   ``torch.bmm(a, v[..., None])``.

Prints the minimum and median time of each and the median of the per-round ratios, and the largest bound
difference between the two.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from _certify_models import build

from robustlab.certify import _crown, _graph, _relax, _rules, _tightness, interval_bounds
from robustlab.certify import ibp as I


def _paired(title: str, off: str, on: str, switch: Callable[[bool], None], rounds: int, x: torch.Tensor,
            method: str = "ibp") -> None:
    print(f"\n== {title}, {rounds} paired rounds ==")
    print(f"{'model':<8}{off + ' min ms':>16}{'med':>8}{on + ' min ms':>16}{'med':>8}{'ratio':>8}{'max |diff|':>12}")
    for name in ("mlp", "cnn", "rescnn"):
        model = build(name).eval()
        times: dict[bool, list[float]] = {True: [], False: []}
        with torch.no_grad():
            out = {}
            for flag in (True, False):
                switch(flag)
                out[flag] = interval_bounds(model, x, eps=0.02, method=method)  # warm-up (and the fx trace)
            for r in range(rounds):
                for flag in ((True, False) if r % 2 else (False, True)):
                    switch(flag)
                    t0 = time.perf_counter()
                    interval_bounds(model, x, eps=0.02, method=method)
                    times[flag].append(time.perf_counter() - t0)
        diff = max(float((a - b).abs().max()) for a, b in zip(out[True], out[False]))
        ratio = statistics.median(a / b for a, b in zip(times[True], times[False]))
        print(f"{name:<8}{1e3 * min(times[False]):>16.1f}{1e3 * statistics.median(times[False]):>8.1f}"
              f"{1e3 * min(times[True]):>16.1f}{1e3 * statistics.median(times[True]):>8.1f}{ratio:>8.3f}"
              f"{diff:>12.2e}", flush=True)


def run(rounds: int = 40) -> None:
    x = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    blocks, memo, twin, sole = I.IBP_BLOCK_BYTES, _rules._memo, _rules.owned_twin, _graph._Owned.sole_input

    def in_place(on: bool) -> None:
        _rules.owned_twin = twin if on else (lambda m: None)
        _graph._Owned.sole_input = sole if on else (lambda self, node, env: False)  # type: ignore[method-assign]

    bmv = _relax.bmv

    def row_products(on: bool) -> None:
        def old(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # the former bmv
            if a.shape[0] == 1 and v.shape[0] != 1:
                return torch.nn.functional.linear(v, a[0])
            return torch.bmm(a, v.unsqueeze(-1)).squeeze(-1)

        f = bmv if on else old
        for mod in (_relax, _crown, _tightness):
            mod.bmv = f  # type: ignore[attr-defined]

    try:
        _paired(f"IBP sample blocks ({blocks >> 10} KB) vs the whole batch", "whole", "blocks",
                lambda cut: setattr(I, "IBP_BLOCK_BYTES", blocks if cut else 1 << 62), rounds, x)
        _paired("IBP rules with the per-call memo vs recomputing per layer call", "per call", "memo",
                lambda on: setattr(_rules, "_memo", memo if on else (lambda *a: None)), rounds, x)
        _paired("IBP layers overwriting the inputs they alone hold vs allocating every output", "allocating",
                "in place", in_place, rounds, x)
        _paired("CROWN-IBP with row products as (1, K) x (K, S) matmuls vs bmm", "bmm", "matmul", row_products,
                max(4, rounds // 4), x[:64], method="crown_ibp")
    finally:
        I.IBP_BLOCK_BYTES, _rules._memo = blocks, memo
        in_place(True)
        row_products(True)
