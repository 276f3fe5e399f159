"""Robust accuracy under an ensemble of attacks (AutoAttack's cascade), with a binomial interval."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._progress import check_progress, progress_bar, progress_enabled
from .._validation import (
    InvalidParameterError,
    check_bool,
    check_finite,
    check_image_batch,
    check_in_range,
    check_int,
    check_labels,
    check_option,
)
from ..attacks import ATTACKS, NORMS, Attack, NoInputGradientError
from ..attacks._base import (
    NO_INPUT_GRADIENT_FLAG,
    PROBABILITIES_FLAG,
    gradient_free_attacks,
    has_input_gradient,
    looks_like_probabilities,
    probe_model,
    quiet_probability_warning,
)
from ..data._stream import BatchSource, is_streaming, iter_batches, num_examples
from ._suites import SUITES, fast_ensemble, resolve_attacks, standard_ensemble

__all__ = ["RobustAccuracy", "clopper_pearson", "resolve_attacks", "robust_accuracy", "standard_ensemble",
           "fast_ensemble", "as_tensors", "model_device", "prepare_data", "prepare_source", "probability_flag"]

log = logging.getLogger(__name__)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) binomial interval for ``k`` successes out of ``n``."""
    from scipy.stats import beta

    n = check_int(n, "n", 0, None, owner="clopper_pearson")
    k = check_int(k, "k", 0, n, owner="clopper_pearson")
    check_in_range(confidence, "confidence", 0.0, 1.0, closed="neither", owner="clopper_pearson")
    if n == 0:
        return (0.0, 1.0)
    a = 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def as_tensors(data: Any, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """``(x, y, num_classes)`` from a ClassificationData (its test split) or an ``(x, y)`` pair.

    Streamed data (a torch Dataset / DataLoader / StreamingData) are read into memory: the first ``n`` examples
    (all without ``n``); evaluations that stream use :func:`prepare_source` instead.
    """
    from ..data import ClassificationData

    if is_streaming(data):
        if n is not None:
            check_int(n, "n", 1, None)
        xs, ys = [], []
        for xb, yb, _ in iter_batches(data, 256, n=n):
            xs.append(xb)
            ys.append(yb)
        if not xs:
            raise ValueError("The data hold no examples.")
        return torch.cat(xs), torch.cat(ys), getattr(data, "num_classes", None)
    if isinstance(data, ClassificationData):
        x, y, c = data.x_test, data.y_test, data.num_classes
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y, c = data[0], data[1], None
    else:
        from ..data._stream import ACCEPTED

        raise TypeError(f"The 'data' parameter must be {ACCEPTED}. Got {type(data).__name__} instead.")
    if n is not None:
        check_int(n, "n", 1, None)
        x, y = x[:n], y[:n]
    return x, y, c


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def prepare_data(model: nn.Module, data: Any, n: int | None, owner: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validated ``(x, y, num_classes)`` for an evaluation; call with the model in eval mode.

    ``x``: finite floats in [0, 1]; ``y``: integer class indices of any integer dtype (returned as int64) in
    ``[0, num_classes)``; the model must return ``(N, C)`` logits with ``C == num_classes`` when the data
    know their classes (a :class:`~robustlab.data.ClassificationData`), else ``num_classes = C``.
    """
    if not isinstance(model, nn.Module) and not callable(model):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    x, y, num_classes = as_tensors(data, n)
    if isinstance(x, torch.Tensor) and x.dtype.is_floating_point:
        check_finite(x, "x", owner=owner)
    check_image_batch(x, "x", owner=owner)
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"The labels 'y' of {owner} must have shape ({x.shape[0]},) to match x. "
                         f"Got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}.")
    out = probe_model(model, x[:1].to(model_device(model)), owner)
    width = int(out.shape[1])
    if num_classes is not None and width != num_classes:
        raise InvalidParameterError(
            f"{owner}: the model returns {width} outputs per example but the data have {num_classes} classes; "
            "its output layer must have one logit per class.")
    num_classes = width
    check_labels(y, num_classes, "y", owner=owner)
    return x, y.long(), num_classes


def prepare_source(model: nn.Module, data: Any, n: int | None, owner: str) -> tuple[BatchSource, int]:
    """:func:`prepare_data` for any data form: ``(source, num_classes)``; call with the model in eval mode.

    In-memory data are validated at once (``source.x``/``source.y``); a torch Dataset / DataLoader /
    :class:`~robustlab.data.StreamingData` (its test split) is probed on its first example and each batch is
    validated as it is read (finite, in [0, 1], the first example's shape, labels inside the model's classes).
    ``n``: only the first ``n`` examples.
    """
    if not is_streaming(data):
        x, y, num_classes = prepare_data(model, data, n, owner)
        return BatchSource(x=x, y=y, n=int(x.shape[0]), owner=owner), num_classes
    if not isinstance(model, nn.Module) and not callable(model):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    total = num_examples(data, owner=owner)
    if n is not None:
        total = min(total, check_int(n, "n", 1, None, owner=owner))
    src = BatchSource(data=data, n=total, owner=owner, limit=n)
    known = getattr(data, "num_classes", None)
    if total == 0:
        return src, int(known or 0)
    x1, _ = src.head(1)
    check_finite(x1, "x", owner=owner)
    check_image_batch(x1, "x", owner=owner)
    width = int(probe_model(model, x1.to(model_device(model)), owner).shape[1])
    if known is not None and width != known:
        raise InvalidParameterError(
            f"{owner}: the model returns {width} outputs per example but the data have {known} classes; "
            "its output layer must have one logit per class.")
    shape = tuple(x1.shape[1:])

    def check(xb: torch.Tensor, yb: torch.Tensor) -> None:
        if tuple(xb.shape[1:]) != shape:
            raise ValueError(f"The data of {owner} yield inputs of shape {tuple(xb.shape[1:])} after {shape}; "
                             "every example must have the same shape.")
        check_finite(xb, "x", owner=owner)
        check_image_batch(xb, "x", owner=owner)
        check_labels(yb, width, "y", owner=owner)

    src.check = check
    return src, width


def probability_flag(model: nn.Module, x: torch.Tensor, device: torch.device, owner: str) -> list[str]:
    """``[PROBABILITIES_FLAG]`` when the model's outputs on the first points look like probabilities, else ``[]``.

    Also warns once (unless inside ``quiet_probability_warning``); attacks run quietly after it.
    """
    from ..attacks._base import check_logits_not_probabilities

    with torch.no_grad():
        logits = model(x[:64].to(device))
    if not looks_like_probabilities(logits):
        return []
    check_logits_not_probabilities(logits, owner)
    return [PROBABILITIES_FLAG]


@dataclass
class RobustAccuracy:
    """Result of :func:`robust_accuracy`.

    ``robust`` / ``clean`` are per-example booleans; ``per_attack`` is the robust accuracy after each attack
    of the cascade (cumulative); ``ci`` is the Clopper–Pearson interval of ``robust_accuracy``;
    ``flags`` lists sanity warnings (probability outputs, no input gradient, the black-box attack broke points
    the white-box ones missed); ``attacks`` records each attack's class options and budget; ``skipped`` names
    the attacks not run and why; ``x_adv`` (only with ``return_adv=True``) holds, per example, the adversarial
    example that broke it and ``x`` itself where none did (AutoAttack's ``adv_complete``).
    """

    clean_accuracy: float
    robust_accuracy: float
    ci: tuple[float, float]
    per_class: list[float]
    worst_class: float
    worst_class_index: int
    clean: torch.Tensor
    robust: torch.Tensor
    per_attack: dict[str, float]
    eps: float
    norm: str
    n: int
    confidence: float = 0.95
    time_s: float = 0.0
    flags: list[str] = field(default_factory=list)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    suite: str | None = None
    x_adv: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-example tensors)."""
        return {
            "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
            "ci": list(self.ci), "confidence": self.confidence,
            "per_class": [None if v != v else v for v in self.per_class],  # NaN (absent class) -> null
            "worst_class": self.worst_class, "worst_class_index": self.worst_class_index,
            "per_attack": self.per_attack, "eps": self.eps, "norm": self.norm, "n": self.n,
            "time_s": self.time_s, "flags": self.flags, "suite": self.suite, "attacks": self.attacks,
            "skipped": self.skipped,
        }

    def save_adv(self, path: str | os.PathLike[str]) -> None:
        """Save ``x_adv`` with ``robust``, ``clean``, ``eps`` and ``norm`` to a ``torch.save`` file, atomically.

        Needs ``return_adv=True``. Read it back with ``torch.load(path, weights_only=True)`` (tensors and plain
        values only, so loading runs no code), as AutoAttack's saved ``adv_complete``.
        """
        if self.x_adv is None:
            raise ValueError("save_adv: this result holds no adversarial examples; "
                             "call robust_accuracy(..., return_adv=True).")
        import io

        from ..training import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"x_adv": self.x_adv, "robust": self.robust, "clean": self.clean, "eps": self.eps,
                    "norm": self.norm}, buf)
        atomic_write_bytes(path, buf.getvalue())

    def __str__(self) -> str:
        lo, hi = self.ci
        s = (f"clean {100 * self.clean_accuracy:.2f}%  robust {100 * self.robust_accuracy:.2f}% "
             f"[{100 * lo:.2f}, {100 * hi:.2f}]  worst-class {100 * self.worst_class:.2f}% "
             f"(class {self.worst_class_index})  ({self.norm}, eps={self.eps:g}, n={self.n})")
        return s + "".join(f"\n  flag: {f}" for f in self.flags)


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
             progress: bool = False) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in progress_bar(range(0, x.shape[0], batch_size), "clean predictions", enabled=progress):
            out.append(model(x[i:i + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def robust_accuracy(
    model: nn.Module,
    data: Any,
    attacks: Any = "standard",
    *,
    eps: float,
    norm: str = "linf",
    batch_size: int = 256,
    seed: int = 0,
    n: int | None = None,
    confidence: float = 0.95,
    suite_kw: dict[str, Any] | None = None,
    return_adv: bool = False,
    progress: bool | None = None,
) -> RobustAccuracy:
    """Per-example worst case over an ensemble of attacks, run in sequence on the points still correct.

    ``attacks``: a suite name — ``"standard"`` (AutoAttack's: APGD-CE → APGD-T → FAB-T → Square-5000) or
    ``"fast"`` (no FAB-T) —, an attack name, an :class:`Attack`, a ``(name, options)`` pair or a list of them.
    ``suite_kw``: options for every attack that takes them; the common budgets ``steps`` (iterations) and
    ``n_queries`` (queries) go to the attacks whose budget they are (see ``attacks.budget_params()``).
    Attack ``i`` gets ``torch.Generator().manual_seed(seed + i)`` so the run is reproducible (AutoAttack
    seeds from the clock). Returns overall, per-class and worst-class robust accuracy, the per-example
    flags and a Clopper–Pearson interval (``confidence``). The model runs in eval mode throughout (its mode is
    restored); every attack must use ``eps`` and ``norm`` (a ValueError otherwise). ``return_adv=True`` also
    returns the adversarial examples (``x_adv``, on the CPU; one copy of the data). A model without an input
    gradient (graph cut) gets the flag "no input gradient" and only the gradient-free attacks of the suite run
    (an error if there are none). ``progress``: bars over attacks and batches (None: when stderr is a TTY).
    Croce & Hein 2020, arXiv:2003.01690.

    Example::

        res = robust_accuracy(model, data, "standard", eps=8 / 255, return_adv=True)
        assert (res.x_adv - data.x_test).abs().amax() <= 8 / 255 + 1e-6
    """
    owner = "robust_accuracy"
    check_option(norm, "norm", NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, 1.0 if norm == "linf" else None, owner=owner)
    if not math.isfinite(float(eps)):
        raise InvalidParameterError(f"The 'eps' parameter of {owner} must be finite. Got {eps!r} instead.")
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_int(seed, "seed", 0, None, owner=owner)
    check_in_range(confidence, "confidence", 0.0, 1.0, closed="neither", owner=owner)
    check_bool(return_adv, "return_adv", owner=owner)
    check_progress(progress, owner=owner)
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__}.")
    device = model_device(model)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()  # every forward of the evaluation (clean, attacks, the final check) runs in eval mode
    try:
        src, num_classes = prepare_source(model, data, n, owner)
        flags = probability_flag(model, src.head(64)[0], device, owner) if src.n else []
        with quiet_probability_warning():
            return _robust_accuracy_eval(model, src, num_classes, attacks, eps=eps, norm=norm, batch_size=batch_size,
                                         seed=seed, confidence=confidence, suite_kw=suite_kw, device=device, t0=t0,
                                         flags=flags, return_adv=return_adv, progress=progress_enabled(progress))
    finally:
        model.train(was_training)


def _check_suite_threat_model(suite: list[Attack], eps: float, norm: str) -> None:
    """Every attack must use the evaluation's ``eps`` and ``norm``, or the reported number would be mislabelled."""
    for a in suite:
        a_eps, a_norm = float(getattr(a, "eps", eps)), getattr(a, "norm", norm)
        if a_norm != norm or not math.isclose(a_eps, float(eps), rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(
                f"robust_accuracy: the attack {a!r} uses norm={a_norm!r}, eps={a_eps:g}, but the evaluation asks for "
                f"norm={norm!r}, eps={float(eps):g}. Build the attack with the same eps and norm (or pass its name).")


def _drop_gradient_attacks(model: nn.Module, src: BatchSource, device: torch.device, suite: list[Attack],
                           flags: list[str], skipped: dict[str, str]) -> list[Attack]:
    """Without an input gradient, keep only the gradient-free attacks (flagged); none left is an error."""
    if not any(getattr(a, "uses_gradients", True) for a in suite) or src.n == 0:
        return suite
    if has_input_gradient(model, src.head(1)[0].to(device)):
        return suite
    kept = [a for a in suite if not getattr(a, "uses_gradients", True)]
    names = [a.name for a in suite if getattr(a, "uses_gradients", True)]
    if not kept:
        raise NoInputGradientError(
            f"robust_accuracy: the model has {NO_INPUT_GRADIENT_FLAG}, and every attack asked for "
            f"({', '.join(names)}) needs input gradients. Add a gradient-free attack "
            f"({', '.join(gradient_free_attacks())}), e.g. the 'standard' suite, which ends with Square.")
    flags.append(f"{NO_INPUT_GRADIENT_FLAG}; the gradient attacks ({', '.join(names)}) were skipped and only "
                 f"{', '.join(a.name for a in kept)} ran, so the robust accuracy is an upper bound")
    for nm in names:
        skipped[nm] = "no input gradient"
    return kept


def _clean_pass(model: nn.Module, src: BatchSource, batch_size: int, device: torch.device, progress: bool,
                keep_x: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(pred, y, x)`` over every example (``x``: a CPU copy, only with ``keep_x``); one pass over streamed data."""
    if not src.streaming:
        assert src.x is not None and src.y is not None
        x_copy = src.x.detach().cpu().clone() if keep_x else None
        return _predict(model, src.x, batch_size, device, progress), src.y, x_copy
    preds, ys, xs = [], [], []
    total = -(-src.n // batch_size)
    with torch.no_grad():
        for xb, yb, _ in progress_bar(src.batches(batch_size, device), "clean predictions", enabled=progress,
                                      total=total):
            preds.append(model(xb).argmax(1).cpu())
            ys.append(yb.cpu())
            if keep_x:
                xs.append(xb.detach().cpu())
    empty = torch.zeros(0, dtype=torch.long)
    return (torch.cat(preds) if preds else empty, torch.cat(ys) if ys else empty,
            (torch.cat(xs) if xs else None) if keep_x else None)


def _robust_accuracy_eval(model: nn.Module, src: BatchSource, num_classes: int, attacks: Any,
                          *, eps: float, norm: str, batch_size: int, seed: int, confidence: float,
                          suite_kw: dict[str, Any] | None, device: torch.device, t0: float, flags: list[str],
                          return_adv: bool, progress: bool) -> RobustAccuracy:
    suite = resolve_attacks(attacks, eps=eps, norm=norm, num_classes=num_classes, suite_kw=suite_kw, notes=flags)
    _check_suite_threat_model(suite, eps, norm)
    skipped: dict[str, str] = {}
    pred, y, x_adv_all = _clean_pass(model, src, batch_size, device, progress, return_adv)
    suite = _drop_gradient_attacks(model, src, device, suite, flags, skipped)
    clean = pred == y
    robust = clean.clone()
    per_attack: dict[str, float] = {}
    config: dict[str, dict[str, Any]] = {}
    white_box_done = False
    for i, attack in enumerate(suite):
        gen = torch.Generator(device=device).manual_seed(seed + i)
        idx = robust.nonzero().squeeze(1)
        before = int(idx.numel())
        key = attack.name if attack.name not in per_attack else f"{attack.name}_{i}"
        batches = src.batches(batch_size, device, select=robust.clone())
        for xb, yb, j in progress_bar(batches, f"{key} ({i + 1}/{len(suite)}) batches", enabled=progress,
                                      total=-(-before // batch_size)):
            x_adv = attack(model, xb, yb, generator=gen, progress=progress)
            with torch.no_grad():
                ok = (model(x_adv).argmax(1) == yb).cpu()
            robust[j] = ok
            if x_adv_all is not None:
                x_adv_all[j[~ok]] = x_adv[~ok.to(x_adv.device)].detach().cpu().to(x_adv_all.dtype)
        per_attack[key] = float(robust.float().mean()) if robust.numel() else 0.0
        budget = attack.budget() if hasattr(attack, "budget") else {}
        config[key] = {"attack": repr(attack), **budget}
        broken = before - int(robust.sum())
        tags = ATTACKS.spec(attack.name).tags if attack.name in ATTACKS else frozenset()
        if "black_box" in tags and white_box_done and broken > 0:
            flags.append(f"the black-box attack {attack.name} broke {broken} point(s) the white-box attacks missed: "
                         "possible gradient masking; do not trust gradient-only evaluations of this model")
        if "white_box" in tags:
            white_box_done = True
        log.info("%s: robust %.4f (%d broken)", attack.name, per_attack[key], broken)
    n_total = int(y.numel())
    k = int(robust.sum())
    per_class = []
    for c in range(num_classes):
        sel = y == c
        per_class.append(float(robust[sel].float().mean()) if bool(sel.any()) else float("nan"))
    present = [(v, c) for c, v in enumerate(per_class) if v == v]
    worst, worst_c = min(present) if present else (float("nan"), -1)
    return RobustAccuracy(
        clean_accuracy=float(clean.float().mean()) if n_total else 0.0,
        robust_accuracy=k / n_total if n_total else 0.0,
        ci=clopper_pearson(k, n_total, confidence),
        per_class=per_class, worst_class=worst, worst_class_index=worst_c,
        clean=clean, robust=robust, per_attack=per_attack, eps=float(eps), norm=norm, n=n_total,
        confidence=confidence, time_s=time.perf_counter() - t0, flags=flags, attacks=config, skipped=skipped,
        suite=attacks if isinstance(attacks, str) and attacks in SUITES else None, x_adv=x_adv_all,
    )
