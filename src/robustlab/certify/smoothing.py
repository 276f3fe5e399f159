"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, arXiv:1902.02918).

The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, σ²I)) = c)`` is certified at ``x`` with
L2 radius ``R = σ Φ⁻¹(p_A)`` where ``p_A`` is a one-sided Clopper–Pearson lower bound on the
top-class probability. ``certify`` and ``predict`` follow the paper's CERTIFY and PREDICT exactly,
vectorised over a batch and over noise draws (one Python loop over chunks of ``batch_size`` forward
passes, none per sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import beta as _beta
from scipy.stats import binom as _binom
from scipy.stats import norm as _norm
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import check_finite, check_in_range, check_int, check_labels, check_option
from ._sampling import NOISE_MODES, counts_independent, counts_shared

__all__ = ["ABSTAIN", "SmoothedClassifier", "certified_accuracy_curve", "clopper_pearson_lower"]

ABSTAIN = -1


def clopper_pearson_lower(successes: torch.Tensor, trials: int, alpha: float) -> torch.Tensor:
    """One-sided (1 - α) Clopper–Pearson lower bound ``Beta⁻¹(α; k, n - k + 1)`` (0 when ``k = 0``)."""
    owner = "clopper_pearson_lower"
    trials = check_int(trials, "trials", 1, None, owner=owner)
    check_in_range(alpha, "alpha", 0.0, 1.0, closed="neither", owner=owner)
    k = torch.as_tensor(successes).detach().cpu().numpy().astype(np.float64)
    if k.size and (not np.all(np.isfinite(k)) or k.min() < 0 or k.max() > trials or np.any(k != np.round(k))):
        raise ValueError(f"The 'successes' parameter of {owner} must hold integer counts in [0, {trials}]. "
                         f"Got min {k.min():g}, max {k.max():g}.")
    with np.errstate(invalid="ignore"):
        p = _beta.ppf(alpha, np.maximum(k, 1.0), trials - k + 1.0)
    p = np.where(k > 0, p, 0.0)
    return torch.as_tensor(p, dtype=torch.float64)


def _device_dtype(model: object, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype the noisy copies are built in: the model's first floating parameter's, else ``x``'s."""
    if isinstance(model, nn.Module):
        params = list(model.parameters())
        dev = params[0].device if params else x.device
        floating = [p.dtype for p in params if p.dtype.is_floating_point]
        return dev, (floating[0] if floating else x.dtype)
    return x.device, x.dtype


def _binom_pvalue(n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Two-sided binomial test of ``n1`` successes in ``n1 + n2`` trials at p = 1/2 (symmetric: ``2 P(X <= min)``)."""
    n1, n2 = np.asarray(n1, dtype=np.int64), np.asarray(n2, dtype=np.int64)
    pval = np.minimum(1.0, 2.0 * _binom.cdf(np.minimum(n1, n2), n1 + n2, 0.5))
    return np.where(n1 + n2 > 0, pval, 1.0)


class SmoothedClassifier:
    """Gaussian-smoothed version of a base classifier ``model`` (logits -> argmax).

    ``predict`` (PREDICT) abstains unless a two-sided binomial test of the top-two counts rejects
    ``p = 1/2`` at level α; ``certify`` (CERTIFY) selects the class with ``n0`` draws, estimates its
    probability with ``n`` fresh draws, and returns ``(class, σ Φ⁻¹(p_A))`` or ``(-1, 0)`` when
    ``p_A < 1/2``. Reference defaults: ``n0=100, n=100_000, alpha=0.001``.

    ``noise="shared"`` (default) evaluates every point of a call at the same ``n`` Gaussian draws
    (each point's draws stay i.i.d., so its guarantee is unchanged; see ``certify/_sampling.py``) and
    draws the noise once per batch instead of once per point; ``noise="independent"`` draws a fresh
    vector for every (point, draw) pair as Cohen et al.'s code does. One point: both are identical.
    """

    def __init__(self, model: nn.Module, *, sigma: float, num_classes: int, noise: str = "shared") -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"The 'model' parameter of SmoothedClassifier must be an nn.Module. Got {type(model).__name__}.")
        self.model = model
        self.sigma = float(check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner="SmoothedClassifier"))
        self.num_classes = check_int(num_classes, "num_classes", 2, None, owner="SmoothedClassifier")
        self.noise = check_option(noise, "noise", NOISE_MODES, owner="SmoothedClassifier")

    def __repr__(self) -> str:
        return f"SmoothedClassifier(sigma={self.sigma}, num_classes={self.num_classes}, noise={self.noise!r})"

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_counts(
        self, x: torch.Tensor, num: int, *, batch_size: int = 1000, generator: torch.Generator | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Counts (N, C) of the base classifier's argmax over ``num`` noisy copies of each input.

        All ``N * num`` (sample, draw) pairs are laid out flat and evaluated ``batch_size`` at a time.
        ``x`` must be finite; a model returning NaN/Inf logits raises. ``progress``: a bar over the draws.
        """
        owner = "SmoothedClassifier.sample_counts"
        check_int(num, "num", 1, None, owner=owner)
        check_int(batch_size, "batch_size", 1, None, owner=owner)
        self._check_x(x, owner)
        check_progress(progress, owner=owner)
        with progress_bar(total=x.shape[0] * num, desc=f"smoothing: {x.shape[0]} points x {num} draws",
                          enabled=progress, unit="draw") as bar:
            return self._counts(x, num, batch_size, generator, bar)

    @staticmethod
    def _check_x(x: object, owner: str) -> None:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
            raise TypeError(f"'x' of {owner} must be a floating-point batch of shape (N, ...). Got {getattr(x, 'shape', type(x))}.")
        check_finite(x, "x", owner=owner)

    def _counts(self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None,
                bar: object) -> torch.Tensor:
        model = self.model
        was = getattr(model, "training", False)
        if isinstance(model, nn.Module):
            model.eval()
        dev, dtype = _device_dtype(model, x)
        count = counts_shared if self.noise == "shared" else counts_independent
        try:
            return count(model, x.to(device=dev, dtype=dtype), num, self.sigma, self.num_classes, batch_size,
                         generator, bar)
        finally:
            if isinstance(model, nn.Module):
                model.train(was)

    # -- PREDICT / CERTIFY -------------------------------------------------------------------------
    def predict(
        self, x: torch.Tensor, *, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
        generator: torch.Generator | None = None, progress: bool | None = None,
    ) -> torch.Tensor:
        """PREDICT: class (N,) of the smoothed classifier, ``-1`` where the binomial test does not pass.

        With probability ≥ 1 - α a returned class equals ``g(x)``. The two-sided binomial p-value of
        ``n1`` successes in ``n1 + n2`` trials at ``p = 1/2`` is ``min(1, 2 P(X <= n2))``. ``x`` must be
        finite; ``progress``: a bar over the ``N * n`` noise draws (``None``: when stderr is a TTY).
        """
        check_in_range(alpha, "alpha", 0.0, 1.0, closed="neither", owner="SmoothedClassifier.predict")
        counts = self.sample_counts(x, n, batch_size=batch_size, generator=generator, progress=progress)
        top2 = counts.topk(2, dim=1)
        pval = _binom_pvalue(top2.values[:, 0].cpu().numpy(), top2.values[:, 1].cpu().numpy())
        cls = top2.indices[:, 0].cpu().clone()
        cls[torch.as_tensor(pval > alpha)] = ABSTAIN
        return cls

    def certify(
        self, x: torch.Tensor, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
        generator: torch.Generator | None = None, progress: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY: ``(classes, radii)`` of shape (N,); class -1 and radius 0 on abstention.

        Selection with ``n0`` draws, estimation with ``n`` fresh draws, ``p_A`` = one-sided
        Clopper–Pearson lower bound at level 1 - α, radius ``σ Φ⁻¹(p_A)`` if ``p_A >= 1/2``. ``x`` must
        be finite. ``progress``: one bar over all ``N * (n0 + n)`` noise draws (``None``: when stderr is a TTY).
        """
        owner = "SmoothedClassifier.certify"
        check_int(n0, "n0", 1, None, owner=owner)
        check_int(n, "n", 1, None, owner=owner)
        check_int(batch_size, "batch_size", 1, None, owner=owner)
        check_in_range(alpha, "alpha", 0.0, 1.0, closed="neither", owner=owner)
        self._check_x(x, owner)
        check_progress(progress, owner=owner)
        with progress_bar(total=x.shape[0] * (n0 + n), desc=f"smoothing certify: {x.shape[0]} points x {n0}+{n} draws",
                          enabled=progress, unit="draw") as bar:
            c_hat = self._counts(x, n0, batch_size, generator, bar).argmax(1)
            counts = self._counts(x, n, batch_size, generator, bar)
        n_a = counts.gather(1, c_hat[:, None]).squeeze(1)
        p_a = clopper_pearson_lower(n_a, n, alpha)
        radius = torch.as_tensor(self.sigma * _norm.ppf(p_a.numpy()), dtype=torch.float64)
        abstain = p_a < 0.5
        classes = torch.where(abstain, torch.full_like(c_hat.cpu(), ABSTAIN), c_hat.cpu())
        radius = torch.where(abstain, torch.zeros_like(radius), radius).to(torch.float32)
        return classes, radius

    def certify_data(self, data: object, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                     batch_size: int = 1000, points_per_call: int = 256, generator: torch.Generator | None = None,
                     progress: bool | None = None) -> object:
        """CERTIFY over every example of ``data`` (ClassificationData, ``(x, y)``, torch Dataset/DataLoader or
        StreamingData), ``points_per_call`` at a time: a :class:`~robustlab.certify._data.SmoothingCertificates`
        (``classes``, ``radii``, ``y``, ``accuracy(radius_grid)``); in memory and streamed give the same numbers."""
        from ._data import smoothing_certify_data

        return smoothing_certify_data(self, data, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                                      points_per_call=points_per_call, generator=generator, progress=progress)


def certified_accuracy_curve(
    classes: torch.Tensor, radii: torch.Tensor, y: torch.Tensor, radius_grid: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Certified accuracy at each radius ``r``: fraction of points with correct class and radius ≥ r."""
    owner = "certified_accuracy_curve"
    if not isinstance(y, torch.Tensor) or not isinstance(classes, torch.Tensor) or not isinstance(radii, torch.Tensor) \
            or not (classes.shape == radii.shape == y.shape) or y.dim() != 1:
        raise ValueError(f"'classes', 'radii' and 'y' of {owner} must be tensors of one shape (N,). Got "
                         f"{getattr(classes, 'shape', classes)}, {getattr(radii, 'shape', radii)}, {getattr(y, 'shape', y)}.")
    check_labels(y[:0], 1, owner=owner)  # integer dtype; negative labels below
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"'y' of {owner} holds negative labels (min {int(y.min())}); class indices are >= 0.")
    if bool(torch.isnan(radii).any()):
        raise ValueError(f"'radii' of {owner} contains NaN values.")
    grid = torch.as_tensor(list(radius_grid) if not isinstance(radius_grid, torch.Tensor) else radius_grid, dtype=torch.float32)
    correct = (classes.cpu() == y.cpu())
    return ((radii.cpu()[None, :] >= grid[:, None]) & correct[None, :]).float().mean(1)
