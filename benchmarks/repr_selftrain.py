"""Robust self-training with out-of-domain unlabeled data: test error vs shift and vs amount of unlabeled data.

    python benchmarks/repr_selftrain.py [--quick] [--seeds 3] [--out docs/results/repr]

The two-Gaussian setting of Saberi et al. (ICLR 2024): d = 50, m = 20 labelled samples, ||mu|| / sigma = 1.5
(Bayes error 6.7%); the unlabeled pool's mean is moved sideways by ``shift * ||mu||``. Teacher: linear
logistic regression on the labelled samples; students: ``robust_self_training`` (lam 1, gamma 1, 3 ascent
steps) and its ``gamma=None`` form (plain pseudo-label self-training), 3 rounds of 200 full-batch steps
(``training.objectives.gaussian_mixture_diagnostic``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repr_common import fmt, parser, setup, table, write  # noqa: E402

from robustlab import data  # noqa: E402
from robustlab.bench._svg import line_chart  # noqa: E402
from robustlab.training.objectives import gaussian_mixture_diagnostic  # noqa: E402

KEYS = ("labelled_only", "self_training", "robust_self_training")


def _run(seeds: int, epochs: int, **gm_kw: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in KEYS}
    for s in range(seeds):
        gm = data.gaussian_mixture_shift(dim=50, n_labelled=20, snr=1.5, seed=s, **gm_kw)  # type: ignore[arg-type]
        r = gaussian_mixture_diagnostic(gm, epochs=epochs, seed=s)
        for k in KEYS:
            out[k].append(r[k])
    return out


def main() -> None:
    args = parser(__doc__).parse_args()
    t0 = setup(args)
    epochs = 50 if args.quick else 200
    shifts = [0.0, 2.0] if args.quick else [0.0, 0.5, 1.0, 2.0, 4.0]
    amounts = [0, 1000] if args.quick else [0, 100, 300, 1000, 3000]
    by_shift = {s: _run(args.seeds, epochs, shift=s, n_unlabeled=1000) for s in shifts}
    by_n = {n: _run(args.seeds, epochs, shift=0.5, n_unlabeled=n) for n in amounts}
    print(f"two Gaussians, d=50, m=20, snr 1.5 (Bayes 6.7%), {args.seeds} seed(s); test error % (mean ± sd)\n")
    print("vs shift (1000 unlabeled):\n")
    print(table(["shift", *KEYS], [[s, *[fmt(v[k]) for k in KEYS]] for s, v in by_shift.items()]))
    print("\nvs amount of unlabeled data (shift 0.5):\n")
    print(table(["n unlabeled", *KEYS], [[n, *[fmt(v[k]) for k in KEYS]] for n, v in by_n.items()]))
    series = [{"label": k.replace("_", " "), "x": list(by_shift), "y": [sum(v[k]) / len(v[k]) for v in by_shift.values()]}
              for k in KEYS]
    svg = line_chart(series, title="Self-training with shifted unlabeled data (two Gaussians)",
                     xlabel="shift of the unlabeled pool (x ||mu||)", ylabel="test error", hline=(0.0668, "Bayes"))
    write(args, "selftrain", {"by_shift": {str(k): v for k, v in by_shift.items()},
                              "by_n_unlabeled": {str(k): v for k, v in by_n.items()}}, svg, t0)


if __name__ == "__main__":
    main()
