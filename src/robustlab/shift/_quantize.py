"""Post-training fake quantization as a model shift, and accuracy per bit-width.

``quantize(model, bits=4)`` returns a copy whose Conv/Linear weights are rounded to a uniform grid, one scale per
output channel or per layer (``scheme``) and, after EQ-Net's elastic symmetry (``symmetry``), either

* ``"symmetric"``: ``s·{-(2^(b-1)-1), ..., 2^(b-1)-1}``, ``s = max|w| / (2^(b-1)-1)`` (``2^b - 1`` levels), or
* ``"asymmetric"`` (affine, with a zero point): ``s·({0, ..., 2^b-1} - z)``, ``s = (max(w,0) - min(w,0)) / (2^b-1)``,
  ``z = round(-min(w,0) / s)`` (``2^b`` levels; 0 is exactly on the grid, the range ends move by < s/2).

``bits`` is one width for every layer or one per layer (``{layer_name: b}`` or a list in module order: a
mixed-precision assignment, see :func:`robustlab.shift.mixed_precision_search`). Biases stay in float (as in
integer inference, where they are kept at 32 bits). ``activations=True`` also rounds the input of every
Conv/Linear layer over the range observed on a calibration batch (see :func:`quantize`). Rounding uses a
straight-through gradient, so attacks still get input gradients from a quantized model (no gradient masking by
``round``).

``quantization_error(model, data, bits=[8, 6, 4, 3, 2])`` gives clean (and, with ``attack``, robust)
accuracy per bit-width next to the float model's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import InvalidParameterError, check_bool, check_int, check_option

__all__ = ["BITS_RANGE", "QUANT_LAYERS", "QUANT_SCHEMES", "QUANT_SYMMETRIES", "QuantizationResult", "fake_quantize",
           "quantizable_layers", "quantization_error", "quantize"]

QUANT_SCHEMES = ("per_channel", "per_tensor")
QUANT_SYMMETRIES = ("symmetric", "asymmetric")  # EQ-Net's elastic symmetry: zero point fixed at 0, or affine
BITS_RANGE = (2, 16)  # 1 bit has no symmetric grid with a zero; above 16 bits fake quantization is the identity
QUANT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_bits(bits: Any, owner: str, name: str = "bits") -> int:
    """``bits`` as an int in :data:`BITS_RANGE` (the one message for a bad bit-width)."""
    return check_int(bits, name, BITS_RANGE[0], BITS_RANGE[1], owner=owner)


def check_scheme(scheme: Any, owner: str) -> str:
    return str(check_option(scheme, "scheme", QUANT_SCHEMES, owner=owner))


def check_symmetry(symmetry: Any, owner: str) -> str:
    return str(check_option(symmetry, "symmetry", QUANT_SYMMETRIES, owner=owner))


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names (``model.named_modules()`` order) of the Conv/Linear layers :func:`quantize` rounds.

    The keys of a per-layer ``bits`` dict, and the order of a per-layer ``bits`` list.
    """
    return [name for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def _affine_grid(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of the ``2^b``-level affine grid over ``[min(lo, 0), max(hi, 0)]``."""
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(torch.finfo(lo.dtype).tiny)
    return scale, torch.round(-lo / scale)


def fake_quantize(w: torch.Tensor, bits: int, *, scheme: str = "per_channel", symmetry: str = "symmetric",
                  ste: bool = True) -> torch.Tensor:
    """Round ``w`` to a ``bits``-bit uniform grid, one grid per output channel (dim 0) or per tensor.

    ``symmetry="symmetric"``: ``s·{-(2^(b-1)-1), ..., 2^(b-1)-1}`` with ``s = max|w| / (2^(b-1)-1)``.
    ``"asymmetric"``: ``s·(clamp(round(w/s) + z, 0, 2^b-1) - z)`` with ``s = (max(w,0) - min(w,0)) / (2^b-1)``
    and the integer zero point ``z = round(-min(w,0) / s)`` (EQ-Net's ``asym_quantize`` with the min-max
    range). With ``ste`` the gradient passes straight through (``w + (q - w).detach()``).

    Example::

        q = fake_quantize(torch.randn(4, 3), 2)   # each row takes values in {-s, 0, s}
        a = fake_quantize(torch.tensor([[-1.0, 0.5, 2.0]]), 2, symmetry="asymmetric")  # grid {-1, 0, 1, 2}
    """
    wd = w.detach()
    per_channel = scheme == "per_channel" and w.dim() > 1
    shape = (-1, *([1] * (w.dim() - 1)))
    if symmetry == "asymmetric":
        if per_channel:
            lo, hi = wd.flatten(1).aminmax(dim=1)
            lo, hi = lo.view(shape), hi.view(shape)
        else:
            lo, hi = wd.aminmax()
        scale, zero = _affine_grid(lo, hi, bits)
        q = (torch.clamp(torch.round(wd / scale) + zero, 0, 2 ** bits - 1) - zero) * scale
    else:
        levels = 2 ** (bits - 1) - 1
        amax = wd.abs().flatten(1).amax(1).view(shape) if per_channel else wd.abs().amax()
        scale = amax.clamp_min(torch.finfo(w.dtype).tiny) / levels
        q = torch.clamp(torch.round(wd / scale), -levels, levels) * scale
    return w + (q - w).detach() if ste else q


class _InputQuant:
    """Forward pre-hook rounding a layer's input to ``bits`` bits over a fixed observed range.

    Range ``[0, hi]`` (unsigned grid, ``2^b`` levels) when the calibration inputs were all ≥ 0; else, for
    ``symmetric``, ``[-a, a]`` with ``a = max|x|`` (``2^b - 1`` levels), for ``asymmetric`` the affine grid over
    ``[lo, hi]`` with a zero point (``2^b`` levels). Values outside are clipped.
    """

    def __init__(self, lo: float, hi: float, bits: int, symmetry: str = "symmetric") -> None:
        if lo >= 0.0 or symmetry == "asymmetric":
            scale, zero = _affine_grid(torch.tensor(lo, dtype=torch.float64), torch.tensor(max(hi, 1e-12),
                                       dtype=torch.float64), bits)
            self.scale, self.zero, self.lo, self.hi = float(scale), float(zero), 0.0, float(2 ** bits - 1)
        else:
            levels = 2 ** (bits - 1) - 1
            self.scale, self.zero = max(abs(lo), abs(hi), 1e-12) / levels, 0.0
            self.lo, self.hi = float(-levels), float(levels)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        q = (torch.clamp(torch.round(x.detach() / self.scale) + self.zero, self.lo, self.hi) - self.zero) * self.scale
        return (x + (q - x).detach(), *args[1:])


def _observe_ranges(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> list[tuple[float, float]]:
    seen: dict[int, list[float]] = {}

    def hook(i: int) -> Any:
        def fn(module: nn.Module, args: tuple[Any, ...]) -> None:
            a = args[0].detach()
            lo, hi = float(a.min()), float(a.max())
            prev = seen.get(i)
            seen[i] = [lo, hi] if prev is None else [min(prev[0], lo), max(prev[1], hi)]
        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(layers)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    missing = [i for i in range(len(layers)) if i not in seen]
    if missing:
        raise ValueError(f"quantize: {len(missing)} Conv/Linear layer(s) were not called on the calibration batch; "
                         "their activation ranges are unknown.")
    return [(seen[i][0], seen[i][1]) for i in range(len(layers))]


def layer_bits(model: nn.Module, bits: Any, owner: str) -> dict[str, int]:
    """``bits`` (one int, ``{layer_name: b}`` for every Conv/Linear layer, or a list in that order) per layer name."""
    names = quantizable_layers(model)
    if not names:
        raise InvalidParameterError(f"The model given to {owner} has no Linear or Conv layer to quantize "
                                    f"({type(model).__name__}).")
    if isinstance(bits, Mapping):
        missing, extra = [n for n in names if n not in bits], [k for k in bits if k not in names]
        if missing or extra:
            raise InvalidParameterError(
                f"The 'bits' dict of {owner} must give a bit-width for exactly the model's Conv/Linear layers "
                f"{names}. Missing {missing}, unknown {extra}.")
        return {n: check_bits(bits[n], owner, name=f"bits[{n!r}]") for n in names}
    if isinstance(bits, Sequence) and not isinstance(bits, str):
        if len(bits) != len(names):
            raise InvalidParameterError(
                f"The 'bits' list of {owner} must give one bit-width per Conv/Linear layer ({len(names)}: {names}). "
                f"Got {len(bits)}: {list(bits)!r}.")
        return {n: check_bits(b, owner, name=f"bits[{i}]") for i, (n, b) in enumerate(zip(names, bits))}
    b = check_bits(bits, owner)
    return dict.fromkeys(names, b)


def quantize(
    model: nn.Module, *, bits: int | Mapping[str, int] | Sequence[int] = 8, scheme: str = "per_channel",
    symmetry: str = "symmetric", activations: bool = False, calibration: torch.Tensor | None = None,
) -> nn.Module:
    """A fake-quantized copy of ``model`` (post-training, uniform grids; ``model`` is left unchanged).

    Weights of every ``nn.Linear``/``nn.Conv{1,2,3}d`` go to ``bits`` bits (:func:`fake_quantize`): one int for
    every layer, or per layer (mixed precision) a dict ``{name: b}`` over :func:`quantizable_layers` or a list
    in that order. ``scheme="per_channel"`` has one scale per output channel, ``"per_tensor"`` one per layer;
    ``symmetry`` picks the symmetric grid or the affine one with a zero point. ``activations=True`` rounds each
    such layer's input to its layer's width over the range observed on ``calibration`` (a batch of inputs,
    required then): unsigned ``[0, max]`` if the observed inputs are non-negative (images, post-ReLU), else
    ``[-max|x|, max|x|]`` (symmetric) or ``[min, max]`` with a zero point (asymmetric). The copy carries
    ``robustlab_quantization`` (the settings; ``bits`` a dict when it was given per layer) and keeps
    ``robustlab_config`` for checkpoints.
    """
    owner = "quantize"
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__} instead.")
    widths = layer_bits(model, bits, owner)
    scheme = check_scheme(scheme, owner)
    symmetry = check_symmetry(symmetry, owner)
    check_bool(activations, "activations", owner=owner)
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    if activations:
        if not isinstance(calibration, torch.Tensor) or not calibration.dtype.is_floating_point or calibration.dim() < 2:
            raise InvalidParameterError(
                f"The 'calibration' parameter of {owner} must be a floating-point batch (N, ...) of inputs when "
                f"activations=True (its ranges set the activation grids). Got {getattr(calibration, 'shape', calibration)!r}.")
        if not bool(torch.isfinite(calibration).all()):
            raise InvalidParameterError(f"The 'calibration' batch of {owner} contains NaN or infinite values.")
    elif calibration is not None:
        raise InvalidParameterError(f"The 'calibration' parameter of {owner} is only used with activations=True.")
    ranges = None
    if activations:
        dev = next((p.device for p in model.parameters()), calibration.device)  # type: ignore[union-attr]
        ranges = _observe_ranges(model, layers, calibration.to(dev))  # type: ignore[union-attr]
    out = copy.deepcopy(model)
    with torch.no_grad():
        for i, (name, m) in enumerate((n, x) for n, x in out.named_modules() if isinstance(x, QUANT_LAYERS)):
            w = cast(torch.Tensor, m.weight)
            w.copy_(fake_quantize(w, widths[name], scheme=scheme, symmetry=symmetry, ste=False))
            if ranges is not None:
                m.register_forward_pre_hook(_InputQuant(ranges[i][0], ranges[i][1], widths[name], symmetry))
    uniform = len(set(widths.values())) == 1 and not isinstance(bits, (Mapping, Sequence))
    out.robustlab_quantization = {  # type: ignore[assignment]
        "bits": next(iter(widths.values())) if uniform else widths, "scheme": scheme, "symmetry": symmetry,
        "activations": activations}
    return out


@dataclass
class QuantizationResult:
    """Accuracy per bit-width of a post-training-quantized model.

    Attributes:
        clean: ``{bits: accuracy}``; ``float_clean`` is the unquantized model's.
        robust: ``{bits: robust accuracy}`` under the attack (``None`` without one); ``float_robust`` likewise.
        num_examples: test examples used. meta: the settings (scheme, activations, attack, eps).
    """

    clean: dict[int, float]
    float_clean: float
    num_examples: int
    robust: dict[int, float] | None = None
    float_robust: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (bit-width keys become strings)."""
        return {"clean": {str(b): a for b, a in self.clean.items()}, "float_clean": self.float_clean,
                "robust": None if self.robust is None else {str(b): a for b, a in self.robust.items()},
                "float_robust": self.float_robust, "num_examples": self.num_examples, "meta": self.meta}

    def table(self) -> str:
        """One row per bit-width (float first): clean accuracy (%) and robust accuracy (%) if measured."""
        head = f"{'bits':>6} {'clean':>7}" + (f" {'robust':>7}" if self.robust is not None else "")
        lines = [head, "-" * len(head)]
        rows = [("float", self.float_clean, self.float_robust)] + [
            (str(b), a, None if self.robust is None else self.robust[b]) for b, a in self.clean.items()]
        for name, c, r in rows:
            lines.append(f"{name:>6} {100 * c:7.1f}" + (f" {100 * r:7.1f}" if r is not None else ""))
        lines.append(f"{self.num_examples} test examples, {self.meta.get('scheme')} "
                     f"{self.meta.get('symmetry', 'symmetric')} weights, "
                     f"activations {'quantized' if self.meta.get('activations') else 'float'}")
        return "\n".join(lines)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    from ..training import predict_logits

    with torch.no_grad():
        pred = predict_logits(model, x, batch_size=batch_size).argmax(1).cpu()
    return float((pred == y.cpu()).double().mean()) if y.numel() else float("nan")


def quantization_error(
    model: nn.Module, data: Any, *, bits: Sequence[int] = (8, 6, 4, 3, 2), scheme: str = "per_channel",
    symmetry: str = "symmetric", activations: bool = False, attack: Any = None, eps: float | None = None, norm: str = "linf",
    n_test: int | None = None, calibration_size: int = 256, batch_size: int = 512, seed: int = 0,
    progress: bool | None = None,
) -> QuantizationResult:
    """Clean (and robust) accuracy of ``quantize(model, bits=b, ...)`` on ``data.x_test`` for each ``b`` in ``bits``.

    ``scheme``, ``symmetry`` and ``activations`` are :func:`quantize`'s.
    ``attack``: ``None`` or anything :func:`robustlab.evaluate.robust_accuracy` accepts (an attack name, a
    suite name, ``(name, options)`` pairs), run at ``eps``/``norm`` against each quantized model itself
    (gradients pass straight through the rounding). The activation grids (``activations=True``) are set on
    the first ``calibration_size`` training inputs. ``progress``: a bar over the bit-widths.
    """
    owner = "quantization_error"
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__} instead.")
    if isinstance(bits, (int, str)) or not isinstance(bits, Sequence) or not bits:
        raise InvalidParameterError(f"The 'bits' parameter of {owner} must be a non-empty list of ints in "
                                    f"[{BITS_RANGE[0]}, {BITS_RANGE[1]}]. Got {bits!r} instead.")
    widths = [check_bits(b, owner) for b in bits]
    scheme = check_scheme(scheme, owner)
    symmetry = check_symmetry(symmetry, owner)
    check_bool(activations, "activations", owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_int(calibration_size, "calibration_size", 1, None, owner=owner)
    check_int(seed, "seed", 0, None, owner=owner)
    check_progress(progress, owner=owner)
    if attack is not None and eps is None:
        raise InvalidParameterError(f"The 'eps' parameter of {owner} is required when an attack is given.")
    x, y = data.x_test, data.y_test
    if n_test is not None:
        check_int(n_test, "n_test", 1, None, owner=owner)
        x, y = x[:n_test], y[:n_test]
    calib = data.x_train[:calibration_size] if activations else None

    def robust(m: nn.Module) -> float | None:
        if attack is None:
            return None
        from ..evaluate import robust_accuracy

        return float(robust_accuracy(m, (x, y), attack, eps=float(eps), norm=norm,  # type: ignore[arg-type]
                                     batch_size=batch_size, seed=seed).robust_accuracy)

    clean: dict[int, float] = {}
    rob: dict[int, float] = {}
    for b in progress_bar(widths, "quantization", progress, total=len(widths), unit="bit-width"):
        qm = quantize(model, bits=b, scheme=scheme, symmetry=symmetry, activations=activations, calibration=calib)
        clean[b] = _accuracy(qm, x, y, batch_size)
        r = robust(qm)
        if r is not None:
            rob[b] = r
    return QuantizationResult(
        clean=clean, float_clean=_accuracy(model, x, y, batch_size), num_examples=int(y.shape[0]),
        robust=rob if attack is not None else None, float_robust=robust(model),
        meta={"bits": widths, "scheme": scheme, "symmetry": symmetry, "activations": activations,
              "attack": attack if attack is None or isinstance(attack, str) else repr(attack),
              "eps": eps, "norm": norm, "seed": seed})
