"""``robustlab list KIND``: registered names of a concept (and the attack suites of ``evaluate --suite``)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

# kind -> (module, registry attribute)
_KINDS: dict[str, tuple[str, str]] = {
    "data": ("robustlab.data", "DATASETS"),
    "noise": ("robustlab.noise", "NOISES"),
    "models": ("robustlab.models", "MODELS"),
    "losses": ("robustlab.losses", "LOSSES"),
    "contrastive_losses": ("robustlab.losses", "CONTRASTIVE_LOSSES"),
    "heads": ("robustlab.training", "HEADS"),
    "attacks": ("robustlab.attacks", "ATTACKS"),
    "objectives": ("robustlab.training.objectives", "OBJECTIVES"),
    "augmentations": ("robustlab.training.augment", "AUGMENTATIONS"),
    "corruptions": ("robustlab.shift", "CORRUPTIONS"),
    "scores": ("robustlab.conformal", "SCORES"),
    "specs": ("robustlab.bench", "SPECS"),
    "aggregators": ("robustlab.collab", "AGGREGATORS"),
    "byzantine": ("robustlab.collab", "BYZANTINE"),
    "regression_data": ("robustlab.data", "REGRESSION_DATASETS"),
    "target_noise": ("robustlab.noise", "TARGET_NOISES"),
    "regression_losses": ("robustlab.losses", "REGRESSION_LOSSES"),
    "segmentation_losses": ("robustlab.losses", "SEGMENTATION_LOSSES"),
}


def _registry(kind: str) -> Any:
    module, attr = _KINDS[kind]
    try:
        return getattr(importlib.import_module(module), attr)
    except (ModuleNotFoundError, AttributeError):
        return None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered data sets, noise kinds, models, losses, attacks, ...")
    p.add_argument("kind", choices=sorted([*_KINDS, "suites"]), help="which registry to list")
    p.add_argument("--tag", action="append", default=[], help="only items carrying this tag (repeatable)")
    p.set_defaults(func=run)


def _suites() -> int:
    from ..evaluate import SUITES

    width = max(len(n) for n in SUITES)
    for name in sorted(SUITES):
        print(f"{name:<{width}}  {SUITES[name].doc}  [{', '.join(SUITES[name].names())}]")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.kind == "suites":
        return _suites()
    reg = _registry(args.kind)
    if reg is None:
        print(f"(no {args.kind} available in this installation)")
        return 0
    names = reg.available(tags=tuple(args.tag))
    width = max((len(n) for n in names), default=4)
    for name in names:
        spec = reg.spec(name)
        tags = ",".join(sorted(spec.tags))
        print(f"{name:<{width}}  {spec.doc}  [{tags}]" + (f"  ({spec.reference})" if spec.reference else ""))
    if not args.tag and args.kind in _OTHER_FORMS:
        print(_OTHER_FORMS[args.kind]())
    return 0


def _data_forms() -> str:
    from ..data import available

    forms = ", ".join(name for name in available() if name.endswith(":<path>"))
    return f"also by path: {forms} (options with --data-arg K=V; file-backed sets take --data-root DIR)"


def _model_forms() -> str:
    from ..models import REFERENCE_FORMS

    return f"also accepted by --model: {REFERENCE_FORMS}"


# Reference forms accepted beside the registry names (printed after the list).
_OTHER_FORMS = {"data": _data_forms, "models": _model_forms}
