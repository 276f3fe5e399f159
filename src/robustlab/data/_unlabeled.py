"""Unlabeled data from a shifted source: ``unlabeled_shifted(d, kind=..., severity=..., n=...)`` and the
two-Gaussian setting of Saberi et al., "Out-Of-Domain Unlabeled Data Improves Generalization" (ICLR 2024):
``gaussian_mixture_shift(...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .._validation import InvalidParameterError, check_bool, check_in_range, check_int
from ._base import ClassificationData

__all__ = ["GaussianMixtureShift", "UNLABELED_POOL_KEYS", "Unlabeled", "check_pool_spec", "gaussian_mixture_shift",
           "holdout_split", "shift_inputs", "split_and_shift", "unlabeled_shifted"]

#: shift kinds that work on any input shape (the corruptions of ``robustlab.shift`` need images)
FLAT_KINDS = ("none", "feature_noise")
#: The keys of an unlabeled pool given as a held-out, shifted part of a training split (the ``unlabeled``
#: option of ``robust_self_training`` in a spec or ``fit``; :func:`unlabeled_shifted` in Python), declared once:
#: ``kind``/``severity`` = the shift, ``n`` (count) or ``fraction`` (of the split, default 0.5) = how many
#: examples are held out (their labels dropped).
UNLABELED_POOL_KEYS = ("kind", "severity", "n", "fraction")


def check_pool_spec(spec: Any, owner: str) -> dict[str, Any]:
    """Validate a pool spec ``{"kind": str, "severity": number, "n": int | "fraction": (0, 1)}``; returns it
    with the defaults filled in (``severity`` 1, ``fraction`` 0.5 when neither ``n`` nor ``fraction``)."""
    accepted = "{'kind': str, 'severity': number >= 0, 'n': int >= 1 or 'fraction': number in (0, 1)}"
    if not isinstance(spec, dict) or sorted(set(spec) - set(UNLABELED_POOL_KEYS)) or not isinstance(spec.get("kind"),
                                                                                                    str):
        raise InvalidParameterError(f"The 'unlabeled' parameter of {owner}, given as a held-out shifted part of the "
                                    f"training split, takes {accepted}. Got {spec!r}.")
    out = {"kind": spec["kind"], "severity": check_in_range(spec.get("severity", 1), "severity", 0.0, None,
                                                            owner=f"{owner} unlabeled")}
    if spec.get("n") is not None and spec.get("fraction") is not None:
        raise InvalidParameterError(f"The 'unlabeled' parameter of {owner} takes 'n' or 'fraction', not both. "
                                    f"Got {spec!r}.")
    if spec.get("n") is not None:
        out["n"] = check_int(spec["n"], "n", 1, None, owner=f"{owner} unlabeled")
    else:
        out["fraction"] = float(check_in_range(spec.get("fraction", 0.5), "fraction", 0.0, 1.0, closed="neither",
                                               owner=f"{owner} unlabeled"))
    if out["kind"] not in FLAT_KINDS:
        from .. import shift

        shift.CORRUPTIONS.spec(out["kind"])  # unknown kind: "Did you mean" + the list
    return out


def holdout_split(y: torch.Tensor, n: int, generator: torch.Generator, *, stratify: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(kept, held_out)`` of a split of the ``len(y)`` examples with ``n`` held out: disjoint, sorted,
    together all of them, drawn from ``generator``.

    ``stratify=True``: each class (of the labels ``y``, noisy or not) gives its share of ``n`` (largest
    remainders, ties to the lower class) and keeps at least one example where it can, so both parts follow
    the class profile (long tails included). ``stratify=False``: a uniform random subset.
    """
    total = int(y.shape[0])
    if not 0 < n < total:
        raise InvalidParameterError(f"holdout_split: n must be in [1, {total - 1}] for {total} examples. Got {n}.")
    if not stratify:
        perm = torch.randperm(total, generator=generator)
        return perm[: total - n].sort().values, perm[total - n:].sort().values
    y = y.detach().cpu().long()
    classes = torch.unique(y).tolist()
    counts = {c: int((y == c).sum()) for c in classes}
    exact = {c: n * counts[c] / total for c in classes}
    quota = {c: min(math.floor(exact[c]), max(counts[c] - 1, 0)) for c in classes}
    order = sorted(classes, key=lambda c: (-(exact[c] - math.floor(exact[c])), c))
    for cap in (1, 0):  # first keep one labelled example per class, then only if n needs it
        for c in order * total:
            if sum(quota.values()) == n:
                break
            if quota[c] < counts[c] - cap:
                quota[c] += 1
    held = []
    for c in classes:
        idx = torch.nonzero(y == c).flatten()
        held.append(idx[torch.randperm(idx.numel(), generator=generator)[: quota[c]]])
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.cat(held)] = True
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()


def split_and_shift(x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any], seed: int, *, stratify: bool = True,
                    owner: str = "unlabeled_shifted") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The held-out pool of a validated :func:`check_pool_spec` ``spec`` from the split ``(x, y)``:
    ``(labelled_idx, unlabeled_idx, shifted_inputs)`` -- the split of :func:`holdout_split` and the shift,
    both from one generator seeded with ``seed``. Shared by :func:`unlabeled_shifted` and the spec route of
    ``robust_self_training``, so the two give the same pool for the same data, spec and seed."""
    total = int(x.shape[0])
    n = spec["n"] if "n" in spec else max(1, round(spec["fraction"] * total))
    if not 0 < n < total:
        raise InvalidParameterError(f"The unlabeled pool of {owner} holds out {n} of {total} training examples; "
                                    f"it must leave both parts non-empty (n in [1, {total - 1}]).")
    g = torch.Generator().manual_seed(int(seed))
    lab_idx, unl_idx = holdout_split(y, n, g, stratify=stratify)
    return lab_idx, unl_idx, _shift(x[unl_idx], spec["kind"], spec["severity"], g)


@dataclass
class Unlabeled:
    """Unlabeled inputs ``x`` (in [0, 1]) drawn from a shifted source.

    ``y_hidden`` are the true labels, kept for diagnostics (pseudo-label accuracy) only: training code
    never reads them. ``kind``/``severity`` name the shift.
    """

    x: torch.Tensor
    y_hidden: torch.Tensor
    kind: str
    severity: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _shift(x: torch.Tensor, kind: str, severity: float, g: torch.Generator) -> torch.Tensor:
    if kind == "none" or severity == 0:
        return x.clone()
    if kind == "feature_noise":  # severity s: Gaussian noise of std 0.1 s, clipped to [0, 1]
        return (x + 0.1 * severity * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp_(0.0, 1.0)
    from .. import shift

    if kind not in shift.CORRUPTIONS:
        shift.CORRUPTIONS.spec(kind)  # "Did you mean" + the list
    if x.dim() != 4:
        raise InvalidParameterError(
            f"The shift kind {kind!r} of unlabeled_shifted is an image corruption and needs inputs of shape "
            f"(N, C, H, W). Got sample shape {tuple(x.shape[1:])}; use kind in {FLAT_KINDS} for flat inputs.")
    sev = check_int(severity, "severity", 0, 5, owner="unlabeled_shifted")
    return shift.corrupt(x, kind, severity=sev, generator=g)


def shift_inputs(x: torch.Tensor, kind: str, severity: float, generator: torch.Generator) -> torch.Tensor:
    """The inputs ``x`` under the shift ``kind`` at ``severity`` (the shifts of :func:`unlabeled_shifted`), as a
    new tensor; ``generator`` draws its random numbers."""
    return _shift(x, kind, severity, generator)


def unlabeled_shifted(d: ClassificationData, *, kind: str = "rotate", severity: float = 3, n: int | None = None,
                      seed: int = 0, fraction: float | None = None,
                      stratify: bool = False) -> tuple[ClassificationData, Unlabeled]:
    """Split ``n`` training examples off ``d``, shift their inputs and drop their labels.

    Returns ``(labelled, unlabeled)``: ``labelled`` is ``d`` without those examples (disjoint from the
    unlabeled pool); ``unlabeled.x`` are their inputs after the shift ``kind`` at ``severity``: any
    corruption of :mod:`robustlab.shift` (``rotate``, ``translate``, ``gaussian_noise``, ..., severity
    0..5) for images, or ``feature_noise`` (Gaussian noise of std ``0.1 * severity``) / ``none`` (in-domain)
    for any shape. ``n`` (or ``fraction`` of the train split) defaults to half of it; ``seed`` picks the
    examples and the shift's random numbers; ``stratify=True`` holds out the same share of every class
    (:func:`holdout_split`) -- the pool that ``robust_self_training`` builds from a spec's
    ``unlabeled: {kind, severity, n | fraction}`` with the run's seed.

    Example::

        >>> from robustlab import data
        >>> lab, unl = data.unlabeled_shifted(data.load("digits"), kind="rotate", severity=2, n=500)
        >>> unl.x.shape, lab.x_train.shape[0] + 500 == data.load("digits").x_train.shape[0]
        (torch.Size([500, 1, 8, 8]), True)
    """
    owner = "unlabeled_shifted"
    if not isinstance(d, ClassificationData):
        raise InvalidParameterError(f"The 'd' parameter of {owner} must be a ClassificationData. Got {type(d).__name__}.")
    if not isinstance(kind, str):
        raise InvalidParameterError(f"The 'kind' parameter of {owner} must be a str. Got {kind!r} instead.")
    severity = check_in_range(severity, "severity", 0.0, None, owner=owner)
    total = int(d.x_train.shape[0])
    if n is not None and fraction is not None:
        raise InvalidParameterError(f"{owner} takes 'n' or 'fraction', not both. Got n={n!r}, fraction={fraction!r}.")
    if fraction is not None:
        fraction = float(check_in_range(fraction, "fraction", 0.0, 1.0, closed="neither", owner=owner))
        n = max(1, round(fraction * total))
    n = total // 2 if n is None else check_int(n, "n", 1, total - 1, owner=owner)
    seed = check_int(seed, "seed", 0, None, owner=owner)
    stratify = check_bool(stratify, "stratify", owner=owner)
    lab_idx, unl_idx, x = split_and_shift(d.x_train, d.y_train, {"kind": kind, "severity": severity, "n": n}, seed,
                                          stratify=stratify, owner=owner)
    meta = {"source": d.name, "kind": kind, "severity": severity, "seed": seed, "stratify": stratify}
    labelled = replace(d, x_train=d.x_train[lab_idx], y_train=d.y_train[lab_idx],
                       meta={**d.meta, "unlabeled_split": meta})
    return labelled, Unlabeled(x=x, y_hidden=d.y_train[unl_idx], kind=kind, severity=float(severity), meta=meta)


@dataclass
class GaussianMixtureShift:
    r"""The two-Gaussian setting: labels :math:`y \in \{0, 1\}`, :math:`x = s_y\mu + \sigma\varepsilon`
    (:math:`s_0 = -1, s_1 = +1`) in-domain; the unlabeled pool uses the shifted mean
    :math:`\mu' = \mu + \delta v` (:math:`v \perp \mu`, unit). Inputs are not scaled to [0, 1].

    ``bayes_error`` = :math:`\Phi(-\|\mu\|/\sigma)`, the error of the best (linear) in-domain classifier.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_unlabeled: torch.Tensor
    y_unlabeled_hidden: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mu: torch.Tensor
    mu_shifted: torch.Tensor
    sigma: float
    shift: float

    @property
    def bayes_error(self) -> float:
        r = float(self.mu.norm()) / self.sigma
        return 0.5 * math.erfc(r / math.sqrt(2.0))

    def error(self, w: torch.Tensor, b: float | torch.Tensor = 0.0) -> float:
        """Test error of the linear classifier :math:`1[w^\\top x + b > 0]` (class 1)."""
        pred = (self.x_test @ w.to(self.x_test) + b > 0).long()
        return float((pred != self.y_test).float().mean())


def gaussian_mixture_shift(*, dim: int = 50, n_labelled: int = 20, n_unlabeled: int = 1000, n_test: int = 5000,
                           snr: float = 1.5, shift: float = 0.0, sigma: float = 1.0,
                           seed: int = 0) -> GaussianMixtureShift:
    r"""Sample the Gaussian-mixture setting of Saberi et al. (ICLR 2024) with a controllable shift.

    :math:`\mu` is a random direction of norm ``snr * sigma``; the unlabeled pool's mean is
    :math:`\mu + \delta v` with :math:`\delta` = ``shift * ||mu||`` (``shift`` is relative: 0 = in-domain,
    1 = moved sideways by the signal's own length), :math:`v \perp \mu` random. Balanced classes.
    With ``n_labelled`` << ``dim`` the labelled-only estimate is poor (error ~ :math:`(d/m)^{1/2}` above
    Bayes); unlabeled data reduce it as long as the shift keeps the cluster structure.
    """
    owner = "gaussian_mixture_shift"
    dim = check_int(dim, "dim", 2, None, owner=owner)
    n_labelled = check_int(n_labelled, "n_labelled", 2, None, owner=owner)
    n_unlabeled = check_int(n_unlabeled, "n_unlabeled", 0, None, owner=owner)
    n_test = check_int(n_test, "n_test", 1, None, owner=owner)
    snr = float(check_in_range(snr, "snr", 0.0, None, closed="neither", owner=owner))
    shift = float(check_in_range(shift, "shift", 0.0, None, owner=owner))
    sigma = float(check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner=owner))
    seed = check_int(seed, "seed", 0, None, owner=owner)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(dim, generator=g, dtype=torch.float64)
    u /= u.norm()
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    v -= (v @ u) * u
    v /= v.norm()
    mu = snr * sigma * u
    mu_s = mu + shift * float(mu.norm()) * v

    def draw(n: int, mean: torch.Tensor, balanced: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 2) if balanced else torch.randint(0, 2, (n,), generator=g)
        y = y[torch.randperm(n, generator=g)]
        x = (2 * y - 1).to(torch.float64)[:, None] * mean + sigma * torch.randn(n, dim, generator=g, dtype=torch.float64)
        return x.float(), y.long()

    xl, yl = draw(n_labelled, mu, True)
    xt, yt = draw(n_test, mu, False)
    g = torch.Generator().manual_seed(seed + 7919)  # the pool's own stream: labelled/test samples do not move
    xu, yu = draw(n_unlabeled, mu_s, False)          # with n_unlabeled or shift (paired comparisons)
    return GaussianMixtureShift(xl, yl, xu, yu, xt, yt, mu.float(), mu_s.float(), sigma, shift)
