"""The ``collab`` section of a run config (:class:`robustlab.pipeline.Config`): validation, labels and training.

A run with ``collab`` trains with :func:`robustlab.collab.fit` inside :func:`robustlab.pipeline.run` (the one
pipeline); its axes are :data:`robustlab.pipeline.COLLAB_AXES`. Example config section::

    {"collab": {"workers": 10, "f": 2, "aggregator": "monna", "byzantine": "alie", "heterogeneity": "dirichlet:1"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._validation import InvalidParameterError

__all__ = ["COLLAB_TRAIN_OPTIONS", "CollabConfig"]

#: the train options a collaborative run honours (``optimizer`` must be ``sgd``: the workers' Polyak momentum)
COLLAB_TRAIN_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                        "eval_every")
_KEYS = ("workers", "f", "aggregator", "byzantine", "heterogeneity", "exchange")


def _component(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str) and set(value) <= {"name", "kwargs"}:
        kw = value.get("kwargs") or {}
        if not isinstance(kw, Mapping):
            raise InvalidParameterError(f"'collab.{where}.kwargs' must be a mapping. Got {kw!r} instead.")
        return value["name"], dict(kw)
    raise InvalidParameterError(f"'collab.{where}' must be a name or {{name: ..., kwargs: {{...}}}}. Got {value!r} instead.")


@dataclass(frozen=True)
class CollabConfig:
    """Validated ``collab`` section: ``workers``, ``f``, ``aggregator``/``byzantine`` (name + kwargs),
    ``heterogeneity`` and ``exchange``. With f = 0 the behaviour is recorded as ``none`` (no attacker),
    so a sweep's f = 0 runs of different attacks are one run."""

    workers: int
    f: int = 0
    aggregator: str = "monna"
    aggregator_kw: dict[str, Any] = field(default_factory=dict)
    byzantine: str = "none"
    byzantine_kw: dict[str, Any] = field(default_factory=dict)
    heterogeneity: str = "iid"
    exchange: str | None = None

    @classmethod
    def from_value(cls, value: Any) -> CollabConfig | None:
        """``None`` (not collaborative) or a mapping with keys among ``workers`` (required), ``f``, ``aggregator``,
        ``byzantine``, ``heterogeneity``, ``exchange``."""
        if value is None or isinstance(value, CollabConfig):
            return value
        if not isinstance(value, Mapping):
            raise InvalidParameterError(f"'collab' must be a mapping. Got {value!r} instead.")
        unknown = [k for k in value if k not in _KEYS]
        if unknown:
            import difflib

            close = difflib.get_close_matches(str(unknown[0]), _KEYS, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise InvalidParameterError(f"unknown key(s) {unknown} in 'collab'.{hint} Accepted: {', '.join(_KEYS)}.")
        if "workers" not in value:
            raise InvalidParameterError("'collab' needs 'workers' (the number of workers, Byzantine included).")
        agg, agg_kw = _component(value.get("aggregator", "monna"), "aggregator")
        f = value.get("f", 0)
        byz, byz_kw = _component(value.get("byzantine", "none" if f == 0 else "sign_flip"), "byzantine")
        if f == 0:
            byz, byz_kw = "none", {}
        out = cls(workers=value["workers"], f=f, aggregator=agg, aggregator_kw=agg_kw, byzantine=byz,
                  byzantine_kw=byz_kw, heterogeneity=value.get("heterogeneity", "iid"), exchange=value.get("exchange"))
        setup = out.setup()  # validates every field (names, ranges, f vs workers)
        return cls(workers=setup.workers, f=setup.f, aggregator=agg, aggregator_kw=agg_kw, byzantine=byz,
                   byzantine_kw=byz_kw, heterogeneity=setup.heterogeneity, exchange=out.exchange)

    def setup(self) -> Any:
        """The :class:`robustlab.collab.CollabSetup` of this section."""
        from ._fit import CollabSetup

        return CollabSetup(workers=self.workers, f=self.f, aggregator=self.aggregator,
                           aggregator_kw=dict(self.aggregator_kw), byzantine=self.byzantine,
                           byzantine_kw=dict(self.byzantine_kw), heterogeneity=self.heterogeneity,
                           exchange=self.exchange)

    def labels(self) -> dict[str, Any]:
        """Display labels per collaborative axis (:data:`robustlab.pipeline.COLLAB_AXES`)."""
        return {"aggregator": self.aggregator, "byzantine": self.byzantine, "f": self.f, "workers": self.workers,
                "heterogeneity": self.heterogeneity}

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "f": self.f, "aggregator": {"name": self.aggregator,
                                                                     "kwargs": dict(self.aggregator_kw)},
                "byzantine": {"name": self.byzantine, "kwargs": dict(self.byzantine_kw)},
                "heterogeneity": self.heterogeneity, "exchange": self.exchange}

    def check_compatible(self, objective: str, train: Mapping[str, Any]) -> None:
        """Refuse what a collaborative run does not do: other objectives, other optimizers, train options
        beyond :data:`COLLAB_TRAIN_OPTIONS`."""
        if objective != "standard":
            raise InvalidParameterError(f"A collaborative run trains with the 'standard' objective only. Got objective "
                                        f"{objective!r}; drop 'collab' or the objective.")
        extra = sorted(k for k in train if k not in COLLAB_TRAIN_OPTIONS)
        if extra:
            raise InvalidParameterError(f"Train option(s) {extra} are not supported by a collaborative run. "
                                        f"Supported: {', '.join(COLLAB_TRAIN_OPTIONS)}.")
        if train.get("optimizer", "sgd") != "sgd":
            raise InvalidParameterError(f"The 'optimizer' train option of a collaborative run must be 'sgd' (momentum "
                                        f"at the workers). Got {train['optimizer']!r} instead.")

    def fit(self, model: Any, data: Any, *, loss: Any = "ce", loss_kw: dict[str, Any] | None = None,
            objective: Any = None, seed: int = 0, progress: bool | None = False, device: Any = None,
            optimizer: str = "sgd", checkpoint_dir: Any = None, resume: bool = False, **train: Any) -> Any:
        """``fit``'s call shape for :func:`robustlab.pipeline.run`: trains with :func:`robustlab.collab.fit`.

        ``checkpoint_dir``/``resume`` (the bench's default): the run's epoch state is kept in ``checkpoint_dir``
        and an interrupted run continues from it, bit-identical to an uninterrupted one on the CPU.
        """
        import torch

        from ._fit import fit

        if device is not None and torch.device(device).type != "cpu":
            raise InvalidParameterError("A collaborative run simulates its workers on the CPU; use device 'cpu' (or "
                                        "robustlab.collab.distributed with torchrun for one GPU per worker).")
        launch = sorted(k for k in train if k not in COLLAB_TRAIN_OPTIONS)
        if launch:
            raise InvalidParameterError(f"Option(s) {launch} (distributed launch, precision, ...) are not supported by a "
                                        "collaborative run.")
        return fit(model, data, setup=self.setup(), loss=loss, loss_kw=loss_kw, seed=seed, progress=progress,
                   checkpoint_dir=checkpoint_dir, resume=resume, **train)
