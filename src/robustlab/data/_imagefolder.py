"""``imagefolder:PATH``: a class-per-folder image tree read lazily with Pillow, as a :class:`StreamingData`.

Layout: ``PATH/train/<class>/*.png`` and ``PATH/val/<class>/...`` (``test/`` is accepted for ``val/``), or
``PATH/<class>/...`` split reproducibly (stratified, ``test_fraction``, ``seed``). Classes are the sorted
folder names. Each image is decoded when read, converted to RGB (``channels=3``) or grayscale
(``channels=1``), resized to ``size`` (bilinear) and scaled to float32 [0, 1] (C, H, W)::

    data = robustlab.data.load("imagefolder:path/to/tree", size=32, workers=4)
    robust_accuracy(model, data, "fast", eps=8 / 255)      # streams data.test
    mem = data.to_memory()                                 # the same images as a ClassificationData

Safety: only Pillow's still-image decoders for PNG, JPEG, BMP, GIF, WebP, TIFF and PPM/PGM are used (no
code runs); an image larger than ``max_pixels`` (Pillow's own bomb limit by default) is refused before it is
decoded; files or folders reached through a symlink that leaves PATH are refused; an empty tree, a class
folder without images and an unreadable image are errors naming the folder or file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._validation import InvalidParameterError, check_in_range, check_int, check_option
from ._readers import CorruptFileError
from ._stream import StreamingData

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "load_imagefolder"]

#: File name endings read as images (case-insensitive); other files are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
#: Pillow's default decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).
DEFAULT_MAX_PIXELS = 89_478_485


def _size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (check_int(size[0], "size", 1, 65536, owner="imagefolder"),
                check_int(size[1], "size", 1, 65536, owner="imagefolder"))
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        s = check_int(int(size), "size", 1, 65536, owner="imagefolder")
        return (s, s)
    raise InvalidParameterError(f"The 'size' parameter of imagefolder must be an int or a pair (H, W). Got {size!r}.")


class ImageFolderDataset(Dataset):
    """``(x, y)`` for a list of image files: ``x`` float32 (C, H, W) in [0, 1], ``y`` int (class index).

    Decodes each file when read (in a DataLoader worker when there are workers); errors name the file.
    """

    def __init__(self, files: list[str], labels: list[int], *, size: tuple[int, int], channels: int,
                 max_pixels: int, resize: bool = True) -> None:
        self.files, self.labels = list(files), [int(v) for v in labels]
        self.size, self.channels, self.max_pixels, self.resize = size, channels, max_pixels, resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = read_image(self.files[i], size=self.size, channels=self.channels, max_pixels=self.max_pixels,
                       resize=self.resize)
        return x, self.labels[i]

    def __repr__(self) -> str:
        return f"ImageFolderDataset({len(self)} images, size={self.size}, channels={self.channels})"


def read_image(path: str, *, size: tuple[int, int] | None, channels: int, max_pixels: int,
               resize: bool = True) -> torch.Tensor:
    """One image file as float32 (C, H, W) in [0, 1], resized to ``size`` (H, W) (``resize=False``: an image
    of another size is an error)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=_FORMATS) as img:  # reads the header only
                w, h = img.size
                if w * h > max_pixels:
                    raise CorruptFileError(f"image '{path}' has {w}x{h} = {w * h} pixels, more than max_pixels="
                                           f"{max_pixels}; refusing to decode it (a decompression bomb?).")
                img.load()
                img = img.convert("RGB" if channels == 3 else "L")
                if size is not None and (h, w) != tuple(size):
                    if not resize:
                        raise CorruptFileError(
                            f"image '{path}' is {h}x{w} (HxW) but the first image is {size[0]}x{size[1]}; pass "
                            "size=(H, W) (or an int) to resize every image.")
                    img = img.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
    except CorruptFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise CorruptFileError(f"image '{path}' is unreadable or corrupt ({type(e).__name__}: {e}).") from None
    x = torch.from_numpy(arr.copy()).float().div_(255.0)
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def _inside(root: Path, p: Path) -> bool:
    try:
        Path(os.path.realpath(p)).relative_to(root)
    except ValueError:
        return False
    return True


def _scan(folder: Path, root: Path, classes: list[str] | None) -> tuple[list[str], list[str], list[int]]:
    """``(classes, files, labels)`` of a class-per-folder tree; every class folder must hold images."""
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    for name in subdirs:
        if not _inside(root, folder / name):
            raise InvalidParameterError(f"imagefolder: '{folder / name}' is a symlink leading outside '{root}'; "
                                        "refusing to follow it.")
    if not subdirs:
        raise InvalidParameterError(f"imagefolder: '{folder}' holds no class folders; expected "
                                    f"'{folder}/<class>/<image>' (image files: {', '.join(IMAGE_EXTENSIONS)}).")
    if classes is None:
        classes = subdirs
    else:
        extra = sorted(set(subdirs) - set(classes))
        if extra:
            raise InvalidParameterError(f"imagefolder: '{folder}' has class folder(s) {extra} that the training "
                                        f"split lacks (classes: {classes}).")
    files, labels = [], []
    for c, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(d, followlinks=False):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith(".") or not fn.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                f = Path(dirpath) / fn
                if not _inside(root, f):
                    raise InvalidParameterError(f"imagefolder: '{f}' is a symlink leading outside '{root}'; "
                                                "refusing to read it.")
                found.append(str(f))
        if not found:
            raise InvalidParameterError(f"imagefolder: class folder '{d}' holds no images "
                                        f"({', '.join(IMAGE_EXTENSIONS)}).")
        files += found
        labels += [c] * len(found)
    return classes, files, labels


def load_imagefolder(
    path: str, *, size: Any = None, channels: int = 3, test_fraction: float = 0.2, seed: int = 0,
    workers: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS, in_memory: bool = False,
) -> StreamingData | Any:
    """A class-per-folder image tree at ``path`` as a :class:`StreamingData` (``in_memory=True``: read it all
    into a ClassificationData).

    ``size``: output (H, W) or an int for square images (None: the first image's size, and every image must
    have it); ``channels``: 3 (RGB) or 1 (grayscale); ``train/`` + ``val/`` (or ``test/``) sub-trees are used
    as the splits when present, else a seeded stratified split with ``test_fraction`` of each class in the test
    split; ``workers``: DataLoader worker processes used by evaluations; ``max_pixels``: the largest image
    (width x height) decoded.
    """
    owner = "imagefolder"
    if not path:
        raise InvalidParameterError("'imagefolder:<path>' needs a path, e.g. 'imagefolder:data/images'.")
    root = Path(os.path.realpath(Path(path).expanduser()))
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: the folder '{path}' does not exist.")
    hw = _size(size)
    check_option(channels, "channels", (1, 3), owner=owner)
    check_in_range(test_fraction, "test_fraction", 0.0, 1.0, closed="neither", owner=owner)
    check_int(seed, "seed", 0, None, owner=owner)
    check_int(workers, "workers", 0, 256, owner=owner)
    check_int(max_pixels, "max_pixels", 1, None, owner=owner)
    val = next((root / v for v in ("val", "test") if (root / v).is_dir()), None)
    meta: dict[str, Any] = {"path": str(root)}
    if (root / "train").is_dir():
        if val is None:
            raise InvalidParameterError(f"imagefolder: '{root}' has a train/ folder but no val/ (or test/) folder.")
        for sub in (root / "train", val):
            if not _inside(root, sub):
                raise InvalidParameterError(f"imagefolder: '{sub}' is a symlink leading outside '{root}'.")
        classes, ftr, ltr = _scan(root / "train", root, None)
        _, fte, lte = _scan(val, root, classes)
        meta["split"] = f"train/ and {val.name}/"
    else:
        classes, files, labels = _scan(root, root, None)
        from ._embedded import _stratified_split

        tr, te = _stratified_split(np.asarray(labels), test_fraction, seed)
        ftr, ltr = [files[i] for i in tr], [labels[i] for i in tr]
        fte, lte = [files[i] for i in te], [labels[i] for i in te]
        meta.update(split="stratified", test_fraction=test_fraction, seed=seed)
    if hw is None:
        from PIL import Image

        first = (ftr or fte)[0]
        try:
            with Image.open(first, formats=_FORMATS) as img:
                hw = (img.size[1], img.size[0])
        except Exception as e:  # noqa: BLE001 - any decoder failure is a corrupt file here
            raise CorruptFileError(f"image '{first}' is unreadable or corrupt ({type(e).__name__}).") from None
        meta["size_from"] = first
    kw = {"size": hw, "channels": channels, "max_pixels": max_pixels, "resize": size is not None}
    meta.update(num_train=len(ftr), num_test=len(fte), size=list(hw))
    data = StreamingData(train=ImageFolderDataset(ftr, ltr, **kw), test=ImageFolderDataset(fte, lte, **kw),
                         num_classes=len(classes), input_shape=(channels, *hw), class_names=list(classes),
                         name=f"imagefolder:{root.name}", meta=meta, num_workers=workers)
    return data.to_memory() if in_memory else data
