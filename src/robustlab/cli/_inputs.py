"""What every evaluation command starts from: a model (``--checkpoint``/``--model``) and its data
(``--data``/``--data-root``/``--data-arg``, default: the data recorded with the checkpoint), and how
it ends: a summary printed, a JSON document printed (``--json``) and written (``--out``).

``--data imagefolder:PATH --data-arg size=32`` gives a streamed data set (:class:`~robustlab.data.StreamingData`):
``attack``, ``evaluate`` and ``shift`` read it batch by batch; ``certify`` and ``conformal`` read its test split
into memory (:func:`in_memory`; bound it with ``--n-test``).

A checkpoint's recorded data reference is read with :meth:`DataRef.from_config` (``trusted=False``):
``download``/``mirror`` never come from a file; the command line overrides the recorded root and options.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._validation import InvalidParameterError
from ._options import add_options, key_values, progress_arg

__all__ = ["add_inputs", "call", "emit", "in_memory", "load_inputs", "recorded_data"]

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def add_inputs(p: argparse.ArgumentParser) -> None:
    """The model and data options: ``--checkpoint``, ``--model``, ``--model-arg``, ``--data``, ``--data-root``, ``--data-arg``."""
    add_options(p, "checkpoint", "model", "model_arg", "data", "data_root", "data_arg")


def recorded_data(checkpoint: str | None, model: Any) -> Any:
    """The :class:`DataRef` recorded with a checkpoint (its ``extra["config"]``, else ``metrics.json`` beside it), or None."""

    cfg = (getattr(model, "robustlab_extra", None) or {}).get("config")
    if isinstance(cfg, dict) and cfg.get("data") is not None:
        return _from_recorded(cfg, checkpoint)
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    metrics = (path if path.is_dir() else path.parent) / "metrics.json"
    try:
        doc = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else None
    except (OSError, ValueError):
        return None
    cfg = doc.get("config") if isinstance(doc, dict) else None
    if isinstance(cfg, dict) and cfg.get("data") is not None:
        return _from_recorded(cfg, str(metrics))
    return None


def _from_recorded(cfg: dict[str, Any], source: str | None) -> Any:
    from ..data import DataRef

    try:
        return DataRef.from_config(cfg)  # trusted=False: download/mirror are dropped
    except InvalidParameterError as e:
        raise InvalidParameterError(
            f"'{source}' records a data reference that cannot be read ({e}); pass --data NAME."
        ) from None


def _data_ref(args: argparse.Namespace, recorded: Any, source: str | None) -> Any:
    from ..data import DataRef

    opts = key_values(getattr(args, "data_arg", []) or [], "--data-arg")
    root = opts.pop("root", None) if args.data_root is None else args.data_root
    if "name" in opts:
        raise InvalidParameterError("--data-arg name=... is not an option; pass the data set as --data NAME.")
    if args.data is None and recorded is None:
        raise InvalidParameterError(
            f"Cannot tell which data set {source or 'the model'} was trained on; pass --data NAME "
            "(see 'robustlab list data') and --data-root DIR for file-backed sets."
        )
    base = recorded if recorded is not None else DataRef(args.data)
    return base.override(name=args.data, root=None if root is None else str(root), options=opts)


def _load_data(ref: Any) -> Any:
    try:
        return ref.load()
    except FileNotFoundError as e:
        hint = "" if ref.root is not None or ref.is_path else " On the command line: --data-root DIR."
        raise FileNotFoundError(f"{e}{hint}") from None


def load_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """``(model, data, data_ref, model_label)``: the model in eval mode on ``--device``, the data (first
    ``--n-test`` test examples), checked to fit each other (input shape, number of classes)."""
    from ..models import resolve
    from ..models._ref import check_compatible, names_saved_model

    ckpt, ref_text = getattr(args, "checkpoint", None), getattr(args, "model", None)
    if ckpt is not None and ref_text is not None:
        raise InvalidParameterError("Pass either --checkpoint PATH or --model REF, not both.")
    if ckpt is None and ref_text is None:
        raise InvalidParameterError(
            "Pass the model to use: --checkpoint PATH (a robustlab run folder or .pt) or --model REF "
            "(TorchScript file, module:attribute, timm:NAME or registry name)."
        )
    model_kw = key_values(getattr(args, "model_arg", []) or [], "--model-arg")
    label = str(ckpt if ckpt is not None else ref_text)
    model = None
    if ckpt is not None:
        from ..models._ref import load_checkpoint_file

        if model_kw:
            raise InvalidParameterError("--model-arg does not apply to --checkpoint (the checkpoint records its model).")
        model = load_checkpoint_file(ckpt)
    elif names_saved_model(ref_text):
        model = resolve(ref_text, **model_kw)
    recorded = None
    if model is not None:
        try:
            recorded = recorded_data(ckpt or ref_text, model)
        except InvalidParameterError:
            if args.data is None:
                raise  # with --data the recorded reference is not needed
    ref = _data_ref(args, recorded, f"'{label}'")
    data = _load_data(ref)
    if model is None:
        import torch

        torch.manual_seed(args.seed if hasattr(args, "seed") else 0)
        model = resolve(ref_text, input_shape=data.input_shape, num_classes=data.num_classes, **model_kw)
    outputs = 1 if getattr(data, "task", None) == "regression" else data.num_classes  # a regression model: one
    check_compatible(model, data.input_shape, outputs, data=f"data set '{data.name}'", model_name=f"model '{label}'")
    n_test = getattr(args, "n_test", None)
    if n_test is not None:
        data = data.subset(n_test=n_test)
    device = getattr(args, "device", None)
    if device:
        model = model.to(device)
    return model.eval(), data, ref, label


def in_memory(data: Any) -> Any:
    """``data`` as a ClassificationData: a streamed data set (``--data imagefolder:PATH``) has its test split read
    into memory (the commands that need tensors: bound it with ``--n-test``); in-memory data unchanged."""
    from ..data import StreamingData

    return data.subset(n_train=0).to_memory() if isinstance(data, StreamingData) else data


def call(fn: Callable[..., Any], *a: Any, args: argparse.Namespace, **kw: Any) -> Any:
    """Call ``fn`` with ``progress=`` from ``--quiet`` when its signature takes ``progress``."""
    try:
        takes = "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        kw["progress"] = progress_arg(args)
    return fn(*a, **kw)


def clean(text: Any) -> str:
    """``text`` without terminal control sequences (labels and names may come from files)."""
    return _CONTROL.sub("", str(text))


def emit(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    """Write ``doc`` to ``--out`` (atomically), then print it as JSON (``--json``) or print ``lines``."""
    text = json.dumps(doc, indent=2, default=_json_default)
    if getattr(args, "out", None):
        from ..training import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    if getattr(args, "json", False):
        print(text)
    else:
        print("\n".join(clean(line) for line in lines))
        if getattr(args, "out", None):
            print(f"wrote {clean(args.out)}")


def _json_default(o: Any) -> Any:
    """JSON fallback for CLI records (tuples, tensors/arrays, anything else as str); shared by every command."""
    if isinstance(o, tuple):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
