"""``robustlab attack``: robust accuracy of a model under one attack.

Example::

    robustlab attack --checkpoint runs/x --attack pgd --norm linf --eps 8/255 --steps 40 [--json] [--out r.json]
    robustlab attack --model net.ts --data mnist --data-root data/mnist-t10k --eps 0.1
"""

from __future__ import annotations

import argparse
from typing import Any

from ._inputs import add_inputs, call, emit, in_memory, load_inputs
from ._options import add_options

__all__ = ["add_parser", "add_threat_options", "attack_params", "run", "summary_lines"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "attack", help="robust accuracy of a model under one attack (clean / robust / worst-class)",
        description="Attack a model on its test set. Example: "
                    "robustlab attack --checkpoint runs/x --attack pgd --norm linf --eps 8/255 --steps 40",
    )
    add_inputs(p)
    p.add_argument("--attack", default="pgd", help="attack name (see 'robustlab list attacks'; default pgd)")
    add_threat_options(p)
    p.add_argument("--steps", type=int, default=None, help="attack iterations (default: the attack's own)")
    p.add_argument("--step-size", type=float, default=None, help="step size (PGD / ZOO; default 2.5*eps/steps)")
    p.add_argument("--restarts", type=int, default=None, help="random restarts (PGD / APGD)")
    p.add_argument("--n-queries", type=int, default=None, help="query budget (Square / ZOO)")
    p.add_argument("--targeted", action="store_true",
                   help="targeted mode with target (y + 1) mod C; reports the target hit rate too")
    add_options(p, "n_test", "batch_size", "seed", "device", "json", "out", "quiet")
    p.set_defaults(func=run)


def add_threat_options(p: argparse.ArgumentParser) -> None:
    """``--norm`` and ``--eps`` (required): the threat model shared by ``attack`` and ``evaluate``."""
    p.add_argument("--norm", default="linf", choices=("linf", "l2"), help="threat model (default linf)")
    add_options(p, "eps", eps={"required": True})


def attack_params(atk: Any) -> dict[str, Any]:
    """The resolved hyper-parameters of an attack object (what its defaults became), JSON-able."""
    out: dict[str, Any] = {"name": type(atk).__name__}
    for k, v in vars(atk).items():
        if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None), tuple, list)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def summary_lines(res: Any) -> list[str]:
    """Clean / robust (with its interval) / worst-class accuracy, the cascade and every flag."""
    lo, hi = res.ci
    return [
        f"clean accuracy        {100 * res.clean_accuracy:.2f}%",
        f"robust accuracy       {100 * res.robust_accuracy:.2f}%  "
        f"({int(100 * res.confidence)}% CI {100 * lo:.2f}-{100 * hi:.2f}, n={res.n})",
        f"worst-class robust    {100 * res.worst_class:.2f}%  (class {res.worst_class_index})",
        *[f"  after {k:<14} {100 * v:.2f}%" for k, v in res.per_attack.items()],
        *[f"flag: {f}" for f in res.flags],
    ]


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import attacks, evaluate

    kw: dict[str, Any] = {"eps": args.eps, "norm": args.norm}
    for opt in ("steps", "step_size", "restarts", "n_queries"):
        v = getattr(args, opt)
        if v is not None:
            kw[opt] = v
    atk = attacks.get(args.attack, **kw)  # bad names and values fail before any loading
    model, ds, ref, label = load_inputs(args)
    res = call(evaluate.robust_accuracy, model, ds, [atk], eps=args.eps, norm=args.norm,
               batch_size=args.batch_size, seed=args.seed, args=args)
    doc = {"command": "attack", "model": label, "data": ds.name, "data_ref": ref.to_config(), "attack": args.attack,
           "attack_params": attack_params(atk), "attack_repr": repr(atk), "seed": args.seed, **res.to_dict()}
    lines = [f"{ds.name}, model {label}: {atk!r}", *summary_lines(res)]
    if args.targeted:
        mem = in_memory(ds)  # an imagefolder: set's test split as tensors
        x, y = mem.x_test, mem.y_test
        targets = (y + 1) % ds.num_classes
        dev = next(iter(model.parameters()), torch.zeros(0)).device
        hits = 0
        for s in range(0, x.shape[0], args.batch_size):
            xb, tb = x[s:s + args.batch_size].to(dev), targets[s:s + args.batch_size].to(dev)
            xa = atk(model, xb, y[s:s + args.batch_size].to(dev), targets=tb,
                     generator=torch.Generator(device=dev).manual_seed(args.seed))
            with torch.no_grad():
                hits += int((model(xa).argmax(1) == tb).sum())
        doc["target_hit_rate"] = hits / max(x.shape[0], 1)
        lines.append(f"target hit rate       {100 * doc['target_hit_rate']:.2f}%  (targets (y+1) mod C)")
    emit(args, doc, lines)
    return 0
