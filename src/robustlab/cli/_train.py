"""``robustlab train``: load data, inject label noise, build a model, ``fit`` it, report and save.

Example::

    robustlab train --data digits --noise symmetric:0.4 --model mlp --epochs 30 --seed 0 --out runs/x

Objective hyper-parameters are free options after ``--objective NAME``: ``--eps 0.1 --step-size 0.02``
become ``eps=0.1, step_size=0.02`` (dash -> underscore; values parsed as int, float, bool, none, comma
lists or str) and are checked against the objective's constructor signature. ``--loss-arg``,
``--model-arg``, ``--data-arg`` and ``--noise-arg`` take ``key=value`` the same way (repeatable).
The run itself is :func:`robustlab.pipeline.run` (the same pipeline as every bench run); this module
turns the command line into its config, prints the summary (every hyper-parameter the run used,
defaults marked) and writes ``metrics.json`` next to the pipeline's ``model.pt`` in ``--out``.
``--data-arg download=true`` / ``mirror=URL`` fetch the data; they are never recorded.
``torchrun --nproc_per_node=N -m robustlab train ... [--sync-bn]`` trains data-parallel (``fit(distributed=True)``;
on by itself when ``WORLD_SIZE`` > 1, or with ``--distributed``); how a run is launched is not part of its config
(the run id and the recorded config are those of the one-process run), and only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._inputs import _json_default
from ._options import add_options, check_writable, key_values, parse_value, progress_arg

__all__ = ["add_parser", "build_config", "parse_free_options", "parse_value", "run"]


def parse_free_options(tokens: Sequence[str]) -> dict[str, Any]:
    """``["--eps", "0.1", "--random-start", "--steps=10"]`` -> ``{"eps": 0.1, "random_start": True, "steps": 10}``."""
    out: dict[str, Any] = {}
    i = 0
    toks = list(tokens)
    while i < len(toks):
        tok = toks[i]
        if not tok.startswith("--") or tok == "--":
            raise ValueError(f"unexpected argument {tok!r}; objective options look like '--name value'.")
        name, sep, value = tok[2:].partition("=")
        if sep:
            out[name.replace("-", "_")] = parse_value(value)
            i += 1
        elif i + 1 < len(toks) and not (toks[i + 1].startswith("--") and not _is_number(toks[i + 1])):
            out[name.replace("-", "_")] = parse_value(toks[i + 1])
            i += 2
        else:
            out[name.replace("-", "_")] = True
            i += 1
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def add_parser(sub: Any) -> None:
    """Register the ``train`` sub-command (unknown ``--options`` are passed on as objective options)."""
    p = sub.add_parser(
        "train", help="train a model on (noisy) data and report clean test accuracy",
        description="Train a model; objective hyper-parameters follow --objective as free options "
                    "(e.g. --objective trades --eps 8/255 --beta 6). Defaults the run used are printed.",
    )
    add_options(p, "data", "data_root", "data_arg", data={"required": True, "default": None, "help":
                "data set: a registry name (robustlab list data) or csv:/npz:/svmlight:<path>"},
                data_arg={"help": "data set option, e.g. use_test_split_as_train=0.8 (repeatable); download=true and "
                                  "mirror=URL fetch the files and are never recorded"})
    p.add_argument("--noise", default="none", help="label noise KIND:RATE, e.g. symmetric:0.4 (default: none)")
    p.add_argument("--noise-arg", action="append", default=[], metavar="K=V",
                   help="noise option, e.g. dataset=mnist (asymmetric: default map chosen from the data set's name)")
    p.add_argument("--model", default="mlp", metavar="REF",
                   help="model: a registry name (robustlab list models), checkpoint, TorchScript file, "
                        "module:attribute or timm:NAME (default mlp)")
    add_options(p, "model_arg")
    p.add_argument("--loss", default="ce", help="loss name (robustlab list losses; default ce)")
    p.add_argument("--loss-arg", action="append", default=[], metavar="K=V", help="loss hyper-parameter, e.g. q=0.7")
    p.add_argument("--objective", default="standard", help="training objective (robustlab list objectives)")
    add_options(p, "eps", eps={"help": "the objective's radius (inputs in [0, 1]; 8/255 accepted); default: the "
                                       "objective's own, printed in the summary"})
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default %(default)s)")
    add_options(p, "batch_size", defaults={"batch_size": 128})
    p.add_argument("--optimizer", default="sgd", help="sgd, adam or adamw (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default %(default)s)")
    p.add_argument("--schedule", default="cosine", help="cosine, step or constant (default %(default)s)")
    p.add_argument("--eval-every", type=int, default=1, help="test accuracy every N epochs; 0: never (default 1)")
    p.add_argument("--augment", default=None, help="training augmentation: none, flip, crop_flip, cutout or noise "
                                                   "(batched, seeded; default none)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 for the training step (autocast); "
                                                       "evaluation stays float32 (default %(default)s)")
    p.add_argument("--select", default=None, help="keep the best epoch by 'clean' or 'pgd' (robust; eps/norm of the "
                                                  "objective, 10 steps) accuracy on a held-out split (default: last epoch)")
    p.add_argument("--select-every", type=int, default=1, help="selection metric every N epochs (default 1)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="stratified held-out fraction of the train split (default 0.1 with --select)")
    p.add_argument("--patience", type=int, default=None, help="stop after N selections without improvement")
    p.add_argument("--ema", type=float, default=None, help="weight EMA decay, e.g. 0.999 (evaluated and returned)")
    p.add_argument("--resume", action="store_true",
                   help="keep a resumable training state in --out/train_state after every epoch and continue "
                        "from it when present (rerun the same command after an interruption)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the processes of a torchrun launch (torchrun "
                        "--nproc_per_node=N -m robustlab train ...); on by itself when WORLD_SIZE > 1; only rank 0 "
                        "prints and writes files")
    p.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm statistics across the processes "
                                                         "(with --distributed)")
    p.add_argument("--dist-timeout", type=float, default=600.0,
                   help="seconds a process waits for the others before the run fails (default %(default)s)")
    add_options(p, "seed", "device", "json", "quiet", "out",
                out={"metavar": "DIR", "help": "run folder for metrics.json and model.pt (checked before any work)"})
    p.add_argument("--no-progress", dest="quiet", action="store_true", help="same as --quiet")
    _add_collab_options(p)
    p.set_defaults(func=run, accepts_free_options=True)


def _add_collab_options(p: Any) -> None:
    """Collaborative training (robustlab.collab): on when --workers is given."""
    g = p.add_argument_group("collaborative learning (robustlab.collab; on with --workers)")
    g.add_argument("--workers", type=int, default=None, help="number of simulated workers, Byzantine included")
    g.add_argument("--f", type=int, default=0, help="number of Byzantine workers (default 0)")
    g.add_argument("--aggregator", default="monna", help="robust aggregator (robustlab list aggregators; default monna)")
    g.add_argument("--aggregator-arg", action="append", default=[], metavar="K=V", help="aggregator option, e.g. tau=2")
    g.add_argument("--byzantine", default="sign_flip",
                   help="Byzantine behaviour (robustlab list byzantine; default sign_flip)")
    g.add_argument("--byzantine-arg", action="append", default=[], metavar="K=V", help="behaviour option, e.g. z=1.0")
    g.add_argument("--heterogeneity", default="iid", help="data split: iid or dirichlet:ALPHA (default iid)")
    g.add_argument("--exchange", default=None, help="params (MoNNA's default) or momentum (the others' default)")


def _collab_section(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "workers", None) is None:
        given = [o for o, v in (("--f", args.f != 0), ("--aggregator-arg", args.aggregator_arg),
                                ("--byzantine-arg", args.byzantine_arg), ("--exchange", args.exchange)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} need(s) --workers N (collaborative training).")
        return {}
    return {"collab": {"workers": args.workers, "f": args.f,
                       "aggregator": {"name": args.aggregator, "kwargs": key_values(args.aggregator_arg,
                                                                                   "--aggregator-arg")},
                       "byzantine": {"name": args.byzantine, "kwargs": key_values(args.byzantine_arg,
                                                                                 "--byzantine-arg")},
                       "heterogeneity": args.heterogeneity, "exchange": args.exchange}}


def build_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline config of a ``train`` command line, and the ``fetch`` options (download/mirror)."""
    from .. import losses, noise, pipeline
    from ..training import OBJECTIVES

    obj_kw = parse_free_options(getattr(args, "free_options", []) or [])
    if args.eps is not None:
        obj_kw["eps"] = args.eps
    loss_kw = key_values(args.loss_arg, "--loss-arg")
    model_kw = key_values(args.model_arg, "--model-arg")
    data_kw = key_values(args.data_arg, "--data-arg")
    noise_kw = key_values(args.noise_arg, "--noise-arg")
    pipeline.check_kwargs(OBJECTIVES.spec(args.objective).factory, obj_kw, f"objective '{args.objective}'",
                          spell=lambda n: "--" + n.replace("_", "-"))
    from .._regression_run import config_task

    regression = config_task(args.data, data_kw) == "regression"  # a regression set takes regression losses
    loss_registry = losses.REGRESSION_LOSSES if regression else losses.LOSSES
    pipeline.check_kwargs(loss_registry.spec(args.loss).factory, loss_kw, f"loss '{args.loss}' (--loss-arg)",
                          skip=("num_samples",))
    from ..models import MODELS

    if args.model in MODELS:
        pipeline.check_kwargs(MODELS.spec(args.model).factory, model_kw, f"model '{args.model}' (--model-arg)",
                              skip=("input_shape", "num_classes"))
    fetch = {k: data_kw.pop(k) for k in pipeline.FETCH_OPTIONS if k in data_kw}
    if args.data_root is not None:
        data_kw["root"] = args.data_root
    kind, rate = noise.parse(args.noise)
    config = {
        "data": {"name": args.data, "options": data_kw},
        "noise": {"kind": kind, "rate": rate, "options": noise_kw} if rate > 0 or noise_kw else "none",
        "model": {"name": args.model, "kwargs": model_kw},
        "loss": {"name": args.loss, "kwargs": loss_kw},
        "objective": {"name": args.objective, "kwargs": obj_kw},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
                  "momentum": args.momentum, "weight_decay": args.weight_decay, "schedule": args.schedule,
                  "eval_every": args.eval_every, "augment": args.augment, "precision": args.precision,
                  "select": args.select, "select_every": args.select_every, "val_fraction": args.val_fraction,
                  "patience": args.patience, "ema": args.ema},
        "seed": args.seed,
        **_collab_section(args),
    }
    return config, fetch


def _kwargs_text(name: str, resolved: dict[str, Any], given: dict[str, Any]) -> str:
    """``pgd_at eps=0.03137* steps=10* ...`` with ``*`` on defaults the user did not set."""
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in resolved.items()]
    parts = [p + ("" if k in given else "*") for p, k in zip(parts, resolved)]
    return " ".join([name, *parts])


def run(args: argparse.Namespace) -> int:
    """Build the config, run the pipeline, print the summary, write metrics.json (+ the pipeline's model.pt)."""
    import torch

    from .. import metrics, pipeline
    from ..training import predict_logits

    raw, fetch = build_config(args)
    config = pipeline.Config.from_dict(raw)
    if args.out:
        check_writable(args.out, directory=True)
    elif args.resume:
        raise ValueError("--resume needs --out DIR (the resumable state is kept in DIR/train_state).")
    distributed = bool(args.distributed) or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    if args.sync_bn and not distributed:
        raise ValueError("--sync-bn synchronises BatchNorm across processes: launch with torchrun and --distributed.")
    fit_kw = {"distributed": True, "sync_bn": bool(args.sync_bn), "dist_timeout": args.dist_timeout} if distributed else {}
    t_start = time.perf_counter()
    res = pipeline.run(config, out=args.out, device=args.device, progress=progress_arg(args), fetch=fetch,
                       resume=args.resume, fit_kw=fit_kw)
    from ..training import is_main_process

    if not is_main_process():
        return 0  # rank 0 reports and writes
    if res.resolved.get("task") == "regression":
        from ._train_regression import report_regression

        return report_regression(args, config, res, t_start)
    d, model = res.data, res.model
    train_labels = res.train_data.y_train
    logits = predict_logits(model, d.x_test).cpu()
    train_logits = predict_logits(model, d.x_train).cpu()
    final = {
        "train_acc_noisy_labels": metrics.accuracy(train_logits, train_labels.cpu()),
        "train_acc_clean_labels": metrics.accuracy(train_logits, d.y_train),
        "test_acc": metrics.accuracy(logits, d.y_test),
        "worst_class_test_acc": metrics.worst_class_accuracy(logits, d.y_test, d.num_classes),
        "test_ece": metrics.expected_calibration_error(logits.softmax(1), d.y_test),
    }
    total_s = time.perf_counter() - t_start
    rz = res.resolved
    realized = float(res.noisy.realized_rate) if res.noisy is not None else 0.0
    noise_opts = {k: v for k, v in rz["noise"].items() if k not in ("kind", "rate")}
    rows = [
        ("data", f"{d.name} (train {d.x_train.shape[0]}, test {d.x_test.shape[0]}, {d.num_classes} classes)"),
        ("noise", f"{config.noise.kind} rate {config.noise.rate:g}" + (f" {noise_opts}" if noise_opts else "")
         + f", realized {realized:.3f}"),
        ("model", _kwargs_text(config.model.name, rz["model"], config.model.kwargs)),
        ("loss", _kwargs_text(config.loss.name, rz["loss"], config.loss.kwargs)),
        ("objective", _kwargs_text(config.objective.name, rz["objective"], config.objective.kwargs)),
        ("train", " ".join(f"{k}={v}" for k, v in config.train.items())),
        ("epochs", str(config.train["epochs"])),
        ("train acc (noisy labels)", f"{final['train_acc_noisy_labels']:.4f}"),
        ("test acc (clean)", f"{final['test_acc']:.4f}"),
        ("worst-class test acc", f"{final['worst_class_test_acc']:.4f}"),
        ("time", f"{total_s:.1f} s (fit {res.timings['train_s']:.1f} s)"),
    ]
    if distributed:
        import torch.distributed as dist

        rows.insert(-1, ("processes", f"{dist.get_world_size()} (torchrun, data-parallel)"))
    if "collab" in rz:  # collaborative run: who aggregates, who attacks (test acc = honest worker 0's model)
        rows.insert(6, ("collab", " ".join(f"{k}={v}" for k, v in rz["collab"].items())))
    record = {
        "config": {**pipeline.record(config), "device": args.device},
        "resolved": rz,
        "noise": {"realized_rate": realized,
                  "transition": (res.noisy.transition.tolist() if res.noisy is not None
                                 else torch.eye(d.num_classes).tolist())},
        "metrics": final,
        "history": res.history,
        "time_s": {"total": total_s, "fit": res.timings["train_s"]},
        "versions": _versions(),
    }
    return emit_summary(args, rows, record)


def emit_summary(args: argparse.Namespace, rows: list[tuple[str, str]], record: dict[str, Any]) -> int:
    """Print the run's summary table (or its JSON record with ``--json``) and write ``metrics.json`` under ``--out``."""
    from ..training._checkpoint import atomic_write_text

    if args.json:
        print(json.dumps(record, indent=2, default=_json_default))
    else:
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
        print("(* = default value)")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "metrics.json", json.dumps(record, indent=2, default=_json_default))
        if not args.json:
            print(f"wrote {out / 'metrics.json'} and {out / 'model.pt'}")
    return 0


def _versions() -> dict[str, str]:
    import torch

    from .. import __version__

    return {"robustlab": __version__, "torch": torch.__version__, "python": platform.python_version()}

