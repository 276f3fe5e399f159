"""Square Attack (L∞): queries spent on no-op proposals, and robust accuracy at equal budget, skip_noop on/off.

    .venv/bin/python benchmarks/bench_square.py [--queries 100 1000] [--seeds 3] [--eps 0.1] [--n-test 360] [--epochs 10]

An MLP (64, 64) is adversarially trained on digits (PGD-AT, ε = ``--eps``, 7 steps; seeded), then Square
L∞ at the same ε attacks the first ``--n-test`` test points with each budget, once with
``skip_noop=False`` (the reference search: a proposal whose window already holds the drawn ±ε signs, or
that the [0, 1] clip maps back onto the current values, is still sent to the model) and once with
``skip_noop=True`` (the default: such a proposal gets the opposite signs). Printed per budget: proposal
queries sent, how many of them were no-ops (the candidate equals the current iterate), and the robust
accuracy (lower is a stronger attack), summed / averaged over ``--seeds`` attack seeds, the same seeds for
both settings.
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab import data, models, training
from robustlab.attacks import Square


class CountingSquare(Square):
    """Square that counts its proposal queries and those whose candidate equals the current iterate."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.proposals, self.noops = 0, 0
        self._same: torch.Tensor | None = None

    def _linf_candidate(self, xa, ba, mask, signs):  # noqa: ANN001, ANN202
        cand = super()._linf_candidate(xa, ba, mask, signs)
        same = (cand == ba).flatten(1).all(1)
        # with skip_noop a no-op is redrawn with -signs (a second call): the query is a no-op only if both are
        self._same = same if self._same is None else self._same & same
        return cand

    def _score(self, model, xs, y, t):  # noqa: ANN001, ANN202
        if self._same is not None:  # a proposal query (the first call scores the start point)
            self.proposals += xs.shape[0]
            self.noops += int(self._same.sum())
            self._same = None
        return super()._score(model, xs, y, t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--n-test", type=int, default=360)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="attack generator seeds per budget (means printed)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = data.load("digits")
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(64, 64))
    t0 = time.perf_counter()
    training.fit(model, d, objective="pgd_at", objective_kw={"eps": a.eps, "steps": 7}, epochs=a.epochs,
                 batch_size=64, optimizer="adam", lr=1e-3, progress=False, eval_every=0, seed=0)
    model.eval()
    x, y = d.x_test[: a.n_test], d.y_test[: a.n_test]
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(f"torch {torch.__version__}; digits MLP(64, 64) PGD-AT eps={a.eps} ({a.epochs} epochs, "
          f"{time.perf_counter() - t0:.0f} s); {x.shape[0]} test points, clean accuracy {clean:.2%}")
    print(f"(sums and means over {a.seeds} attack seeds)")
    print(f"{'queries':>8}{'skip_noop':>11}{'proposals':>11}{'no-ops':>9}{'no-op %':>9}{'robust acc':>12}"
          f"{'per seed':>24}{'time s':>8}")
    for n_queries in a.queries:
        for skip in (False, True):
            proposals, noops, robust, secs = 0, 0, [], 0.0
            for seed in range(a.seeds):
                atk = CountingSquare(eps=a.eps, n_queries=n_queries, skip_noop=skip)
                t0 = time.perf_counter()
                x_adv = atk(model, x, y, generator=torch.Generator().manual_seed(seed))
                secs += time.perf_counter() - t0
                with torch.no_grad():
                    robust.append(float((model(x_adv).argmax(1) == y).float().mean()))
                proposals, noops = proposals + atk.proposals, noops + atk.noops
            share = noops / max(proposals, 1)
            per_seed = " ".join(f"{r:.2%}" for r in robust)
            print(f"{n_queries:>8}{skip!s:>11}{proposals:>11}{noops:>9}{share:>9.1%}{sum(robust) / len(robust):>12.2%}"
                  f"{per_seed:>24}{secs:>8.1f}")


if __name__ == "__main__":
    main()
