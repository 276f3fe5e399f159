"""The ε schedule shared by adversarial and certified objectives (declared once).

``eps_schedule="constant"`` trains at ε from the first step. ``"linear"`` ramps ε from 0 to its value
step by step, as IBP training does (Gowal et al. 2018): the factor at global training step ``s`` is

.. math:: t(s) = \\min\\big(1, \\max\\big(0, (s - w + 1) / r\\big)\\big)

with ``w`` clean warm-up steps (IBP's ``warmup`` fraction; 0 for adversarial objectives) and ``r`` ramp
steps: IBP's ``rampup`` fraction of all steps, or, with ``eps_warmup_epochs=k``, what is left of the first
``k`` epochs after the warm-up (so ε is full from epoch ``k`` on). ``fit`` drives
the step counter through ``setup`` (the number of steps) and ``on_epoch_start`` (which re-anchors the counter
to ``epoch · steps_per_epoch``, so resumed runs continue the ramp). Outside ``fit`` the factor is 1.
A ramped ε starts the run at a small radius, a known remedy for adversarial training that collapses to
a constant classifier at the full ε (see :func:`robustlab.training.fit`'s collapse warning).
"""

from __future__ import annotations

import math
from typing import Any

from ..._validation import InvalidParameterError, check_int, check_option

__all__ = ["EPS_SCHEDULES", "EpsScheduled"]

#: The ε schedules every adversarial and certified objective accepts.
EPS_SCHEDULES = ("constant", "linear")


class EpsScheduled:
    """Mixin for objectives whose ε follows :data:`EPS_SCHEDULES`; put it before ``Objective`` in the bases.

    Subclasses call :meth:`_init_eps_schedule` in ``__init__`` and read :meth:`progress` (or
    :meth:`_advance`, which also moves to the next step, once per training step).
    """

    eps_schedule: str = "constant"
    eps_warmup_epochs: int | None = None
    _warmup_fraction: float = 0.0
    _rampup_fraction: float | None = None
    _total: int | None = None
    _step: int = 0

    def _init_eps_schedule(self, eps_schedule: str, eps_warmup_epochs: int | None, owner: str) -> None:
        self.eps_schedule = check_option(eps_schedule, "eps_schedule", EPS_SCHEDULES, owner=owner)
        if eps_warmup_epochs is not None:
            check_int(eps_warmup_epochs, "eps_warmup_epochs", 0, None, owner=owner)
            if eps_schedule == "constant" and eps_warmup_epochs > 0:
                raise InvalidParameterError(
                    f"The 'eps_warmup_epochs' parameter of {owner} ({eps_warmup_epochs}) needs eps_schedule='linear'; "
                    "with eps_schedule='constant' ε is never ramped. Pass eps_schedule='linear' or drop it.")
            eps_warmup_epochs = int(eps_warmup_epochs)
        elif eps_schedule == "linear" and self._rampup_fraction is None:
            raise InvalidParameterError(
                f"{owner}: eps_schedule='linear' needs 'eps_warmup_epochs' (the number of epochs over which ε "
                "grows from 0 to its value), e.g. eps_warmup_epochs=5.")
        self.eps_warmup_epochs = eps_warmup_epochs
        self._total = None
        self._step = 0

    def setup(self, **kw: Any) -> None:
        super().setup(**kw)  # type: ignore[misc]
        self._total = max(1, int(kw["epochs"]) * int(kw["steps_per_epoch"]))
        self._step = 0

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)  # type: ignore[misc]
        spe = getattr(self, "steps_per_epoch", 0)
        if self._total is not None and spe:
            self._step = int(epoch) * int(spe)  # keeps the ramp tied to the epoch

    def progress(self, step: int) -> float:
        """Ramp factor t in [0, 1] at global training step ``step`` (1 when ``setup`` was never called)."""
        if self._total is None or self.eps_schedule == "constant":
            return 1.0
        w = math.floor(self._warmup_fraction * self._total)
        if self.eps_warmup_epochs is not None:  # full ε after eps_warmup_epochs epochs, the clean warm-up included
            end = self.eps_warmup_epochs * int(getattr(self, "steps_per_epoch", 1))
            w = min(w, end)
            r = max(1, end - w)
        else:
            r = max(1, math.ceil(float(self._rampup_fraction or 0.0) * self._total))
        return min(1.0, max(0.0, (step - w + 1) / r))

    def _advance(self) -> float:
        """The factor at the current training step, then move to the next step."""
        t = self.progress(self._step)
        self._step += 1
        return t
