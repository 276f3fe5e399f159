"""Label noise: ``inject(y, *, kind, rate, num_classes, generator=None, x=None, transition=None)``.

Kinds (registry ``NOISES``; ``available()`` lists them):

- ``symmetric``: flip to a uniformly chosen *other* class with probability ``rate``.
- ``uniform``: replace by a uniformly chosen class among all C (possibly the true one; the LDR paper's
  "uniform" noise), so the expected changed fraction is ``rate (C - 1) / C``.
- ``pairflip``: flip ``i -> (i + 1) mod C`` with probability ``rate``.
- ``asymmetric``: the literature's class maps with probability ``rate``: ``dataset="mnist"``
  (2→7, 3→8, 5↔6, 7→1), ``dataset="cifar10"`` (truck→automobile, bird→airplane, deer→horse, cat↔dog),
  ``dataset="letter"`` (LDR swaps), ``dataset="cifar100"`` (circular flips within each of the 20
  superclasses; ``"cifar100_consecutive"``: the reference code's consecutive-id groups), default generic
  next-class map (= ``pairflip``), or ``mapping=``.
- ``instance``: instance-dependent, part-dependent noise driven by features ``x`` (Xia et al., 2020).
- ``transition``: any row-stochastic C x C matrix (``rate`` left ``None``).

All kinds are vectorised (one categorical draw per sample from its transition row), use only the
given ``generator`` (same generator state -> same labels) and return the identity at rate 0.

>>> import torch
>>> y = torch.arange(10) % 5
>>> out = inject(y, kind="symmetric", rate=0.0, num_classes=5)
>>> bool((out.labels == y).all()), out.realized_rate
(True, 0.0)
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import InvalidParameterError
from . import (
    _class_conditional,  # noqa: F401  (registers)
    _instance,  # noqa: F401  (registers)
)
from ._base import NOISES, NoiseModel, NoisyLabels, register_noise
from ._class_conditional import ASYMMETRIC_MAPS
from ._targets import TARGET_NOISES, NoisyTargets, inject_targets  # regression target noise (own registry)

__all__ = ["ASYMMETRIC_MAPS", "NOISES", "NoiseModel", "NoisyLabels", "available", "get", "inject", "parse",
           "register_noise"]
__all__ += ["TARGET_NOISES", "NoisyTargets", "inject_targets", "kind_spec"]


def kind_spec(kind: str) -> Any:
    """The spec of a label-noise kind (``NOISES``) or, failing that, of a regression target-noise kind."""
    if isinstance(kind, str) and kind not in NOISES and kind in TARGET_NOISES:
        return TARGET_NOISES.spec(kind)
    if isinstance(kind, str) and kind not in NOISES:
        import difflib

        from .._registry import UnknownNameError

        names = NOISES.available() + TARGET_NOISES.available()
        close = difflib.get_close_matches(kind, names, n=1, cutoff=0.5)
        raise UnknownNameError(f"Unknown noise kind {kind!r}." + (f" Did you mean '{close[0]}'?" if close else "")
                               + f" Label noise: {', '.join(NOISES.available())}; regression target noise: "
                               f"{', '.join(TARGET_NOISES.available())}.")
    return NOISES.spec(kind)


def available(pattern: str = "*", *, tags: tuple[str, ...] = ()) -> list[str]:
    """Registered noise kinds."""
    return NOISES.available(pattern, tags=tags)


def get(kind: str, **kwargs: Any) -> NoiseModel:
    """Build the noise process ``kind`` (``rate=``, ``num_classes=``, kind options); call it on labels."""
    return NOISES.get(kind, **kwargs)


def inject(
    y: torch.Tensor,
    *,
    kind: str,
    rate: float | None = None,
    num_classes: int,
    generator: torch.Generator | None = None,
    x: torch.Tensor | None = None,
    transition: Any = None,
    **options: Any,
) -> NoisyLabels:
    """Corrupt the labels ``y`` (N,) with the noise ``kind`` at flip ``rate`` in [0, 1).

    ``x`` (N, ...) is required by ``instance``; ``transition`` (C, C) by ``transition`` (where
    ``rate`` stays ``None``). ``options`` go to the kind (``asymmetric``: ``dataset``/``mapping``;
    ``instance``: ``std``). Returns :class:`NoisyLabels` ``(labels, is_noisy, transition, realized_rate)``
    with ``realized_rate`` the fraction of changed labels.
    """
    if not isinstance(kind, str):
        raise InvalidParameterError(f"The 'kind' parameter of inject must be a str. Got {kind!r} instead.")
    spec = NOISES.spec(kind)
    if "needs_transition" in spec.tags:
        model = spec.create(rate=rate, num_classes=num_classes, transition=transition, **options)
    else:
        if transition is not None:
            raise InvalidParameterError(
                f"The 'transition' parameter of inject is only used with kind='transition'. Got kind={kind!r}."
            )
        if rate is None:
            raise InvalidParameterError("The 'rate' parameter of inject must be a float in [0, 1). Got None instead.")
        model = spec.create(rate=rate, num_classes=num_classes, **options)
    return model(y, x=x, generator=generator)


def parse(text: str) -> tuple[str, float]:
    """Parse ``"kind:rate"`` (e.g. ``"symmetric:0.4"``) into ``(kind, rate)``; ``"none"``/``"clean"`` -> ``("symmetric", 0.0)``.

    The kind must be registered (error lists the kinds) and the rate a float in [0, 1).
    """
    if not isinstance(text, str):
        raise InvalidParameterError(f"A noise spec must be a str like 'symmetric:0.4'. Got {text!r} instead.")
    s = text.strip()
    if s.lower() in ("none", "clean"):
        return "symmetric", 0.0
    kind, sep, rate_s = s.partition(":")
    if not sep:
        raise InvalidParameterError(
            f"A noise spec must look like 'KIND:RATE' (e.g. 'symmetric:0.4') or 'none'. Got {text!r} instead. "
            f"Kinds: {', '.join(available())}."
        )
    kind_spec(kind.strip())  # unknown kind -> "Did you mean" + the list
    try:
        rate = float(rate_s)
    except ValueError:
        raise InvalidParameterError(
            f"The rate in noise spec {text!r} must be a float in [0, 1). Got {rate_s!r} instead."
        ) from None
    if not 0.0 <= rate < 1.0:
        raise InvalidParameterError(f"The rate in noise spec {text!r} must be a float in [0, 1). Got {rate_s} instead.")
    return kind.strip(), rate
