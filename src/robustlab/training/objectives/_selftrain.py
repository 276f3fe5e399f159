r"""Robust self-training with out-of-domain unlabeled data (Saberi et al., "Out-Of-Domain Unlabeled Data
Improves Generalization", ICLR 2024).

A teacher (trained on the labelled data) pseudo-labels an unlabeled pool that may come from a shifted
distribution; the student minimises the labelled loss plus :math:`\lambda` times a distributionally robust
loss on the pseudo-labelled pool -- the worst case over a Wasserstein ball around the pool, in the dual form
of Sinha, Namkoong & Duchi (2018):

.. math:: \frac1m\sum_{i\le m}\ell(\theta; x_i, y_i)
          + \lambda\,\frac1n\sum_{j\le n}\sup_z\big[\ell(\theta; z, \hat y_j) - \gamma\|z - \tilde x_j\|^2\big],
          \qquad \hat y_j = \arg\max_k f_{\theta_0}(\tilde x_j)_k

(the inner sup by ``steps`` gradient-ascent steps). ``gamma=None`` drops the robustness: plain
self-training with pseudo-labels. :func:`gaussian_mixture_diagnostic` runs the paper's two-Gaussian setting.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..._validation import InvalidParameterError, check_in_range, check_int
from ...data import check_pool_spec
from .._objectives import Batch, Objective, compute_loss, register_objective
from ._distillation import _load_teacher, _short_repr

__all__ = ["RobustSelfTraining", "gaussian_mixture_diagnostic", "wrm_perturb"]

_REF = "Saberi et al., ICLR 2024 (arXiv:2310.00027); Wasserstein dual: Sinha, Namkoong & Duchi, ICLR 2018"


def _unlabeled_inputs(unlabeled: Any) -> torch.Tensor:
    if isinstance(unlabeled, (str, os.PathLike)):  # an .npz file with an array 'x' (never pickled)
        try:
            with np.load(unlabeled, allow_pickle=False) as f:
                x = torch.from_numpy(np.asarray(f["x"], dtype=np.float32))
        except (OSError, KeyError, ValueError) as e:
            raise InvalidParameterError(f"The 'unlabeled' file {str(unlabeled)!r} of robust_self_training must be an "
                                        f".npz holding an array 'x' ({type(e).__name__}: {e}).") from None
        unlabeled = x
    if hasattr(unlabeled, "x") and isinstance(unlabeled.x, torch.Tensor):  # data.Unlabeled
        unlabeled = unlabeled.x
    if not isinstance(unlabeled, torch.Tensor) or not unlabeled.dtype.is_floating_point or unlabeled.dim() < 2 \
            or unlabeled.shape[0] == 0:
        raise InvalidParameterError(
            "The 'unlabeled' parameter of robust_self_training must be a non-empty float tensor (N, ...), a "
            f"data.Unlabeled or an .npz path with 'x'. Got {type(unlabeled).__name__}.")
    if not bool(torch.isfinite(unlabeled).all()):
        raise InvalidParameterError("The 'unlabeled' inputs of robust_self_training hold NaN or infinite values.")
    return unlabeled.float()


_TEACHER_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule")


def _check_teacher_kw(kw: Any, owner: str) -> dict[str, Any]:
    if kw is None:
        return {}
    if not isinstance(kw, dict) or set(kw) - set(_TEACHER_KEYS):
        raise InvalidParameterError(f"The 'teacher_kw' parameter of {owner} takes fit options {list(_TEACHER_KEYS)}. "
                                    f"Got {kw!r}.")
    return dict(kw)


def wrm_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, gamma: float, steps: int,
                step_size: float) -> torch.Tensor:
    r""":math:`\arg\max_z \mathrm{CE}(f(z), y) - \gamma\|z - x\|^2` by ``steps`` gradient-ascent steps from ``x``
    (per-sample; the penalty makes the problem concave for :math:`\gamma` above the loss's smoothness).
    Returns a detached tensor; accumulates no parameter gradient.
    """
    z = x.detach().clone()
    for _ in range(steps):
        z.requires_grad_(True)
        obj = F.cross_entropy(model(z).float(), y, reduction="sum") - gamma * ((z - x) ** 2).sum()
        (g,) = torch.autograd.grad(obj, z)
        z = (z + step_size * g).detach()
    return z


@register_objective("robust_self_training", tags={"self_training", "needs_teacher", "unlabeled"}, reference=_REF,
                    example_kwargs={"teacher": None, "unlabeled": torch.rand(32, 6, generator=torch.Generator()
                                                                            .manual_seed(0)), "steps": 2})
class RobustSelfTraining(Objective):
    r"""Labelled loss + ``lam`` x Wasserstein-robust pseudo-label loss on an (out-of-domain) unlabeled pool.

    ``teacher``: module or checkpoint path (frozen) giving the pseudo-labels of ``unlabeled``
    (a float tensor, a :class:`robustlab.data.Unlabeled` or an ``.npz`` with ``x``) once, at setup.
    From a bench spec or ``robustlab train`` (JSON-able arguments), inside ``fit``'s ``prepare`` hook:
    ``teacher=None`` trains the teacher first -- a copy of the run's freshly initialised model, fitted
    with cross-entropy on the labelled examples (``teacher_kw``: ``fit`` options, default ``{"epochs": 10}``) --
    and ``unlabeled={"kind": K, "severity": S, "n": N}`` (or ``"fraction": F``, default 0.5) holds ``N``
    training examples out: a seeded stratified split (:func:`robustlab.data.holdout_split`, the run's seed)
    into labelled examples and a pool whose labels are dropped and inputs shifted by a shift of
    :func:`robustlab.data.unlabeled_shifted` (``feature_noise``/``none`` for any input, the image corruptions
    of :mod:`robustlab.shift`). The two parts are disjoint: the teacher and the labelled loss see only the
    labelled examples (the pool's rows of each batch are masked out), the pool only enters unlabeled --
    the same split as ``data.unlabeled_shifted(d, ..., seed=seed, stratify=True)``.
    Each step draws ``unlabeled_batch`` pool samples (default: the labelled batch size) from the run's
    generator. ``gamma`` > 0: dual penalty of the Wasserstein ball (small = a large ball, more robust;
    ``None`` = plain self-training); ``steps``/``step_size``: the inner ascent. The chosen ``loss`` applies
    to the labelled batch; the pool's loss is cross-entropy. Cost: ``steps + 2`` forward+backward passes
    per step (``2`` with ``gamma=None``); the teacher's pass is once per run.
    Reference: Saberi et al., "Out-Of-Domain Unlabeled Data Improves Generalization", ICLR 2024.
    """

    def __init__(self, *, teacher: Any = None, unlabeled: Any = None, lam: float = 1.0, gamma: float | None = 1.0,
                 steps: int = 3, step_size: float = 0.1, unlabeled_batch: int | None = None,
                 teacher_kw: dict[str, Any] | None = None) -> None:
        owner = "robust_self_training"
        self.teacher = None if teacher is None else _load_teacher(teacher, "teacher", owner)
        self.teacher_kw = _check_teacher_kw(teacher_kw, owner)
        if unlabeled is None:
            raise TypeError(f"{owner} needs 'unlabeled' inputs (a tensor, a data.Unlabeled, an .npz path or a "
                            "held-out shifted part {'kind': ..., 'severity': ..., 'fraction': ...} of the training "
                            "split).")
        self._shift_spec = check_pool_spec(unlabeled, owner) if isinstance(unlabeled, dict) else None
        self._labelled: torch.Tensor | None = None  # (N,) mask of the labelled rows when the pool is held out
        self._x_unl = torch.empty(0) if self._shift_spec is not None else _unlabeled_inputs(unlabeled)
        self.lam = float(check_in_range(lam, "lam", 0.0, None, owner=owner))
        self.gamma = None if gamma is None else float(check_in_range(gamma, "gamma", 0.0, None, closed="neither",
                                                                     owner=owner))
        self.steps = check_int(steps, "steps", 1, None, owner=owner)
        self.step_size = float(check_in_range(step_size, "step_size", 0.0, None, closed="neither", owner=owner))
        self.unlabeled_batch = None if unlabeled_batch is None else check_int(unlabeled_batch, "unlabeled_batch", 1,
                                                                              None, owner=owner)
        self.passes_per_step = float(2 if self.gamma is None else self.steps + 2)
        self.num_unlabeled = int(self._x_unl.shape[0])

    def __repr__(self) -> str:
        return _short_repr(self)

    def prepare(self, *, model: nn.Module, x: Any, y: Any, num_classes: int, seed: int = 0, device: Any = None) -> None:
        """``fit``'s first stage: build the shifted pool (``unlabeled`` given as a shift) and train the teacher
        (``teacher=None``) on the labelled split ``(x, y)``; nothing to do otherwise."""
        import copy

        if self._shift_spec is None and self.teacher is not None:
            return
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise InvalidParameterError("robust_self_training: a teacher trained in fit or a shifted pool of the "
                                        "training inputs needs in-memory data (a ClassificationData).")
        if self._shift_spec is not None:
            from ...data import split_and_shift

            lab_idx, unl_idx, x_unl = split_and_shift(x.detach().cpu().float(), y.detach().cpu(), self._shift_spec,
                                                      int(seed), owner="robust_self_training")
            self._x_unl = _unlabeled_inputs(x_unl)
            self.num_unlabeled = int(self._x_unl.shape[0])
            mask = torch.zeros(int(x.shape[0]), dtype=torch.bool)
            mask[lab_idx] = True
            self._labelled = mask.to(x.device)
            x, y = x[lab_idx.to(x.device)], y[lab_idx.to(y.device)]
        if self.teacher is None:
            from ...data import ClassificationData
            from .._fit import fit

            t = copy.deepcopy(model)
            xc, yc = x.detach().cpu(), y.detach().cpu()
            d = ClassificationData(x_train=xc, y_train=yc, x_test=xc[:1], y_test=yc[:1], num_classes=int(num_classes),
                                   input_shape=tuple(xc.shape[1:]), class_names=[str(k) for k in range(num_classes)],
                                   name="robust_self_training-teacher")
            kw = {"epochs": 10, **self.teacher_kw}
            res = fit(t, d, loss="ce", seed=int(seed), progress=False, eval_every=0, device=device, **kw)
            self.teacher = _load_teacher(res.model, "teacher", "robust_self_training")

    def setup(self, *, model: nn.Module, **kw: Any) -> None:
        super().setup(model=model, **kw)
        if self.teacher is None or self._x_unl.numel() == 0:
            raise InvalidParameterError(
                "robust_self_training has no teacher or no unlabeled pool yet: pass a teacher module/checkpoint and "
                "unlabeled inputs, or run it through fit (its prepare step trains the teacher and builds a pool "
                "given as a shift).")
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.teacher.to(dev)
        with torch.no_grad():
            try:
                logits = torch.cat([self.teacher(self._x_unl[i:i + 1024].to(dev)) for i in
                                    range(0, self._x_unl.shape[0], 1024)])
            except RuntimeError as e:
                raise InvalidParameterError(f"robust_self_training: the teacher cannot read the unlabeled inputs of "
                                            f"shape {tuple(self._x_unl.shape[1:])} ({e}).") from None
        if logits.dim() != 2 or logits.shape[1] != kw.get("num_classes", logits.shape[1]):
            raise InvalidParameterError(f"robust_self_training: the teacher outputs {tuple(logits.shape[1:])} per input; "
                                        f"expected {kw.get('num_classes')} class scores.")
        self._pseudo = logits.argmax(1)
        self._x_dev = self._x_unl.to(dev)

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch.x)
        lab = None
        if self._labelled is None:
            value = compute_loss(loss, logits, batch.y, batch.index)
        else:  # the pool was held out of this split: its rows carry no label here
            if batch.index is None:
                raise InvalidParameterError("robust_self_training with a held-out pool needs the batch's data-set "
                                            "indices (in-memory data).")
            lab = self._labelled[batch.index.to(self._labelled.device)].to(logits.device)
            idx = batch.index[lab.to(batch.index.device)]
            value = (compute_loss(loss, logits[lab], batch.y[lab], idx) if bool(lab.any())
                     else logits.sum() * 0.0)
        b = self.unlabeled_batch or batch.x.shape[0]
        gen = getattr(self, "generator", None)
        j = torch.randint(0, self.num_unlabeled, (b,), generator=gen, device=gen.device if gen is not None else None)
        xu, yu = self._x_dev[j.to(self._x_dev.device)], self._pseudo[j.to(self._pseudo.device)]
        if self.gamma is not None:
            was = model.training
            model.eval()
            try:
                xu = wrm_perturb(model, xu, yu, gamma=self.gamma, steps=self.steps, step_size=self.step_size)
            finally:
                model.train(was)
        unl = F.cross_entropy(model(xu).float(), yu)
        total = value + self.lam * unl.to(value.dtype)
        metrics = {"unlabeled_loss": unl.detach()}
        if self.track_metrics:
            hit = (logits.detach().argmax(1) == batch.y).float()
            metrics["acc"] = hit.mean() if lab is None else hit[lab].sum() / lab.sum().clamp(min=1)
        return total, metrics


def gaussian_mixture_diagnostic(gm: Any, *, lam: float = 1.0, gamma: float | None = 1.0, steps: int = 3,
                                step_size: float = 0.1, epochs: int = 200, lr: float = 0.1, l2: float = 1e-2,
                                rounds: int = 3, seed: int = 0) -> dict[str, float]:
    """The paper's two-Gaussian experiment on a :class:`robustlab.data.GaussianMixtureShift`.

    A linear teacher is fitted on the labelled samples (full-batch gradient descent, logistic loss, L2
    ``l2``); a student of the same form is trained with :class:`RobustSelfTraining` on the labelled samples
    and the pseudo-labelled (shifted) pool, and becomes the teacher of the next of ``rounds`` rounds
    (iterated self-training). Returns the test errors ``labelled_only``, ``self_training``
    (the same with ``gamma=None``), ``robust_self_training`` and ``bayes``.
    """
    torch.manual_seed(seed)
    dim = int(gm.x_train.shape[1])
    batch = Batch(gm.x_train, gm.y_train, torch.arange(gm.x_train.shape[0]))

    def train(objective: Objective | None) -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Linear(dim, 2)
        opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=l2)
        if objective is not None:
            objective.setup(model=model, epochs=epochs, steps_per_epoch=1, num_classes=2,
                            num_train=gm.x_train.shape[0], generator=torch.Generator().manual_seed(seed))
        for _ in range(epochs):
            if objective is None:
                value = F.cross_entropy(model(batch.x), batch.y)
            else:
                value, _ = objective(model, batch, F.cross_entropy)
            opt.zero_grad()
            value.backward()
            opt.step()
        return model.eval()

    def error(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(gm.x_test).argmax(1) != gm.y_test).float().mean())

    teacher = train(None)
    out = {"labelled_only": error(teacher), "bayes": float(gm.bayes_error)}
    if gm.x_unlabeled.shape[0] == 0:
        out["self_training"] = out["robust_self_training"] = out["labelled_only"]
        return out
    rounds = check_int(rounds, "rounds", 1, None, owner="gaussian_mixture_diagnostic")
    common = {"unlabeled": gm.x_unlabeled, "lam": lam, "steps": steps, "step_size": step_size,
              "unlabeled_batch": int(gm.x_unlabeled.shape[0])}

    def self_train(g: float | None) -> float:
        model = teacher
        for _ in range(rounds):
            model = train(RobustSelfTraining(teacher=model, **common, gamma=g))
        return error(model)

    out["self_training"] = self_train(None)
    out["robust_self_training"] = out["self_training"] if gamma is None else self_train(gamma)
    return out
