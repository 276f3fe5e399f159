"""Bounded, code-free readers for data files: IDX (raw or gzip), restricted pickles, and the one label rule.

Every reader refuses a file before it can cost more than its header promises: an IDX payload is read
(decompressed) only as far as its header says, and a file decoding to more than :data:`MAX_FILE_BYTES`
is refused. Pickles go through an unpickler that resolves only numpy arrays and builtin containers.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CorruptFileError", "MAX_FILE_BYTES", "MAX_SVMLIGHT_FEATURES", "integer_labels", "read_idx",
           "restricted_load"]

class CorruptFileError(ValueError):
    """A data file is truncated, has a bad header or cannot be decoded."""

# -- low-level readers ------------------------------------------------------------------------------
MAX_FILE_BYTES = 4 << 30
"""Largest decoded data file accepted (4 GiB): a file (or gzip stream) claiming more is refused before reading."""

MAX_SVMLIGHT_FEATURES = 100_000
"""Largest svmlight feature index accepted when ``n_features`` is not given (pass ``n_features`` to go beyond)."""


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _read_exact(fh: Any, n: int) -> bytes:
    """Read up to ``n`` bytes in bounded chunks (a gzip stream is only decompressed as far as needed)."""
    chunks, got = [], 0
    while got < n:
        chunk = fh.read(min(n - got, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _corrupt(path: Path, e: BaseException) -> CorruptFileError:
    return CorruptFileError(f"'{path}' is corrupt or truncated ({type(e).__name__}); delete it and fetch it again.")


def _read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a (maybe gzip) file, refusing one that decodes to more than ``limit`` bytes without decoding it all."""
    try:
        with _open(path) as fh:
            raw = _read_exact(fh, limit)
            if len(raw) == limit and fh.read(1):
                raise CorruptFileError(f"'{path}' decodes to more than {limit} bytes; refusing to read it.")
            return raw
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise _corrupt(path, e) from e


_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into a numpy array; raise ``ValueError`` if corrupt or truncated.

    The header is read first; the payload is then read (decompressed) only as far as the header says, and a
    file with more or fewer bytes than the header's shape is refused, so a small gzip bomb costs nothing.
    """
    p = Path(path)
    try:
        with _open(p) as fh:
            magic = _read_exact(fh, 4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise CorruptFileError(f"'{p}' is not an IDX file (bad magic number).")
            ndim = magic[3]
            head = _read_exact(fh, 4 * ndim)
            if len(head) < 4 * ndim:
                raise CorruptFileError(f"'{p}' is truncated: its IDX header names {ndim} dimensions but ends early.")
            dims = struct.unpack(f">{ndim}I", head)
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            need = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
            if need > MAX_FILE_BYTES:
                raise CorruptFileError(
                    f"'{p}': its IDX header claims shape {tuple(dims)} ({need} bytes), over the {MAX_FILE_BYTES}-byte "
                    "limit; the header is corrupt."
                )
            if not p.name.endswith(".gz") and p.stat().st_size != 4 + 4 * ndim + need:
                raise CorruptFileError(
                    f"'{p}' is truncated or corrupt: header says shape {tuple(dims)} ({need} bytes of data), "
                    f"found {p.stat().st_size - 4 - 4 * ndim} bytes."
                )
            payload = _read_exact(fh, need)
            extra = fh.read(1)
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(p, e) from e
    if len(payload) != need or extra:
        found = f"{len(payload)} bytes" if not extra else "more bytes"
        raise CorruptFileError(
            f"'{p}' is truncated or corrupt: header says shape {tuple(dims)} ({need} bytes of data), found {found}."
        )
    return np.frombuffer(payload, dtype=dtype).reshape(dims).copy()  # writable


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct`` for the placeholder array numpy's own pickles use (no large allocation)."""
    if subtype is not np.ndarray or not isinstance(shape, tuple) or math.prod(int(s) for s in shape) > 1:
        raise _RefusedGlobal("refusing an array reconstruction that is not numpy's own pickle form")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _safe_bytes(*args: Any) -> bytes:
    if args and not isinstance(args[0], (bytes, bytearray, str, list, tuple)):
        raise _RefusedGlobal("refusing bytes(n): it allocates n bytes")  # bytes(10**12) is a memory bomb
    return bytes(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction and builtin containers (no code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5: bounded by the bytes
        ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
        ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
        ("_codecs", "encode"),
    }
    _WRAPPED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("builtins", "bytes"): _safe_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._WRAPPED:
            return self._WRAPPED[(module, name)]
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        shown = f"{module}.{name}" if re.fullmatch(r"[\w.]{1,80}", f"{module}.{name}") else "an unprintable name"
        raise _RefusedGlobal(f"refusing to load global '{shown}' (only numpy arrays and builtins are allowed)")


def restricted_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle a data file (``encoding="bytes"``) accepting only numpy arrays and builtin containers.

    Any failure inside the unpickler (a refused global, a truncated stream, an absurd size that raises
    ``OverflowError``/``MemoryError``, runaway nesting) becomes a ``CorruptFileError`` naming the file.
    """
    p = Path(path)
    raw = _read_bytes(p)
    stream = io.BytesIO(raw)
    try:
        obj = _RestrictedUnpickler(stream, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise CorruptFileError(f"'{p}' is not a plain data pickle: {e}.") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            struct.error, OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"'{p}' is corrupt or truncated ({type(e).__name__}).") from e
    if stream.tell() != len(raw):
        raise CorruptFileError(f"'{p}' is corrupt: {len(raw) - stream.tell()} bytes follow the end of the pickle.")
    return obj


# -- labels --------------------------------------------------------------------------------------
def integer_labels(raw: Any, where: str) -> np.ndarray:
    """The one rule every loader applies to labels: finite, integer-valued class values -> int64.

    Integer dtypes pass; floats pass only when every value is finite and integral (svmlight stores 1.0);
    strings are parsed as numbers when they all are. A fractional, NaN or infinite label is an error, never
    a truncated class or a class of its own. Non-numeric strings are returned unchanged (categorical labels).
    """
    a = np.asarray(raw)
    if a.dtype.kind in "US" or a.dtype == object:
        try:
            num = a.astype(np.float64)
        except (ValueError, TypeError):  # categorical names, e.g. "A".."Z"; numeric-looking ones must still be integral
            parsed = [_as_float(v) for v in a.reshape(-1).tolist()]
            bad = sum(1 for v in parsed if v is not None and not (math.isfinite(v) and v == round(v)))
            if bad:
                raise ValueError(_label_message(where, bad)) from None
            return a
        a = num
    if a.dtype.kind == "b":
        raise ValueError(f"{where}: labels must be integer class indices, not booleans.")
    if a.dtype.kind == "f":
        bad = int((~np.isfinite(a) | (a != np.round(a))).sum())
        if bad:
            raise ValueError(_label_message(where, bad))
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be integer class indices; got dtype {a.dtype}.")
    return a.astype(np.int64)


def _label_message(where: str, bad: int) -> str:
    return (f"{where}: labels must be integer class indices; {bad} label(s) are fractional, NaN or infinite. "
            "Fix the labels in the file (float labels are refused, never rounded).")


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (ValueError, TypeError):
        return None
