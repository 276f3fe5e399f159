"""Every option and argument of every command has help text (issue 12: one documented option table)."""

from __future__ import annotations

import argparse

from robustlab.cli import build_parser


def _walk(parser: argparse.ArgumentParser, prog: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prog} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield prog, action


def test_every_option_has_help_text():
    missing = [f"{prog}: {'/'.join(a.option_strings) or a.dest}" for prog, a in _walk(build_parser(), "robustlab")
               if not (a.help or "").strip() and a.help != argparse.SUPPRESS]
    assert not missing, f"options without help text: {missing}"
