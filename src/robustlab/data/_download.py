"""``download=True`` for MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100: fetch, verify, move atomically.

Each file is streamed from ``<mirror>/<file name>`` into a temp file inside ``root``, its MD5 is checked
against the official checksum, and only then is it renamed (``os.replace``) to its final name, so a
failed or interrupted download never leaves a half-written file under the real name. CIFAR archives
are extracted into a temp folder in ``root`` (members are checked to stay inside it) that is renamed to
``cifar-10-batches-py`` / ``cifar-100-python`` at the end.

The URL base is, in order: the ``mirror=`` argument, the environment variable
``ROBUSTLAB_MIRROR_<NAME>`` (e.g. ``ROBUSTLAB_MIRROR_MNIST``), ``ROBUSTLAB_DATA_MIRROR`` (one base for all
sets), then the official location. Files already present (with the right checksum) are not fetched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OFFICIAL", "RemoteFile", "download", "fetch_file", "mirror_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name (also its final name under the set's folder) and MD5."""

    name: str
    md5: str


# name -> (official URL base, files, folder under root where the files end up, archive?)
OFFICIAL: dict[str, tuple[str, tuple[RemoteFile, ...], str, bool]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # the official yann.lecun.com is often unavailable
        (
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        "mnist",
        False,
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        "fashion_mnist",
        False,
    ),
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        "cifar-10-batches-py",
        True,
    ),
    "cifar100": (
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        "cifar-100-python",
        True,
    ),
}


def mirror_for(name: str, mirror: str | None = None) -> str:
    """The URL base used for ``name`` (argument, then env vars, then the official base); ends with '/'."""
    base = mirror or os.environ.get(f"ROBUSTLAB_MIRROR_{name.upper()}") or os.environ.get("ROBUSTLAB_DATA_MIRROR") \
        or OFFICIAL[name][0]
    return base if base.endswith("/") else base + "/"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_file(url: str, target: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Stream ``url`` into a temp file next to ``target``, verify ``md5``, then ``os.replace`` it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    h = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/https URL bases)
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as e:
                raise ConnectionError(f"Could not download '{url}': {e}. Set mirror= or ROBUSTLAB_DATA_MIRROR to another base URL.") from e
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != md5:
            raise ValueError(f"Checksum mismatch for '{url}': expected md5 {md5}, got {got}; the file was discarded.")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _safe_extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        root = dest.resolve()
        for m in tar.getmembers():
            p = (dest / m.name).resolve()
            if not (p == root or root in p.parents) or m.issym() or m.islnk() or m.isdev():
                raise ValueError(f"Refusing to extract '{m.name}' from '{archive}': it points outside the target or is a link/device.")
        tar.extractall(dest)  # noqa: S202 (members checked above)


def download(name: str, root: str | os.PathLike[str], *, mirror: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch the official files of ``name`` into ``root`` if missing; return the folder holding them."""
    if name not in OFFICIAL:
        raise ValueError(f"download=True is available for {', '.join(sorted(OFFICIAL))}; not for '{name}'.")
    _, files, folder, is_archive = OFFICIAL[name]
    base = mirror_for(name, mirror)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / folder
    if is_archive:
        if dest.is_dir() and any(dest.iterdir()):
            return dest
        f = files[0]
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=root))
        try:
            archive = fetch_file(base + f.name, tmpdir / f.name, f.md5, timeout=timeout)
            extracted = tmpdir / "x"
            extracted.mkdir()
            _safe_extract(archive, extracted)
            inner = extracted / folder
            if not inner.is_dir():
                raise ValueError(f"Archive '{f.name}' does not contain the folder '{folder}'.")
            if dest.exists():  # an empty folder left behind
                dest.rmdir()
            os.replace(inner, dest)
            log.info("downloaded %s into %s", name, dest)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return dest
    for f in files:
        target = dest / f.name
        raw = dest / f.name.removesuffix(".gz")
        if (target.is_file() and _md5(target) == f.md5) or raw.is_file():
            continue
        fetch_file(base + f.name, target, f.md5, timeout=timeout)
        log.info("downloaded %s", target)
    return dest
