"""``robustlab train``: load data, inject label noise, build a model, ``fit`` it, report and save.

Example::

    robustlab train --data digits --noise symmetric:0.4 --model mlp --epochs 30 --seed 0 --out runs/x

Objective hyper-parameters are free options after ``--objective NAME``: ``--eps 0.1 --step-size 0.02``
become ``eps=0.1, step_size=0.02`` (dash -> underscore; values parsed as int, float, bool, none, comma
lists or str) and are checked against the objective's constructor signature. ``--loss-arg``,
``--model-arg``, ``--data-arg`` and ``--noise-arg`` take ``key=value`` the same way (repeatable).
Writes ``metrics.json`` and ``model.pt`` (``training.save_checkpoint``) atomically into ``--out``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "parse_free_options", "parse_value", "run"]


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.1"`` -> 0.1, ``"8/255"`` -> 0.0314, ``"true"`` -> True, ``"none"`` -> None, ``"64,64"`` -> (64, 64), else str."""
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    if "," in text:
        return tuple(parse_value(t) for t in text.split(",") if t.strip())
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    num, slash, den = text.partition("/")  # "8/255" -> 0.03137...
    if slash:
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            pass
    return text


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects key=value (e.g. {flag} q=0.7). Got {item!r}.")
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


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


def _accepted(factory: Callable[..., Any], exclude: Sequence[str] = ()) -> tuple[list[str], bool]:
    try:
        params = inspect.signature(factory).parameters.values()  # a class gives its __init__ minus self
    except (TypeError, ValueError):  # builtins without a signature: accept anything
        return [], True
    names = [p.name for p in params if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
             and p.name not in exclude]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str, how: str,
                  exclude: Sequence[str] = ()) -> None:
    names, var_kw = _accepted(factory, exclude)
    unknown = [k for k in kwargs if k not in names]
    if unknown and not var_kw:
        shown = ", ".join(how.format(n.replace("_", "-") if how.startswith("--") else n) for n in names) or "(none)"
        raise ValueError(f"unknown option(s) {', '.join(how.format(k.replace('_', '-') if how.startswith('--') else k) for k in unknown)} "
                         f"for {what}; accepted: {shown}.")


def _wrap_sequences(factory: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``hidden=64`` -> ``hidden=(64,)`` where the factory annotates a Sequence/tuple parameter."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return kwargs
    out = dict(kwargs)
    for k, v in kwargs.items():
        ann = str(params[k].annotation) if k in params else ""
        if isinstance(v, (int, float)) and not isinstance(v, bool) and ("Sequence" in ann or "tuple" in ann):
            out[k] = (v,)
    return out


def add_parser(sub: Any) -> None:
    """Register the ``train`` sub-command (unknown ``--options`` are passed on as objective options)."""
    p = sub.add_parser(
        "train", help="train a model on (noisy) data and report clean test accuracy",
        description="Train a model; objective hyper-parameters follow --objective as free options "
                    "(e.g. --objective trades --eps 0.1 --beta 6).",
    )
    p.add_argument("--data", required=True, help="data set name (robustlab list data) or csv:/npz:/svmlight:<path>")
    p.add_argument("--data-root", default=None, help="folder with the data files (mnist, cifar10, ...)")
    p.add_argument("--data-arg", action="append", default=[], metavar="K=V", help="data set option (repeatable)")
    p.add_argument("--noise", default="none", help="label noise KIND:RATE, e.g. symmetric:0.4 (default: none)")
    p.add_argument("--noise-arg", action="append", default=[], metavar="K=V", help="noise option, e.g. dataset=mnist")
    p.add_argument("--model", default="mlp", help="model name (robustlab list models)")
    p.add_argument("--model-arg", action="append", default=[], metavar="K=V", help="model option, e.g. hidden=64,64")
    p.add_argument("--loss", default="ce", help="loss name (robustlab list losses)")
    p.add_argument("--loss-arg", action="append", default=[], metavar="K=V", help="loss hyper-parameter, e.g. q=0.7")
    p.add_argument("--objective", default="standard", help="training objective (robustlab list objectives)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", help="sgd, adam or adamw")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="cosine", help="cosine, step or constant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="run folder for metrics.json and model.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, accepts_free_options=True)


def _build_objective_kw(args: argparse.Namespace) -> dict[str, Any]:
    from ..training import OBJECTIVES

    kw = parse_free_options(getattr(args, "free_options", []) or [])
    spec = OBJECTIVES.spec(args.objective)
    _check_kwargs(spec.factory, kw, f"objective '{args.objective}'", "--{}")
    return kw


def run(args: argparse.Namespace) -> int:
    """Load, corrupt, build, fit, evaluate; print the summary table; write metrics.json + model.pt."""
    import torch

    from .. import data as rdata
    from .. import losses, metrics, models, noise
    from ..training import fit, predict_logits, save_checkpoint
    from ..training._checkpoint import atomic_write_text

    obj_kw = _build_objective_kw(args)
    loss_kw = _key_values(args.loss_arg, "--loss-arg")
    model_kw = _key_values(args.model_arg, "--model-arg")
    data_kw = _key_values(args.data_arg, "--data-arg")
    noise_kw = _key_values(args.noise_arg, "--noise-arg")
    kind, rate = noise.parse(args.noise)
    if loss_kw:
        _check_kwargs(losses.LOSSES.spec(args.loss).factory, loss_kw, f"loss '{args.loss}'", "{}")
    _check_kwargs(models.MODELS.spec(args.model).factory, model_kw, f"model '{args.model}'", "{}",
                  exclude=("input_shape", "num_classes"))
    model_kw = _wrap_sequences(models.MODELS.spec(args.model).factory, model_kw)
    if args.device != "cpu" and not torch.cuda.is_available() and str(args.device).startswith("cuda"):
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu.")

    t_start = time.perf_counter()
    d = rdata.load(args.data, root=args.data_root, **data_kw)
    if d.x_train.shape[0] == 0:
        raise ValueError(f"data set '{d.name}' has an empty train split ({d.meta.get('missing_split', '')} missing); "
                         f"for test-set-only folders pass --data-arg use_test_split_as_train=0.8.")
    if kind == "asymmetric" and "dataset" not in noise_kw and "mapping" not in noise_kw \
            and d.name in noise.ASYMMETRIC_MAPS and d.num_classes == 10:
        noise_kw["dataset"] = d.name
    gen = torch.Generator().manual_seed(args.seed)
    noisy = noise.inject(d.y_train, kind=kind, rate=rate, num_classes=d.num_classes, generator=gen,
                         x=d.x_train if kind == "instance" else None, **noise_kw)
    train_data = d.with_train_labels(noisy.labels, noise=args.noise)

    torch.manual_seed(args.seed)  # weight initialisation
    model = models.create(args.model, input_shape=d.input_shape, num_classes=d.num_classes, **model_kw)
    t_fit = time.perf_counter()
    result = fit(
        model, train_data, loss=args.loss, loss_kw=loss_kw or None, objective=args.objective,
        objective_kw=obj_kw or None, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        seed=args.seed, eval_every=args.eval_every, progress=not args.no_progress, device=args.device,
    )
    fit_s = time.perf_counter() - t_fit
    model = result.model
    logits = predict_logits(model, d.x_test).cpu()
    train_logits = predict_logits(model, d.x_train).cpu()
    final = {
        "train_acc_noisy_labels": metrics.accuracy(train_logits, noisy.labels.cpu()),
        "train_acc_clean_labels": metrics.accuracy(train_logits, d.y_train),
        "test_acc": metrics.accuracy(logits, d.y_test),
        "worst_class_test_acc": metrics.worst_class_accuracy(logits, d.y_test, d.num_classes),
        "test_ece": metrics.expected_calibration_error(logits.softmax(1), d.y_test),
    }
    total_s = time.perf_counter() - t_start
    rows = [
        ("data", f"{d.name} (train {d.x_train.shape[0]}, test {d.x_test.shape[0]}, {d.num_classes} classes)"),
        ("noise", f"{kind} rate {rate:g}" + (f" {noise_kw}" if noise_kw else "") + f", realized {noisy.realized_rate:.3f}"),
        ("model", args.model + (f" {model_kw}" if model_kw else "")),
        ("loss", args.loss + (f" {loss_kw}" if loss_kw else "")),
        ("objective", args.objective + (f" {obj_kw}" if obj_kw else "")),
        ("epochs", str(args.epochs)),
        ("train acc (noisy labels)", f"{final['train_acc_noisy_labels']:.4f}"),
        ("test acc (clean)", f"{final['test_acc']:.4f}"),
        ("worst-class test acc", f"{final['worst_class_test_acc']:.4f}"),
        ("time", f"{total_s:.1f} s (fit {fit_s:.1f} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))

    if args.out:
        from .. import __version__

        out = Path(args.out)
        record = {
            "config": {
                "data": args.data, "data_args": data_kw, "noise": args.noise, "noise_kind": kind, "noise_rate": rate,
                "noise_args": noise_kw, "model": args.model, "model_args": model_kw, "loss": args.loss,
                "loss_args": loss_kw, "objective": args.objective, "objective_args": obj_kw, "epochs": args.epochs,
                "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr, "momentum": args.momentum,
                "weight_decay": args.weight_decay, "schedule": args.schedule, "seed": args.seed, "device": args.device,
            },
            "noise": {"realized_rate": noisy.realized_rate, "transition": noisy.transition.tolist()},
            "metrics": final,
            "history": result.history,
            "time_s": {"total": total_s, "fit": fit_s},
            "versions": {"robustlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
        }
        save_checkpoint(model, out, extra={"metrics": final, "config": record["config"]})
        atomic_write_text(out / "metrics.json", json.dumps(record, indent=2, default=_json_default))
        print(f"wrote {out / 'metrics.json'} and {out / 'model.pt'}")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, tuple):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
