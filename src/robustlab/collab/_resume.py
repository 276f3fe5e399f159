"""``collab.fit``'s resumable state: ``<checkpoint_dir>/last.pt`` after every ``checkpoint_every`` epochs.

The state is what one epoch of the simulation changes: every active worker's parameters and momentum, the
workers' batch generators, the Byzantine generator, torch's global generator, the history and whether the
honest vectors diverged. It is written atomically and read with ``weights_only=True`` (tensors, numbers,
strings, lists and dicts only; :func:`robustlab.training.save_train_state`), so a run killed mid-epoch and
resumed ends bit-identical to an uninterrupted one on the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .._validation import InvalidParameterError, check_bool, check_int

__all__ = ["Resumable", "check_options"]


def check_options(checkpoint_dir: Any, checkpoint_every: Any, resume: Any) -> None:
    """Validate ``collab.fit``'s checkpoint options (``resume`` needs ``checkpoint_dir``)."""
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise InvalidParameterError(f"The 'checkpoint_dir' parameter of collab.fit must be a path or None. Got "
                                    f"{checkpoint_dir!r} instead.")
    check_int(checkpoint_every, "checkpoint_every", 1, None, owner="collab.fit")
    check_bool(resume, "resume", owner="collab.fit")
    if resume and checkpoint_dir is None:
        raise InvalidParameterError("The 'resume' parameter of collab.fit needs checkpoint_dir (the folder to resume "
                                    "from). Got resume=True with checkpoint_dir=None.")


class Resumable:
    """Save/restore of one collaborative run's epoch state in ``directory`` (``None``: nothing is kept)."""

    def __init__(self, directory: str | os.PathLike[str] | None, every: int, **settings: Any) -> None:
        from ..training._resume import fingerprint

        self.directory, self.every = directory, every
        self.fingerprint = fingerprint(kind="collab", **settings)

    def load(self) -> dict[str, Any] | None:
        """The saved state (None when there is none); refuses one written with other settings."""
        from ..training._resume import load

        assert self.directory is not None
        return load(self.directory, self.fingerprint)

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether to write the state after ``epoch`` (1-based count of finished epochs)."""
        return self.directory is not None and (epoch % self.every == 0 or epoch == epochs)

    def save(self, *, epoch: int, theta: torch.Tensor, mom: torch.Tensor, gens: list[torch.Generator],
             byz_gen: torch.Generator, history: dict[str, list[float]], diverged: bool) -> None:
        """Write the state after ``epoch`` finished epochs atomically."""
        from ..training._checkpoint import save_train_state

        assert self.directory is not None
        save_train_state(self.directory, {
            "fingerprint": self.fingerprint, "epoch": epoch, "theta": theta.clone(), "mom": mom.clone(),
            "gens": [g.get_state() for g in gens], "byz_gen": byz_gen.get_state(), "torch": torch.get_rng_state(),
            "history": {k: list(v) for k, v in history.items()}, "diverged": diverged})

    @staticmethod
    def restore(state: dict[str, Any], *, theta: torch.Tensor, mom: torch.Tensor, gens: list[torch.Generator],
                byz_gen: torch.Generator, history: dict[str, list[float]]) -> tuple[int, bool]:
        """Put ``state`` back into the given tensors, generators and history; returns ``(epoch, diverged)``."""
        if state["theta"].shape != theta.shape or len(state["gens"]) != len(gens):
            raise InvalidParameterError(f"The saved collab state has parameters {tuple(state['theta'].shape)} and "
                                        f"{len(state['gens'])} workers; this run has {tuple(theta.shape)} and "
                                        f"{len(gens)}. Use another checkpoint_dir or resume=False.")
        theta.copy_(state["theta"])
        mom.copy_(state["mom"])
        for g, s in zip(gens, state["gens"]):
            g.set_state(s)
        byz_gen.set_state(state["byz_gen"])
        torch.set_rng_state(state["torch"])
        history.clear()
        history.update({k: list(v) for k, v in state["history"].items()})
        return int(state["epoch"]), bool(state["diverged"])
