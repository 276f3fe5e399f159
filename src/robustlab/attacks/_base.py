"""The :class:`Attack` base class, the ``ATTACKS`` registry and shared tensor helpers.

An attack is configured at construction and called as ``attack(model, x, y, *, targets=None,
generator=None, progress=None) -> x_adv``. The base call validates once (finite [0, 1] inputs, integer
labels of any dtype inside the model's classes), checks that a gradient attack can differentiate the model
w.r.t. its input, switches the model to eval mode (and restores it), enables grad, runs the subclass's
``_run`` (which must only use ``torch.autograd.grad`` w.r.t. the input, so parameter ``.grad`` is never
touched), projects onto the ε-ball and [0, 1] and detaches.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import check_progress, progress_bar, progress_enabled
from .._registry import Registry
from .._validation import (
    InvalidParameterError,
    check_finite,
    check_image_batch,
    check_in_range,
    check_labels,
    check_option,
)
from .threat import NORMS, batch_view, l2_norm, project, rand, random_start

__all__ = [
    "ATTACKS", "Attack", "BUDGETS", "NORMS", "NoInputGradientError", "register_attack", "project", "dlr_loss",
    "targeted_dlr_loss", "margin", "check_logits_not_probabilities", "looks_like_probabilities",
    "has_input_gradient", "probe_model", "rand", "random_start", "l2_norm", "quiet_probability_warning",
]

#: The common budget options and what they count; each attack class declares which one it takes
#: (:attr:`Attack.budget_param`), so suites map ``steps`` / ``n_queries`` onto the attacks that take them.
BUDGETS = {"steps": "iterations", "n_queries": "model queries per example"}

ATTACKS: Registry[Attack] = Registry("attack", checks="robustlab.testing._attacks")


def register_attack(name: str, **kw: Any) -> Callable[[Any], Any]:
    """Register an :class:`Attack` subclass (or factory) in ``ATTACKS``."""
    return ATTACKS.register(name, **kw)


# ----------------------------------------------------------------------------------------------
# shared helpers (assume valid input; no syncs); the threat model itself lives in .threat
# ----------------------------------------------------------------------------------------------
_view_b = batch_view  # short in-package name (N,) -> (N, 1, ...)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example classification margin ``z_y − max_{j≠y} z_j`` (negative = misclassified)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted Difference-of-Logits-Ratio loss (Croce & Hein 2020), per example.

    ``DLR = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12)``, π the logits sorted descending.
    Invariant to shifts and positive rescaling of the logits; needs at least 3 classes.
    """
    top3 = logits.topk(3, dim=1).values
    return -margin(logits, y) / (top3[:, 0] - top3[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: ``−(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12)`` (Croce & Hein 2020).

    With exactly 3 classes ``z_π4`` does not exist and ``z_π3`` is used in its place.
    """
    k = min(4, logits.shape[1])
    top = logits.topk(k, dim=1).values
    denom = top[:, 0] - 0.5 * (top[:, 2] + top[:, k - 1]) + 1e-12
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / denom


class NoInputGradientError(InvalidParameterError):
    """The model's output has no gradient w.r.t. its input (the autograd graph is cut), so gradient attacks cannot run."""


_QUIET_PROBS: contextvars.ContextVar[bool] = contextvars.ContextVar("robustlab_quiet_probs", default=False)
_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("robustlab_attack_progress", default=False)


@contextlib.contextmanager
def quiet_probability_warning() -> Iterator[None]:
    """Inside this block attacks do not warn about probability outputs (an evaluation flags it once instead)."""
    token = _QUIET_PROBS.set(True)
    try:
        yield
    finally:
        _QUIET_PROBS.reset(token)


def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """Whether the outputs look like probabilities: non-negative rows summing to 1 (attacks need raw logits)."""
    if logits.numel() == 0 or logits.dim() != 2 or logits.shape[1] < 2:
        return False
    with torch.no_grad():
        lg = logits.detach()
        return bool((lg.min() >= 0) & ((lg.sum(1) - 1).abs().max() < 1e-4))


PROBABILITIES_FLAG = ("the model's outputs look like probabilities (non-negative rows summing to 1): attacks "
                      "(cross-entropy, DLR, margin) need raw logits, so the robust accuracy may be overestimated; "
                      "remove the final softmax from the model")
NO_INPUT_GRADIENT_FLAG = ("no input gradient: the model's output does not depend differentiably on its input "
                          "(the autograd graph is cut, e.g. by thresholding, .detach(), argmax or non-torch code), "
                          "a form of gradient masking")


def probe_model(model: Callable[[torch.Tensor], torch.Tensor], x1: torch.Tensor, owner: str) -> torch.Tensor:
    """``model(x1)`` without grad, checked to be one (N, C) logits tensor; a model that fails on inputs of this
    shape (e.g. data of the wrong shape for a checkpoint) is an :class:`InvalidParameterError` saying so."""
    try:
        with torch.no_grad():
            logits = model(x1)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidParameterError(
            f"{owner}: the model fails on inputs of shape {tuple(x1.shape[1:])} per example, dtype {x1.dtype}, "
            f"device {x1.device} ({first}); check that the data match the model's expected input.") from e
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise TypeError(f"{owner}: the model must return one (N, C) logits tensor. "
                        f"Got {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}.")
    return logits


def has_input_gradient(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> bool:
    """Whether ``model(x)`` is connected to ``x`` in the autograd graph (one forward/backward; parameters untouched)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xg)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return False
        (g,) = torch.autograd.grad(out.float().sum(), xg, allow_unused=True)
    return g is not None


def check_logits_not_probabilities(logits: torch.Tensor, owner: str) -> None:
    """Warn when the model's outputs look like probabilities (non-negative rows summing to 1).

    Silent inside :func:`quiet_probability_warning` (evaluations report it once, as a flag of the result).
    """
    if _QUIET_PROBS.get():
        return
    if looks_like_probabilities(logits):
        warnings.warn(
            f"{owner}: the model's outputs are non-negative and each row sums to 1, so they look like "
            "probabilities; attacks (cross-entropy, DLR, margin) need raw logits. Remove the final softmax "
            "from the model.",
            UserWarning,
            stacklevel=4,
        )


def _ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------
class Attack:
    """Base class: configure at construction, call as ``attack(model, x, y, *, targets=None)``.

    Subclasses set ``name`` and implement ``_run(model, x, y, targets, generator) -> x_adv``; the
    base ``__call__`` validates ``x`` (finite floats in [0, 1]), ``y`` and ``targets`` (integer class indices
    of any integer dtype, inside the model's output width; passed to ``_run`` as int64), checks that the model
    has an input gradient when ``uses_gradients`` (else :class:`NoInputGradientError`), puts the model in eval
    mode (restoring its mode afterwards), enables grad, then projects the result onto the ε-ball and
    [0, 1] and returns it detached. ``x`` is never modified and parameter ``.grad`` is never touched.

    Class attributes: ``supports_targets`` (``targets=`` accepted), ``uses_gradients`` (needs input
    gradients; False for score-based black-box attacks), ``budget_param`` (the constructor parameter that
    sets the attack's budget, a key of :data:`BUDGETS`: ``"steps"`` or ``"n_queries"``; None for one-step
    attacks). ``progress=`` (None: auto, shown when stderr is a TTY) shows a bar over restarts, target
    classes or queries; subclasses wrap such loops in :meth:`_progress`.
    """

    name = "attack"
    supports_targets = True
    needs_three_classes = False
    uses_gradients: ClassVar[bool] = True
    budget_param: ClassVar[str | None] = None

    def __init__(self, *, eps: float, norm: str = "linf", generator: torch.Generator | None = None) -> None:
        check_option(norm, "norm", NORMS, owner=self.name)
        if norm == "linf":
            check_in_range(eps, "eps", 0.0, 1.0, owner=self.name)
        else:
            check_in_range(eps, "eps", 0.0, None, owner=self.name)
            if math.isinf(float(eps)):
                raise ValueError(f"The 'eps' parameter of {self.name} must be a finite float in [0, inf). Got {eps!r} instead.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"The 'generator' parameter of {self.name} must be a torch.Generator or None. "
                            f"Got {type(generator).__name__} instead.")
        self.eps = float(eps)
        self.norm = norm
        self.generator = generator

    # -- public -------------------------------------------------------------------------------
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Return adversarial examples for ``(x, y)``; with ``targets``, aim at those classes."""
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"The 'model' parameter of {self.name} must be a torch.nn.Module. Got {type(model).__name__}.")
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.dtype.is_floating_point:
                check_finite(x, "x", owner=self.name)
        check_image_batch(x, "x", owner=self.name)
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"'y' of {self.name} must be a tensor of shape ({x.shape[0]},) matching x. "
                f"Got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}."
            )
        if targets is not None:
            if not self.supports_targets:
                raise ValueError(f"The {self.name} attack is untargeted; it does not accept 'targets'.")
            if not isinstance(targets, torch.Tensor) or targets.shape != y.shape:
                raise ValueError(f"'targets' of {self.name} must be a tensor of shape {tuple(y.shape)} like y.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"The 'generator' parameter of {self.name} must be a torch.Generator or None. "
                            f"Got {type(generator).__name__} instead.")
        check_progress(progress, owner=self.name)
        gen = generator if generator is not None else self.generator
        x = x.detach()
        if x.shape[0] == 0:
            check_labels(y, 1, "y", owner=self.name)  # no labels to range-check: dtype and shape only
            return x.clone()
        was_training = getattr(model, "training", False)
        if isinstance(model, nn.Module):
            model.eval()
        token = _PROGRESS.set(progress_enabled(progress))
        try:
            with torch.enable_grad():
                logits = probe_model(model, x[:1], self.name)
                num_classes = logits.shape[1]
                check_labels(y, num_classes, "y", owner=self.name)
                if targets is not None:
                    check_labels(targets, num_classes, "targets", owner=self.name)
                    same = int((targets.to(y.device) == y).sum())
                    if same:
                        raise ValueError(f"'targets' of {self.name} equal the true label y for {same} example(s); a "
                                         "targeted attack needs a target class different from the true one.")
                    targets = targets.long()
                y = y.long()
                if self.eps == 0.0:
                    return x.clone()
                if self.needs_three_classes and num_classes < 3:
                    raise ValueError(f"{self.name} uses the DLR loss, which needs at least 3 classes "
                                     f"(it divides by z_π1 − z_π3); the model has {num_classes}. Use a CE-based attack.")
                if self.uses_gradients and not has_input_gradient(model, x[:1]):
                    raise NoInputGradientError(
                        f"{self.name} is a gradient attack, but the model has {NO_INPUT_GRADIENT_FLAG}. "
                        f"Use a gradient-free attack ({', '.join(gradient_free_attacks())}) or replace the "
                        "non-differentiable step by a differentiable approximation (BPDA) for the attack.")
                check_logits_not_probabilities(logits, self.name)
                x_adv = self._run(model, x, y, targets, gen)
        finally:
            _PROGRESS.reset(token)
            if isinstance(model, nn.Module):
                model.train(was_training)
        return project(x_adv.detach(), x, self.eps, self.norm)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------------
    def _progress(self, iterable: Iterable[Any] | int, what: str) -> Any:
        """A progress bar over ``iterable`` (or a manual bar of that many steps), shown when the call asked for one."""
        return progress_bar(iterable, f"{self.name} {what}", enabled=_PROGRESS.get())

    def budget(self) -> dict[str, int]:
        """The attack's budget as ``{budget_param: value}`` (empty for one-step attacks)."""
        if self.budget_param is None:
            return {}
        return {self.budget_param: int(getattr(self, self.budget_param))}

    def _hyper(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("generator", "needs_three_classes", "name")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper().items())
        return f"{type(self).__name__}({args})"


def gradient_free_attacks() -> list[str]:
    """Registered attacks that use only model outputs (no input gradients)."""
    return ATTACKS.available(tags=("black_box",))


def randint(high: int, shape: Any, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``torch.randint(0, high)`` on the generator's device, returned on ``like``'s device."""
    dev = generator.device if generator is not None else like.device
    return torch.randint(0, high, shape, generator=generator, device=dev).to(like.device)
