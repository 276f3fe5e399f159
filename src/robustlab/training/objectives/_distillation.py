"""Adversarial distillation objectives: ``ard`` (one robust teacher) and ``mtard`` (clean + robust teachers).

Teachers are modules or checkpoint paths (loaded with ``training.load_checkpoint``, weights only); they
are frozen, kept in eval mode and moved to the training device in ``setup``. The adversarial examples
maximise the student's cross-entropy (:func:`robustlab.attacks.threat.pgd`, student in eval mode).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..._validation import check_bool, check_in_range
from .._checkpoint import load_checkpoint
from .._objectives import Batch, compute_loss, register_objective
from ._adversarial import AdversarialObjective, _ce_sum, _kl_rows

__all__ = ["ARDObjective", "MTARDObjective", "entropy_balance", "normalized_loss_balance"]


def _load_teacher(teacher: Any, name: str, owner: str) -> nn.Module:
    if isinstance(teacher, (str, os.PathLike)):
        teacher = load_checkpoint(teacher)
    if not isinstance(teacher, nn.Module):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be an nn.Module or a checkpoint path. "
            f"Got {type(teacher).__name__} instead.")
    teacher = copy.deepcopy(teacher)  # the teacher is frozen; never touch the caller's module
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _short_repr(obj: Any) -> str:
    """``Name(k=v, ...)`` with teacher modules shown by class name only."""
    skip = {"generator", "epochs", "steps_per_epoch", "num_classes", "num_train", "epoch"}
    items = [f"{k}={type(v).__name__ if isinstance(v, nn.Module) else repr(v)}"
             for k, v in vars(obj).items() if not k.startswith("_") and k not in skip]
    return f"{type(obj).__name__}({', '.join(items)})"


def _distill_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float,
                student_temperature: float = 1.0) -> torch.Tensor:
    """Batch-mean KL(softmax(t / T) || softmax(s / T_s)), summed over classes."""
    return _kl_rows(F.log_softmax(teacher_logits / temperature, 1),
                    F.log_softmax(student_logits / student_temperature, 1)).mean()


@register_objective(
    "ard", tags={"adversarial", "distillation", "needs_teacher"},
    reference="Goldblum et al., AAAI 2020 (arXiv:1905.09747)",
    example_kwargs={"eps": 0.1, "steps": 3, "teacher": None},
)
class ARDObjective(AdversarialObjective):
    r"""Adversarially robust distillation from one robust teacher.

    .. math:: w\,T^2\,\mathrm{KL}\big(\sigma(t(x)/T)\,\|\,\sigma(s(x')/T)\big) + (1-w)\,\ell(s(x), y),
              \quad x' = \mathrm{PGD}_\epsilon(\mathrm{CE}(s(\cdot), y))

    ``teacher``: a module or checkpoint path (required); ``teacher_weight`` = w in [0, 1];
    ``temperature`` = T > 0. Cost: ``steps + 1`` student forward+backward passes plus one teacher
    forward (``steps + 2`` with ``teacher_weight < 1``, which adds the clean student pass).
    Reference: Goldblum, Fowl, Feizi, Goldstein, "Adversarially Robust Distillation", AAAI 2020.
    """

    _owner = "ard"

    def __init__(self, *, teacher: Any = None, eps: float = 8 / 255, step_size: float | None = None,
                 steps: int = 10, norm: str = "linf", random_start: bool = True, temperature: float = 1.0,
                 teacher_weight: float = 1.0,
                 eps_schedule: str = "constant", eps_warmup_epochs: int | None = None) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, norm=norm, random_start=random_start,
                         eps_schedule=eps_schedule, eps_warmup_epochs=eps_warmup_epochs)
        if teacher is None:
            raise TypeError("ard needs a 'teacher' (an nn.Module or a checkpoint path such as 'runs/robust').")
        self.teacher = _load_teacher(teacher, "teacher", self._owner)
        self.temperature = float(check_in_range(temperature, "temperature", 0.0, None, closed="neither", owner=self._owner))
        self.teacher_weight = float(check_in_range(teacher_weight, "teacher_weight", 0.0, 1.0, owner=self._owner))
        self.passes_per_step = float(self.steps + 1 + (1 if self.teacher_weight < 1 else 0))

    def __repr__(self) -> str:
        return _short_repr(self)

    def setup(self, *, model: nn.Module, **kw: Any) -> None:
        super().setup(model=model, **kw)
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.teacher.to(dev)

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = batch.y
        x_adv = self.perturb(model, batch.x, _ce_sum(y))
        with torch.no_grad():
            t_logits = self.teacher(batch.x)
        logits_adv = model(x_adv)
        t = self.temperature
        kl = _distill_kl(t_logits, logits_adv, t, t)
        value = self.teacher_weight * t * t * kl
        metrics = {"adv_acc": (logits_adv.detach().argmax(1) == y).float().mean(), "kl": kl.detach()}
        if self.teacher_weight < 1:
            logits = model(batch.x)
            value = value + (1 - self.teacher_weight) * compute_loss(loss, logits, y, batch.index)
            metrics["acc"] = (logits.detach().argmax(1) == y).float().mean()
        return value, self._eps_metric(metrics, value)


def entropy_balance(
    tau_adv: float, tau_nat: float, probs_adv: torch.Tensor, probs_nat: torch.Tensor, *,
    lr: float = 1e-3, tau_range: tuple[float, float] = (1.0, 10.0),
) -> tuple[float, float]:
    r"""B-MTARD entropy-based balance of the two teachers' temperatures.

    .. math:: H_k = \mathrm{mean}(p_k\log p_k),\quad
              \tau_{adv} \leftarrow \mathrm{clip}(\tau_{adv} - \eta\,\mathrm{sign}(H_{adv}/H_{nat} - 1)),\;
              \tau_{nat} \leftarrow \mathrm{clip}(\tau_{nat} - \eta\,\mathrm{sign}(H_{nat}/H_{adv} - 1))

    The less confident teacher (larger entropy) is sharpened, the other softened, so their entropies
    approach each other. ``probs_*`` are (N, C) teacher probabilities at the current temperatures.
    Reference: Zhao, Wang, Wei, "Mitigating Accuracy-Robustness Trade-off via Balanced Multi-Teacher
    Adversarial Distillation" (arXiv:2306.16170, TPAMI 2024).
    """
    lo, hi = tau_range
    h_adv = (probs_adv * probs_adv.clamp_min(1e-12).log()).mean()
    h_nat = (probs_nat * probs_nat.clamp_min(1e-12).log()).mean()
    if float(h_adv) == 0.0 or float(h_nat) == 0.0:  # a one-hot teacher: nothing to balance against
        return float(tau_adv), float(tau_nat)
    s_adv = float(torch.sign(h_adv / h_nat - 1))
    s_nat = float(torch.sign(h_nat / h_adv - 1))
    return (min(max(tau_adv - lr * s_adv, lo), hi), min(max(tau_nat - lr * s_nat, lo), hi))


def normalized_loss_balance(
    weights: tuple[float, float], losses: tuple[float, float], init_losses: tuple[float, float], *,
    lr: float = 0.025,
) -> tuple[float, float]:
    r"""B-MTARD normalised loss balance of the (adv, nat) loss weights, kept on the simplex.

    .. math:: \hat l_k = L_k / L_k^0,\; r_k = \hat l_k / \mathrm{mean}(\hat l),\;
              w_k \leftarrow \max\big(0, w_k - \eta\,(w_k - r_k / \textstyle\sum r)\big),\; w \leftarrow w / \sum w

    The teacher whose relative loss falls more slowly gets more weight.
    """
    rel = [float(l_) / max(float(l0), 1e-12) for l_, l0 in zip(losses, init_losses)]
    mean = sum(rel) / 2
    if mean <= 0:
        return float(weights[0]), float(weights[1])
    r = [v / mean for v in rel]
    total_r = sum(r)
    new = [max(0.0, w - lr * (w - rk / total_r)) for w, rk in zip(weights, r)]
    s = sum(new)
    if s <= 0:
        return 0.5, 0.5
    return new[0] / s, new[1] / s


@register_objective(
    "mtard", tags={"adversarial", "distillation", "needs_teacher"},
    reference="Zhao, Wang, Wei, ECCV 2022 / TPAMI 2024 (arXiv:2306.16170)",
    example_kwargs={"eps": 0.1, "steps": 3, "clean_teacher": None, "robust_teacher": None},
)
class MTARDObjective(AdversarialObjective):
    r"""Multi-teacher adversarial distillation (B-MTARD): a clean and a robust teacher, balanced.

    .. math:: w_{adv}\,\mathrm{KL}\big(\sigma(t_{rob}(x')/\tau_{adv})\,\|\,\sigma(s(x'))\big)
              + w_{nat}\,\mathrm{KL}\big(\sigma(t_{cln}(x)/\tau_{nat})\,\|\,\sigma(s(x))\big),\quad w_{adv}+w_{nat}=1

    ``x'`` maximises the student's CE from ``x + 0.001 N(0, I)`` (the authors' start). Each step, :func:`entropy_balance` moves the temperatures
    (``tau_lr``, clipped to [1, 10]) and :func:`normalized_loss_balance` the weights (``weight_lr``;
    initial losses from the first batch of training). KL is batch-mean (the authors' code averages over
    all B*C entries, i.e. divides by C as well). Cost: ``steps + 2`` student forward+backward passes
    plus two teacher forwards per step.
    Reference: Zhao, Wang, Wei, "Mitigating Accuracy-Robustness Trade-off via Balanced Multi-Teacher
    Adversarial Distillation", TPAMI 2024 (arXiv:2306.16170).
    """

    _owner = "mtard"
    _attack_start = "normal"

    def __init__(self, *, clean_teacher: Any = None, robust_teacher: Any = None, eps: float = 8 / 255,
                 step_size: float | None = None, steps: int = 10, norm: str = "linf", random_start: bool = True,
                 tau_adv: float = 1.0, tau_nat: float = 1.0, tau_lr: float = 1e-3, weight_lr: float = 0.025,
                 balance_entropy: bool = True, balance_loss: bool = True,
                 eps_schedule: str = "constant", eps_warmup_epochs: int | None = None) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, norm=norm, random_start=random_start,
                         eps_schedule=eps_schedule, eps_warmup_epochs=eps_warmup_epochs)
        owner = self._owner
        if clean_teacher is None or robust_teacher is None:
            raise TypeError("mtard needs 'clean_teacher' and 'robust_teacher' (nn.Modules or checkpoint paths).")
        self.clean_teacher = _load_teacher(clean_teacher, "clean_teacher", owner)
        self.robust_teacher = _load_teacher(robust_teacher, "robust_teacher", owner)
        self.tau_adv = float(check_in_range(tau_adv, "tau_adv", 1.0, 10.0, owner=owner))
        self.tau_nat = float(check_in_range(tau_nat, "tau_nat", 1.0, 10.0, owner=owner))
        self.tau_lr = float(check_in_range(tau_lr, "tau_lr", 0.0, None, owner=owner))
        self.weight_lr = float(check_in_range(weight_lr, "weight_lr", 0.0, 1.0, owner=owner))
        self.balance_entropy = check_bool(balance_entropy, "balance_entropy", owner=owner)
        self.balance_loss = check_bool(balance_loss, "balance_loss", owner=owner)
        self.passes_per_step = float(self.steps + 2)
        self._init_taus = (self.tau_adv, self.tau_nat)
        self.w_adv, self.w_nat = 0.5, 0.5
        self._init_losses: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return _short_repr(self)

    def setup(self, *, model: nn.Module, **kw: Any) -> None:
        super().setup(model=model, **kw)
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.clean_teacher.to(dev)
        self.robust_teacher.to(dev)
        self.tau_adv, self.tau_nat = self._init_taus
        self.w_adv, self.w_nat = 0.5, 0.5
        self._init_losses = None

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = batch.y
        x_adv = self.perturb(model, batch.x, _ce_sum(y))
        with torch.no_grad():
            t_adv = self.robust_teacher(x_adv)
            t_nat = self.clean_teacher(batch.x)
        logits = model(batch.x)
        logits_adv = model(x_adv)
        l_adv = _distill_kl(t_adv, logits_adv, self.tau_adv)
        l_nat = _distill_kl(t_nat, logits, self.tau_nat)
        value = self.w_adv * l_adv + self.w_nat * l_nat
        metrics = {"acc": (logits.detach().argmax(1) == y).float().mean(),
                   "adv_acc": (logits_adv.detach().argmax(1) == y).float().mean(),
                   "kl_adv": l_adv.detach(), "kl_nat": l_nat.detach(),
                   "w_adv": torch.tensor(self.w_adv, device=logits.device),
                   "tau_adv": torch.tensor(self.tau_adv, device=logits.device),
                   "tau_nat": torch.tensor(self.tau_nat, device=logits.device)}
        if model.training:  # the balance rules update only during training steps
            self._balance(t_adv, t_nat, float(l_adv.detach()), float(l_nat.detach()))
        return value, self._eps_metric(metrics, value)

    def _balance(self, t_adv: torch.Tensor, t_nat: torch.Tensor, l_adv: float, l_nat: float) -> None:
        if self.balance_entropy:
            self.tau_adv, self.tau_nat = entropy_balance(
                self.tau_adv, self.tau_nat, F.softmax(t_adv / self.tau_adv, 1), F.softmax(t_nat / self.tau_nat, 1),
                lr=self.tau_lr)
        if self.balance_loss:
            if self._init_losses is None:
                self._init_losses = (l_adv, l_nat)
            else:
                self.w_adv, self.w_nat = normalized_loss_balance(
                    (self.w_adv, self.w_nat), (l_adv, l_nat), self._init_losses, lr=self.weight_lr)
