"""Forward+backward time of every registered loss relative to cross-entropy (torch's fused kernel).

Run: ``.venv/bin/python benchmarks/bench_losses.py [--repeats R] [--block B] [--threads T] [--losses ...]``.
Shapes (N, C) in {(512, 10), (512, 1000)}, float32 CPU. Goal (issues 3 and 13): ldr_kl and aldr_kl <= 1.5x CE.
Times are *process CPU time* (``time.process_time``, one thread) per call, averaged over a block of B calls;
the absolute figure is the minimum over R rounds, the ratio is the median over rounds of the per-round ratio to
CE. CE and every loss are timed back to back in each round, in alternating order (a paired design that cancels
most of the load from other jobs on a shared machine). For the goal losses the quartiles of the per-round
ratios are printed too: their spread shows how much load was left uncancelled.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab import losses

EXTRA = {"ldr_kl[softplus]": ("ldr_kl", {"normalize": "softplus"}),
         "aldr_kl[mean_abs]": ("aldr_kl", {"normalize": "mean_abs"})}


def _make(name: str, base: str, kw: dict, n: int):
    spec = losses.LOSSES.spec(base)
    args = {**spec.example_kwargs, **kw}
    if "num_samples" in args:
        args["num_samples"] = n
    return losses.get(base, **args)


def run(n: int, c: int, repeats: int, block: int, only: list[str] | None = None
        ) -> tuple[dict[str, float], dict[str, float]]:
    g = torch.Generator().manual_seed(0)
    logits0 = torch.randn(n, c, generator=g)
    target = torch.randint(0, c, (n,), generator=g)
    index = torch.arange(n)
    names = {name: (name, {}) for name in losses.available()} | EXTRA
    if only:
        names = {k: v for k, v in names.items() if k in only or k == "ce"}
    mods = {k: _make(k, b, kw, n) for k, (b, kw) in names.items()}
    times: dict[str, list[float]] = {k: [] for k in mods}

    def once(m):
        x = logits0.detach().requires_grad_(True)
        v = m(x, target, index=index) if m.needs_index else m(x, target)
        v.backward()

    for m in mods.values():  # warm-up
        for _ in range(3):
            once(m)
    for r in range(repeats):
        order = list(mods.items())
        for k, m in (order if r % 2 == 0 else order[::-1]):
            t0 = time.process_time()
            for _ in range(block):
                once(m)
            times[k].append((time.process_time() - t0) / block)
    per_round = {k: [a / b for a, b in zip(v, times["ce"])] for k, v in times.items()}
    return {k: min(v) for k, v in times.items()}, per_round


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=40)  # paired medians at 15 rounds swung by ±0.2x at (512, 10)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--losses", nargs="*", default=None, help="subset to time (CE is always included)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads={a.threads}, float32 CPU, fwd+bwd, min of {a.repeats} rounds x {a.block} calls")
    both = {shape: run(*shape, a.repeats, a.block, a.losses) for shape in ((512, 10), (512, 1000))}
    results = {shape: v[0] for shape, v in both.items()}
    per_round = {shape: v[1] for shape, v in both.items()}
    ratios = {shape: {k: statistics.median(r) for k, r in v.items()} for shape, v in per_round.items()}
    print(f"{'loss':<20}" + "".join(f"{f'(N,C)={s}':>30}" for s in results))
    names = list(next(iter(results.values())))
    for k in sorted(names, key=lambda k: (k != "ce", k)):
        cells = []
        for shape, r in results.items():
            cells.append(f"{r[k] * 1e6:9.1f} us  {ratios[shape][k]:5.2f}x CE")
        print(f"{k:<20}" + "".join(f"{c:>30}" for c in cells))
    for goal in ("ldr_kl", "aldr_kl"):
        if goal not in names:
            continue
        worst = max(r[goal] for r in ratios.values())
        spread = ", ".join(f"{s}: {' / '.join(f'{q:.2f}' for q in statistics.quantiles(v[goal], n=4))}"
                           for s, v in per_round.items())
        print(f"goal {goal} <= 1.5x CE: worst ratio {worst:.2f} -> {'OK' if worst <= 1.5 else 'MISSED'}"
              f"  (per-round ratio quartiles {spread})")


if __name__ == "__main__":
    main()
