"""One option table shared by every command, and the helpers that read it.

A command registers the options it needs by name, so ``--out``, ``--n-test``, ``--eps`` ... mean and
parse the same everywhere::

    add_options(p, "data", "model", "eps", "n_test", "batch_size", "seed", "device", "json", "out", "quiet",
                defaults={"batch_size": 256})

Values: ``--eps`` accepts ``8/255`` (:func:`parse_number`), ``--device`` is checked at parse time
(:func:`parse_device`), ``--data-arg``/``--model-arg`` take ``key=value`` (:func:`key_values`, values
read by :func:`parse_value`). :func:`check_writable` checks an output location before any work.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._validation import InvalidParameterError

__all__ = [
    "OPTIONS",
    "add_options",
    "check_writable",
    "key_values",
    "parse_device",
    "parse_number",
    "parse_value",
    "positive_int",
    "progress_arg",
]


# -- value parsers ------------------------------------------------------------------------------------
def parse_number(text: str, flag: str = "--eps") -> float:
    """``"0.1"`` -> 0.1, ``"8/255"`` -> 0.0314; anything else raises a clear ``InvalidParameterError``."""
    s = str(text).strip()
    num, slash, den = s.partition("/")
    try:
        value = float(num) / float(den) if slash else float(s)
    except (ValueError, ZeroDivisionError):
        raise InvalidParameterError(f"{flag} must be a number or a fraction such as 8/255. Got {text!r}.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidParameterError(f"{flag} must be a finite number. Got {text!r}.")
    return value


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
    num, slash, den = text.partition("/")
    if slash:
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            pass
    return text


def key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["q=0.7", "hidden=64,64"]`` -> ``{"q": 0.7, "hidden": (64, 64)}``; dashes in keys become underscores."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(f"{flag} expects key=value (e.g. {flag} seed=1). Got {item!r}.")
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def parse_device(text: str, flag: str = "--device") -> str:
    """Check a torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is valid and available here."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise InvalidParameterError(
            f"{flag} {text!r} is not a torch device; use cpu, cuda, cuda:N or mps."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(f"{flag} {text}: CUDA is not available on this machine; use {flag} cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"{flag} {text}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)."
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InvalidParameterError(f"{flag} {text}: MPS is not available on this machine; use {flag} cpu.")
    elif dev.type != "cpu":
        raise InvalidParameterError(f"{flag} {text!r}: robustlab runs on cpu, cuda[:N] or mps.")
    return str(dev)


def positive_int(text: str, flag: str = "--n-test") -> int:
    """An int >= 1."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{flag} must be a positive integer. Got {text!r}.") from None
    if value < 1:
        raise InvalidParameterError(f"{flag} must be a positive integer. Got {text!r}.")
    return value


def _argtype(fn: Callable[..., Any], flag: str) -> Callable[[str], Any]:
    """Wrap a parser so argparse reports its message (``argument --eps: ...``) instead of 'invalid value'."""

    def convert(text: str) -> Any:
        try:
            return fn(text, flag)
        except InvalidParameterError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = fn.__name__
    return convert


# -- the table ----------------------------------------------------------------------------------------
# name -> (flags, argparse keyword arguments). Commands pick entries by name and may override defaults.
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "data": (("--data",), {"default": None, "metavar": "NAME",
                           "help": "data set: a registry name (robustlab list data) or csv:/npz:/svmlight:<path>; "
                                   "default: the one recorded with the checkpoint"}),
    "data_root": (("--data-root",), {"default": None, "metavar": "DIR",
                                     "help": "folder with the data files (mnist, fashion_mnist, cifar10, ...)"}),
    "data_arg": (("--data-arg",), {"action": "append", "default": [], "metavar": "K=V",
                                   "help": "data set option, e.g. use_test_split_as_train=0.8 (repeatable); "
                                           "overrides the value recorded with the checkpoint"}),
    "checkpoint": (("--checkpoint",), {"default": None, "metavar": "PATH",
                                       "help": "robustlab run directory (with model.pt) or .pt checkpoint"}),
    "model": (("--model",), {"default": None, "metavar": "REF",
                             "help": "model: a robustlab checkpoint, a TorchScript file, a module:attribute factory, "
                                     "timm:NAME or a registry name (robustlab list models)"}),
    "model_arg": (("--model-arg",), {"action": "append", "default": [], "metavar": "K=V",
                                     "help": "model option passed to the factory (repeatable)"}),
    "eps": (("--eps",), {"default": None, "metavar": "EPS",
                         "type": _argtype(parse_number, "--eps"),
                         "help": "radius of the threat model for inputs in [0, 1]; fractions such as 8/255 accepted"}),
    "n_test": (("--n-test",), {"default": None, "metavar": "N", "type": _argtype(positive_int, "--n-test"),
                               "help": "use only the first N test examples (default: all)"}),
    "batch_size": (("--batch-size",), {"default": 256, "metavar": "B", "type": _argtype(positive_int, "--batch-size"),
                                       "help": "batch size (default %(default)s)"}),
    "seed": (("--seed",), {"default": 0, "type": int, "help": "random seed (default %(default)s)"}),
    "device": (("--device",), {"default": "cpu", "type": _argtype(parse_device, "--device"),
                               "help": "torch device: cpu, cuda, cuda:N or mps (default %(default)s)"}),
    "json": (("--json",), {"action": "store_true", "help": "print the result as JSON"}),
    "out": (("--out",), {"default": None, "metavar": "FILE",
                         "help": "also write the JSON result to this file (atomically; checked before any work)"}),
    "quiet": (("--quiet", "-q"), {"action": "store_true", "help": "no progress bars (they are off anyway when "
                                                                  "stderr is not a terminal)"}),
}


def add_options(parser: argparse.ArgumentParser, *names: str, defaults: dict[str, Any] | None = None,
                **overrides: dict[str, Any]) -> None:
    """Add the shared options ``names`` to ``parser``.

    ``defaults={"batch_size": 1000}`` changes defaults (the help text follows); ``eps={"required": True}``
    overrides any other argparse keyword of one option.
    """
    unknown = [n for n in [*names, *(defaults or {}), *overrides] if n not in OPTIONS]
    if unknown:
        raise KeyError(f"unknown shared option(s) {unknown}; known: {', '.join(OPTIONS)}")
    for name in names:
        flags, kw = OPTIONS[name]
        kw = dict(kw)
        if defaults and name in defaults:
            kw["default"] = defaults[name]
        kw.update(overrides.get(name, {}))
        parser.add_argument(*flags, **kw)


def progress_arg(args: argparse.Namespace) -> bool | None:
    """The ``progress=`` value for the Python API: ``False`` with ``--quiet``, else ``None`` (auto: a TTY)."""
    return False if getattr(args, "quiet", False) else None


def check_writable(path: str | os.PathLike[str], flag: str = "--out", *, directory: bool = False) -> Path:
    """Check that ``path`` can be written (atomically, via a temp file beside it) before any work starts.

    Walks up to the nearest existing folder (which the later atomic write would create below) and
    creates and removes a temp file there, so read-only file systems and full disks are caught up front.
    ``directory=True`` means ``path`` is a run folder (it may exist as a folder). Creates nothing that stays.
    """
    p = Path(path).expanduser()
    if not str(path).strip():
        raise InvalidParameterError(f"{flag} must be a path. Got {str(path)!r}.")
    if p.exists():
        if directory and not p.is_dir():
            raise InvalidParameterError(f"{flag} {str(p)!r} exists and is not a folder; choose a folder path.")
        if not directory and p.is_dir():
            raise InvalidParameterError(f"{flag} {str(p)!r} is a folder; give a file path such as {str(p / 'result.json')!r}.")
    probe = p if directory and p.is_dir() else p.parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InvalidParameterError(f"{flag} {str(p)!r}: {str(probe)!r} is a file, not a folder; choose another path.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".robustlab-write-check.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InvalidParameterError(
            f"{flag} {str(p)!r} cannot be written ({e.strerror or e} in {str(probe)!r}); "
            "choose a writable location."
        ) from None
    return p
