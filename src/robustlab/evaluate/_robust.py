"""Robust accuracy under an ensemble of attacks (AutoAttack's cascade), with a binomial interval."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._validation import check_in_range, check_int, check_option
from ..attacks import ATTACKS, NORMS, Attack

__all__ = ["RobustAccuracy", "clopper_pearson", "resolve_attacks", "robust_accuracy", "standard_ensemble",
           "as_tensors", "model_device"]

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


def standard_ensemble(eps: float, norm: str = "linf", *, num_classes: int | None = None, steps: int = 100,
                      n_queries: int = 5000, n_target_classes: int = 9, include_fab: bool = False) -> list[Attack]:
    """The ``standard`` suite: APGD-CE, APGD-T (top-9 targets), Square (5000 queries), in this order.

    ``include_fab`` inserts FAB-T (9 targets) before Square, which is AutoAttack's full standard list.
    APGD-T needs ≥ 3 classes; with fewer it is left out (a warning is logged).
    Croce & Hein, ICML 2020, arXiv:2003.01690.
    """
    check_option(norm, "norm", NORMS, owner="standard_ensemble")
    suite: list[Attack] = [ATTACKS.get("apgd_ce", eps=eps, norm=norm, steps=steps)]
    if num_classes is None or num_classes >= 3:
        nt = n_target_classes if num_classes is None else max(1, min(n_target_classes, num_classes - 1))
        suite.append(ATTACKS.get("apgd_t", eps=eps, norm=norm, steps=steps, n_target_classes=nt))
    else:
        log.warning("standard_ensemble: %d classes, so APGD-T (targeted DLR) is left out.", num_classes)
    if include_fab:
        nt = n_target_classes if num_classes is None else max(1, min(n_target_classes, num_classes - 1))
        suite.append(ATTACKS.get("fab_t", eps=eps, norm=norm, steps=steps, n_target_classes=nt))
    suite.append(ATTACKS.get("square", eps=eps, norm=norm, n_queries=n_queries))
    return suite


def resolve_attacks(attacks: Any, *, eps: float, norm: str, num_classes: int | None = None,
                    suite_kw: dict[str, Any] | None = None) -> list[Attack]:
    """``"standard"``, a registered name, an :class:`Attack`, or a sequence of names / attacks / ``(name, kw)``."""
    if isinstance(attacks, str) and attacks == "standard":
        return standard_ensemble(eps, norm, num_classes=num_classes, **(suite_kw or {}))
    if isinstance(attacks, (str, Attack)) or (isinstance(attacks, tuple) and len(attacks) == 2
                                             and isinstance(attacks[1], dict)):
        attacks = [attacks]
    if not isinstance(attacks, Sequence) or not attacks:
        raise TypeError("The 'attacks' parameter of robust_accuracy must be 'standard', an attack name, an Attack, "
                        f"or a non-empty list of them. Got {attacks!r} instead.")
    out: list[Attack] = []
    for a in attacks:
        if isinstance(a, Attack):
            out.append(a)
        elif isinstance(a, str):
            out.append(ATTACKS.get(a, eps=eps, norm=norm))
        elif isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], dict):
            kw = {"eps": eps, "norm": norm, **a[1]}
            out.append(ATTACKS.get(a[0], **kw))
        else:
            raise TypeError(f"Cannot turn {a!r} into an attack: use a name, an Attack or (name, kwargs).")
    return out


def as_tensors(data: Any, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """``(x, y, num_classes)`` from a ClassificationData (its test split) or an ``(x, y)`` pair."""
    from ..data import ClassificationData

    if isinstance(data, ClassificationData):
        x, y, c = data.x_test, data.y_test, data.num_classes
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y, c = data[0], data[1], None
    else:
        raise TypeError("The 'data' parameter must be a ClassificationData or an (x, y) pair of tensors. "
                        f"Got {type(data).__name__} instead.")
    if n is not None:
        check_int(n, "n", 1, None)
        x, y = x[:n], y[:n]
    return x, y, c


def model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class RobustAccuracy:
    """Result of :func:`robust_accuracy`.

    ``robust`` / ``clean`` are per-example booleans; ``per_attack`` is the robust accuracy after each attack
    of the cascade (cumulative); ``ci`` is the Clopper–Pearson interval of ``robust_accuracy``;
    ``flags`` lists sanity warnings (e.g. the black-box attack broke points the white-box ones missed).
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-example tensors)."""
        return {
            "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
            "ci": list(self.ci), "confidence": self.confidence,
            "per_class": [None if v != v else v for v in self.per_class],  # NaN (absent class) -> null
            "worst_class": self.worst_class, "worst_class_index": self.worst_class_index,
            "per_attack": self.per_attack, "eps": self.eps, "norm": self.norm, "n": self.n,
            "time_s": self.time_s, "flags": self.flags,
        }

    def __str__(self) -> str:
        lo, hi = self.ci
        s = (f"clean {100 * self.clean_accuracy:.2f}%  robust {100 * self.robust_accuracy:.2f}% "
             f"[{100 * lo:.2f}, {100 * hi:.2f}]  worst-class {100 * self.worst_class:.2f}% "
             f"(class {self.worst_class_index})  ({self.norm}, eps={self.eps:g}, n={self.n})")
        return s + "".join(f"\n  flag: {f}" for f in self.flags)


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
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
) -> RobustAccuracy:
    """Per-example worst case over an ensemble of attacks, run in sequence on the points still correct.

    ``attacks``: ``"standard"`` (APGD-CE → APGD-T → Square-5000), a name, an :class:`Attack` or a list.
    Attack ``i`` gets ``torch.Generator().manual_seed(seed + i)`` so the run is reproducible (AutoAttack
    seeds from the clock). Returns overall, per-class and worst-class robust accuracy, the per-example
    flags and a Clopper–Pearson interval (``confidence``). The model runs in eval mode throughout (its mode is
    restored); every attack must use ``eps`` and ``norm`` (a ValueError otherwise).
    Croce & Hein 2020, arXiv:2003.01690.
    """
    owner = "robust_accuracy"
    check_option(norm, "norm", NORMS, owner=owner)
    check_in_range(eps, "eps", 0.0, 1.0 if norm == "linf" else None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_int(seed, "seed", 0, None, owner=owner)
    check_in_range(confidence, "confidence", 0.0, 1.0, closed="neither", owner=owner)
    x, y, num_classes = as_tensors(data, n)
    device = model_device(model)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()  # every forward of the evaluation (clean, attacks, the final check) runs in eval mode
    try:
        return _robust_accuracy_eval(model, x, y, num_classes, attacks, eps=eps, norm=norm, batch_size=batch_size,
                                     seed=seed, confidence=confidence, suite_kw=suite_kw, device=device, t0=t0)
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


def _robust_accuracy_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None, attacks: Any,
                          *, eps: float, norm: str, batch_size: int, seed: int, confidence: float,
                          suite_kw: dict[str, Any] | None, device: torch.device, t0: float) -> RobustAccuracy:
    pred = _predict(model, x, batch_size, device)
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(x[:1].to(device)).shape[1])
    suite = resolve_attacks(attacks, eps=eps, norm=norm, num_classes=num_classes, suite_kw=suite_kw)
    _check_suite_threat_model(suite, eps, norm)
    clean = pred == y
    robust = clean.clone()
    per_attack: dict[str, float] = {}
    flags: list[str] = []
    white_box_done = False
    for i, attack in enumerate(suite):
        gen = torch.Generator(device=device).manual_seed(seed + i)
        idx = robust.nonzero().squeeze(1)
        before = int(idx.numel())
        for s in range(0, idx.numel(), batch_size):
            j = idx[s:s + batch_size]
            xb, yb = x[j].to(device), y[j].to(device)
            x_adv = attack(model, xb, yb, generator=gen)
            with torch.no_grad():
                ok = (model(x_adv).argmax(1) == yb).cpu()
            robust[j] = ok
        key = attack.name if attack.name not in per_attack else f"{attack.name}_{i}"
        per_attack[key] = float(robust.float().mean()) if robust.numel() else 0.0
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
        confidence=confidence, time_s=time.perf_counter() - t0, flags=flags,
    )
