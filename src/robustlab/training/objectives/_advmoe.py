"""``advmoe``: adversarial training of mixture-of-experts models with alternating router / expert updates."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..._validation import check_in_range, check_int
from .._objectives import Batch, register_objective
from ._adversarial import PGDATObjective

__all__ = ["AdvMoEObjective"]


def _router_params(model: nn.Module) -> set[int]:
    from ...models import MoEConv2d

    return {id(p) for m in model.modules() if isinstance(m, MoEConv2d) for p in m.router.parameters()}


@register_objective(
    "advmoe", tags={"adversarial"},
    reference="Zhang et al., Robust Mixture-of-Expert Training for Convolutional Neural Networks, ICCV 2023 "
              "(arXiv:2308.10110)",
    example_kwargs={"eps": 0.1, "steps": 3},
)
class AdvMoEObjective(PGDATObjective):
    r"""AdvMoE: PGD adversarial training that alternates between the routers and the experts.

    For ``every`` steps only the routers of the model's :class:`~robustlab.models.MoEConv2d` layers learn (the
    other parameters are frozen for that step: no gradient, so the optimiser leaves them untouched), then for
    ``every`` steps everything but the routers, and so on. Each step trains on fresh PGD examples of the
    current model (same ``eps``/``steps``/``norm`` as ``pgd_at``): \(\ell(f(x^{adv}), y)\) plus ``balance``
    times the layers' load-balancing loss. This is the alternating (bi-level) scheme the paper contrasts with
    joint PGD-AT (``pgd_at`` on the same model), with which routers and experts fail to become robust together.
    On a model without MoE layers it is ``pgd_at``. Cost: ``steps + 1`` forward+backward passes per step.
    """

    _owner = "advmoe"

    def __init__(self, *, eps: float = 8 / 255, step_size: float | None = None, steps: int = 10,
                 norm: str = "linf", random_start: bool = True, every: int = 1, balance: float = 0.0,
                 eps_schedule: str = "constant", eps_warmup_epochs: int | None = None) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, norm=norm, random_start=random_start,
                         eps_schedule=eps_schedule, eps_warmup_epochs=eps_warmup_epochs)
        self.every = check_int(every, "every", 1, None, owner=self._owner)
        self.balance = float(check_in_range(balance, "balance", 0.0, None, owner=self._owner))
        self._moe_step = 0

    def phase(self) -> str:
        """``"router"`` or ``"experts"``: the parameters the next step trains."""
        return "router" if (self._moe_step // self.every) % 2 == 0 else "experts"

    def __call__(self, model: nn.Module, batch: Batch, loss: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        routers = _router_params(model)
        if not routers:
            return super().__call__(model, batch, loss)
        train_router = self.phase() == "router"
        self._moe_step += 1
        frozen = [p for p in model.parameters() if p.requires_grad and ((id(p) in routers) != train_router)]
        x_adv = self.perturb(model, batch.x, _ce(batch.y))
        for p in frozen:
            p.requires_grad_(False)
        try:
            from .._objectives import compute_loss

            logits_adv = model(x_adv)
            value = compute_loss(loss, logits_adv, batch.y, batch.index)
            if self.balance > 0:
                from ...models import load_balancing_loss

                value = value + self.balance * load_balancing_loss(model)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        metrics = {"adv_acc": (logits_adv.detach().argmax(1) == batch.y).float().mean(),
                   "adv_loss": value.detach(), "router_phase": torch.tensor(float(train_router))}
        return value, self._eps_metric(metrics, value)


def _ce(y: torch.Tensor) -> Any:
    from ._adversarial import _ce_sum

    return _ce_sum(y)
