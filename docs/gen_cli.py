"""Generate the CLI reference (Markdown) from ``robustlab.cli.build_parser()``.

Used two ways:

* as an MkDocs hook (``hooks: [docs/gen_cli.py]`` in ``mkdocs.yml``): ``on_page_markdown`` replaces the
  marker line ``<!-- cli-reference -->`` in ``docs/cli.md`` with the generated reference, so every
  option added to a parser appears in the site without editing the docs;
* as a script: ``python docs/gen_cli.py`` prints the reference.

Nothing here is hand-maintained: commands, sub-commands, positionals and options are read from the
argparse objects (``_SubParsersAction.choices`` and each parser's ``_actions``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

MARKER = "<!-- cli-reference -->"


def iter_commands(parser: argparse.ArgumentParser, prefix: str = "robustlab"
                  ) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """Yield ``(full command, parser, one-line help)`` for every sub-command, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub, helps.get(name, "")
                yield from iter_commands(sub, f"{prefix} {name}")


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    takes_value = action.nargs != 0
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices is not None and action.metavar is None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    suffix = f" {metavar}" if takes_value else ""
    if action.nargs in ("+", "*"):
        suffix += " ..."
    return ", ".join(f"`{o}{suffix}`" for o in action.option_strings)


def _default(action: argparse.Action) -> str:
    if not action.option_strings:
        return "required" if action.nargs not in ("?", "*") else ""
    if action.required:
        return "required"
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    if not action.option_strings and action.choices is not None and not isinstance(action.choices, dict):
        text += " (one of: " + ", ".join(f"`{c}`" for c in action.choices) + ")"
    if "%(" in text:  # argparse's own %-expansion (%(default)s, %(choices)s, ...)
        params = {k: v for k, v in vars(action).items()}
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass
    return _cell(text)


def command_markdown(command: str, parser: argparse.ArgumentParser, summary: str = "") -> str:
    """Markdown section for one command: summary, usage line, options table."""
    lines = [f"## {command}", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
    if parser.description and parser.description != summary:
        lines += [parser.description, ""]
    usage = " ".join(parser.format_usage().split())
    lines += ["```text", usage.removeprefix("usage: "), "```", ""]
    actions = _options(parser)
    if actions:
        lines += ["| option | default | description |", "|---|---|---|"]
        lines += [f"| {_names(a)} | {_default(a)} | {_help(a)} |" for a in actions]
        lines.append("")
    if parser._defaults.get("accepts_free_options"):
        lines += ["This command also takes free `--name value` options (for `train`: the objective's own "
                  "keywords, e.g. `--eps 8/255 --steps 10`); they are checked against the objective's "
                  "signature and an unknown one is an error that lists the accepted names.", ""]
    if parser.epilog:
        lines += [parser.epilog, ""]
    return "\n".join(lines)


# The registries whose items take keyword options on the command line: (title, how they are passed, registry).
_KEYWORD_REGISTRIES = (
    ("Objectives", "free options after `--objective NAME` (`--eps 8/255 --steps 10`)", "robustlab.training", "OBJECTIVES"),
    ("Losses", "`--loss-arg key=value` (repeatable)", "robustlab.losses", "LOSSES"),
    ("Models", "`--model-arg key=value` (repeatable)", "robustlab.models", "MODELS"),
    ("Noise kinds", "`--noise-arg key=value` (repeatable)", "robustlab.noise", "NOISES"),
)
# Filled in by the pipeline from the data and the run, never given on the command line.
_INTERNAL = {"input_shape", "num_classes", "num_samples", "reduction", "y", "x", "generator", "rate", "kind"}


def _default_text(value: Any) -> str:
    if isinstance(value, float):
        k = value * 255
        if 0 < value < 1 and abs(k - round(k)) < 1e-9 and len(repr(value)) > 8:  # 0.03137... -> 8/255
            return f"{round(k)}/255"
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def keyword_options_markdown() -> str:
    """Tables of each registry item's keyword options (name=default), read from the factory signatures."""
    import importlib
    import inspect

    out = ["## Keyword options of registered items", "",
           "Read from each registered item's signature when the site is built (`robustlab list KIND` lists the names).",
           ""]
    for title, how, module, attr in _KEYWORD_REGISTRIES:
        registry = getattr(importlib.import_module(module), attr)
        out += [f"### {title}", "", f"Passed as {how}.", "", "| name | options (default) |", "|---|---|"]
        for name in registry.available():
            params = inspect.signature(registry.spec(name).factory).parameters.values()
            opts = [f"`{p.name}`" + ("" if p.default is inspect.Parameter.empty else f" ({_default_text(p.default)})")
                    for p in params if p.name not in _INTERNAL and not p.name.startswith("_")
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            out.append(f"| `{name}` | {_cell(', '.join(opts)) or '–'} |")
        out.append("")
    return "\n".join(out)


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole CLI reference: global options, then one section per (sub-)command."""
    if parser is None:
        from robustlab.cli import build_parser

        parser = build_parser()
    out = ["## robustlab", "", parser.description or "", ""]
    out += ["```text", " ".join(parser.format_usage().split()).removeprefix("usage: "), "```", ""]
    out += ["| option | default | description |", "|---|---|---|"]
    out += [f"| {_names(a)} | {_default(a)} | {_help(a)} |" for a in _options(parser)]
    out.append("")
    commands = list(iter_commands(parser))
    out += ["| command | what it does |", "|---|---|"]
    out += [f"| [`{c}`](#{c.replace(' ', '-')}) | {_cell(h)} |" for c, _, h in commands]
    out.append("")
    for command, sub, summary in commands:
        out.append(command_markdown(command, sub, summary))
    out.append(keyword_options_markdown())
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: expand the CLI-reference marker."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, render())
    return markdown


if __name__ == "__main__":
    print(render())
