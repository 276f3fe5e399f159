"""How a data set is named everywhere (Python, every CLI command, spec, checkpoint): :class:`DataRef`.

A reference is a registry name with options (``DataRef("mnist", root="data/mnist-t10k",
options={"use_test_split_as_train": 0.8})``) or a path form (``csv:<path>``, ``npz:<path>``,
``svmlight:<path>``) with the loader's options. ``to_config()`` / ``from_config()`` give the JSON form
stored in checkpoints, result files and specs::

    {"name": "mnist", "root": "data/mnist-t10k", "options": {"use_test_split_as_train": 0.8}}

``from_config`` also reads the older run-config form ``{"data": NAME, "data_args": {...}}`` and a flat
``{"name": NAME, "root": DIR, **options}`` (the spec form).

Safety: a reference read from a file (``from_config(..., trusted=False)``, the default) drops the
options that fetch or write (:data:`FETCH_OPTIONS`: ``download``, ``mirror``): those come only from the
user's command line or spec (``override``), so loading a checkpoint never contacts a host and never
creates directories.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .._validation import InvalidParameterError

__all__ = ["DataRef", "FETCH_OPTIONS"]

_log = logging.getLogger(__name__)

#: Options that contact a host or create files; never taken from a recorded (file) config.
FETCH_OPTIONS = ("download", "mirror")


@dataclass(frozen=True)
class DataRef:
    """A data set name plus how to load it: ``root`` folder (file-backed sets) and loader ``options``.

    Example::

        ref = DataRef("mnist", root="../shared/datasets/mnist-t10k", options={"use_test_split_as_train": 0.8})
        data = ref.load()
        DataRef.from_config(ref.to_config()) == ref
    """

    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidParameterError(f"A data set name must be a non-empty str. Got {self.name!r} instead.")
        if self.root is not None and not isinstance(self.root, str):
            object.__setattr__(self, "root", str(self.root))
        if not isinstance(self.options, Mapping):
            raise InvalidParameterError(
                f"The options of data set '{self.name}' must be a mapping of name -> value. Got {self.options!r}."
            )
        bad = [k for k in self.options if not isinstance(k, str) or k in ("name", "root")]
        if bad:
            raise InvalidParameterError(
                f"Data set '{self.name}': option names must be str other than 'name'/'root'. Got {bad}."
            )
        object.__setattr__(self, "options", dict(self.options))

    def __hash__(self) -> int:  # options is a dict: hash the JSON form
        return hash(json.dumps(self.to_config(), sort_keys=True, default=str))

    @property
    def is_path(self) -> bool:
        """True for the path forms (``csv:``, ``npz:``, ``svmlight:``)."""
        from . import _PATH_LOADERS

        prefix, sep, _ = self.name.partition(":")
        return bool(sep) and prefix in _PATH_LOADERS

    def load(self) -> Any:
        """Load the data set (:func:`robustlab.data.load`)."""
        from . import load

        if self.is_path:
            if self.root is not None:
                raise InvalidParameterError(
                    f"Data set '{self.name}' is named by its path; a root folder ({self.root!r}) does not apply."
                )
            return load(self.name, **self.options)
        return load(self.name, root=self.root, **self.options)

    def override(self, *, name: str | None = None, root: str | None = None,
                 options: Mapping[str, Any] | None = None) -> DataRef:
        """A copy with the user's values on top: a different ``name`` starts from scratch; ``root`` and
        ``options`` replace the recorded ones key by key (this is where ``download``/``mirror`` may enter)."""
        base = self if name is None or name == self.name else DataRef(name)
        return replace(base, root=base.root if root is None else str(root),
                       options={**base.options, **dict(options or {})})

    def to_config(self) -> dict[str, Any]:
        """JSON form: ``{"name": ..., "root": ..., "options": {...}}`` (``root`` omitted when None)."""
        cfg: dict[str, Any] = {"name": self.name}
        if self.root is not None:
            cfg["root"] = self.root
        cfg["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return cfg

    @classmethod
    def from_config(cls, config: Any, *, trusted: bool = False) -> DataRef:
        """Read a reference from a str, ``to_config()``'s dict, the spec's flat dict or a run config
        (``{"data": NAME, "data_args": {...}, "data_root": DIR}``).

        Unless ``trusted`` (the user's own command line or spec), options that fetch or write
        (:data:`FETCH_OPTIONS`) are dropped, so a checkpoint or result file cannot make a command
        download from a host it names.
        """
        if isinstance(config, DataRef):
            ref = config
        elif isinstance(config, str):
            ref = cls(config)
        elif isinstance(config, Mapping):
            ref = cls._from_mapping(config)
        else:
            raise InvalidParameterError(
                f"A data reference must be a name or a mapping with 'name'. Got {type(config).__name__}."
            )
        if trusted:
            return ref
        dropped = [k for k in FETCH_OPTIONS if k in ref.options]
        if dropped:
            _log.info("ignoring recorded data option(s) %s of '%s': pass them on the command line", dropped, ref.name)
            ref = replace(ref, options={k: v for k, v in ref.options.items() if k not in FETCH_OPTIONS})
        return ref

    @classmethod
    def _from_mapping(cls, cfg: Mapping[str, Any]) -> DataRef:
        if "data" in cfg and "name" not in cfg:  # a run config
            data = cfg["data"]
            if isinstance(data, Mapping):
                return cls._from_mapping(data)
            args = cfg.get("data_args") or {}
            if not isinstance(args, Mapping):
                raise InvalidParameterError(f"'data_args' must be a mapping. Got {args!r}.")
            args = dict(args)
            root = args.pop("root", cfg.get("data_root"))
            return cls(_name(data), root=root, options=args)
        if "name" not in cfg:
            raise InvalidParameterError(f"A data reference needs a 'name'. Got keys {sorted(map(str, cfg))}.")
        rest = {k: v for k, v in cfg.items() if k not in ("name", "root", "options")}
        opts = cfg.get("options") or {}
        if not isinstance(opts, Mapping):
            raise InvalidParameterError(f"The 'options' of a data reference must be a mapping. Got {opts!r}.")
        return cls(_name(cfg["name"]), root=cfg.get("root"), options={**rest, **dict(opts)})

    def __str__(self) -> str:
        parts = [self.name]
        if self.root is not None:
            parts.append(f"root={self.root}")
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return " ".join(parts)


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParameterError(f"A data set name must be a str. Got {value!r} instead.")
    return value
