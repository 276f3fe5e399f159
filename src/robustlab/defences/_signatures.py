"""Robust weight signatures: extract the robust direction of shallow layers and patch it into a model.

Reference: Cai, Zhang, Wang, "Robust Weight Signatures: Gaining Robustness as Easy as Patching Weights?",
ICML 2023 (arXiv:2302.12480).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._validation import InvalidParameterError, check_in_range, check_int

__all__ = ["WeightSignature", "extract_signature", "patch", "patches", "unpatch"]

_WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PATCHES = "_robustlab_patches"  # list of (signature, scale) applied, in order
_BASE = "_robustlab_patch_base"  # exact copies of the patched parameters before the first patch


@dataclass
class WeightSignature:
    """A compact set of per-parameter weight deltas (optionally linearly quantized).

    ``tensors()`` gives the float deltas; ``nbytes`` the stored size, ``full_nbytes`` the size of a full
    copy of the source model's parameters, ``compression`` their ratio. Patch with :func:`patch`.
    """

    layers: list[str]
    bits: int | None
    _float: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _codes: dict[str, tuple[torch.Tensor, float, float]] = field(default_factory=dict, repr=False)
    full_nbytes: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """Parameter name -> float32 delta (dequantized if ``bits`` is set)."""
        if self.bits is None:
            return dict(self._float)
        levels = (1 << self.bits) - 1
        return {k: (c.to(torch.float32) / levels) * scale + low for k, (c, low, scale) in self._codes.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of the stored deltas (codes are stored one uint8 per entry, plus 8 bytes per tensor)."""
        if self.bits is None:
            return sum(t.numel() * t.element_size() for t in self._float.values())
        return sum(c.numel() * c.element_size() + 8 for c, _, _ in self._codes.values())

    @property
    def compression(self) -> float:
        """``full_nbytes / nbytes``: how much smaller than a full weight copy."""
        return self.full_nbytes / max(self.nbytes, 1)

    def summary(self) -> str:
        """One line: number of tensors, stored size, compression against a full copy."""
        q = f"{self.bits}-bit" if self.bits else "float32"
        return (f"WeightSignature: {len(self.layers)} tensors ({q}), {self.nbytes / 1024:.1f} KiB; "
                f"full model {self.full_nbytes / 1024:.1f} KiB; {self.compression:.1f}x smaller")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the signature atomically (loadable with ``torch.load(weights_only=True)``)."""
        import io

        from ..training import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"format": "robustlab-signature-v1", "layers": self.layers, "bits": self.bits,
                    "float": self._float, "codes": {k: [c, lo, s] for k, (c, lo, s) in self._codes.items()},
                    "full_nbytes": self.full_nbytes}, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WeightSignature:
        """Read a signature written by :meth:`save`."""
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("format") != "robustlab-signature-v1":
            raise ValueError(f"'{path}' is not a robustlab weight signature.")
        codes = {k: (v[0], float(v[1]), float(v[2])) for k, v in d["codes"].items()}
        return cls(list(d["layers"]), d["bits"], dict(d["float"]), codes, int(d["full_nbytes"]))


def _weight_module_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _WEIGHT_MODULES)]


def _select(model: nn.Module, layers: str | int | Sequence[str]) -> list[str]:
    """Parameter names of the selected layers, in model order."""
    params = [n for n, _ in model.named_parameters()]
    mods = _weight_module_names(model)
    if isinstance(layers, str) and layers in ("shallow", "all"):
        if layers == "all":
            return params
        chosen = mods[: max(1, math.ceil(len(mods) / 2))]
    elif isinstance(layers, int) and not isinstance(layers, bool):
        check_int(layers, "layers", 1, len(mods), owner="extract_signature")
        chosen = mods[:layers]
    elif isinstance(layers, (list, tuple)) and all(isinstance(s, str) for s in layers):
        unknown = [s for s in layers if not any(p == s or p.startswith(s + ".") for p in params)]
        if unknown:
            raise ValueError(f"extract_signature: no parameter matches {unknown}; parameters: {', '.join(params)}.")
        return [p for p in params if any(p == s or p.startswith(s + ".") for s in layers)]
    else:
        raise InvalidParameterError(
            "The 'layers' parameter of extract_signature must be 'shallow', 'all', an int or a list of "
            f"module/parameter names. Got {layers!r} instead.")
    return [p for p in params if any(p.startswith(m + ".") for m in chosen)]


def extract_signature(
    clean_model: nn.Module, robust_model: nn.Module, layers: str | int | Sequence[str] = "shallow", *,
    pretrained: nn.Module | None = None, bits: int | None = None,
) -> WeightSignature:
    r"""Robust weight signature of ``robust_model`` relative to ``clean_model`` on the chosen layers.

    Without ``pretrained``: :math:`\mathrm{RWS} = \theta_{rob} - \theta_{clean}` per tensor, so patching
    the clean model with scale 1 reproduces the robust layers. With the common ``pretrained`` ancestor
    (the paper): :math:`\tau = \theta_{rob} - \theta_{pre}`, :math:`a = \theta_{clean} - \theta_{pre}`,
    :math:`\mathrm{RWS} = \tau - \frac{a^\top\tau}{a^\top a}a` (the clean fine-tuning direction removed).

    ``layers``: ``"shallow"`` (the first half of the Linear/Conv layers, with their biases, the paper's
    default), ``"all"``, an int k (the first k such layers) or a list of module/parameter names.
    ``bits`` in [2, 8] stores each tensor with per-tensor linear quantization (error <= range / (2^bits - 1) / 2).
    """
    owner = "extract_signature"
    if bits is not None:
        check_int(bits, "bits", 2, 8, owner=owner)
    models = {"clean_model": clean_model, "robust_model": robust_model}
    if pretrained is not None:
        models["pretrained"] = pretrained
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"The '{name}' parameter of {owner} must be an nn.Module. Got {type(m).__name__} instead.")
    ref = dict(clean_model.named_parameters())
    for name, m in models.items():
        shapes = {k: tuple(v.shape) for k, v in m.named_parameters()}
        if shapes != {k: tuple(v.shape) for k, v in ref.items()}:
            raise ValueError(f"{owner}: '{name}' does not have the same parameters as 'clean_model' "
                             "(the models must share one architecture).")
    names = _select(clean_model, layers)
    rob = dict(robust_model.named_parameters())
    pre = dict(pretrained.named_parameters()) if pretrained is not None else None
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for n in names:
            if pre is None:
                d = rob[n].detach().float() - ref[n].detach().float()
            else:
                tau = (rob[n] - pre[n]).detach().float().flatten()
                a = (ref[n] - pre[n]).detach().float().flatten()
                aa = float(a @ a)
                d = (tau - (a @ tau) / aa * a if aa > 0 else tau).view_as(ref[n])
            deltas[n] = d.cpu().clone()
    full = sum(p.numel() * p.element_size() for p in clean_model.parameters())
    if bits is None:
        return WeightSignature(names, None, deltas, {}, full)
    levels = (1 << bits) - 1
    codes = {}
    for n, d in deltas.items():
        low, high = float(d.min()), float(d.max())
        scale = high - low
        c = torch.round((d - low) / scale * levels) if scale > 0 else torch.zeros_like(d)
        codes[n] = (c.to(torch.uint8), low, scale)
    return WeightSignature(names, bits, {}, codes, full)


def _apply(model: nn.Module) -> None:
    params = dict(model.named_parameters())
    base: dict[str, torch.Tensor] = getattr(model, _BASE)
    entries: list[tuple[WeightSignature, float]] = getattr(model, _PATCHES)
    with torch.no_grad():
        for n, b in base.items():
            params[n].copy_(b)
        for sig, scale in entries:
            for n, d in sig.tensors().items():
                params[n].add_(d.to(params[n]), alpha=scale)


def patch(model: nn.Module, signature: WeightSignature, scale: float = 1.0) -> nn.Module:
    r"""Add ``scale * signature`` to ``model``'s parameters in place and return ``model``.

    .. math:: \theta[\ell] \leftarrow \theta[\ell] + \lambda\,\mathrm{RWS}[\ell]\quad(\ell \in \text{signature layers})

    Patches compose (several signatures, or one twice) and are removable with :func:`unpatch`: the
    pre-patch values of the touched parameters are kept, and the weights are always recomputed as
    ``base + sum of the remaining patches``, so removing every patch restores the weights bit for bit.
    """
    if not isinstance(signature, WeightSignature):
        raise TypeError(f"The 'signature' parameter of patch must be a WeightSignature. Got {type(signature).__name__} instead.")
    check_in_range(scale, "scale", None, None, owner="patch")
    params = dict(model.named_parameters())
    missing = [n for n in signature.layers if n not in params]
    if missing:
        raise ValueError(f"patch: the model has no parameters {missing}; was the signature extracted from this architecture?")
    for n, d in signature.tensors().items():
        if tuple(d.shape) != tuple(params[n].shape):
            raise ValueError(f"patch: '{n}' has shape {tuple(params[n].shape)} but the signature has {tuple(d.shape)}.")
    if not hasattr(model, _BASE):
        setattr(model, _BASE, {})
        setattr(model, _PATCHES, [])
    base: dict[str, torch.Tensor] = getattr(model, _BASE)
    for n in signature.layers:
        if n not in base:
            base[n] = params[n].detach().clone()
    getattr(model, _PATCHES).append((signature, float(scale)))
    _apply(model)
    return model


def unpatch(model: nn.Module, signature: WeightSignature | None = None) -> nn.Module:
    """Remove the patches of ``signature`` (every patch if None) from ``model`` in place; return it.

    The remaining patches stay applied; with none left the original weights are restored exactly.
    """
    if not hasattr(model, _BASE):
        if signature is None:
            return model
        raise ValueError("unpatch: this model carries no patches.")
    entries: list[tuple[WeightSignature, float]] = getattr(model, _PATCHES)
    keep = [] if signature is None else [(s, c) for s, c in entries if s is not signature]
    if signature is not None and len(keep) == len(entries):
        raise ValueError("unpatch: this signature was not patched into the model.")
    setattr(model, _PATCHES, keep)
    _apply(model)
    if not keep:
        delattr(model, _PATCHES)
        delattr(model, _BASE)
    return model


def patches(model: nn.Module) -> list[tuple[WeightSignature, float]]:
    """The ``(signature, scale)`` pairs currently patched into ``model`` (in order)."""
    return list(getattr(model, _PATCHES, []))

