"""Guards of a results folder: one driver at a time, and signals only to workers proven to be ours.

``FolderLock(out)`` takes an exclusive advisory lock (``fcntl.flock``) on ``out/driver.lock`` and
writes the holder (pid, host, start time, command) into it; a second driver on the same folder gets
:class:`ResultsFolderBusy` naming the holder. The kernel drops the lock when the holder dies, so a
killed driver never leaves the folder locked.

A worker's identity (``worker.pid``: pid, process start time, boot id, host and the sweep's random
token) is recorded by the driver when it starts the worker. Recovery signals a process only when all
of them match the live process and the token matches the run's claim in the database; a reused pid,
a pid file from another host or boot, or a hand-written pid file is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ._worker import PID_NAME

__all__ = ["LOCK_NAME", "FolderLock", "ResultsFolderBusy", "kill_recorded_worker", "process_start_ticks",
           "record_worker"]

LOCK_NAME = "driver.lock"


class ResultsFolderBusy(ValueError):
    """Another driver holds the results folder's lock."""


class FolderLock:
    """Exclusive advisory lock on a results folder (a context manager; non-blocking).

    Example::

        with FolderLock(out, purpose="bench run"):
            ...  # no other robustlab driver writes `out` meanwhile
    """

    def __init__(self, folder: str | os.PathLike[str], *, purpose: str = "bench run") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`ResultsFolderBusy` at once."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks; run unguarded
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ResultsFolderBusy(
                f"The results folder '{self.folder}' is in use by another robustlab driver ({holder}). "
                f"Wait for it to finish (or stop it), or pass a different --out. Lock file: {self.path}.") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its content is only informative)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:  # pragma: no cover - e.g. the folder went read-only
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder not recorded yet"
    return (f"{info.get('purpose', 'a driver')}, pid {info.get('pid')} on host {info.get('host')}, "
            f"started {info.get('started_at')}")


# -- worker identity ----------------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # fields after "(comm)" start at field 3
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # pragma: no cover - not Linux
        return None


def record_worker(run_dir: Path, pid: int, token: str) -> None:
    """Write ``run_dir/worker.pid``: the identity :func:`kill_recorded_worker` verifies before signalling."""
    info = {"pid": int(pid), "start_ticks": process_start_ticks(pid), "boot_id": _boot_id(),
            "host": socket.gethostname(), "token": token}
    tmp = run_dir / f".{PID_NAME}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, run_dir / PID_NAME)


def kill_recorded_worker(run_dir: Path, token: str | None) -> bool:
    """SIGKILL the worker recorded in ``run_dir/worker.pid`` if it is provably that worker; return whether signalled.

    Proof: the file's token equals ``token`` (the sweep token of the run's claim), the host and boot id
    are this machine's, and the live process ``pid`` started at the recorded clock tick.
    """
    try:
        info = json.loads((run_dir / PID_NAME).read_text())
        pid, start = int(info["pid"]), info["start_ticks"]
    except (OSError, ValueError, TypeError, KeyError):
        return False  # missing, legacy (bare pid) or malformed: never signal on a guess
    if not token or info.get("token") != token or start is None or pid <= 1 or pid == os.getpid():
        return False
    if info.get("host") != socket.gethostname() or info.get("boot_id") != _boot_id():
        return False
    if process_start_ticks(pid) != start:
        return False  # gone, or the pid now names another process
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return False
    return True
