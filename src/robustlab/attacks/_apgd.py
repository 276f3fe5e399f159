"""Auto-PGD (APGD-CE, APGD-DLR) and targeted APGD-DLR over the top runner-up classes.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv:2003.01690.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import check_in_range, check_int, check_option
from ._base import Attack, _view_b, l2_norm, rand, register_attack
from ._pgd import _objective

__all__ = ["APGD", "APGDT", "apgd_run"]


def _proj_l2(z: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    delta = z - x
    n = l2_norm(delta)
    return (x + delta * _view_b(torch.clamp(eps / (n + 1e-12), max=1.0), x)).clamp_(0.0, 1.0)


def apgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, *,
             eps: float, norm: str, steps: int, rho: float, loss: str, generator: torch.Generator | None,
             success_vs_y: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run; returns ``(x_adv, success)``.

    Step ``η₀ = 2ε``; ``z = Π(x_k + η ∇-direction)``, ``x_{k+1} = Π(x_k + α(z − x_k) + (1−α)(x_k − x_{k−1}))``
    with ``α = 0.75`` (1 on the first step). Checkpoints after ``p_j·N`` steps (first 0.22 N, then shorter by
    0.03 N, at least 0.06 N): the step is halved and the iterate reset to the best point when the loss rose
    in at most ``ρ·k`` of the last ``k`` steps, or when the step was not halved last time and the best loss
    did not improve. ``x_adv`` is the highest-loss successful iterate where there is one, else the highest-loss iterate.
    Success is misclassification (or hitting ``targets`` unless ``success_vs_y``).
    """
    n_first = max(int(0.22 * steps), 1)
    n_min = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    b = x.shape[0]

    if norm == "linf":
        t = 2 * rand(x.shape, generator, x) - 1
        x_adv = x + eps * t / _view_b(t.flatten(1).abs().amax(1), x)
        lo = (x - eps).clamp_(min=0.0)
        hi = (x + eps).clamp_(max=1.0)
        x_adv = torch.min(torch.max(x_adv, lo), hi)
    else:
        t = rand(x.shape, generator, x, normal=True)
        x_adv = (x + eps * t / _view_b(l2_norm(t) + 1e-12, x)).clamp_(0.0, 1.0)

    def success_of(logits: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == targets if (targets is not None and not success_vs_y) else pred != y

    def loss_grad(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa.requires_grad_(True)
        logits = model(xa)
        li = _objective(logits, y, targets, loss)
        (g,) = torch.autograd.grad(li.sum(), xa)
        xa.requires_grad_(False)
        return li.detach(), g, logits.detach()

    loss_i, grad, logits = loss_grad(x_adv)
    success = success_of(logits)
    x_best_adv = x_adv.clone()
    loss_best_adv = torch.where(success, loss_i, torch.full_like(loss_i, float("-inf")))
    x_best, loss_best, grad_best = x_adv.clone(), loss_i.clone(), grad.clone()
    step = torch.full((b,), 2.0 * eps, dtype=x.dtype, device=x.device)
    x_old = x_adv.clone()
    k, counter = n_first, 0
    loss_best_last = loss_best.clone()
    reduced_last = torch.ones(b, dtype=torch.bool, device=x.device)
    increases = torch.zeros(b, dtype=x.dtype, device=x.device)
    prev_loss = loss_i

    for i in range(steps):
        with torch.no_grad():
            momentum = x_adv - x_old
            x_old = x_adv
            a = 0.75 if i > 0 else 1.0
            sb = _view_b(step, x)
            if norm == "linf":
                z = torch.min(torch.max(x_adv + sb * grad.sign(), lo), hi)
                x_adv = torch.min(torch.max(x_adv + a * (z - x_adv) + (1 - a) * momentum, lo), hi)
            else:
                z = _proj_l2(x_adv + sb * grad / _view_b(l2_norm(grad) + 1e-12, x), x, eps)
                x_adv = _proj_l2(x_adv + a * (z - x_adv) + (1 - a) * momentum, x, eps)
        loss_i, grad, logits = loss_grad(x_adv)
        with torch.no_grad():
            s = success_of(logits)
            better_adv = s & (loss_i > loss_best_adv)  # the strongest successful iterate
            x_best_adv = torch.where(_view_b(better_adv, x), x_adv, x_best_adv)
            loss_best_adv = torch.where(better_adv, loss_i, loss_best_adv)
            success |= s
            increases += (loss_i > prev_loss).to(x.dtype)
            prev_loss = loss_i
            improved = loss_i > loss_best
            ib = _view_b(improved, x)
            x_best = torch.where(ib, x_adv, x_best)
            grad_best = torch.where(ib, grad, grad_best)
            loss_best = torch.where(improved, loss_i, loss_best)
            counter += 1
            if counter == k:
                oscillating = increases <= k * rho
                no_improvement = ~reduced_last & (loss_best_last >= loss_best)
                reduce = oscillating | no_improvement
                reduced_last = reduce
                loss_best_last = loss_best.clone()
                step = torch.where(reduce, step / 2, step)
                rb = _view_b(reduce, x)
                x_adv = torch.where(rb, x_best, x_adv)
                grad = torch.where(rb, grad_best, grad)
                increases.zero_()
                k = max(k - decr, n_min)
                counter = 0
    out = torch.where(_view_b(success, x), x_best_adv, x_best)
    return out, success


def _run_restarts(run, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,  # type: ignore[no-untyped-def]
                  restarts: int, bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """First run on all examples, later restarts only on the examples not yet successful (``bar``: a progress bar)."""
    out, success = run(x, y, targets)
    if bar is not None:
        bar.update(1)
    for _ in range(restarts - 1):
        idx = (~success).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        o, s = run(x[idx], y[idx], None if targets is None else targets[idx])
        out[idx] = torch.where(_view_b(s, o), o, out[idx])
        success[idx] = s
        if bar is not None:
            bar.update(1)
    return out, success


class APGD(Attack):
    """Auto-PGD: PGD with momentum 0.75 and a step size (initially 2ε) halved at checkpoints (ρ = 0.75).

    ``loss`` in {"ce", "dlr"}; ``steps`` (100 in AutoAttack); ``restarts`` rerun only on examples not yet
    fooled. With ``targets`` the loss is targeted (−CE to the target, or targeted DLR).
    Croce & Hein, ICML 2020, arXiv:2003.01690.
    """

    name = "apgd"
    budget_param = "steps"

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, restarts: int = 1,
                 rho: float = 0.75, loss: str = "ce", generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.steps = check_int(steps, "steps", 1, None, owner=self.name)
        self.restarts = check_int(restarts, "restarts", 1, None, owner=self.name)
        self.rho = float(check_in_range(rho, "rho", 0.0, 1.0, owner=self.name))
        self.loss = check_option(loss, "loss", ("ce", "dlr"), owner=self.name)
        self.needs_three_classes = loss == "dlr"

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        def run(xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            return apgd_run(model, xs, ys, ts, eps=self.eps, norm=self.norm, steps=self.steps, rho=self.rho,
                            loss=self.loss, generator=generator)

        with self._progress(self.restarts, "restarts") as bar:
            return _run_restarts(run, x, y, targets, self.restarts, bar)[0]


@register_attack("apgd_ce", tags={"linf", "l2", "white_box", "gradient", "targeted"},
                 reference="Croce & Hein 2020, arXiv:2003.01690",
                 example_kwargs={"eps": 0.1, "steps": 10})
def apgd_ce(*, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, restarts: int = 1, rho: float = 0.75,
            generator: torch.Generator | None = None) -> APGD:
    """APGD on cross-entropy (AutoAttack's first attack): adaptive step, momentum 0.75, ρ = 0.75."""
    a = APGD(eps=eps, norm=norm, steps=steps, restarts=restarts, rho=rho, loss="ce", generator=generator)
    a.name = "apgd_ce"
    return a


@register_attack("apgd_dlr", tags={"linf", "l2", "white_box", "gradient", "targeted", "dlr"},
                 reference="Croce & Hein 2020, arXiv:2003.01690",
                 example_kwargs={"eps": 0.1, "steps": 10})
def apgd_dlr(*, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, restarts: int = 1, rho: float = 0.75,
             generator: torch.Generator | None = None) -> APGD:
    """APGD on the shift/scale-invariant DLR loss (needs ≥ 3 classes)."""
    a = APGD(eps=eps, norm=norm, steps=steps, restarts=restarts, rho=rho, loss="dlr", generator=generator)
    a.name = "apgd_dlr"
    return a


@register_attack("apgd_t", tags={"linf", "l2", "white_box", "gradient", "targeted", "dlr"},
                 reference="Croce & Hein 2020, arXiv:2003.01690",
                 example_kwargs={"eps": 0.1, "steps": 10, "n_target_classes": 3})
class APGDT(Attack):
    """Targeted APGD-DLR run toward each of the ``n_target_classes`` (9) highest non-true logits in turn.

    Each target run is one APGD run (``steps``) on the examples still correctly classified; an example is
    broken when any run misclassifies it. Targeted DLR ``−(z_y − z_t)/(z_π1 − ½(z_π3 + z_π4))`` needs ≥ 3
    classes (with 3, ``z_π3`` stands in for ``z_π4``). With explicit ``targets=`` it runs one targeted APGD
    toward them. Croce & Hein, ICML 2020, arXiv:2003.01690.
    """

    name = "apgd_t"
    budget_param = "steps"
    needs_three_classes = True

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, n_target_classes: int = 9,
                 rho: float = 0.75, loss: str = "dlr", generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.steps = check_int(steps, "steps", 1, None, owner=self.name)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", 1, None, owner=self.name)
        self.rho = float(check_in_range(rho, "rho", 0.0, 1.0, owner=self.name))
        self.loss = check_option(loss, "loss", ("dlr", "ce"), owner=self.name)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        def run(xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor, vs_y: bool) -> tuple[torch.Tensor, torch.Tensor]:
            return apgd_run(model, xs, ys, ts, eps=self.eps, norm=self.norm, steps=self.steps, rho=self.rho,
                            loss=self.loss, generator=generator, success_vs_y=vs_y)

        if targets is not None:
            return run(x, y, targets, False)[0]
        with torch.no_grad():
            logits = model(x)
        num_classes = logits.shape[1]
        ranked = logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
        out = x.clone()
        alive = logits.argmax(1) == y  # already-misclassified points need no attack
        for r in self._progress(range(min(self.n_target_classes, num_classes - 1)), "target classes"):
            idx = alive.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            o, s = run(x[idx], y[idx], ranked[idx, r], True)
            keep = _view_b(s | (r == 0), o)  # first run fills every point, later ones only on success
            out[idx] = torch.where(keep, o, out[idx])
            alive[idx] = ~s
        return out
