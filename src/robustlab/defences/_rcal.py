r"""RCAL: representation calibration for noisy labels on long-tailed data (Zhang et al., ICCV 2023, arXiv:2211.10955).

1. Contrastive pre-training of the encoder on the training inputs (labels unused): :func:`training.pretrain`.
2. Robust per-class statistics of the features: in each (noisily labelled) class the local outlier factor
   (LOF, Breunig et al. 2000) marks the points that sit far from their class's dense core -- mostly
   mislabelled examples -- and the mean :math:`\mu_c` and covariance :math:`\Sigma_c` are estimated on the rest.
3. Tail calibration: a tail class takes its ``n_borrow`` (the paper's :math:`q`) head classes :math:`S_c` whose
   means are nearest to its own (Euclidean), :math:`\hat\mu_c = (\mu_c + \sum_{i\in S_c}\mu_i)/(|S_c|+1)`,
   :math:`\hat\Sigma_c = \frac{1}{|S_c|}\sum_{i\in S_c}\Sigma_i + \alpha I`.
4. Features are sampled from :math:`\mathcal N(\hat\mu_c, \hat\Sigma_c)` until every class has as many
   (kept real + sampled) features as the largest class, and a linear classifier is trained on real and
   sampled features, optionally with mixup on them (``mixup`` = the Beta parameter; 0 = off, the default).
   With ``finetune=True`` (default, as the paper) the encoder is trained too, under the individual
   calibration regulariser :math:`\beta\|f(x) - f_0(x)\|^2` that keeps each representation near its
   contrastive one (:math:`f_0`, frozen).

What was checked against the paper, and where (search of stored public copies, this session): neither the
paper's method section nor the authors' code is readable there -- the stored arXiv/ar5iv page of 2211.10955
holds its abstract and introduction only, no code repository of the paper is indexed, and the equations of
the one detailed public reading note (zhangtemplar.github.io/noisy-labels) are images. That note's quotes
confirm: MoCo pre-training; LOF outlier removal per class before the estimates; "for the tail class k, we
select top q head classes with the closest Euclidean distance to the mean" (step 3's choice); the
regulariser on the distance to the contrastive representations; and mixup [Zhang et al. 2018] as the second
part of the individual calibration. Not confirmed: how the borrowed statistics are combined, q, the
constants and the sampling count. Ours combine them by the distribution-calibration rule of Yang et al.
(ICLR 2021) that RCAL builds on -- the class's own mean averaged with the q head means, the q head
covariances averaged without the class's own -- plus :math:`\alpha I`; Yang et al.'s public code adds the
scalar :math:`\alpha` to every entry of the covariance instead (:math:`+\alpha\mathbf 1\mathbf 1^\top`,
which widens only the all-ones direction), and uses q = 2, :math:`\alpha` = 0.21 on their features. The
paper's theory (Assumption 3.1) takes one covariance :math:`\Sigma` shared by all classes. Departures:
SimCLR-style pre-training (``training.pretrain``) instead of MoCo with a queue and momentum encoder; mixup on
the classifier's input features (real and sampled, one :math:`\lambda` per step) -- the paper's placement
(input images or features) was not readable; "tail" = kept count below ``tail_fraction`` of the largest.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import InvalidParameterError, check_bool, check_in_range, check_int
from ..data import ClassificationData

__all__ = ["Calibration", "RCALResult", "calibrate", "local_outlier_factor", "mixed_cross_entropy", "mixup_draw", "rcal"]


def local_outlier_factor(x: torch.Tensor, k: int = 10) -> torch.Tensor:
    r"""LOF of each row of ``x`` (N, F) among the others with ``k`` neighbours (Euclidean).

    :math:`\mathrm{lrd}(p) = 1/\mathrm{mean}_{o\in N_k(p)} \max(d_k(o), d(p, o))`,
    :math:`\mathrm{LOF}(p) = \mathrm{mean}_{o\in N_k(p)} \mathrm{lrd}(o)/\mathrm{lrd}(p)`; about 1 inside a
    cluster, larger for outliers (scikit-learn's ``-negative_outlier_factor_``).
    """
    n = x.shape[0]
    k = check_int(k, "k", 1, None, owner="local_outlier_factor")
    if n < 2:
        return torch.ones(n, dtype=torch.float64)
    k = min(k, n - 1)
    x = x.double()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    knn_d, knn_i = d.topk(k, dim=1, largest=False)
    k_dist = knn_d[:, -1]
    reach = torch.maximum(k_dist[knn_i], knn_d)
    lrd = 1.0 / (reach.mean(1) + 1e-10)
    return lrd[knn_i].mean(1) / lrd


@dataclass
class RCALResult:
    """The fitted pipeline: ``encoder`` + linear ``head``; ``predict_logits(x)`` classifies inputs.

    ``kept`` marks the training examples the LOF step kept; ``means``/``covs`` are the calibrated class
    statistics; ``tail`` the calibrated classes; ``history`` the classifier's per-epoch loss.
    """

    encoder: nn.Module
    head: nn.Linear
    kept: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    tail: list[int]
    history: dict[str, list[float]] = field(default_factory=dict)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        from ..training import encode

        return self.head(encode(self.encoder, x, batch_size=batch_size))

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, classes: list[int] | None = None) -> float:
        """Accuracy on ``(x, y)``, restricted to the labels in ``classes`` when given (e.g. the tail)."""
        pred = self.predict_logits(x).argmax(1)
        mask = torch.ones_like(y, dtype=torch.bool) if classes is None else torch.isin(y, torch.tensor(classes))
        return float((pred[mask] == y[mask]).float().mean()) if bool(mask.any()) else float("nan")


def _class_stats(f: torch.Tensor, y: torch.Tensor, c: int, k: int, threshold: float, allow_empty: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept mask (N,), means (C, F) and covariances (C, F, F) after the per-class LOF outlier removal."""
    kept = torch.zeros(f.shape[0], dtype=torch.bool)
    dim = f.shape[1]
    means, covs = torch.zeros(c, dim, dtype=torch.float64), torch.zeros(c, dim, dim, dtype=torch.float64)
    for cls in range(c):
        idx = torch.nonzero(y == cls).flatten()
        if idx.numel() == 0 and allow_empty:
            continue
        if idx.numel() == 0:
            raise InvalidParameterError(f"rcal: class {cls} has no training example; it cannot be calibrated.")
        lof = local_outlier_factor(f[idx], k)
        keep = lof <= threshold
        if int(keep.sum()) < 2:  # too few inliers to estimate anything: keep the class as it is
            keep = torch.ones_like(keep)
        kept[idx[keep]] = True
        fc = f[idx[keep]]
        means[cls] = fc.mean(0)
        r = fc - means[cls]
        covs[cls] = r.T @ r / max(1, fc.shape[0] - 1)
    return kept, means, covs


@dataclass
class Calibration:
    """RCAL's statistics of one feature set: ``kept`` (N,) LOF inliers, calibrated ``means`` (C, F) and
    ``covs`` (C, F, F) in float64, the ``tail`` classes, the kept ``counts`` per class and which classes are
    ``present`` at all."""

    kept: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    tail: list[int]
    counts: torch.Tensor
    present: torch.Tensor | None = None  # (C,) classes with at least one example

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Features drawn from N(``means[c]``, ``covs[c]``) until every class has as many (kept + sampled) as
        the largest: ``(x (M, F) float32, y (M,))``."""
        c, dim = self.means.shape
        n_max = int(self.counts.max())
        eye = torch.eye(dim, dtype=torch.float64)
        xs, ys = [], []
        for k in range(c):
            m = n_max - int(self.counts[k])
            if m <= 0 or (self.present is not None and not bool(self.present[k])):  # nothing for an absent class
                continue
            cov = self.covs[k] + 1e-6 * eye
            chol = torch.linalg.cholesky(0.5 * (cov + cov.T))
            xs.append(self.means[k] + torch.randn(m, dim, generator=generator, dtype=torch.float64) @ chol.T)
            ys.append(torch.full((m,), k, dtype=torch.long))
        if not xs:
            return torch.empty(0, dim), torch.empty(0, dtype=torch.long)
        return torch.cat(xs).float(), torch.cat(ys)


def mixup_draw(n: int, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    r"""One mixup draw (Zhang et al., ICLR 2018) for a batch of ``n``: a permutation ``perm`` (n,) on the
    generator's device and :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`, both from ``generator``
    (the Beta variate through a NumPy generator seeded by one draw of it: torch's Beta sampler takes no
    generator)."""
    import numpy as np

    dev = generator.device
    perm = torch.randperm(n, generator=generator, device=dev)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev))
    return perm, float(np.random.default_rng(seed).beta(alpha, alpha))


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    r"""The mixed-target cross-entropy, summed over the batch:
    :math:`\sum_i \lambda\,\mathrm{CE}(s_i, y_i) + (1-\lambda)\,\mathrm{CE}(s_i, y_{\pi(i)})` for the
    logits :math:`s` of the mixed inputs :math:`\lambda z_i + (1-\lambda) z_{\pi(i)}`."""
    logits = logits.float()
    return (lam * F.cross_entropy(logits, y, reduction="sum")
            + (1.0 - lam) * F.cross_entropy(logits, y[perm], reduction="sum"))


def calibrate(f: torch.Tensor, y: torch.Tensor, num_classes: int, *, lof_k: int = 10, lof_threshold: float = 1.5,
              tail_fraction: float = 0.5, n_borrow: int = 2, alpha: float = 0.1,
              allow_empty: bool = False) -> Calibration:
    """Steps 2 and 3 of RCAL on features ``f`` (N, F) with (noisy) labels ``y``: per-class LOF outlier removal,
    class means/covariances of the inliers, and the tail calibration of the module docstring.
    Shared by :func:`rcal` and the ``rcal`` training objective. A class without examples is an error, or
    with ``allow_empty=True`` is left out (no statistics, nothing sampled: there is nothing to calibrate)."""
    f = f.double()
    kept, means, covs = _class_stats(f, y, num_classes, lof_k, lof_threshold, allow_empty)
    counts = torch.bincount(y[kept], minlength=num_classes)
    present = torch.bincount(y, minlength=num_classes) > 0
    n_max = int(counts.max())
    head_classes = [k for k in range(num_classes) if int(counts[k]) >= tail_fraction * n_max]
    tail = [k for k in range(num_classes) if k not in head_classes and bool(present[k])]
    cal_means, cal_covs = means.clone(), covs.clone()
    eye = torch.eye(f.shape[1], dtype=torch.float64)
    for t in tail:
        others = [h for h in head_classes if h != t]
        if n_borrow and others:
            dist = (means[others] - means[t]).norm(dim=1)
            near = [others[i] for i in dist.argsort()[:n_borrow].tolist()]
            cal_means[t] = (means[t] + means[near].sum(0)) / (len(near) + 1)
            cal_covs[t] = covs[near].mean(0)
        cal_covs[t] = cal_covs[t] + alpha * eye
    return Calibration(kept, cal_means, cal_covs, tail, counts, present)


def rcal(data: ClassificationData, encoder: nn.Module, *, pretrain_epochs: int = 20,
         pretrain_kw: dict[str, Any] | None = None, lof_k: int = 10, lof_threshold: float = 1.5,
         tail_fraction: float = 0.5, n_borrow: int = 2, alpha: float = 0.1, epochs: int = 100, batch_size: int = 256,
         lr: float = 1e-2, weight_decay: float = 5e-4, finetune: bool = True, beta: float = 1.0,
         mixup: float = 0.0, seed: int = 0) -> RCALResult:
    r"""Train RCAL on ``data`` (its train labels may be noisy and long-tailed); see the module docstring.

    ``encoder``: a module mapping inputs to features (copied; the caller's is untouched).
    ``pretrain_epochs``: contrastive pre-training epochs (0: use ``encoder`` as given), ``pretrain_kw``:
    more :func:`training.pretrain` options (``loss``, ``batch_size``, ``lr``, ...). ``lof_k``/``lof_threshold``:
    LOF neighbours and cut (1.5, scikit-learn's ``contamination="auto"``). Tail classes: those whose kept
    count is below ``tail_fraction`` times the largest; ``n_borrow`` head classes and ``alpha`` calibrate them.
    ``epochs``/``batch_size``/``lr``/``weight_decay``: the classifier's Adam training on real + sampled
    features; ``finetune``/``beta``: train the encoder too, with the representation regulariser.
    ``mixup``: the Beta(``mixup``, ``mixup``) parameter of mixup on the classifier's input -- each step's real
    and sampled features mixed with a permutation of themselves, one :math:`\lambda` per step, the loss the
    mixed-target cross-entropy (:func:`mixed_cross_entropy`); drawn from the run's generator; 0 = off.
    """
    from ..training import encode, pretrain

    owner = "rcal"
    if not isinstance(data, ClassificationData):
        raise InvalidParameterError(f"The 'data' parameter of rcal must be a ClassificationData. Got {type(data).__name__}.")
    if not isinstance(encoder, nn.Module):
        raise InvalidParameterError(f"The 'encoder' parameter of rcal must be an nn.Module. Got {type(encoder).__name__}.")
    pretrain_epochs = check_int(pretrain_epochs, "pretrain_epochs", 0, None, owner=owner)
    lof_k = check_int(lof_k, "lof_k", 1, None, owner=owner)
    lof_threshold = float(check_in_range(lof_threshold, "lof_threshold", 1.0, None, owner=owner))
    tail_fraction = float(check_in_range(tail_fraction, "tail_fraction", 0.0, 1.0, owner=owner))
    n_borrow = check_int(n_borrow, "n_borrow", 0, None, owner=owner)
    alpha = float(check_in_range(alpha, "alpha", 0.0, None, owner=owner))
    epochs = check_int(epochs, "epochs", 1, None, owner=owner)
    batch_size = check_int(batch_size, "batch_size", 1, None, owner=owner)
    lr = float(check_in_range(lr, "lr", 0.0, None, closed="neither", owner=owner))
    weight_decay = float(check_in_range(weight_decay, "weight_decay", 0.0, None, owner=owner))
    finetune = check_bool(finetune, "finetune", owner=owner)
    beta = float(check_in_range(beta, "beta", 0.0, None, owner=owner))
    mixup = float(check_in_range(mixup, "mixup", 0.0, None, owner=owner))
    seed = check_int(seed, "seed", 0, None, owner=owner)

    encoder = copy.deepcopy(encoder)
    if pretrain_epochs:
        encoder = pretrain(encoder, data, epochs=pretrain_epochs, seed=seed, **dict(pretrain_kw or {})).encoder
    c = data.num_classes
    f0 = encode(encoder, data.x_train).double()
    y = data.y_train
    g = torch.Generator().manual_seed(seed)
    cal = calibrate(f0, y, c, lof_k=lof_k, lof_threshold=lof_threshold, tail_fraction=tail_fraction,
                    n_borrow=n_borrow, alpha=alpha)
    kept, cal_means, cal_covs, tail = cal.kept, cal.means, cal.covs, cal.tail
    s_x, s_y = cal.sample(g)

    torch.manual_seed(seed)
    head = nn.Linear(f0.shape[1], c)
    params = list(head.parameters()) + (list(encoder.parameters()) if finetune else [])
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    real_idx = torch.nonzero(kept).flatten()
    f0_real = f0[real_idx].float()
    x_real, y_real = data.x_train[real_idx], y[real_idx]
    n_real, n_s = real_idx.numel(), s_x.shape[0]
    steps = max(1, -(-n_real // batch_size))
    history: dict[str, list[float]] = {"epoch": [], "loss": []}
    encoder.train(finetune)
    for epoch in range(epochs):
        perm = torch.randperm(n_real, generator=g)
        perm_s = torch.randperm(n_s, generator=g) if n_s else None
        s_bs = -(-n_s // steps) if n_s else 0
        total = 0.0
        for step in range(steps):
            bi = perm[step * batch_size:(step + 1) * batch_size]
            if finetune:
                feats = encoder(x_real[bi]).flatten(1)
                reg = beta * ((feats - f0_real[bi]) ** 2).sum(1).mean()
            else:
                feats, reg = f0_real[bi], torch.zeros(())
            si = perm_s[step * s_bs:(step + 1) * s_bs] if perm_s is not None else perm[:0]
            count = bi.numel() + si.numel()
            if mixup > 0:
                z, yz = torch.cat([feats, s_x[si]]), torch.cat([y_real[bi], s_y[si]])
                mix, lam = mixup_draw(count, mixup, g)
                loss = mixed_cross_entropy(head(lam * z + (1.0 - lam) * z[mix]), yz, mix, lam)
            else:
                loss = F.cross_entropy(head(feats), y_real[bi], reduction="sum")
                if si.numel():
                    loss = loss + F.cross_entropy(head(s_x[si]), s_y[si], reduction="sum")
            loss = loss / count + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history["epoch"].append(epoch + 1)
        history["loss"].append(total / steps)
    encoder.eval()
    head.eval()
    return RCALResult(encoder=encoder, head=head, kept=kept, means=cal_means.float(), covs=cal_covs.float(), tail=tail,
                      history=history)
