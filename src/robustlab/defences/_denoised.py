"""Denoised smoothing: a denoiser trained in front of a frozen (possibly black-box) classifier.

``DenoisedSmoothing(base_model, denoiser, sigma)`` is the module ``x ↦ base(denoiser(x))`` (with
``autoencoder=``: ``base(decoder(encoder(denoiser(x))))``); randomized smoothing certifies it like any
classifier (:meth:`DenoisedSmoothing.smoothed` gives the :class:`~robustlab.certify.SmoothedClassifier`).
:meth:`DenoisedSmoothing.fit` trains the denoiser on ``x + N(0, σ²I)`` with one of:

* ``"mse"``: ``‖D(x + δ) − x‖²`` (no query of the classifier);
* ``"fo"`` (Salman et al. 2020, arXiv:2003.01908): first-order gradients through the classifier, loss
  ``"stability"`` ``CE(F(D(x + δ)), argmax F(x))`` or ``"classification"`` ``CE(F(D(x + δ)), y)``;
* ``"zo"`` (ZO-AE-DS, Zhang et al. 2022, arXiv:2203.14195): the classifier is a black box (queried without
  gradients). With ``z = E(D(x + δ))`` the latent code of the autoencoder, the gradient of
  ``ℓ(z) = CE(F(Dec(z)), argmax F(x))`` is estimated from queries (decoder frozen and merged into the black box):
  RGE ``ĝ = (d/q) Σ_k [ℓ(z + μu_k) − ℓ(z)]/μ · u_k`` (q + 1 queries per example) or CGE
  ``ĝ_i = [ℓ(z + μe_i) − ℓ(z − μe_i)]/(2μ)`` (2d queries), and ``⟨z, stopgrad(ĝ)⟩`` is back-propagated
  into the denoiser (and the encoder); ``query_budget`` caps the queries;
* ``"consistency"``: a one-step denoiser trained in the spirit of the robust representation consistency model
  (rRCM, Lei et al. 2025: temporally adjacent points of a noise trajectory get consistent representations).
  One trajectory ``x_k = x + t_k ε`` per image at levels ``t_k = kσ/K`` (``levels`` K, ``t_0 = 0``), a level
  ``k`` drawn per example, and the loss
  ``anchor_weight · ‖D(x_k) − x‖² + KL(p(x_{k−1}) ‖ p(x_k)) + KL(p(x_0) ‖ p(x_k))`` with
  ``p(x_k) = softmax(F(D(x_k)))``, the teacher ``p(x_{k−1})`` under stop-gradient and ``p(x_0) = softmax(F(x))``
  the clean image's representation (the consistency models' boundary condition, here applied at every level).
  ``representation="pixel"`` (needed for a black box) uses ``‖D(x_k) − stopgrad(D(x_{k−1}))‖²`` instead of
  the two KL terms (``D(x_0) = x``). The teacher pass normalises with its own batch's statistics, as the student
  pass does, without updating the running statistics and, after training, the running statistics are
  re-estimated on σ-noisy inputs: the levels mixed in a batch otherwise leave statistics of the mixture, and an
  MSE-pre-trained DnCNN fell to chance accuracy at σ (MNIST, σ = 0.5). A teacher on the running statistics
  against a student on batch statistics made the KL to the teacher measure the train/eval normalisation gap:
  the noisy statistics of an epoch's small last batch (2 000 images, batch 64: 16) opened it and the loss ran
  away for ~10 steps (MNIST, σ = 0.25: 0.013 → 1.6). The clean-representation and pixel anchors keep the chain
  of self-targets from collapsing to one prediction. The classifier plays the role of rRCM's encoder (frozen); rRCM's
  contrastive training is not reproduced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._progress import check_progress, progress_bar
from .._validation import (
    InvalidParameterError,
    check_bool,
    check_image_batch,
    check_in_range,
    check_int,
    check_option,
)

__all__ = ["DENOISER_METHODS", "DenoisedSmoothing", "DenoiserFit", "cge"]

DENOISER_METHODS = ("mse", "fo", "zo", "consistency")
FO_LOSSES = ("stability", "classification")
REPRESENTATIONS = ("auto", "logits", "pixel")
ZO_ESTIMATORS = ("rge", "cge")


def cge(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z: torch.Tensor, *, mu: float,
        chunk: int = 4096) -> torch.Tensor:
    """Coordinate-wise gradient estimate ``ĝ_i = [ℓ(z + μe_i) − ℓ(z − μe_i)] / (2μ)`` for each example of ``z``.

    ``loss_fn(zs, rows)`` maps M perturbed codes (M, ...) and the index (M,) of the example each one belongs to
    to M losses; ``z`` is (B, ...) with d entries per example. Costs 2d queries per example, ``chunk`` at a time.
    """
    b, d = z.shape[0], z[0].numel()
    flat = z.detach().flatten(1)
    eye = torch.eye(d, device=z.device, dtype=z.dtype) * mu
    pert = torch.cat([flat[:, None, :] + eye, flat[:, None, :] - eye], 1).reshape(b * 2 * d, *z.shape[1:])
    owner = torch.arange(b, device=z.device).repeat_interleave(2 * d)
    vals = torch.cat([loss_fn(pert[i:i + chunk], owner[i:i + chunk]) for i in range(0, pert.shape[0], chunk)])
    vals = vals.view(b, 2, d)
    return ((vals[:, 0] - vals[:, 1]) / (2 * mu)).view_as(z)


@dataclass
class DenoiserFit:
    """What :meth:`DenoisedSmoothing.fit` did: the mean loss per epoch, black-box queries, optimiser steps."""

    method: str
    history: list[float] = field(default_factory=list)
    queries: int = 0
    steps: int = 0
    stopped_by_budget: bool = False


class DenoisedSmoothing(nn.Module):
    """``base(denoiser(x))`` with the classifier ``base`` frozen; a smoothed classifier at noise ``sigma``.

    ``base_model``: an ``nn.Module`` (needed for ``method="fo"``/``"consistency"`` certification alike) or any
    callable returning logits (a black box: only ``"mse"``, ``"zo"`` and ``"consistency"`` training then).
    It stays in eval mode and its weights never change. ``autoencoder``: a module with ``encoder``/``decoder``
    (``models.create("conv_autoencoder", ...)``) placed after the denoiser, required by ``method="zo"``.

    Example::

        ds = DenoisedSmoothing(base, models.create("dncnn", input_shape=(1, 28, 28), num_classes=10), sigma=0.25)
        ds.fit(x_train, method="mse", epochs=2); ds.fit(x_train, method="fo", epochs=2)
        classes, radii = ds.smoothed(num_classes=10).certify(x_test, n=1000)
    """

    base_model: Any
    denoiser: nn.Module
    autoencoder: Any  # an nn.Module with encoder/decoder, or None
    _opts: dict[str, Any]

    def __init__(self, base_model: Any, denoiser: nn.Module, sigma: float, *, autoencoder: nn.Module | None = None) -> None:
        super().__init__()
        owner = "DenoisedSmoothing"
        if not callable(base_model):
            raise TypeError(f"The 'base_model' parameter of {owner} must be an nn.Module or a callable returning "
                            f"logits. Got {type(base_model).__name__} instead.")
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"The 'denoiser' parameter of {owner} must be an nn.Module. Got {type(denoiser).__name__}.")
        if autoencoder is not None and not (isinstance(autoencoder, nn.Module) and isinstance(getattr(autoencoder, "encoder", None), nn.Module)
                                            and isinstance(getattr(autoencoder, "decoder", None), nn.Module)):
            raise TypeError(f"The 'autoencoder' parameter of {owner} must be an nn.Module with 'encoder' and 'decoder' "
                            f"modules (models.create('conv_autoencoder', ...)). Got {type(autoencoder).__name__}.")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise InvalidParameterError(f"The 'sigma' parameter of {owner} must be a float in (0, inf). Got {sigma!r} instead.")
        self.sigma = float(check_in_range(sigma, "sigma", 0.0, None, closed="neither", owner=owner))
        self.base_model = base_model
        self.denoiser = denoiser
        self.autoencoder = autoencoder
        self.train(False)

    def train(self, mode: bool = True) -> DenoisedSmoothing:
        """Set the denoiser (and autoencoder) mode; the base classifier always stays in eval mode."""
        super().train(mode)
        if isinstance(self.base_model, nn.Module):
            self.base_model.eval()
        return self

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised image: ``denoiser(x)``, then ``decoder(encoder(·))`` when there is an autoencoder."""
        out = self.denoiser(x)
        if self.autoencoder is not None:
            out = self.autoencoder.decoder(self.autoencoder.encoder(out))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_model(self.purify(x))

    def smoothed(self, num_classes: int) -> Any:
        """The Gaussian-smoothed classifier of this module at ``sigma`` (Cohen et al. 2019's CERTIFY/PREDICT)."""
        from ..certify.smoothing import SmoothedClassifier

        return SmoothedClassifier(self, sigma=self.sigma, num_classes=num_classes)

    # -- training ---------------------------------------------------------------------------------
    def fit_autoencoder(self, x: torch.Tensor, *, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
                        generator: torch.Generator | None = None, progress: bool | None = None) -> DenoiserFit:
        """Pre-train the autoencoder on reconstruction ``‖Dec(E(x)) − x‖²`` of clean images (ZO-AE-DS stage 1;
        white box, no query of the classifier)."""
        if self.autoencoder is None:
            raise InvalidParameterError("fit_autoencoder: this DenoisedSmoothing has no autoencoder (pass autoencoder=).")
        ae = self.autoencoder

        def step(xb: torch.Tensor, yb: Any, noise: torch.Tensor, res: DenoiserFit) -> torch.Tensor:
            return (ae(xb) - xb).square().mean()

        return self._loop("autoencoder", x, None, list(ae.parameters()), step, epochs, batch_size, lr, None,
                          generator, progress)

    def fit(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, method: str = "fo", loss: str = "stability",
        epochs: int = 5, batch_size: int = 64, lr: float = 1e-3, estimator: str = "rge", q: int = 20, mu: float = 0.005,
        query_budget: int | None = None, train_encoder: bool = True, levels: int = 4,
        representation: str = "auto", anchor_weight: float = 1.0, generator: torch.Generator | None = None, progress: bool | None = None,
    ) -> DenoiserFit:
        """Train the denoiser on ``x`` (N, C, H, W) in [0, 1] with Gaussian noise of std ``sigma`` (Adam, ``lr``).

        ``method``: ``"mse"``, ``"fo"`` (``loss`` ``"stability"`` or ``"classification"``, the latter with labels
        ``y``), ``"zo"`` (``estimator`` ``"rge"`` with ``q`` directions or ``"cge"``, smoothing ``mu``, the encoder
        trained too when ``train_encoder``; stops before a step that would exceed ``query_budget`` black-box
        queries) or ``"consistency"`` (``levels`` noise levels; ``representation`` ``"logits"`` (the classifier's
        softmax, needs an ``nn.Module`` base), ``"pixel"`` or ``"auto"`` (logits when the base is an ``nn.Module``);
        ``anchor_weight`` on the clean-image term). See the module docstring for the formulas.
        ``generator`` drives the shuffling, the noise and the ZO directions (same seed, same numbers).
        """
        owner = "DenoisedSmoothing.fit"
        check_option(method, "method", DENOISER_METHODS, owner=owner)
        check_option(loss, "loss", FO_LOSSES, owner=owner)
        check_option(estimator, "estimator", ZO_ESTIMATORS, owner=owner)
        check_int(q, "q", 1, None, owner=owner)
        mu = float(check_in_range(mu, "mu", 0.0, None, closed="neither", owner=owner))
        if query_budget is not None:
            check_int(query_budget, "query_budget", 1, None, owner=owner)
        check_bool(train_encoder, "train_encoder", owner=owner)
        check_int(levels, "levels", 1, None, owner=owner)
        check_option(representation, "representation", REPRESENTATIONS, owner=owner)
        anchor_weight = float(check_in_range(anchor_weight, "anchor_weight", 0.0, None, owner=owner))
        if representation == "auto":
            representation = "logits" if isinstance(self.base_model, nn.Module) else "pixel"
        if method == "consistency" and representation == "logits" and not isinstance(self.base_model, nn.Module):
            raise InvalidParameterError(f"representation='logits' of {owner} back-propagates through the classifier, "
                                        "so 'base_model' must be an nn.Module; use representation='pixel' for a black box.")
        if method == "fo" and not isinstance(self.base_model, nn.Module):
            raise InvalidParameterError(f"method='fo' of {owner} back-propagates through the classifier, so 'base_model' "
                                        "must be an nn.Module; use method='zo' for a black box.")
        if method == "zo" and self.autoencoder is None:
            raise InvalidParameterError(f"method='zo' of {owner} takes its gradient estimate in an autoencoder's latent "
                                        "space (ZO-AE-DS): pass autoencoder= and pre-train it with fit_autoencoder.")
        if method == "fo" and loss == "classification" and y is None:
            raise InvalidParameterError(f"loss='classification' of {owner} needs the labels 'y'.")
        steps = {"mse": self._mse_step, "fo": self._fo_step, "consistency": self._consistency_step, "zo": self._zo_step}
        self._opts = {"loss": loss, "estimator": estimator, "q": q, "mu": mu, "levels": levels,
                      "representation": representation, "anchor_weight": anchor_weight}
        params = list(self.denoiser.parameters())
        if method == "zo" and train_encoder:
            params += list(self.autoencoder.encoder.parameters())
        return self._loop(method, x, y, params, steps[method], epochs, batch_size, lr, query_budget, generator, progress)

    def _mse_step(self, xb: torch.Tensor, yb: Any, noise: torch.Tensor, res: DenoiserFit) -> torch.Tensor:
        return (self.denoiser(xb + noise) - xb).square().mean()

    def _fo_step(self, xb: torch.Tensor, yb: Any, noise: torch.Tensor, res: DenoiserFit) -> torch.Tensor:
        if self._opts["loss"] == "classification":
            target = yb
        else:
            with torch.no_grad():
                target = self.base_model(xb).argmax(1)
        return F.cross_entropy(self.base_model(self.purify(xb + noise)), target)

    def _consistency_step(self, xb: torch.Tensor, yb: Any, noise: torch.Tensor, res: DenoiserFit) -> torch.Tensor:
        k_levels, opts = self._opts["levels"], self._opts
        eps = noise / self.sigma
        k = torch.randint(1, k_levels + 1, (xb.shape[0],), generator=self._gen, device=self._gen_dev).to(xb.device)
        shape = (-1, *([1] * (xb.dim() - 1)))
        t_hi = (k.to(xb.dtype) * self.sigma / k_levels).view(shape)
        t_lo = ((k - 1).to(xb.dtype) * self.sigma / k_levels).view(shape)
        first = (k == 1).view(shape)
        student = self.denoiser(xb + t_hi * eps)
        value = opts["anchor_weight"] * (student - xb).square().mean() if opts["anchor_weight"] > 0 else student.new_zeros(())
        with torch.no_grad(), _frozen_norm(self.denoiser):  # batch statistics, as the student; running ones unchanged
            teacher = torch.where(first, xb, self.denoiser(xb + t_lo * eps))
            if opts["representation"] == "logits":
                teacher = F.log_softmax(self.base_model(teacher), 1)
                clean = F.log_softmax(self.base_model(xb), 1)
        if opts["representation"] == "pixel":
            return value + (student - teacher).square().mean()
        log_p = F.log_softmax(self.base_model(student), 1)
        kl = F.kl_div(log_p, teacher, log_target=True, reduction="batchmean")
        return value + kl + F.kl_div(log_p, clean, log_target=True, reduction="batchmean")

    def _zo_step(self, xb: torch.Tensor, yb: Any, noise: torch.Tensor, res: DenoiserFit) -> torch.Tensor:
        from ..attacks._zoo import rge

        ae: Any = self.autoencoder
        with torch.no_grad():
            target = self._query(xb, res).argmax(1)
        z = ae.encoder(self.denoiser(xb + noise))

        def loss_fn(zs: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
            with torch.no_grad():
                if owner is None:  # rows are b-major repeats of the batch (rge's layout)
                    owner = torch.arange(zs.shape[0], device=zs.device) // (zs.shape[0] // xb.shape[0])
                return F.cross_entropy(self._query(ae.decoder(zs), res), target[owner], reduction="none")

        f0 = loss_fn(z.detach())
        if self._opts["estimator"] == "rge":
            g = rge(loss_fn, z.detach(), q=self._opts["q"], mu=self._opts["mu"], generator=self._gen, f0=f0)
        else:
            g = cge(loss_fn, z, mu=self._opts["mu"])
        self._zo_value = float(f0.mean())
        return (z * g.detach()).flatten(1).sum(1).mean()

    def _query(self, x: torch.Tensor, res: DenoiserFit) -> torch.Tensor:
        res.queries += int(x.shape[0])
        return self.base_model(x)

    def _zo_cost(self, b: int, x: torch.Tensor) -> int:
        if self._opts["estimator"] == "rge":
            return b * (self._opts["q"] + 2)  # target, ℓ(z), q directions
        with torch.no_grad():
            d = self.autoencoder.encoder(x[:1]).numel()
        return b * (2 * d + 2)  # target, ℓ(z), 2d coordinates

    def _loop(self, method: str, x: torch.Tensor, y: torch.Tensor | None, params: list[nn.Parameter], step: Callable[..., torch.Tensor],
              epochs: int, batch_size: int, lr: float, query_budget: int | None, generator: torch.Generator | None,
              progress: bool | None) -> DenoiserFit:
        owner = f"DenoisedSmoothing.{'fit_autoencoder' if method == 'autoencoder' else 'fit'}"
        check_image_batch(x, "x", owner=owner)
        if x.dim() != 4:
            raise InvalidParameterError(f"'x' of {owner} must be images (N, C, H, W). Got shape {tuple(x.shape)}.")
        if y is not None and (not isinstance(y, torch.Tensor) or y.shape != x.shape[:1] or y.dtype.is_floating_point):
            raise InvalidParameterError(f"'y' of {owner} must be integer labels of shape ({x.shape[0]},). "
                                        f"Got {getattr(y, 'shape', type(y))}.")
        check_int(epochs, "epochs", 1, None, owner=owner)
        check_int(batch_size, "batch_size", 1, None, owner=owner)
        check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner)
        check_progress(progress, owner=owner)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self._gen, self._gen_dev = gen, gen.device
        dev = next((p.device for p in params), x.device)
        res = DenoiserFit(method=method)
        trained = {id(p) for p in params}
        frozen = [p for p in self.parameters() if id(p) not in trained]  # base model, decoder, ...: no gradients
        saved = [p.requires_grad for p in frozen]
        opt = torch.optim.Adam(params, lr=lr)
        self.train(True)
        try:
            for p in frozen:
                p.requires_grad_(False)
            n = x.shape[0]
            for _ in progress_bar(range(epochs), f"denoiser ({method})", progress, total=epochs, unit="epoch"):
                perm = torch.randperm(n, generator=gen, device=self._gen_dev).cpu()
                total, count = 0.0, 0
                for i in range(0, n, batch_size):
                    idx = perm[i:i + batch_size]
                    xb = x[idx].to(dev)
                    yb = y[idx].to(dev) if y is not None else None
                    if method == "zo" and query_budget is not None and res.queries + self._zo_cost(len(idx), xb) > query_budget:
                        res.stopped_by_budget = True
                        break
                    noise = torch.randn(xb.shape, generator=gen, device=self._gen_dev).to(dev, xb.dtype) * self.sigma
                    value = step(xb, yb, noise, res)
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                    res.steps += 1
                    shown = self._zo_value if method == "zo" else float(value.detach())
                    total += shown * len(idx)
                    count += len(idx)
                if count:
                    res.history.append(total / count)
                if res.stopped_by_budget:
                    break
            if method == "consistency":
                self._recalibrate_norm(x, batch_size, dev)
        finally:
            for p, flag in zip(frozen, saved):
                p.requires_grad_(flag)
            self.train(False)
        return res

    @torch.no_grad()
    def _recalibrate_norm(self, x: torch.Tensor, batch_size: int, dev: torch.device) -> None:
        """Re-estimate the denoiser's BatchNorm running statistics on ``x + N(0, σ²)`` (the certification level).

        Consistency training mixes noise levels 0..σ in every batch, so its running averages describe that mixture,
        not the σ-noisy inputs the denoiser sees when certified; one pass at σ (cumulative average) fixes them.
        """
        norms = [m for m in self.denoiser.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms:
            return
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the pass
        try:
            self.denoiser.train(True)
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size].to(dev)
                noise = torch.randn(xb.shape, generator=self._gen, device=self._gen_dev).to(dev, xb.dtype)
                self.denoiser(xb + self.sigma * noise)
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum


@contextmanager
def _frozen_norm(module: nn.Module) -> Iterator[None]:
    """Inside the block, ``module``'s BatchNorm layers in training mode normalise with the batch's statistics (as
    the student pass) but leave their running statistics unchanged (momentum 0)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
