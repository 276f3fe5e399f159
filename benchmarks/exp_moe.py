"""Robust mixture-of-experts (AdvMoE, Zhang et al., ICCV 2023): dense LeNet vs ``moe_lenet``, each trained with
joint PGD-AT (``pgd_at``) and with alternating router/expert PGD-AT (``advmoe``).

For each of the four runs: clean accuracy, robust accuracy under PGD-20 and Square (L∞, fixed --eps; a
point counts as robust only if both attacks fail on it; ``--suite`` adds the bench's standard suite,
``evaluate.robust_accuracy(..., "standard")``, and the worst case over all of them), training time, multiply-accumulates per forward
(MoE layers count the router and the k active experts of E, not the E experts the implementation computes),
and router robustness: the fraction of (test point, MoE layer) routing decisions (the top-k expert set) that
change between the clean input and its PGD-20 example (``models.routing``); ``--figure`` plots that share
against the attack's eps for the MoE runs (router robustness).

``advmoe`` makes one router *or* one expert update per batch, so by default it trains for twice the epochs
(``--advmoe-epochs``): as many router and expert updates, and PGD generations, as the paper's iterations of
one router step and one expert step, and as many expert updates as ``pgd_at``. ``advmoe`` on the dense LeNet
is ``pgd_at`` (no routers), so it is not run.

    .venv/bin/python benchmarks/exp_moe.py [--quick] [--data digits | --data mnist --root PATH]
        [--epochs 15] [--eps 0.1] [--experts 4] [--top-k 2] [--moe-channels 6,16] [--seeds 1] [--suite] [--figure routing.svg] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
from torch import nn

from robustlab import attacks, data, evaluate, models, training

RUNS = (("lenet", "pgd_at"), ("moe_lenet", "pgd_at"), ("moe_lenet", "advmoe"))  # advmoe on lenet is pgd_at


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


def robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int, seed: int,
               suite: bool = False) -> dict[str, float]:
    """Clean / PGD-20 / Square / worst-case accuracy, the share of routing decisions PGD changes, and
    (``suite``) the standard-suite robust accuracy."""
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
    out = {"clean": float(clean.float().mean()), "pgd20": float(ok_pgd.float().mean()),
            "square": float(ok_sq.float().mean()), "robust": float((clean & ok_pgd & ok_sq).float().mean()),
            "routing_changed": float(torch.cat(changed).mean()) if changed else float("nan")}
    if suite:  # the bench's standard suite: APGD-CE -> APGD-T -> FAB-T -> Square-5000 on the points still robust
        ra = evaluate.robust_accuracy(model, (x, y), "standard", eps=eps, seed=seed, progress=False)
        out["standard"] = ra.robust_accuracy
        out["worst"] = float((ra.robust & clean & ok_pgd & ok_sq).float().mean())  # suite, PGD-20 and Square
    return out


def routing_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float],
                  seed: int) -> list[float]:
    """Router robustness: the share of (test point, MoE layer) top-k decisions PGD-20 changes, per eps."""
    model.eval()
    with torch.no_grad():
        model(x)
        clean = [r.sort(1).values for r in models.routing(model)]
    out = []
    for eps in eps_list:
        x_adv = attacks.get("pgd", eps=eps, steps=20, generator=torch.Generator().manual_seed(seed))(model, x, y)
        with torch.no_grad():
            model(x_adv)
            adv = [r.sort(1).values for r in models.routing(model)]
        out.append(float(torch.cat([(a != b).any(1).float() for a, b in zip(clean, adv)]).mean()))
    return out


def routing_figure(curves: dict[str, list[list[float]]], eps_list: list[float], title: str) -> str:
    """SVG line chart of :func:`routing_curve`, one line per run and seed (seeds differ a lot: one may route
    every input alike)."""
    from robustlab.bench._svg import line_chart

    series = [{"label": f"{name}, seed {i}", "x": eps_list, "y": [100 * v for v in curve]}
              for name, per_seed in curves.items() for i, curve in enumerate(per_seed)]
    return line_chart(series, title=title, xlabel="L∞ eps of the PGD-20 attack", ylabel="routing decisions changed %",
                      unit_y=False)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="5 epochs, 300 test points, 200 Square queries")
    p.add_argument("--data", default="digits", choices=["digits", "mnist"])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--advmoe-epochs", type=int, default=None,
                   help="epochs of advmoe (default 2 x --epochs: advmoe alternates router and expert steps, so this "
                        "gives the paper's one router and one expert update per batch and the experts as many "
                        "updates as under pgd_at)")
    p.add_argument("--eps", type=float, default=0.1, help="L∞ budget of training and evaluation")
    p.add_argument("--train-steps", type=int, default=5, help="PGD steps of the training attack")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--moe-channels", default="6,16", help="channels of each expert (dense LeNet: 6,16)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000, help="Square queries")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--suite", action="store_true", help="also AutoAttack's standard suite (slow on CPU)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=None, help="write the router-robustness figure (SVG) here")
    p.add_argument("--routing-eps", default="0.025,0.05,0.1,0.15,0.2", help="eps values of the figure")
    a = p.parse_args()
    if a.quick:
        a.epochs, a.n_test, a.queries = min(a.epochs, 5), min(a.n_test, 300), min(a.queries, 200)
    if a.advmoe_epochs is None:
        a.advmoe_epochs = 2 * a.epochs
    torch.set_num_threads(a.threads)
    t0 = time.time()
    rows: dict[str, list[dict[str, float]]] = {f"{m} / {o}": [] for m, o in RUNS}
    eps_list = [float(e) for e in a.routing_eps.split(",")]
    curves: dict[str, list[list[float]]] = {f"{m} / {o}": [] for m, o in RUNS if m != "lenet"}
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
                         epochs=a.advmoe_epochs if objective == "advmoe" else a.epochs, batch_size=64, lr=0.05, progress=False, seed=seed)
            res = {"train_s": time.time() - start, "macs": float(forward_macs(m, tuple(d.input_shape))),
                   **robustness(m, x, y, a.eps, a.queries, seed, a.suite)}
            rows[f"{model_name} / {objective}"].append(res)
            if a.figure and model_name != "lenet":
                curves[f"{model_name} / {objective}"].append(routing_curve(m, x, y, eps_list, seed))
            print(f"[{time.time() - t0:5.0f}s] seed {seed} {model_name} / {objective}: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in res.items()), flush=True)

    def mean(name: str, key: str) -> float:
        return sum(r[key] for r in rows[name]) / len(rows[name])

    print(f"\n{a.data}, {a.epochs} epochs (advmoe {a.advmoe_epochs}), {a.seeds} seed(s), {len(x)} test points, L∞ eps={a.eps:g} "
          f"(train PGD-{a.train_steps}; eval PGD-20 + Square-{a.queries}), MoE {a.experts} experts top-{a.top_k}, "
          f"expert channels {a.moe_channels}")
    std = " standard suite % | worst case % |" if a.suite else ""
    print(f"| model / training | clean % | PGD-20 % | Square % | robust % |{std} routing changed % | train s | "
          "kMACs/forward |")
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if a.suite else ""))
    for name in rows:
        rc = mean(name, "routing_changed")
        print(f"| {name} | {100 * mean(name, 'clean'):.1f} | {100 * mean(name, 'pgd20'):.1f} | "
              f"{100 * mean(name, 'square'):.1f} | {100 * mean(name, 'robust'):.1f} | "
              + (f"{100 * mean(name, 'standard'):.1f} | {100 * mean(name, 'worst'):.1f} | " if a.suite else "") +
              f"{'-' if rc != rc else f'{100 * rc:.1f}'} | {mean(name, 'train_s'):.0f} | {mean(name, 'macs') / 1e3:.1f} |")
    if a.figure:
        print(f"\nrouting decisions changed % by PGD-20 at eps {eps_list} (mean over seeds):")
        for name, per_seed in curves.items():
            print(f"  {name}: " + ", ".join(f"{100 * sum(c) / len(c):.1f}" for c in zip(*per_seed)))
        title = f"Router robustness, {a.data}, MoE {a.experts} experts top-{a.top_k}, channels {a.moe_channels}"
        with open(a.figure, "w", encoding="utf-8") as f:
            f.write(routing_figure(curves, eps_list, title))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "results": rows, "routing_curves": curves, "routing_eps": eps_list,
                       "seconds": time.time() - t0}, f, indent=2)


if __name__ == "__main__":
    main()
