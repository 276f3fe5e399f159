"""How a model is named everywhere (Python, every CLI command, spec): :func:`resolve`.

Accepted references, tried in this order:

- an ``nn.Module``: returned as is;
- ``timm:NAME``: ``timm.create_model(NAME, num_classes=..., in_chans=...)`` when timm is installed;
- a registry name (``robustlab list models``) built by :func:`robustlab.models.create` with ``kwargs``
  (it wins over a file of the same name: write ``./NAME`` or ``checkpoint:NAME`` for the file);
- a robustlab checkpoint: a run folder holding ``model.pt`` or a ``.pt`` file written by
  :func:`robustlab.training.save_checkpoint` (read with ``weights_only=True``; ``checkpoint:PATH`` forces it);
- a TorchScript file (``torch.jit.save``; ``torchscript:PATH`` forces it). Pickled modules
  (``torch.save(model)``) are refused: unpickling can run code;
- ``module:attribute``: an importable module (installed or on ``PYTHONPATH``) and a class, function or
  module instance in it; it is called with ``input_shape``/``num_classes`` where its signature accepts them.

Example::

    model = models.resolve("mlp", input_shape=(64,), num_classes=10, hidden=(32,))
    model = models.resolve("runs/x")                       # a checkpoint
    model = models.resolve("torchvision.models:resnet18", num_classes=10)
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError

__all__ = ["REFERENCE_FORMS", "check_compatible", "load_checkpoint_file", "names_saved_model", "resolve"]

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
REFERENCE_FORMS = ("a robustlab checkpoint (run folder or .pt), a TorchScript file, a registry name (robustlab list models), "
                   "module:attribute or timm:NAME")


def resolve(
    ref: Any,
    *,
    input_shape: Sequence[int] | int | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build or load the model named by ``ref`` (see the module docstring for the accepted forms).

    ``input_shape`` (no batch dim) and ``num_classes`` are needed by registry names and passed to
    factories that accept them; ``kwargs`` go to the factory. Files are loaded on the CPU.
    """
    if isinstance(ref, nn.Module):
        return ref
    if isinstance(ref, os.PathLike):
        ref = os.fspath(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidParameterError(f"A model reference must be a non-empty str or an nn.Module. Got {ref!r}. "
                                    f"Accepted: {REFERENCE_FORMS}.")
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    prefix, sep, rest = ref.partition(":")
    if sep and prefix == "timm":
        return _timm(rest, input_shape, num_classes, kwargs)
    if sep and prefix == "checkpoint":
        return _no_kwargs(load_checkpoint_file(rest), ref, kwargs)
    if sep and prefix == "torchscript":
        return _no_kwargs(_torchscript(Path(rest)), ref, kwargs)
    path = Path(ref).expanduser()
    if names_saved_model(ref):
        if path.is_file() and _is_torchscript(path):
            return _no_kwargs(_torchscript(path), ref, kwargs)
        return _no_kwargs(load_checkpoint_file(path), ref, kwargs)
    from ._base import MODELS, create

    if ref in MODELS:
        if input_shape is None or num_classes is None:
            raise InvalidParameterError(
                f"Model '{ref}' is built from the registry and needs input_shape and num_classes (from the data)."
            )
        return create(ref, input_shape=input_shape, num_classes=num_classes, **kwargs)
    if _FACTORY.match(ref):
        return _factory(ref, input_shape, num_classes, kwargs)
    if "/" in ref or os.sep in ref or path.suffix in (".pt", ".pth", ".ts", ".jit"):
        raise FileNotFoundError(f"Model file '{ref}' does not exist (expected {REFERENCE_FORMS}).")
    try:
        MODELS.spec(ref)
    except KeyError as e:
        raise type(e)(f"{e} Other accepted model references: {REFERENCE_FORMS}.") from None
    raise AssertionError("unreachable")  # pragma: no cover


def names_saved_model(ref: Any) -> bool:
    """True when ``ref`` names a saved model (checkpoint or TorchScript file) that needs no data shape.

    A registry name wins over a file or folder of the same name in the working directory (write
    ``./mlp`` or ``checkpoint:mlp`` for the folder).
    """
    if not isinstance(ref, str):
        return False
    if ref.startswith(("checkpoint:", "torchscript:")):
        return True
    from ._base import MODELS

    return ref not in MODELS and Path(ref).expanduser().exists()


def _no_kwargs(model: nn.Module, ref: str, kwargs: dict[str, Any]) -> nn.Module:
    if kwargs:
        raise InvalidParameterError(f"Model options {sorted(kwargs)} do not apply to the saved model '{ref}'.")
    return model


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder and ``constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names) and \
        any("/code/" in n or n.startswith("code/") for n in names)


def _torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript file '{path}' does not exist.")
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError, EOFError, MemoryError, OverflowError) as e:
        raise InvalidParameterError(
            f"'{path}' is not a readable TorchScript file ({_short(e)}); save one with "
            "torch.jit.save(torch.jit.script(model), path)."
        ) from None
    return model.eval()


def load_checkpoint_file(path: str | os.PathLike[str]) -> nn.Module:
    """:func:`robustlab.training.load_checkpoint` (clear errors for corrupt, truncated, empty, foreign or
    pickled-module files, each an ``InvalidParameterError`` naming the file and what to do)."""
    from ..training import load_checkpoint

    return load_checkpoint(path)


def _short(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's can run to a page)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")[:300]


def _timm(name: str, input_shape: Sequence[int] | None, num_classes: int | None,
          kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise InvalidParameterError(f"Model 'timm:{name}' needs timm: pip install timm.") from None
    kw = dict(kwargs)
    if num_classes is not None:
        kw.setdefault("num_classes", num_classes)
    if input_shape is not None and len(input_shape) == 3:
        kw.setdefault("in_chans", int(input_shape[0]))
    try:
        return timm.create_model(name, **kw)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise InvalidParameterError(f"timm cannot build '{name}': {_short(e)}") from None


def _factory(ref: str, input_shape: Sequence[int] | None, num_classes: int | None,
             kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise InvalidParameterError(
            f"Model '{ref}': cannot import module '{module_name}' ({_short(e)}); install it or add its folder "
            "to PYTHONPATH (e.g. PYTHONPATH=. robustlab ...)."
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidParameterError(f"Model '{ref}': module '{module_name}' has no attribute '{attr}'.")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return _no_kwargs(obj, ref, kwargs)
    if not callable(obj):
        raise InvalidParameterError(f"Model '{ref}' is a {type(obj).__name__}, not an nn.Module or a factory.")
    kw = dict(kwargs)
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # builtins without a signature: pass everything
        params = {}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kw if params and not var_kw and k not in params]
    if unknown:
        raise InvalidParameterError(
            f"Model factory '{ref}' does not take option(s) {', '.join(unknown)}; it takes "
            f"{', '.join(n for n in params if n not in ('self', 'args')) or '(none)'}."
        )
    if input_shape is not None and ("input_shape" in params or var_kw):
        kw.setdefault("input_shape", tuple(input_shape))
    if num_classes is not None and ("num_classes" in params or var_kw):
        kw.setdefault("num_classes", num_classes)
    model = obj(**kw)
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"Model factory '{ref}' returned a {type(model).__name__}, not an nn.Module.")
    return model


def check_compatible(model: nn.Module, input_shape: Sequence[int], num_classes: int, *, data: str = "the data",
                     model_name: str = "the model") -> None:
    """Raise ``InvalidParameterError`` unless ``model`` takes inputs of ``input_shape`` and returns ``num_classes`` logits.

    Uses the recorded ``robustlab_config`` when present, then one forward pass on zeros (eval mode, no grad).
    """
    shape = tuple(int(s) for s in input_shape)
    cfg = getattr(model, "robustlab_config", None)
    if isinstance(cfg, dict) and cfg.get("input_shape") is not None:
        want = tuple(int(s) for s in cfg["input_shape"])
        if want != shape:
            raise InvalidParameterError(
                f"{model_name} was built for inputs of shape {want} but {data} has inputs of shape {shape}; "
                "use the data set it was trained on (--data/--data-root/--data-arg)."
            )
        if cfg.get("num_classes") is not None and int(cfg["num_classes"]) != int(num_classes):
            raise InvalidParameterError(
                f"{model_name} has {cfg['num_classes']} outputs but {data} has {num_classes} classes; "
                "use the data set it was trained on."
            )
    param = next(iter(model.parameters()), None)
    dev = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *shape), device=dev))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise InvalidParameterError(
            f"{model_name} cannot take inputs of shape {shape} from {data}: {_short(e)}; use data of the "
            "shape it was trained on."
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidParameterError(
            f"{model_name} returns {got} for one input but {data} has {num_classes} classes; expected (1, {num_classes})."
        )
