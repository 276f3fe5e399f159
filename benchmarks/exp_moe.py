"""Robust mixture-of-experts (AdvMoE, Zhang et al., ICCV 2023): dense LeNet vs ``moe_lenet``, each trained with
joint PGD-AT (``pgd_at``) and with alternating router/expert PGD-AT (``advmoe``).

For each of the four runs: clean accuracy, robust accuracy under PGD-20 and Square (L∞, fixed --eps; a
point counts as robust only if both attacks fail on it), training time, multiply-accumulates per forward
(MoE layers count the router and the k active experts of E, not the E experts the implementation computes),
and router robustness: the fraction of (test point, MoE layer) routing decisions (the top-k expert set) that
change between the clean input and its PGD-20 example (``models.routing``).

    .venv/bin/python benchmarks/exp_moe.py [--quick] [--data digits | --data mnist --root PATH]
        [--epochs 15] [--eps 0.1] [--experts 4] [--top-k 2] [--moe-channels 6,16] [--seeds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
from torch import nn

from robustlab import attacks, data, models, training

RUNS = (("lenet", "pgd_at"), ("lenet", "advmoe"), ("moe_lenet", "pgd_at"), ("moe_lenet", "advmoe"))


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward on one input: Conv2d/Linear, and MoE layers at k of E experts."""
    total = 0
    moe_convs = {id(m.experts) for m in model.modules() if isinstance(m, models.MoEConv2d)}

    def conv_hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if id(m) not in moe_convs:
            total += out[0].numel() * m.weight[0].numel()  # type: ignore[index]

    def linear_hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += m.weight.numel()  # type: ignore[operator]

    def moe_hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total  # the router is a Linear (counted by linear_hook); experts: k of E active
        total += m.top_k * out[0].numel() * m.experts.weight[0].numel()  # type: ignore[index, operator]

    hooks = []
    for m in model.modules():
        hook = (moe_hook if isinstance(m, models.MoEConv2d) else conv_hook if isinstance(m, nn.Conv2d)
                else linear_hook if isinstance(m, nn.Linear) else None)
        if hook is not None:
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return total


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int, seed: int) -> dict[str, float]:
    """Clean / PGD-20 / Square / worst-case accuracy and the share of routing decisions PGD changes."""
    model.eval()
    pgd = attacks.get("pgd", eps=eps, steps=20, generator=torch.Generator().manual_seed(seed))
    square = attacks.get("square", eps=eps, n_queries=queries, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        route_clean = [r.sort(1).values for r in models.routing(model)]
    x_pgd = pgd(model, x, y)
    with torch.no_grad():
        ok_pgd = model(x_pgd).argmax(1) == y
        route_adv = [r.sort(1).values for r in models.routing(model)]
    x_sq = square(model, x, y)
    with torch.no_grad():
        ok_sq = model(x_sq).argmax(1) == y
    changed = [(a != b).any(1).float() for a, b in zip(route_clean, route_adv)]
    return {"clean": float(clean.float().mean()), "pgd20": float(ok_pgd.float().mean()),
            "square": float(ok_sq.float().mean()), "robust": float((clean & ok_pgd & ok_sq).float().mean()),
            "routing_changed": float(torch.cat(changed).mean()) if changed else float("nan")}


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="5 epochs, 300 test points, 200 Square queries")
    p.add_argument("--data", default="digits", choices=["digits", "mnist"])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--eps", type=float, default=0.1, help="L∞ budget of training and evaluation")
    p.add_argument("--train-steps", type=int, default=5, help="PGD steps of the training attack")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--moe-channels", default="6,16", help="channels of each expert (dense LeNet: 6,16)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000, help="Square queries")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.epochs, a.n_test, a.queries = min(a.epochs, 5), min(a.n_test, 300), min(a.queries, 200)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    rows: dict[str, list[dict[str, float]]] = {f"{m} / {o}": [] for m, o in RUNS}
    for seed in range(a.seeds):
        d = (data.load("mnist", root=a.root, use_test_split_as_train=0.8, seed=seed) if a.data == "mnist"
             else data.load("digits"))
        x, y = d.x_test[: a.n_test], d.y_test[: a.n_test]
        for model_name, objective in RUNS:
            kw = {"experts": a.experts, "top_k": a.top_k,
                  "channels": tuple(int(c) for c in a.moe_channels.split(","))} if model_name == "moe_lenet" else {}
            torch.manual_seed(seed)
            m = models.create(model_name, input_shape=d.input_shape, num_classes=d.num_classes, **kw)
            start = time.time()
            training.fit(m, d, objective=objective, objective_kw={"eps": a.eps, "steps": a.train_steps},
                         epochs=a.epochs, batch_size=64, lr=0.05, progress=False, seed=seed)
            res = {"train_s": time.time() - start, "macs": float(forward_macs(m, tuple(d.input_shape))),
                   **evaluate(m, x, y, a.eps, a.queries, seed)}
            rows[f"{model_name} / {objective}"].append(res)
            print(f"[{time.time() - t0:5.0f}s] seed {seed} {model_name} / {objective}: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in res.items()), flush=True)

    def mean(name: str, key: str) -> float:
        return sum(r[key] for r in rows[name]) / len(rows[name])

    print(f"\n{a.data}, {a.epochs} epochs, {a.seeds} seed(s), {a.n_test} test points, L∞ eps={a.eps:g} "
          f"(train PGD-{a.train_steps}; eval PGD-20 + Square-{a.queries}), MoE {a.experts} experts top-{a.top_k}, "
          f"expert channels {a.moe_channels}")
    print("| model / training | clean % | PGD-20 % | Square % | robust % | routing changed % | train s | kMACs/forward |")
    print("|---|---|---|---|---|---|---|---|")
    for name in rows:
        rc = mean(name, "routing_changed")
        print(f"| {name} | {100 * mean(name, 'clean'):.1f} | {100 * mean(name, 'pgd20'):.1f} | "
              f"{100 * mean(name, 'square'):.1f} | {100 * mean(name, 'robust'):.1f} | "
              f"{'-' if rc != rc else f'{100 * rc:.1f}'} | {mean(name, 'train_s'):.0f} | {mean(name, 'macs') / 1e3:.1f} |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "results": rows, "seconds": time.time() - t0}, f, indent=2)


if __name__ == "__main__":
    main()
