"""Command-line interface: ``robustlab <command> ...``.

Each command lives in its own module ``robustlab.cli._<name>`` exposing ``add_parser(subparsers)``
which registers a sub-parser whose ``func(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main", "build_parser"]

_COMMANDS = ("list", "train", "attack", "evaluate", "certify", "conformal", "shift", "bench", "results", "report")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's default is terse; keep its exit code 2
        self.print_usage(sys.stderr)
        self.exit(2, f"robustlab: error: {message}\nRun '{self.prog} --help' for the accepted options.\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="robustlab", description="Make classifiers robust and prove how robust they are.")
    parser.add_argument("--version", action="version", version=f"robustlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}._{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Commands that set ``accepts_free_options=True`` (e.g. ``train``) get unknown ``--name value``
    # options as ``args.free_options`` and validate them; for every other command they are an error.
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "accepts_free_options", False):
        args.free_options = extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError, ConnectionError) as e:
        print(f"robustlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
