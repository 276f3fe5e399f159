"""``robustlab shift``: accuracy of a trained model under common corruptions (and mCE vs a baseline)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "shift",
        help="evaluate a checkpoint on a corruption suite (accuracy per corruption and severity, mCE)",
        description="Evaluate a checkpoint on corrupted test images. Example: "
                    "robustlab shift --checkpoint runs/x --suite common --severities 1,3,5",
    )
    p.add_argument("--checkpoint", required=True, help="run directory (with model.pt) or a .pt checkpoint")
    p.add_argument("--suite", default="common",
                   help="corruption suite: common, common_extra, mnist_c or all (default: common)")
    p.add_argument("--corruptions", default=None, help="comma-separated corruption names (overrides --suite)")
    p.add_argument("--data", default=None,
                   help="data set name (default: the one named in the run's metrics.json config)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities in 1..5 (default 1,2,3,4,5)")
    p.add_argument("--baseline", default=None, help="checkpoint of the baseline model for mCE / relative mCE")
    p.add_argument("--n-test", type=int, default=None, help="evaluate on the first N test examples only")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruption random stream (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--output", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=run)


def _parse_severities(text: str) -> list[int]:
    try:
        sevs = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--severities must be comma-separated integers in 1..5. Got {text!r}.") from None
    if not sevs or any(s < 1 or s > 5 for s in sevs):
        raise ValueError(f"--severities must be comma-separated integers in 1..5. Got {text!r}.")
    return sevs


def _data_from_run(checkpoint: str) -> tuple[str | None, dict[str, Any]]:
    """The data set name (and options) recorded in ``<run>/metrics.json`` (``config.data``, ``config.data_args``)."""
    path = Path(checkpoint)
    run_dir = path if path.is_dir() else path.parent
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        return None, {}
    try:
        doc = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError):
        return None, {}
    return _data_from_config(doc.get("config", doc) if isinstance(doc, dict) else {})


def _data_from_config(config: Any) -> tuple[str | None, dict[str, Any]]:
    if not isinstance(config, dict):
        return None, {}
    for key in ("data", "dataset", "data_name"):
        val = config.get(key)
        if isinstance(val, str):
            opts = config.get("data_args") or config.get("data_kw") or config.get("data_options") or {}
            return val, dict(opts) if isinstance(opts, dict) else {}
        if isinstance(val, dict) and isinstance(val.get("name"), str):
            opts = {k: v for k, v in val.items() if k != "name"}
            return val["name"], opts
    return None, {}


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import data as rl_data
    from .. import shift
    from ..training import load_checkpoint

    sevs = _parse_severities(args.severities)
    corruptions: Any = [c.strip() for c in args.corruptions.split(",") if c.strip()] if args.corruptions else args.suite
    if isinstance(corruptions, str):
        shift.suite(corruptions)  # validate early
    model = load_checkpoint(args.checkpoint)
    name, opts = _data_from_run(args.checkpoint)
    if name is None:  # robustlab train also stores its config in the checkpoint's extra
        name, opts = _data_from_config(getattr(model, "robustlab_extra", {}).get("config"))
    if args.data is not None:
        name, opts = args.data, {}
    if name is None:
        raise ValueError(
            f"Cannot tell which data set '{args.checkpoint}' was trained on (no metrics.json naming it); "
            "pass --data NAME (see 'robustlab list data')."
        )
    ds = rl_data.load(name, **opts)
    baseline = load_checkpoint(args.baseline) if args.baseline else None
    result = shift.corruption_error(model, ds, corruptions=corruptions, severities=sevs, baseline=baseline,
                                    n_test=args.n_test, generator=torch.Generator().manual_seed(args.seed))
    result.meta.update({"checkpoint": str(args.checkpoint), "data": name, "seed": args.seed,
                        "baseline_checkpoint": args.baseline})
    doc = result.to_dict()
    if args.output:
        from ..training import atomic_write_text

        atomic_write_text(args.output, json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"data set {name}, checkpoint {args.checkpoint}")
        print(result.table())
        approx = [c for c, ok in result.meta["faithful"].items() if not ok]
        if approx:
            print(f"approximations of the reference implementation: {', '.join(approx)}")
        print("corruptions are computed in memory; numbers are not comparable with published -C data sets")
    return 0
