"""``robustlab denoise``: train a denoiser in front of a saved classifier (denoised smoothing), save it.

Examples::

    robustlab denoise --checkpoint runs/base --sigma 0.25 --method fo --epochs 3 --out runs/den
    robustlab denoise --checkpoint runs/base --sigma 0.25 --method zo --q 20 --query-budget 200000 --out runs/zo
    robustlab certify --checkpoint runs/base --denoiser runs/den --method smoothing --n 10000

The classifier stays frozen (``--method zo`` queries it as a black box, logits only). The denoiser is a
``dncnn`` (``--denoiser-arg width=16``), pre-trained ``--pretrain-epochs`` with the MSE loss unless
``--method mse``; ZO-AE-DS first pre-trains a ``conv_autoencoder`` on reconstruction. ``--out`` gets
``model.pt`` (the denoiser, :func:`robustlab.defences.save_denoiser`; for ZO also ``autoencoder.pt``) and
``denoise.json`` (settings, loss per epoch, queries), each written atomically.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .._validation import InvalidParameterError
from ._inputs import emit, load_inputs
from ._options import add_options, key_values, progress_arg

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    from ..defences._denoised import DENOISER_METHODS

    p = sub.add_parser(
        "denoise", help="train a denoiser in front of a frozen (or black-box) classifier for denoised smoothing",
        description="Train a DnCNN denoiser in front of a saved classifier (FO, ZO-AE-DS, consistency or MSE) "
                    "and save it; certify the result with 'robustlab certify --denoiser DIR --method smoothing'.",
    )
    add_options(p, "checkpoint", "model", "model_arg", "data", "data_root", "data_arg")
    p.add_argument("--sigma", type=float, default=0.25, help="Gaussian noise level σ the denoiser is trained for (default 0.25)")
    p.add_argument("--method", default="fo", choices=list(DENOISER_METHODS),
                   help="fo: gradients through the classifier; zo: black-box queries (ZO-AE-DS); consistency; mse (default fo)")
    p.add_argument("--loss", default="stability", choices=["stability", "classification"], help="FO loss (default stability)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the chosen method (default 3)")
    p.add_argument("--pretrain-epochs", type=int, default=2, help="MSE pre-training epochs (and autoencoder's for zo; default 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3; pre-training uses 2x)")
    p.add_argument("--q", type=int, default=20, help="zo: random directions per example (default 20)")
    p.add_argument("--query-budget", type=int, default=None, help="zo: stop before exceeding this many black-box queries")
    p.add_argument("--levels", type=int, default=4, help="consistency: noise levels of the trajectory (default 4)")
    p.add_argument("--denoiser-arg", action="append", default=[], metavar="K=V",
                   help="dncnn option, e.g. width=16 or depth=5 (repeatable)")
    p.add_argument("--n-train", type=int, default=None, help="train on the first N training examples")
    add_options(p, "batch_size", "seed", "device", "json", "quiet", defaults={"batch_size": 64})
    p.add_argument("--out", required=True, metavar="DIR", help="run folder for model.pt (+ autoencoder.pt) and denoise.json")
    p.set_defaults(func=run, out_kind="dir")


def _check(args: argparse.Namespace) -> None:
    for flag, value, lo in (("--epochs", args.epochs, 1), ("--pretrain-epochs", args.pretrain_epochs, 0),
                            ("--q", args.q, 1), ("--levels", args.levels, 1)):
        if value < lo:
            raise InvalidParameterError(f"{flag} must be an integer >= {lo}. Got {value}.")
    for flag, value in (("--sigma", args.sigma), ("--lr", args.lr)):
        if not value > 0:
            raise InvalidParameterError(f"{flag} must be a number > 0. Got {value}.")
    if args.n_train is not None and args.n_train < 1:
        raise InvalidParameterError(f"--n-train must be an integer >= 1. Got {args.n_train}.")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import models
    from ..data import StreamingData
    from ..defences import DenoisedSmoothing, save_denoiser
    from ..training import atomic_write_text

    _check(args)
    base, data, ref, label = load_inputs(args)
    if isinstance(data, StreamingData):
        if args.n_train is None:
            raise InvalidParameterError("denoise reads the training images into memory: bound them with --n-train N.")
        data = data.subset(n_train=args.n_train).to_memory()
    elif args.n_train is not None:
        data = data.subset(n_train=args.n_train)
    x = data.x_train
    if x.dim() != 4:
        raise InvalidParameterError(f"denoise needs image data (N, C, H, W); '{data.name}' has inputs of shape "
                                    f"{tuple(x.shape[1:])}.")
    dev = torch.device(args.device or "cpu")
    den_kw = key_values(args.denoiser_arg, "--denoiser-arg")
    torch.manual_seed(args.seed)
    den = models.create("dncnn", input_shape=data.input_shape, num_classes=data.num_classes, **den_kw).to(dev)
    g = torch.Generator().manual_seed(args.seed)
    common = {"batch_size": args.batch_size, "generator": g, "progress": progress_arg(args)}
    t0 = time.perf_counter()
    classifier: Any = base
    autoencoder = None
    if args.method == "zo":
        def classifier(z: torch.Tensor) -> torch.Tensor:  # a black box: logits, no gradients
            with torch.no_grad():
                return base(z)
        autoencoder = models.create("conv_autoencoder", input_shape=data.input_shape, num_classes=data.num_classes,
                                    width=den_kw.get("width", 32)).to(dev)
    ds = DenoisedSmoothing(classifier, den, args.sigma, autoencoder=autoencoder)
    history: dict[str, list[float]] = {}
    if args.method != "mse" and args.pretrain_epochs:
        history["mse"] = ds.fit(x, method="mse", epochs=args.pretrain_epochs, lr=2 * args.lr, **common).history
        if autoencoder is not None:
            history["autoencoder"] = ds.fit_autoencoder(x, epochs=args.pretrain_epochs, lr=2 * args.lr, **common).history
    y = data.y_train if args.loss == "classification" else None
    fit = ds.fit(x, y, method=args.method, loss=args.loss, epochs=args.epochs, lr=args.lr, q=args.q,
                 query_budget=args.query_budget, levels=args.levels, **common)
    history[args.method] = fit.history
    out = Path(args.out)
    record = {"command": "denoise", "base_model": label, "checkpoint": args.checkpoint, "data": data.name,
              "data_ref": ref.to_config(), "sigma": args.sigma, "method": args.method, "epochs": args.epochs,
              "pretrain_epochs": args.pretrain_epochs, "lr": args.lr, "batch_size": args.batch_size,
              "seed": args.seed, "num_train": int(x.shape[0]), "denoiser_args": den_kw, "history": history,
              "queries": fit.queries, "steps": fit.steps, "stopped_by_budget": fit.stopped_by_budget,
              "time_s": time.perf_counter() - t0}
    if args.method == "zo":
        record.update(q=args.q, query_budget=args.query_budget)
    if args.method == "consistency":
        record["levels"] = args.levels
    path = save_denoiser(ds, out, method=args.method, extra={"config": {"data": ref.to_config()}, "base_model": label})
    lines = [f"{data.name}, base model {label}: denoiser ({args.method}, σ={args.sigma:g}) trained on {x.shape[0]} "
             f"images in {record['time_s']:.1f} s"]
    lines += [f"  {stage:<12} loss per epoch: " + ", ".join(f"{v:.4g}" for v in vals) for stage, vals in history.items()]
    if args.method == "zo":
        lines.append(f"  black-box queries: {fit.queries}" + (" (stopped by --query-budget)" if fit.stopped_by_budget else ""))
    lines.append(f"wrote {path}" + (" and autoencoder.pt" if autoencoder is not None else ""))
    atomic_write_text(out / "denoise.json", json.dumps(record, indent=2, default=str) + "\n")
    args.out = None  # the folder is written; emit only prints
    emit(args, record, lines)
    return 0
