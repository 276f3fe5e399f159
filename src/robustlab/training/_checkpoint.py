"""Atomic checkpoints that load without executing code (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError

__all__ = ["atomic_write_bytes", "atomic_write_text", "load_checkpoint", "load_train_state", "save_checkpoint",
           "save_train_state"]

CHECKPOINT_NAME = "model.pt"
STATE_NAME = "last.pt"  # fit's resumable training state inside checkpoint_dir
STATE_FORMAT = "robustlab-train-state-v1"


def _atomic_replace(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and ``os.replace`` (never half-written)."""
    _atomic_replace(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() or p.suffix == "" else p


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s state dict and its ``robustlab_config`` atomically; return the file path.

    ``path`` is a ``.pt`` file or a run directory (then ``<dir>/model.pt``). ``extra`` must be JSON-able.
    """
    target = _resolve(path)
    config = getattr(model, "robustlab_config", None)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config_json": json.dumps(config) if config is not None else "",
        "extra_json": json.dumps(extra or {}),
        "format": "robustlab-checkpoint-v1",
    }
    _atomic_replace(target, lambda fh: torch.save(payload, fh))
    return target


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module | None = None,
                    *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint with ``weights_only=True`` (never runs code); rebuild the model from its config unless given.

    ``path`` is a ``.pt`` file or a run directory (``<dir>/model.pt``). A missing file is ``FileNotFoundError``;
    an empty, truncated, corrupt or foreign file, a pickled module (``torch.save(model)``) or weights that do not
    fit the model are an ``InvalidParameterError`` naming the file and what to do.
    """
    target = _resolve(path)
    if not target.exists():
        raise FileNotFoundError(f"No checkpoint at '{target}' (expected a .pt file or a run directory with {CHECKPOINT_NAME}).")
    if target.is_dir():
        raise InvalidParameterError(f"Checkpoint '{target}' is a folder; expected a .pt file.")
    if target.stat().st_size == 0:
        raise InvalidParameterError(f"Checkpoint '{target}' is empty (0 bytes); retrain or copy it again.")
    try:
        return _load(target, model, map_location)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise InvalidParameterError(
                f"'{target}' holds pickled Python objects (e.g. torch.save(model)); robustlab does not unpickle "
                "code. Save the model with robustlab.training.save_checkpoint or as TorchScript "
                "(torch.jit.save(torch.jit.script(model), path))."
            ) from None
        raise InvalidParameterError(
            f"'{target}' is not a robustlab checkpoint (corrupt or another format); write checkpoints with "
            "robustlab.training.save_checkpoint or 'robustlab train --out'."
        ) from None
    except (RuntimeError, EOFError, OSError, MemoryError, OverflowError, KeyError, AttributeError,
            json.JSONDecodeError, zipfile.BadZipFile) as e:
        what = "truncated or corrupt" if isinstance(e, (EOFError, RuntimeError, zipfile.BadZipFile)) else "unreadable"
        if isinstance(e, RuntimeError) and "state_dict" in str(e):
            what = "inconsistent (its weights do not fit its recorded model)"
        raise InvalidParameterError(f"Checkpoint '{target}' is {what}: {_short(e)}. Retrain it or copy it again.") from None
    except (ValueError, TypeError) as e:  # 'not a robustlab checkpoint', bad recorded config
        msg = _short(e)
        raise InvalidParameterError(msg if str(target) in msg else f"Checkpoint '{target}': {msg}") from None
    except (IndexError, LookupError, struct.error, UnicodeDecodeError) as e:  # malformed pickle streams
        raise InvalidParameterError(
            f"Checkpoint '{target}' is corrupt ({type(e).__name__}: {_short(e)}). Retrain it or copy it again."
        ) from None


def _load(target: Path, model: nn.Module | None, map_location: str | torch.device) -> nn.Module:
    payload = torch.load(target, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "robustlab-checkpoint-v1":
        raise ValueError(f"'{target}' is not a robustlab checkpoint.")
    if model is None:
        if not payload["config_json"]:
            raise ValueError(f"Checkpoint '{target}' has no model config; pass the model to load into.")
        from ..models import create

        cfg = json.loads(payload["config_json"])
        norm = cfg.get("normalize")
        if cfg.get("task") == "regression":  # one output (models.create insists on >= 2 classes)
            from ._fit_regression import regression_model

            model = regression_model(cfg["name"], input_shape=cfg["input_shape"], **_tuplify(cfg.get("kwargs", {})))
        else:
            model = create(cfg["name"], input_shape=cfg["input_shape"], num_classes=cfg["num_classes"],
                           normalize=tuple(norm) if norm else None, **_tuplify(cfg.get("kwargs", {})))
    model.load_state_dict(payload["state_dict"])
    model.robustlab_extra = json.loads(payload["extra_json"])  # type: ignore[assignment]
    return model


def _short(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's can run to a page)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")[:300]


def _tuplify(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}


def save_train_state(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``fit``'s resumable state (tensors, numbers, strings, lists and dicts only) to ``<dir>/last.pt`` atomically."""
    target = Path(directory) / STATE_NAME
    payload = {**state, "format": STATE_FORMAT}
    _atomic_replace(target, lambda fh: torch.save(payload, fh))
    return target


def load_train_state(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``fit``'s state from ``<dir>/last.pt`` (``weights_only=True``: never runs code), or None if there is none."""
    target = Path(directory) / STATE_NAME
    if not target.exists():
        return None
    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, never run it
        raise ValueError(f"'{target}' is not a readable robustlab training state ({type(e).__name__}: {e}).") from e
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"'{target}' is not a robustlab training state (format {STATE_FORMAT}).")
    return payload
