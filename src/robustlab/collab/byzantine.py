"""Byzantine behaviours: what the f Byzantine workers send, given what the honest workers computed.

A vector behaviour is ``b(honest, f, generator) -> (f, d)`` with ``honest`` the ``(h, d)`` stack of honest
vectors of the round (the attacker is omniscient, as in the literature). ``label_flip`` acts on data instead:
its workers run the honest algorithm on labels ``y -> C − 1 − y`` (:meth:`Behaviour.transform_labels`).
Registry :data:`BYZANTINE`; ``get(name, **options)`` builds one.

>>> import torch
>>> b = get("sign_flip")
>>> b(torch.ones(3, 2), 2, torch.Generator().manual_seed(0))
tensor([[-1., -1.],
        [-1., -1.]])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._registry import Registry
from .._validation import InvalidParameterError, check_in_range, check_int

__all__ = ["BYZANTINE", "Behaviour", "alie", "alie_z", "available", "gaussian", "get", "ipm", "mimic", "sign_flip"]

BYZANTINE: Registry[Behaviour] = Registry("byzantine behaviour", checks="robustlab.testing._byzantine")


def _check(honest: Any, f: Any, name: str) -> int:
    if not isinstance(honest, torch.Tensor) or honest.ndim != 2 or not honest.is_floating_point() or honest.shape[0] < 1:
        shape = tuple(honest.shape) if isinstance(honest, torch.Tensor) else type(honest).__name__
        raise InvalidParameterError(f"The 'honest' parameter of {name} must be a float tensor of shape (h, d) with "
                                    f"h >= 1 honest vectors. Got {shape} instead.")
    return check_int(f, "f", 0, None, owner=name)


def _mean(honest: torch.Tensor) -> torch.Tensor:
    return honest.to(torch.float64).mean(0)


def sign_flip(honest: torch.Tensor, f: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Send the negated honest mean (Allen-Zhu et al., ICLR 2021; MoNNA code ``signflipping.py``)."""
    f = _check(honest, f, "sign_flip")
    return (-_mean(honest)).to(honest.dtype).expand(f, -1).clone()


def gaussian(honest: torch.Tensor, f: int, generator: torch.Generator | None = None, sigma: float = 200.0) -> torch.Tensor:
    """Send independent N(0, σ² I) vectors (Blanchard et al., NeurIPS 2017, Gaussian Byzantine workers)."""
    f = _check(honest, f, "gaussian")
    check_in_range(sigma, "sigma", 0.0, None, closed="left", owner="gaussian")
    return sigma * torch.randn(f, honest.shape[1], generator=generator, dtype=honest.dtype)


def alie_z(n: int, f: int) -> float:
    """z_max of *A Little Is Enough* (Baruch et al., NeurIPS 2019): s = ⌊n/2 + 1⌋ − f, z = Φ⁻¹((n − s) / n)."""
    s = math.floor(n / 2 + 1) - f
    p = min(max((n - s) / n, 1e-12), 1 - 1e-12)
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p, dtype=torch.float64)))


def alie(honest: torch.Tensor, f: int, generator: torch.Generator | None = None, z: float | None = None) -> torch.Tensor:
    """*A Little Is Enough* (Baruch et al., NeurIPS 2019): mean + z · coordinate-wise std of the honest vectors,
    with z = :func:`alie_z` (n = h + f) unless given."""
    f = _check(honest, f, "alie")
    h = honest.shape[0]
    z = alie_z(h + f, f) if z is None else float(check_in_range(z, "z", None, None, owner="alie"))
    h64 = honest.to(torch.float64)
    sd = h64.std(0, unbiased=False) if h > 1 else torch.zeros_like(h64[0])
    return (h64.mean(0) + z * sd).to(honest.dtype).expand(f, -1).clone()


def ipm(honest: torch.Tensor, f: int, generator: torch.Generator | None = None, epsilon: float = 0.1) -> torch.Tensor:
    """Inner-product manipulation (Xie, Koyejo & Gupta, UAI 2019): send −ε · honest mean."""
    f = _check(honest, f, "ipm")
    check_in_range(epsilon, "epsilon", 0.0, None, closed="left", owner="ipm")
    return (-epsilon * _mean(honest)).to(honest.dtype).expand(f, -1).clone()


def mimic(honest: torch.Tensor, f: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mimic (Karimireddy, He & Jaggi, ICLR 2022): all f copy the honest worker farthest along the honest vectors'
    top principal direction, over-representing it (ties: the lowest index)."""
    f = _check(honest, f, "mimic")
    h64 = honest.to(torch.float64)
    centred = h64 - h64.mean(0)
    if honest.shape[0] < 2 or float(centred.abs().max()) == 0.0:
        i = 0
    else:
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        i = int((centred @ v).abs().argmax())
    return honest[i].expand(f, -1).clone()


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``y -> C − 1 − y`` (MoNNA code ``labelflipping.py``; Allen-Zhu et al., ICLR 2021)."""
    c = check_int(num_classes, "num_classes", 2, None, owner="label_flip")
    if y.dtype != torch.int64 or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= c)):
        raise InvalidParameterError(f"The 'y' parameter of label_flip must hold int64 labels in [0, {c}).")
    return (c - 1) - y


@dataclass(frozen=True)
class Behaviour:
    """A registered Byzantine behaviour with options bound.

    ``kind="vector"``: ``b(honest, f, generator) -> (f, d)``. ``kind="data"``: the workers are honest on
    transformed labels (:meth:`transform_labels`); calling it is an error.
    """

    name: str
    fn: Callable[..., torch.Tensor] | None
    kind: str = "vector"
    options: dict[str, Any] = field(default_factory=dict)
    label_fn: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    def __call__(self, honest: torch.Tensor, f: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.fn is None:
            raise InvalidParameterError(f"The Byzantine behaviour '{self.name}' acts on data (labels), not on vectors; "
                                        "use transform_labels on the Byzantine workers' data.")
        return self.fn(honest, f, generator, **self.options)

    def transform_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The labels a Byzantine worker trains on (unchanged for vector behaviours)."""
        return y if self.label_fn is None else self.label_fn(y, num_classes)


def _register(name: str, fn: Callable[..., torch.Tensor] | None, reference: str, *, kind: str = "vector",
              label_fn: Callable[[torch.Tensor, int], torch.Tensor] | None = None, doc: str = "") -> None:
    import inspect

    params = inspect.signature(fn).parameters if fn is not None else {}
    accepted = list(params)[3:]

    def factory(**options: Any) -> Behaviour:
        bad = [k for k in options if k not in accepted]
        if bad:
            raise InvalidParameterError(f"Unknown option(s) {bad} for Byzantine behaviour '{name}'. "
                                        f"Accepted: {', '.join(accepted) or '(none)'}.")
        return Behaviour(name, fn, kind, dict(options), label_fn)

    factory.__doc__ = doc or (fn.__doc__ if fn is not None else "")
    factory.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=params[k].default) for k in accepted])
    BYZANTINE.register(name, tags=(kind,), reference=reference)(factory)


_register("sign_flip", sign_flip, "Allen-Zhu et al., ICLR 2021 (arXiv:2012.14368); MoNNA code attacks/signflipping.py")
_register("gaussian", gaussian, "Blanchard et al., NeurIPS 2017")
_register("alie", alie, "Baruch, Baruch & Goldberg, A Little Is Enough, NeurIPS 2019 (arXiv:1902.06156)")
_register("ipm", ipm, "Xie, Koyejo & Gupta, Fall of Empires, UAI 2019 (arXiv:1903.03936)")
_register("mimic", mimic, "Karimireddy, He & Jaggi, ICLR 2022 (arXiv:2006.09365)")
_register("label_flip", None, "Allen-Zhu et al., ICLR 2021; MoNNA code attacks/labelflipping.py", kind="data",
          label_fn=flip_labels, doc="Byzantine workers train honestly on flipped labels y -> C - 1 - y.")


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered Byzantine behaviours."""
    return BYZANTINE.available(pattern, tags=tags)


def get(name: str, **options: Any) -> Behaviour:
    """The behaviour ``name`` with ``options`` bound."""
    return BYZANTINE.get(name, **options)
