r"""Classifier heads on frozen features: ``logistic`` (discriminative), ``gaussian_nb`` and ``lda`` (generative).

A head is fitted in closed form (generative) or by full-batch L-BFGS (logistic) on features ``(N, F)`` and
labels ``(N,)``: ``head.fit(features, labels, num_classes)``, then ``head.predict_logits(features)`` gives
``(N, C)`` scores (log-posteriors up to a constant for the generative heads) and ``head.predict`` the
classes. Everything is computed in float64 on the features' device.

The generative-vs-discriminative question (Zheng et al., "Revisiting Discriminative vs. Generative
Classifiers: Theory and Implications", ICML 2023): naive Bayes approaches its asymptotic error with
:math:`O(\log d)` samples, logistic regression with :math:`O(d)`; :func:`learning_curve` measures the error
of each head against the number of labelled samples per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._registry import Registry
from .._validation import InvalidParameterError, NotCalibratedError, check_in_range, check_int

__all__ = ["HEADS", "GaussianNBHead", "Head", "LDAHead", "LogisticHead", "learning_curve", "register_head"]

HEADS: Registry[Head] = Registry("head", checks="robustlab.testing._heads")
register_head = HEADS.register


def _check_xy(features: Any, labels: Any, num_classes: int | None, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(features, torch.Tensor) or not features.dtype.is_floating_point or features.dim() != 2:
        raise InvalidParameterError(
            f"The 'features' parameter of {owner} must be a floating-point tensor of shape (N, F). "
            f"Got {getattr(features, 'dtype', type(features).__name__)} of shape {tuple(getattr(features, 'shape', ()))}.")
    if not bool(torch.isfinite(features).all()):
        raise InvalidParameterError(f"The 'features' parameter of {owner} holds NaN or infinite values.")
    if labels is None:
        return features.double(), torch.empty(0)
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dim() != 1:
        raise InvalidParameterError(f"The 'labels' parameter of {owner} must be an integer tensor of shape (N,). "
                                    f"Got {getattr(labels, 'dtype', type(labels).__name__)}.")
    if labels.shape[0] != features.shape[0]:
        raise InvalidParameterError(f"{owner}: {features.shape[0]} feature rows but {labels.shape[0]} labels.")
    if labels.numel() and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        raise InvalidParameterError(f"The 'labels' parameter of {owner} must lie in [0, {num_classes}). "
                                    f"Got range [{int(labels.min())}, {int(labels.max())}].")
    return features.double(), labels.long().to(features.device)


class Head:
    """Base class: ``fit(features, labels, num_classes) -> self``, ``predict_logits``, ``predict``, ``score``."""

    name = "head"
    num_classes: int
    num_features: int

    def fit(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> Head:
        """Fit on ``features`` (N, F) and integer ``labels`` (N,) in [0, num_classes) (default: max label + 1)."""
        x, y = _check_xy(features, labels, num_classes, f"{self.name}.fit")
        if x.shape[0] == 0:
            raise InvalidParameterError(f"{self.name}.fit needs at least one labelled sample. Got 0.")
        self.num_classes = check_int(num_classes if num_classes is not None else int(y.max()) + 1, "num_classes", 2,
                                     None, owner=f"{self.name}.fit")
        self.num_features = int(x.shape[1])
        self._fit(x, y)
        return self

    def predict_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Scores (N, C), float64: the predicted class is the argmax."""
        if not hasattr(self, "num_features"):
            raise NotCalibratedError(f"This {self.name} head is not fitted yet: call fit(features, labels) first.")
        x, _ = _check_xy(features, None, None, f"{self.name}.predict_logits")
        if x.shape[1] != self.num_features:
            raise InvalidParameterError(f"{self.name} was fitted on {self.num_features} features; got {x.shape[1]}.")
        return self._logits(x)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(features).argmax(1)

    def score(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy on ``(features, labels)``."""
        return float((self.predict(features) == labels.to(features.device)).double().mean())

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_") and k not in ("num_classes", "num_features"))
        return f"{type(self).__name__}({params})"


def _log_prior(y: torch.Tensor, c: int, priors: str) -> torch.Tensor:
    counts = torch.bincount(y, minlength=c).double()
    if priors == "uniform":
        return torch.full((c,), -torch.log(torch.tensor(float(c))).item(), dtype=torch.float64, device=y.device)
    return torch.log(counts.clamp_min(1e-12) / counts.sum())


def _class_means(x: torch.Tensor, y: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    onehot = F.one_hot(y, c).double()
    counts = onehot.sum(0)
    return (onehot.T @ x) / counts.clamp_min(1)[:, None], counts


@register_head("logistic", tags={"discriminative"}, reference="multinomial logistic regression (L2), L-BFGS",
               example_kwargs={"l2": 1e-3})
class LogisticHead(Head):
    r"""Multinomial logistic regression with an L2 penalty on standardised features (full-batch L-BFGS).

    :math:`\min_{W,b} \frac1N\sum_i \mathrm{CE}(Wx_i+b, y_i) + \frac{\lambda}{2}\|W\|^2` on the features
    standardised with the training mean/std, ``max_iter`` L-BFGS iterations.

    ``l2`` = :math:`\lambda` >= 0 (default 1e-3), ``max_iter`` (default 200).
    """

    name = "logistic"

    def __init__(self, l2: float = 1e-3, max_iter: int = 200) -> None:
        self.l2 = float(check_in_range(l2, "l2", 0.0, None, owner="logistic"))
        self.max_iter = check_int(max_iter, "max_iter", 1, None, owner="logistic")

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._mean, self._std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
        z = (x - self._mean) / self._std
        w = torch.zeros(z.shape[1], self.num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
        b = torch.zeros(self.num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z @ w + b, y) + 0.5 * self.l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self._w, self._b = w.detach(), b.detach()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self._mean) / self._std) @ self._w + self._b


@register_head("gaussian_nb", tags={"generative"}, reference="Gaussian naive Bayes (as scikit-learn's GaussianNB)",
               example_kwargs={})
class GaussianNBHead(Head):
    r"""Gaussian naive Bayes: a per-class mean and variance of each feature (as scikit-learn's GaussianNB).

    Per class mean :math:`\mu_{ck}` and variance :math:`\sigma^2_{ck}` of each feature
    (+ ``var_smoothing`` times the largest feature variance, scikit-learn's rule),
    :math:`\log p(c) - \frac12\sum_k [\log 2\pi\sigma^2_{ck} + (x_k-\mu_{ck})^2/\sigma^2_{ck}]`.

    ``priors``: ``"empirical"`` (class frequencies, default) or ``"uniform"``; ``var_smoothing`` default 1e-9.
    """

    name = "gaussian_nb"

    def __init__(self, var_smoothing: float = 1e-9, priors: str = "empirical") -> None:
        self.var_smoothing = float(check_in_range(var_smoothing, "var_smoothing", 0.0, None, owner="gaussian_nb"))
        self.priors = _check_priors(priors, "gaussian_nb")

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        c = self.num_classes
        mean, counts = _class_means(x, y, c)
        onehot = F.one_hot(y, c).double()
        var = (onehot.T @ (x - mean[y]) ** 2) / counts.clamp_min(1)[:, None]  # two-pass: no cancellation
        eps = self.var_smoothing * float(x.var(0, unbiased=False).max()) or 1e-12  # constant features: a floor
        self._mean, self._var = mean, var.clamp_min(0) + eps
        self._log_prior = _log_prior(y, c, self.priors)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        ll = -0.5 * (torch.log(2 * torch.pi * self._var).sum(1)[None, :]
                     + (((x[:, None, :] - self._mean[None]) ** 2) / self._var[None]).sum(2))
        return ll + self._log_prior


@register_head("lda", tags={"generative"}, reference="linear discriminant analysis with shrinkage (Friedman 1989)",
               example_kwargs={"shrinkage": 0.1})
class LDAHead(Head):
    r"""Linear discriminant analysis: class means and one shared covariance
    :math:`\Sigma = (1-s)\hat\Sigma + s\,\frac{\mathrm{tr}\hat\Sigma}{F} I`, scores
    :math:`x^\top\Sigma^{-1}\mu_c - \frac12\mu_c^\top\Sigma^{-1}\mu_c + \log p(c)`.

    ``shrinkage`` s in [0, 1] (default 0.1; needed when N < F), ``priors`` as :class:`GaussianNBHead`.
    """

    name = "lda"

    def __init__(self, shrinkage: float = 0.1, priors: str = "empirical") -> None:
        self.shrinkage = float(check_in_range(shrinkage, "shrinkage", 0.0, 1.0, owner="lda"))
        self.priors = _check_priors(priors, "lda")

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        c, f = self.num_classes, x.shape[1]
        mean, _ = _class_means(x, y, c)
        r = x - mean[y]
        cov = r.T @ r / max(1, x.shape[0])
        target = (torch.trace(cov) / f).clamp_min(1e-12) * torch.eye(f, dtype=x.dtype, device=x.device)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * target + 1e-10 * torch.eye(f, dtype=x.dtype, device=x.device)
        coef = torch.linalg.solve(cov, mean.T)  # (F, C)
        self._coef = coef
        self._bias = -0.5 * (mean * coef.T).sum(1) + _log_prior(y, c, self.priors)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self._coef + self._bias


def _check_priors(priors: Any, owner: str) -> str:
    if priors not in ("empirical", "uniform"):
        raise InvalidParameterError(f"The 'priors' parameter of {owner} must be 'empirical' or 'uniform'. "
                                    f"Got {priors!r} instead.")
    return str(priors)


def resolve_head(head: Any, head_kw: dict[str, Any] | None = None) -> Head:
    """A registry name -> a new head; a :class:`Head` instance is used as is."""
    if isinstance(head, str):
        return HEADS.get(head, **(head_kw or {}))
    if isinstance(head, Head) and not head_kw:
        return head
    raise InvalidParameterError(f"The 'head' parameter must be a head name ({', '.join(HEADS.available())}) or a "
                                f"Head instance (without head_kw). Got {head!r}.")


def per_class_sample(labels: torch.Tensor, n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n`` examples of each class drawn without replacement (seeded), sorted."""
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels.cpu() == c).flatten()
        if idx.numel() < n:
            raise InvalidParameterError(f"n_per_class={n} exceeds the {idx.numel()} training examples of class {c}.")
        out.append(idx[torch.randperm(idx.numel(), generator=generator)[:n]])
    return torch.cat(out).sort().values


def learning_curve(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   test_labels: torch.Tensor, *, heads: Sequence[str] = ("logistic", "gaussian_nb", "lda"),
                   n_per_class: Sequence[int] = (1, 2, 5, 10, 20, 50), seeds: Sequence[int] = (0, 1, 2),
                   num_classes: int | None = None) -> list[dict[str, Any]]:
    """Test error of each head fitted on ``n`` labelled samples per class, for every ``n`` and seed.

    Returns rows ``{"head", "n_per_class", "seed", "error"}`` (the experiment of Zheng et al. 2023 on frozen
    features). The same ``seed`` draws the same samples for every head.

    Example::

        rows = learning_curve(f_tr, y_tr, f_te, y_te, n_per_class=[2, 5, 10], seeds=[0, 1])
    """
    owner = "learning_curve"
    _check_xy(train_features, train_labels, num_classes, owner)
    _check_xy(test_features, test_labels, num_classes, owner)
    k = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    ns = [check_int(n, "n_per_class", 1, None, owner=owner) for n in n_per_class]
    seeds = [check_int(s, "seeds", 0, None, owner=owner) for s in seeds]
    for h in heads:
        HEADS.spec(h)
    rows = []
    for n in ns:
        for s in seeds:
            idx = per_class_sample(train_labels, n, k, torch.Generator().manual_seed(s))
            for h in heads:
                head = HEADS.get(h).fit(train_features[idx], train_labels[idx], k)
                rows.append({"head": h, "n_per_class": n, "seed": s,
                             "error": 1.0 - head.score(test_features, test_labels)})
    return rows
