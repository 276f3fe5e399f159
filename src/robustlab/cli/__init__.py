"""Command-line interface: ``robustlab <command> ...``.

Each command lives in its own module ``robustlab.cli._<name>`` exposing ``add_parser(subparsers)``
which registers a sub-parser whose ``func(args) -> int`` runs it. Options that mean the same thing in
several commands come from one table (``cli._options``); model and data come from ``cli._inputs``
(``--checkpoint``/``--model``, ``--data``/``--data-root``/``--data-arg``). ``--out`` is checked writable
before any work. Every failure ends as one line ``robustlab <command>: error: ...`` (exit 2 for bad
input, 1 otherwise); ``-v`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["main", "build_parser"]

_COMMANDS = ("list", "train", "attack", "evaluate", "certify", "denoise", "conformal", "shift", "bench", "results", "report")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no prefix matching: an objective's free option (``--mode``) must not be read as ``--model``
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # argparse's default is terse; keep its exit code 2
        self.print_usage(sys.stderr)
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:  # suggest, as every registry lookup does
            close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1)
            message += f". Did you mean '{close[0]}'?" if close else ""
        self.exit(2, f"{self.prog}: error: {message}\nRun '{self.prog} --help' for the accepted options.\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="robustlab", description="Make classifiers robust and prove how robust they are.")
    parser.add_argument("--version", action="version", version=f"robustlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level and print the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}._{name}").add_parser(sub)
    return parser


# How each command's ``--out`` is checked before any work: a result file or a run/results folder.
# A command may also declare it with ``set_defaults(out_kind="dir")``.
_OUT_KIND = {"train": "dir", "bench": "dir"}


def _check_out(args: argparse.Namespace) -> None:
    out = getattr(args, "out", None)
    if not out or not isinstance(out, str):
        return
    from ._options import check_writable

    kind = getattr(args, "out_kind", None) or _OUT_KIND.get(args.command, "file")
    check_writable(out, "--out", directory=kind == "dir")


def _message(e: BaseException) -> str:
    from ._inputs import clean

    if isinstance(e, OSError) and e.strerror and e.filename is not None:  # "[Errno 30] ..." -> plain words
        return clean(f"{e.strerror}: '{e.filename}'")
    if isinstance(e, MemoryError):
        return clean("out of memory" + (f" ({e})" if str(e) else "") + "; use a smaller --batch-size or --n-test")
    return clean(str(e) or type(e).__name__)  # names may come from files: no terminal control sequences


# Renamed options: one name per thing in every command (issue 12).
_RENAMED = {"--output": "--out", "--max-samples": "--n-test", "--no-progress": "--quiet"}


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return None


def _suggest(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """`` Did you mean --out?`` for the first unknown option with a close (or renamed) accepted one."""
    known = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    for tok in extras:
        flag = tok.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        close = [_RENAMED[flag]] if _RENAMED.get(flag) in known else difflib.get_close_matches(flag, known, n=1)
        if close:
            return f". Did you mean {close[0]}?"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``robustlab`` with ``argv``; return the exit code (0 ok, 2 bad input, 1 other failure, 130 interrupt).

    Every failure prints one line ``robustlab <command>: error: ...`` and no traceback (``-v`` shows it).
    """
    parser = build_parser()
    # Commands that set ``accepts_free_options=True`` (e.g. ``train``) get unknown ``--name value``
    # options as ``args.free_options`` and validate them; for every other command they are an error.
    try:
        args, extras = parser.parse_known_args(argv)
        if extras and getattr(args, "accepts_free_options", False):
            args.free_options = extras
        elif extras:
            sub = _subparser(parser, getattr(args, "command", None)) or parser
            sub.error(f"unrecognized arguments: {' '.join(extras)}{_suggest(sub, extras)}")
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    where = f"robustlab {args.command}"
    try:
        with warnings.catch_warnings():  # one plain line per warning, like the errors
            warnings.showwarning = lambda message, category, *a, **k: print(
                f"{where}: warning: {message}", file=sys.stderr)
            _check_out(args)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, LookupError, FileNotFoundError) as e:
        if args.verbose:
            traceback.print_exc()
        print(f"{where}: error: {_message(e)}", file=sys.stderr)
        return 2
    except (OSError, MemoryError, OverflowError, RuntimeError, EOFError) as e:
        if args.verbose:
            traceback.print_exc()
        print(f"{where}: error: {_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # an internal error: still one line, the traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(f"{where}: error: internal error {type(e).__name__}: {_message(e)} "
              "(rerun with -v for details and report it)", file=sys.stderr)
        return 1
