"""Save and load a denoiser of :class:`DenoisedSmoothing` through robustlab's safe checkpoint format.

``save_denoiser(ds, "runs/den")`` writes ``runs/den/model.pt`` (the denoiser: weights + its ``models.create``
config, read back with ``torch.load(weights_only=True)``, never unpickling code) and, for a ZO-AE-DS model,
``runs/den/autoencoder.pt`` beside it; the denoiser's record (``extra["denoiser"]``) holds σ, the training
method and the autoencoder's file name. ``load_denoised(base_model, "runs/den")`` rebuilds the
:class:`DenoisedSmoothing` in front of any classifier (a checkpoint, a TorchScript file, a black box).

Example::

    ds = DenoisedSmoothing(base, models.create("dncnn", input_shape=(1, 28, 28), num_classes=10), sigma=0.25)
    ds.fit(x_train, method="fo"); save_denoiser(ds, "runs/den", method="fo")
    ds2 = load_denoised(load_checkpoint("runs/base"), "runs/den")    # σ = 0.25 from the record
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .._validation import InvalidParameterError
from ._denoised import DenoisedSmoothing

__all__ = ["AUTOENCODER_NAME", "load_denoised", "save_denoiser"]

AUTOENCODER_NAME = "autoencoder.pt"
_KEY = "denoiser"  # the record's key in the checkpoint's extra


def _folder(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(model file, folder)`` of a run folder or a ``.pt`` file (as :func:`training.save_checkpoint` resolves it)."""
    p = Path(path)
    target = p / "model.pt" if p.is_dir() or p.suffix == "" else p
    return target, target.parent


def save_denoiser(ds: DenoisedSmoothing, path: str | os.PathLike[str], *, method: str | None = None,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write ``ds``'s denoiser (and autoencoder) as robustlab checkpoints; return the denoiser's file.

    ``path``: a run folder (``<dir>/model.pt``) or a ``.pt`` file; the autoencoder goes to ``autoencoder.pt`` in
    the same folder. ``method`` and ``extra`` (JSON-able) are recorded with σ. The base classifier is not saved.
    Both modules must come from ``models.create`` (their config rebuilds them on load).
    """
    from ..training import save_checkpoint

    if not isinstance(ds, DenoisedSmoothing):
        raise TypeError(f"save_denoiser expects a DenoisedSmoothing. Got {type(ds).__name__}.")
    for name, module in (("denoiser", ds.denoiser), ("autoencoder", ds.autoencoder)):
        if module is not None and getattr(module, "robustlab_config", None) is None:
            raise InvalidParameterError(f"save_denoiser: the {name} was not built by robustlab.models.create, so a "
                                        "checkpoint could not rebuild it; create it with models.create(...).")
    target, folder = _folder(path)
    record = {"sigma": ds.sigma, "method": method, "autoencoder": None if ds.autoencoder is None else AUTOENCODER_NAME}
    if ds.autoencoder is not None:  # first, so that model.pt (what users point at) appears last
        save_checkpoint(ds.autoencoder, folder / AUTOENCODER_NAME, extra={"autoencoder_of": target.name})
    return save_checkpoint(ds.denoiser, target, extra={**(extra or {}), _KEY: record})


def denoiser_record(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``extra["denoiser"]`` record of a loaded checkpoint, or a clear error if it is not a denoiser's."""
    record = (getattr(model, "robustlab_extra", None) or {}).get(_KEY)
    sigma = record.get("sigma") if isinstance(record, dict) else None
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise InvalidParameterError(f"'{path}' is not a denoiser checkpoint (no valid '{_KEY}' record with sigma); "
                                    "write one with 'robustlab denoise' or robustlab.defences.save_denoiser.")
    return record


def load_denoised(base_model: Any, path: str | os.PathLike[str], *, sigma: float | None = None,
                  map_location: str = "cpu") -> DenoisedSmoothing:
    """``DenoisedSmoothing(base_model, denoiser, sigma)`` from a folder or file written by :func:`save_denoiser`.

    ``sigma``: the smoothing noise (default: the σ the denoiser was trained at, from its record). Files are
    read with ``weights_only=True``; a missing file is ``FileNotFoundError``, anything else that is not a
    denoiser checkpoint an ``InvalidParameterError`` naming the file.
    """
    from ..training import load_checkpoint

    target, folder = _folder(path)
    denoiser = load_checkpoint(target, map_location=map_location)
    record = denoiser_record(denoiser, target)
    autoencoder = None
    ae_name = record.get("autoencoder")
    if ae_name is not None:
        if not isinstance(ae_name, str) or Path(ae_name).name != ae_name:
            raise InvalidParameterError(f"'{target}' records an invalid autoencoder file name {ae_name!r}.")
        autoencoder = load_checkpoint(folder / ae_name, map_location=map_location)
        if not (isinstance(getattr(autoencoder, "encoder", None), nn.Module)
                and isinstance(getattr(autoencoder, "decoder", None), nn.Module)):
            raise InvalidParameterError(f"'{folder / ae_name}' is not an autoencoder (no encoder/decoder).")
    ds = DenoisedSmoothing(base_model, denoiser, float(record["sigma"]) if sigma is None else sigma,
                           autoencoder=autoencoder)
    ds.robustlab_denoiser = dict(record)  # type: ignore[assignment]
    return ds.eval()
