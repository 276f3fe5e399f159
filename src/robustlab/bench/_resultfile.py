"""The per-run result file (``runs/<id>/result.json``): its schema, declared once, and its validation.

A result file is the source of truth for a run (the database can be rebuilt from the result files),
so nothing from it reaches the database unchecked: :func:`validate_result` checks every field
against :data:`RESULT_SCHEMA` and keeps artifact paths inside the run's folder (after resolving
symbolic links). A file that does not validate is moved by :func:`quarantine` to
``quarantine/<run id>.result.json.invalid-<UTC time>`` and its run is run again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._worker import CONFIG_NAME, RESULT_NAME

__all__ = ["MAX_RESULT_BYTES", "RESULT_SCHEMA", "InvalidResult", "load_config", "load_result", "quarantine",
           "QUARANTINE_DIR", "validate_result"]

QUARANTINE_DIR = "quarantine"
MAX_RESULT_BYTES = 256 * 1024 * 1024


class InvalidResult(ValueError):
    """A result (or run config) file does not match its schema; the message names the file and field."""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _metric(m: Any) -> bool:
    return (isinstance(m, list) and len(m) == 3 and isinstance(m[0], str) and 0 < len(m[0]) <= 300
            and (m[1] is None or _is_num(m[1])) and _is_int(m[2]) and m[2] >= -1)


def _artifact(a: Any) -> bool:
    return isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and a[0] != "" and isinstance(a[1], str)


def _dict_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items())


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


@dataclass(frozen=True)
class _Field:
    accepts: str  # what the error message says is accepted
    check: Callable[[Any], bool]
    required: bool = False


#: The result-file schema: field -> what it accepts. Fields not listed are ignored.
RESULT_SCHEMA: dict[str, _Field] = {
    "status": _Field("'completed' or 'failed'", lambda v: v in ("completed", "failed"), required=True),
    "metrics": _Field("a list of [name, value or null, step >= -1]", _list_of(_metric)),
    "artifacts": _Field("a list of [name, path inside the run folder]", _list_of(_artifact)),
    "timings": _Field("an object of numbers or nulls", _dict_of(_opt(_is_num))),
    "env": _Field("an object of strings or nulls", _dict_of(_opt(lambda v: isinstance(v, str)))),
    "error": _Field("a string or null", _opt(lambda v: isinstance(v, str))),
    "traceback": _Field("a string or null", _opt(lambda v: isinstance(v, str))),
    "started_at": _Field("a number or null", _opt(_is_num)),
    "finished_at": _Field("a number or null", _opt(_is_num)),
    "pid": _Field("an integer or null", _opt(_is_int)),
    "threads": _Field("an integer or null", _opt(_is_int)),
    "run_id": _Field("the run folder's name", _opt(lambda v: isinstance(v, str))),
    "curves": _Field("an object", _opt(lambda v: isinstance(v, dict))),
    "resolved": _Field("an object", _opt(lambda v: isinstance(v, dict))),
}


def validate_result(result: Any, run_dir: str | os.PathLike[str], *, source: str = "result") -> dict[str, Any]:
    """Check ``result`` against :data:`RESULT_SCHEMA`; return it with artifact paths resolved.

    Raises :class:`InvalidResult` naming ``source``, the field and what it accepts. Artifact paths
    (relative ones are taken from ``run_dir``) must resolve inside ``run_dir``.
    """
    if not isinstance(result, dict):
        raise InvalidResult(f"{source}: must be a JSON object. Got {type(result).__name__}.")
    for name, f in RESULT_SCHEMA.items():
        if name not in result:
            if f.required:
                raise InvalidResult(f"{source}: field '{name}' is missing; it must be {f.accepts}.")
            continue
        if not f.check(result[name]):
            raise InvalidResult(f"{source}: field '{name}' must be {f.accepts}. Got {_short(result[name])}.")
    rd = Path(run_dir)
    if result.get("run_id") is not None and result["run_id"] != rd.name:
        raise InvalidResult(f"{source}: field 'run_id' is {_short(result['run_id'])} but the run folder is '{rd.name}'.")
    root = rd.resolve()
    artifacts = []
    for name, path in result.get("artifacts") or []:
        p = Path(path)
        resolved = (p if p.is_absolute() else rd / p).resolve()
        if not resolved.is_relative_to(root):
            raise InvalidResult(f"{source}: artifact '{name}' points to {_short(path)}, outside the run folder "
                                f"'{root}'; artifact paths must stay inside it.")
        artifacts.append([name, str(resolved)])
    return {**result, "artifacts": artifacts}


def _read_json(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_RESULT_BYTES:
        raise InvalidResult(f"{path}: {size} bytes, more than the {MAX_RESULT_BYTES} a result file may hold.")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidResult(f"{path}: not valid JSON ({e}).") from None


def load_result(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``run_dir/result.json`` (:class:`InvalidResult` if it does not validate)."""
    path = Path(run_dir) / RESULT_NAME
    return validate_result(_read_json(path), run_dir, source=str(path))


def load_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``run_dir/config.json`` and check that it hashes to the folder's name (the run id)."""
    from .spec import run_id

    path = Path(run_dir) / CONFIG_NAME
    config = _read_json(path)
    if not isinstance(config, dict) or not _is_int(config.get("seed")):
        raise InvalidResult(f"{path}: not a run config (a JSON object with an integer 'seed').")
    try:
        rid = run_id(config)
    except (TypeError, ValueError) as e:
        raise InvalidResult(f"{path}: not a run config ({e}).") from None
    if rid != Path(run_dir).name:
        raise InvalidResult(f"{path}: the config hashes to {rid[:12]}, not to its folder's name "
                            f"{Path(run_dir).name[:12]}; it was edited or moved.")
    return config


def quarantine(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path | None:
    """Move ``runs/<id>/result.json`` to ``folder/<id>.result.json.invalid-<UTC time>`` (kept, never read again).

    Outside the run folder, so that the run's next attempt (which starts from an empty folder) keeps it.
    """
    p = Path(path)
    dest = Path(folder) / f"{p.parent.name}.{p.name}.invalid-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
    except OSError:
        return None
    return dest


def _short(v: Any, n: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."
