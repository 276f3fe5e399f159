"""``fit``'s resumable state: what goes into ``<checkpoint_dir>/last.pt`` and how it is put back.

Everything saved is a tensor, number, string, list or dict, so the file loads with ``weights_only=True``.
The objective's state is its plain attributes (numbers, strings, tensors and tuples/lists/dicts of them:
DRO-AT's running average, the adaptive-distillation temperatures, IBP's ramp position); modules
(teachers) and generators are not state (generators are saved by ``fit`` itself).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError
from ._checkpoint import load_train_state

__all__ = ["Selection", "capture", "fingerprint", "load", "metric_name", "restore", "rng_state"]

_SKIP_OBJECTIVE_ATTRS = ("generator", "track_metrics")


def metric_name(select: str) -> str:
    """History key suffix of a selection metric: ``acc`` (clean) or ``robust_acc`` (pgd)."""
    return "acc" if select == "clean" else "robust_acc"


class Selection:
    """Best-epoch bookkeeping for ``fit(select=...)``: best weights, value, epoch, evaluations since."""

    def __init__(self) -> None:
        self.best: dict[str, torch.Tensor] | None = None
        self.best_value = float("-inf")
        self.best_epoch = 0
        self.since_best = 0
        self.stopped = False

    def update(self, epoch: int, value: float, model: nn.Module, history: dict[str, list[float]],
               select: str, patience: int | None) -> bool:
        """Record ``value`` at ``epoch``; keep ``model``'s weights if it is a new best (returned True)."""
        history.setdefault("val_epoch", []).append(float(epoch))
        history.setdefault("val_" + metric_name(select), []).append(float(value))
        if value > self.best_value:
            self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_value, self.best_epoch, self.since_best = float(value), epoch, 0
            return True
        self.since_best += 1
        if patience is not None and self.since_best >= patience:
            self.stopped = True
            history["stopped_epoch"] = [float(epoch)]
        return False

    def state(self) -> dict[str, Any]:
        return {"best": self.best or {}, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "since_best": self.since_best, "stopped": self.stopped}

    def load(self, st: dict[str, Any], device: torch.device) -> None:
        self.best = {k: v.to(device) for k, v in st["best"].items()} or None
        self.best_value, self.best_epoch = float(st["best_value"]), int(st["best_epoch"])
        self.since_best, self.stopped = int(st["since_best"]), bool(st["stopped"])


def _describe(value: Any) -> Any:
    """A JSON-able, address-free description of a fit argument (callables by qualified name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(getattr(value, "__qualname__", None), str):  # a function or class: by its own name
        return f"<{getattr(value, '__module__', '?')}.{value.__qualname__}>"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"  # an instance: by its class


def fingerprint(**settings: Any) -> str:
    """The settings a resumed run must share with the run that wrote the state, as sorted JSON."""
    return json.dumps(_describe(settings), sort_keys=True)


def load(directory: str | os.PathLike[str], expected: str) -> dict[str, Any] | None:
    """The state in ``directory`` (None when there is none); refuses one written with other settings."""
    state = load_train_state(directory)
    if state is None:
        return None
    old, new = json.loads(state["fingerprint"]), json.loads(expected)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in diff)
        raise InvalidParameterError(
            f"Cannot resume from '{os.path.join(directory, 'last.pt')}': it was written with other settings ({shown}). "
            "Resume with the same settings, or use another checkpoint_dir / resume=False to start over.")
    return state


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def capture(*, fingerprint: str, epoch: int, step: int, model: nn.Module, opt: torch.optim.Optimizer,
            scaler: Any, loss_fn: Any, obj: Any, gens: dict[str, torch.Generator | None], ema: Any,
            history: dict[str, list[float]], selection: Selection, kept_fraction: float,
            rng_ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything ``fit`` needs to continue after ``epoch`` exactly as if it had never stopped.

    ``rng_ranks``: every rank's :func:`rng_state` in a distributed run (rank 0's is ``rng`` too).
    """
    rng = rng_state(gens)
    return {
        "fingerprint": fingerprint, "epoch": epoch, "step": step,
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "loss": loss_fn.state_dict() if isinstance(loss_fn, nn.Module) else {},
        "objective": {k: v for k, v in vars(obj).items() if k not in _SKIP_OBJECTIVE_ATTRS and _plain(v)},
        "rng": rng, "ema": ema.model.state_dict() if ema is not None else {},
        "history": history, "selection": selection.state(), "kept_fraction": kept_fraction,
        **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
    }


def rng_state(gens: dict[str, torch.Generator | None]) -> dict[str, Any]:
    """This process's generator states: fit's own (``gens``), torch's global CPU and CUDA generators."""
    rng: dict[str, Any] = {k: g.get_state() for k, g in gens.items() if g is not None}
    rng["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore(state: dict[str, Any], *, model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, loss_fn: Any,
            obj: Any, gens: dict[str, torch.Generator | None], ema: Any, history: dict[str, list[float]],
            selection: Selection, device: torch.device, rank: int = 0) -> tuple[int, int, float]:
    """Put ``state`` back into the live objects; return ``(epochs done, steps done, kept fraction)``.

    In a distributed run every rank reads the same state and takes its own generators' (``rank``).
    """
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    if isinstance(loss_fn, nn.Module):
        loss_fn.load_state_dict(state["loss"])
    for k, v in state["objective"].items():
        setattr(obj, k, _to(v, device))
    rng = state["rng_ranks"][rank] if "rng_ranks" in state else state["rng"]
    for k, g in gens.items():
        if g is not None and k in rng:  # the DataLoader-seed generator exists on the streaming path only
            g.set_state(rng[k])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if ema is not None:
        ema.model.load_state_dict(state["ema"])
    history.clear()
    history.update({k: list(v) for k, v in state["history"].items()})
    selection.load(state["selection"], device)
    return int(state["epoch"]), int(state["step"]), float(state["kept_fraction"])
