"""Robust conformal prediction under L2 perturbations: RSCP+ with PTT (Yan, Romano & Weng, ICLR 2024).

The score is smoothed over Gaussian noise, ``S̃(x, y) = E S(x + N(0, σ²I), y)`` with ``S`` in [0, 1],
so ``x ↦ Φ⁻¹(S̃(x, y))`` is 1/σ-Lipschitz and an L2 perturbation of size ``ε`` moves it by at most
``ε/σ`` (Salman et al. 2019; RSCP, Gendler et al. 2022). RSCP+ treats the Monte-Carlo estimate as the
score: calibrate at ``α − 2β``, widen the threshold by the Hoeffding term
``b_H = sqrt(ln(1/β) / (2 n_mc))`` and shrink each test score by the empirical-Bernstein term
``b_B = sqrt(2 V̂ ln(2/β) / n_mc) + 7 ln(2/β) / (3 (n_mc − 1))``:
``C⁺(x̃) = {y : Φ⁻¹(max(Ŝ(x̃, y) − b_B, 0)) − ε/σ <= Φ⁻¹(min(τ + b_H, 1))}``, coverage ≥ 1 − α for
every ``||δ||₂ <= ε``. PTT (post-training transformation) maps the base score through its rank
among held-out scores, then a sigmoid ``1 / (1 + exp(−T (s − b)))``, before smoothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from scipy.stats import norm as _norm
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import (
    NotCalibratedError,
    check_bool,
    check_finite,
    check_in_range,
    check_int,
    check_labels,
)
from ._scores import Score, get_score
from ._split import conformal_quantile

__all__ = ["RobustConformal"]


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise from ``generator`` (drawn on the generator's device, then moved)."""
    if generator is None or generator.device == device:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


class RobustConformal:
    """RSCP+ robust conformal sets for ``model`` (logits) against L2 perturbations of size ``eps``.

    ``calibrate(x, y, generator=)`` (clean calibration inputs in [0, 1]) then
    ``predict_sets(x, generator=)`` -> boolean (N, C). ``score`` in {thr, aps, raps} (scaled to
    [0, 1]); ``ptt=True`` holds out ``n_holdout`` calibration points for the rank transform
    (``ptt_temperature`` T = 400, ``ptt_bias`` b = 0.9). Defaults follow the RSCP+ scripts: α = 0.1,
    β = 0.001, n_mc = 256. Needs α > 2β.
    """

    def __init__(
        self, model: nn.Module, *, sigma: float, eps: float, score: str | Score = "aps", alpha: float = 0.1,
        beta: float = 0.001, n_mc: int = 256, ptt: bool = True, ptt_temperature: float = 400.0, ptt_bias: float = 0.9,
        n_holdout: int = 500, batch_size: int = 4096, score_kw: dict[str, Any] | None = None,
    ) -> None:
        owner = "RobustConformal"
        if not isinstance(model, nn.Module):
            raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__}.")
        self.model = model
        self.sigma = float(check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner=owner))
        self.eps = float(check_in_range(eps, "eps", 0.0, None, owner=owner))
        self.alpha = float(check_in_range(alpha, "alpha", 0.0, 1.0, closed="neither", owner=owner))
        self.beta = float(check_in_range(beta, "beta", 0.0, 1.0, closed="neither", owner=owner))
        if self.alpha - 2 * self.beta <= 0:
            raise ValueError(f"RobustConformal needs alpha > 2 * beta. Got alpha={alpha}, beta={beta}.")
        self.n_mc = check_int(n_mc, "n_mc", 2, None, owner=owner)
        self.ptt = check_bool(ptt, "ptt", owner=owner)
        self.ptt_temperature = float(check_in_range(ptt_temperature, "ptt_temperature", 0.0, None, closed="neither", owner=owner))
        self.ptt_bias = float(check_in_range(ptt_bias, "ptt_bias", 0.0, 1.0, owner=owner))
        self.n_holdout = check_int(n_holdout, "n_holdout", 1, None, owner=owner)
        self.batch_size = check_int(batch_size, "batch_size", 1, None, owner=owner)
        self.score = get_score(score, **(score_kw or {}))
        self.reference_: torch.Tensor | None = None
        self.threshold_: float | None = None

    def __repr__(self) -> str:
        return (f"RobustConformal(sigma={self.sigma}, eps={self.eps}, score={self.score!r}, alpha={self.alpha}, "
                f"beta={self.beta}, n_mc={self.n_mc}, ptt={self.ptt})")

    # -- Monte-Carlo bounds ---------------------------------------------------------------------
    @property
    def hoeffding(self) -> float:
        """``b_H = sqrt(ln(1/β) / (2 n_mc))``."""
        return math.sqrt(math.log(1.0 / self.beta) / (2.0 * self.n_mc))

    def bernstein(self, var: torch.Tensor) -> torch.Tensor:
        """Empirical-Bernstein half-width ``sqrt(2 V̂ ln(2/β)/n) + 7 ln(2/β) / (3 (n − 1))``."""
        lg = math.log(2.0 / self.beta)
        return torch.sqrt(2.0 * var.clamp(min=0) * lg / self.n_mc) + 7.0 * lg / (3.0 * (self.n_mc - 1))

    def _transform(self, s: torch.Tensor, num_classes: int) -> torch.Tensor:
        s = s / self.score.upper(num_classes)
        if self.ptt and self.reference_ is not None:
            ref = self.reference_.to(s.device)
            rank = torch.searchsorted(ref, s.contiguous(), right=True).to(s.dtype) / ref.numel()
            s = torch.sigmoid(self.ptt_temperature * (rank - self.ptt_bias))
        return s

    @staticmethod
    def _check_x(x: Any, owner: str) -> None:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
            raise TypeError(f"'x' of {owner} must be a floating-point batch (N, ...). Got {getattr(x, 'shape', type(x))}.")
        check_finite(x, "x", owner=owner)

    @torch.no_grad()
    def _num_classes(self, x: torch.Tensor) -> int:
        """The model's output width, from one eval-mode forward pass on ``x[:1]`` (no random draws)."""
        model = self.model
        was = model.training
        model.eval()
        dev = next((p.device for p in model.parameters()), x.device)
        try:
            out = model(x[:1].to(dev))
        finally:
            model.train(was)
        if out.dim() != 2 or out.shape[1] < 2:
            raise ValueError(f"RobustConformal needs a model returning (N, C) logits with C >= 2. Got shape {tuple(out.shape)}.")
        return int(out.shape[1])

    @torch.no_grad()
    def smoothed_scores(self, x: torch.Tensor, *, generator: torch.Generator | None = None,
                        progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Monte-Carlo mean and unbiased variance (N, C) of the (transformed) score of every label.

        ``n_mc`` Gaussian draws per input, all (input, draw) pairs evaluated ``batch_size`` at a time.
        ``progress``: a bar over the N·n_mc noisy copies (``None``: when stderr is a TTY).
        """
        self._check_x(x, "RobustConformal")
        check_progress(progress, owner="RobustConformal")
        if x.shape[0] == 0:
            empty = torch.zeros(0, self._num_classes(x))
            return empty, empty.clone()
        model = self.model
        was = model.training
        model.eval()
        dev = next((p.device for p in model.parameters()), x.device)
        x = x.to(dev)
        n, m = x.shape[0], self.n_mc
        total = n * m
        sums: torch.Tensor | None = None
        sq: torch.Tensor | None = None
        bar = progress_bar(total=total, desc=f"robust conformal Monte-Carlo (n_mc={m})", enabled=progress, unit="draw")
        try:
            for start in range(0, total, self.batch_size):
                flat = torch.arange(start, min(start + self.batch_size, total), device=dev)
                idx = flat // m
                noise = _randn((flat.shape[0], *x.shape[1:]), generator, dev, x.dtype)
                logits = model(x[idx] + self.sigma * noise)
                check_finite(logits, "model output", owner="RobustConformal")
                probs = logits.float().softmax(1)
                s = self._transform(self.score(probs, generator=generator), probs.shape[1]).double()
                if sums is None or sq is None:
                    sums = torch.zeros(n, probs.shape[1], dtype=torch.float64, device=dev)
                    sq = torch.zeros_like(sums)
                sums.index_add_(0, idx, s)
                sq.index_add_(0, idx, s * s)
                bar.update(flat.shape[0])
        finally:
            bar.close()
            model.train(was)
        assert sums is not None and sq is not None
        mean = sums / m
        var = ((sq - m * mean * mean) / (m - 1)).clamp(min=0)
        return mean.float(), var.float()

    # -- calibrate / predict ------------------------------------------------------------------------
    def calibrate(self, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None,
                  progress: bool | None = None) -> RobustConformal:
        """Fit PTT (on a held-out part) and the RSCP+ threshold on clean calibration data; returns ``self``.

        ``x``: finite inputs (N, ...); ``y``: (N,) class indices of any integer dtype.
        """
        owner = "RobustConformal.calibrate"
        self._check_x(x, owner)
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"'y' of {owner} must have shape ({x.shape[0]},). Got {getattr(y, 'shape', y)}.")
        check_labels(y, self._num_classes(x), owner=owner)
        self.reference_ = None
        if self.ptt:
            k = min(self.n_holdout, x.shape[0] // 2)
            if k < 1:
                raise ValueError("RobustConformal with ptt=True needs at least 2 calibration points.")
            gdev = generator.device if generator is not None else torch.device("cpu")
            perm = torch.randperm(x.shape[0], generator=generator, device=gdev).cpu()  # never the global RNG
            hold, rest = perm[:k], perm[k:]
            self.reference_ = self._reference(x[hold], y[hold], generator)
            x, y = x[rest], y[rest]
        mean, _ = self.smoothed_scores(x, generator=generator, progress=progress)
        cal = mean.gather(1, y.to(mean.device).long()[:, None]).squeeze(1)
        tau = float(conformal_quantile(cal, self.alpha - 2 * self.beta))
        self.threshold_ = tau
        self.num_classes_ = int(mean.shape[1])
        self.n_calibration_ = int(y.shape[0])
        return self

    def calibrate_data(self, data: Any, *, generator: torch.Generator | None = None, progress: bool | None = None,
                       points_per_batch: int = 256) -> RobustConformal:
        """:meth:`calibrate` on ``data``: a ClassificationData (test split), ``(x, y)``, a torch Dataset / DataLoader
        or a StreamingData; returns ``self``.

        Streamed data give the in-memory numbers: the PTT hold-out (at most ``n_holdout`` points) is read into
        memory, the rest is read in batches of about ``points_per_batch`` points sized so that their
        (point, draw) pairs fall into the same ``batch_size`` chunks as one in-memory call (same random draws).
        """
        from ..data._stream import take
        from ._data import source, tensors

        owner = "RobustConformal.calibrate_data"
        check_int(points_per_batch, "points_per_batch", 1, None, owner=owner)
        src = source(data, owner)
        if not src.streaming:
            return self.calibrate(*tensors(data, owner), generator=generator, progress=progress)
        if src.n == 0:
            raise ValueError(f"The data passed to {owner} hold no examples.")
        num_classes = self._num_classes(src.head(1)[0])
        self.reference_ = None
        rest: Any = data
        n_cal = src.n
        if self.ptt:
            k = min(self.n_holdout, src.n // 2)
            if k < 1:
                raise ValueError("RobustConformal with ptt=True needs at least 2 calibration points.")
            gdev = generator.device if generator is not None else torch.device("cpu")
            perm = torch.randperm(src.n, generator=generator, device=gdev).cpu()  # as calibrate: same draws
            xh, yh = self._read(take(data, perm[:k], owner=owner), owner)
            check_labels(yh, num_classes, owner=owner)
            self.reference_ = self._reference(xh, yh, generator)
            rest, n_cal = take(data, perm[k:], owner=owner), src.n - k
        means, ys = [], []
        step = self._aligned(points_per_batch)
        with progress_bar(total=n_cal, desc=f"robust conformal calibration (n_mc={self.n_mc})", enabled=progress,
                          unit="pt") as bar:
            for xb, yb, _ in source(rest, owner).batches(step):
                check_labels(yb, num_classes, owner=owner)
                means.append(self.smoothed_scores(xb, generator=generator, progress=False)[0])
                ys.append(yb.long())
                bar.update(int(yb.shape[0]))
        mean, y = torch.cat(means), torch.cat(ys)
        cal = mean.gather(1, y.to(mean.device)[:, None]).squeeze(1)
        self.threshold_ = float(conformal_quantile(cal, self.alpha - 2 * self.beta))
        self.num_classes_ = int(mean.shape[1])
        self.n_calibration_ = int(y.shape[0])
        return self

    def evaluate(self, data: Any, *, generator: torch.Generator | None = None, progress: bool | None = None,
                 points_per_batch: int = 256) -> Any:
        """RSCP+ sets on ``data`` (any form, as :meth:`calibrate_data`) and their metrics: a
        :class:`~robustlab.conformal.SetEvaluation`. Streamed data are read as in :meth:`calibrate_data` and give
        the in-memory sets."""
        from ._data import evaluate_sets, source, tensors

        owner = "RobustConformal.evaluate"
        check_int(points_per_batch, "points_per_batch", 1, None, owner=owner)
        src = source(data, owner)
        if not src.streaming:
            x, y = tensors(data, owner)
            return evaluate_sets(self.predict_sets(x, generator=generator, progress=progress), y)
        if self.threshold_ is None:
            raise NotCalibratedError("This RobustConformal is not calibrated yet; call .calibrate_data(data) first.")
        sets, ys = [], []
        with progress_bar(total=src.n, desc=f"robust conformal sets (n_mc={self.n_mc})", enabled=progress,
                          unit="pt") as bar:
            for xb, yb, _ in src.batches(self._aligned(points_per_batch)):
                sets.append(self.predict_sets(xb, generator=generator, progress=False).cpu())
                ys.append(yb.long())
                bar.update(int(yb.shape[0]))
        if not sets:
            raise ValueError(f"The data passed to {owner} hold no examples.")
        return evaluate_sets(torch.cat(sets), torch.cat(ys))

    def _aligned(self, target: int) -> int:
        from ._data import aligned_batch

        return aligned_batch(self.batch_size, self.n_mc, target)

    @staticmethod
    def _read(data: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
        """All of (small) streamed ``data`` in memory."""
        from ._data import batches

        xs, ys = zip(*batches(data, 256, owner))
        return torch.cat(xs), torch.cat(ys).long()

    @torch.no_grad()
    def _reference(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Sorted base scores (scaled to [0, 1]) of the true labels of held-out points under one noise draw."""
        model = self.model
        was = model.training
        model.eval()
        dev = next((p.device for p in model.parameters()), x.device)
        try:
            x = x.to(dev)
            noise = _randn(tuple(x.shape), generator, dev, x.dtype)
            probs = model(x + self.sigma * noise).float().softmax(1)
        finally:
            model.train(was)
        s = self.score(probs, y.to(dev).long(), generator=generator) / self.score.upper(probs.shape[1])
        return s.sort().values

    @property
    def robust_threshold_(self) -> float:
        """``Φ(Φ⁻¹(min(τ + b_H, 1)) + ε/σ)``: a label is in the set iff ``max(Ŝ − b_B, 0)`` is at most this."""
        if self.threshold_ is None:
            raise NotCalibratedError("This RobustConformal is not calibrated yet; call .calibrate(x, y) first.")
        t = min(self.threshold_ + self.hoeffding, 1.0)
        if t >= 1.0:
            return 1.0
        return float(_norm.cdf(_norm.ppf(t) + self.eps / self.sigma))

    def predict_sets(self, x: torch.Tensor, *, generator: torch.Generator | None = None,
                     progress: bool | None = None) -> torch.Tensor:
        """Boolean (N, C) RSCP+ sets for (possibly perturbed) finite inputs ``x``; ``progress`` as in :meth:`smoothed_scores`."""
        if self.threshold_ is None:
            raise NotCalibratedError("This RobustConformal is not calibrated yet; call .calibrate(x, y) before predict_sets.")
        self._check_x(x, "RobustConformal.predict_sets")
        thr = self.robust_threshold_
        mean, var = self.smoothed_scores(x, generator=generator, progress=progress)
        lower = (mean - self.bernstein(var)).clamp(min=0.0)
        return lower <= thr
