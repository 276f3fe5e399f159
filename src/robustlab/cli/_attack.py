"""``robustlab attack``: robust accuracy of a checkpoint under one attack.

Example::

    robustlab attack --checkpoint runs/x --attack pgd --norm linf --eps 0.1 --steps 40 [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "load_model_and_data", "print_result", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "attack", help="robust accuracy of a checkpoint under one attack (clean / robust / worst-class)",
        description="Attack a trained checkpoint on its test set. Example: "
                    "robustlab attack --checkpoint runs/x --attack pgd --norm linf --eps 0.1 --steps 40",
    )
    p.add_argument("--checkpoint", required=True, help="run directory (with model.pt) or a .pt checkpoint")
    p.add_argument("--attack", default="pgd", help="attack name (see 'robustlab list attacks'; default pgd)")
    add_common(p)
    p.add_argument("--step-size", type=float, default=None, help="step size (PGD / ZOO; default 2.5*eps/steps)")
    p.add_argument("--restarts", type=int, default=None, help="random restarts (PGD / APGD)")
    p.add_argument("--n-queries", type=int, default=None, help="query budget (Square / ZOO)")
    p.add_argument("--targeted", action="store_true",
                   help="targeted mode with target (y + 1) mod C; reports the target hit rate too")
    p.set_defaults(func=run)


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``attack`` and ``evaluate``."""
    p.add_argument("--norm", default="linf", choices=("linf", "l2"), help="threat model (default linf)")
    p.add_argument("--eps", type=float, required=True, help="radius of the threat model (inputs in [0, 1])")
    p.add_argument("--steps", type=int, default=None, help="attack iterations")
    p.add_argument("--data", default=None, help="data set name (default: the one recorded in the checkpoint)")
    p.add_argument("--n-test", type=int, default=None, help="evaluate on the first N test examples only")
    p.add_argument("--batch-size", type=int, default=256, help="attack batch size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' generators (default 0)")
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", default=None, help="also write the JSON result to this file")


def _data_name(checkpoint: str, model: Any) -> tuple[str | None, dict[str, Any]]:
    cfg = (getattr(model, "robustlab_extra", None) or {}).get("config") or {}
    if isinstance(cfg.get("data"), str):
        opts = cfg.get("data_args") or {}
        return cfg["data"], dict(opts) if isinstance(opts, dict) else {}
    path = Path(checkpoint)
    metrics = (path if path.is_dir() else path.parent) / "metrics.json"
    if metrics.exists():
        try:
            doc = json.loads(metrics.read_text())
        except (OSError, json.JSONDecodeError):
            return None, {}
        cfg = doc.get("config", {}) if isinstance(doc, dict) else {}
        if isinstance(cfg.get("data"), str):
            opts = cfg.get("data_args") or {}
            return cfg["data"], dict(opts) if isinstance(opts, dict) else {}
    return None, {}


def load_recorded_data(checkpoint: str, model: Any, name: str | None, root: str | None = None) -> Any:
    """The test data of a run: ``name`` if given, else the data set recorded with the checkpoint."""
    from .. import data as rl_data

    opts: dict[str, Any] = {}
    if name is None:
        name, opts = _data_name(checkpoint, model)
    if name is None:
        raise ValueError(f"Cannot tell which data set '{checkpoint}' was trained on; pass --data NAME "
                         "(see 'robustlab list data').")
    if root is not None:
        opts = {**opts, "root": root}
    return rl_data.load(name, **opts)


def load_model_and_data(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """Load the checkpoint (weights only) and its test data; ``--data`` overrides the recorded name."""
    from .. import data as rl_data
    from ..training import load_checkpoint

    model = load_checkpoint(args.checkpoint)
    name, opts = _data_name(args.checkpoint, model)
    if args.data is not None:
        name, opts = args.data, {}
    if name is None:
        raise ValueError(f"Cannot tell which data set '{args.checkpoint}' was trained on; pass --data NAME "
                         "(see 'robustlab list data').")
    ds = rl_data.load(name, **opts)
    if args.n_test is not None:
        if args.n_test < 1:
            raise ValueError(f"--n-test must be a positive int. Got {args.n_test}.")
        ds = ds.subset(n_test=args.n_test)
    if args.device:
        model = model.to(args.device)
    return model.eval(), ds, name


def print_result(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    """Print ``doc`` as JSON (``--json``) or ``lines``; write ``--output`` if given."""
    if args.output:
        from ..training import atomic_write_text

        atomic_write_text(args.output, json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(lines))


def summary_lines(res: Any) -> list[str]:
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
    atk = attacks.get(args.attack, **kw)
    model, ds, name = load_model_and_data(args)
    res = evaluate.robust_accuracy(model, ds, [atk], eps=args.eps, norm=args.norm, batch_size=args.batch_size,
                                   seed=args.seed)
    doc = {"checkpoint": str(args.checkpoint), "data": name, "attack": args.attack, "attack_repr": repr(atk),
           **res.to_dict()}
    lines = [f"{name}: {atk!r}", *summary_lines(res)]
    if args.targeted:
        x, y = ds.x_test, ds.y_test
        targets = (y + 1) % ds.num_classes
        dev = next(model.parameters()).device
        hits = 0
        for s in range(0, x.shape[0], args.batch_size):
            xb, tb = x[s:s + args.batch_size].to(dev), targets[s:s + args.batch_size].to(dev)
            xa = atk(model, xb, y[s:s + args.batch_size].to(dev), targets=tb,
                     generator=torch.Generator(device=dev).manual_seed(args.seed))
            with torch.no_grad():
                hits += int((model(xa).argmax(1) == tb).sum())
        doc["target_hit_rate"] = hits / max(x.shape[0], 1)
        lines.append(f"target hit rate       {100 * doc['target_hit_rate']:.2f}%  (targets (y+1) mod C)")
    print_result(args, doc, lines)
    return 0
