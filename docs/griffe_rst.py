"""Griffe extension: render robustlab's reST-flavoured docstrings as Markdown in the API sections.

The docstrings are written for both ``help()`` and the site, in the PyTorch/Sphinx habit: ``:class:`X```,
``:math:`...```, ``.. math::`` blocks, ``Example::`` literal blocks and ``>>>`` doctests. Markdown would show
the roles verbatim and turn ``>>>`` into nested quotes, so this extension rewrites each docstring once when
griffe loads it (``extensions: [docs/griffe_rst.py]`` in ``mkdocs.yml``); the source files stay unchanged.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

try:  # the docs extra; the converter itself (and tests/test_docs.py) needs only the standard library
    import griffe
except ImportError:  # pragma: no cover
    griffe = None

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|ref):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _take_block(lines: list[str], i: int, base: int) -> tuple[list[str], int]:
    """Lines from ``i`` indented deeper than ``base`` (blank lines inside kept), and the next index."""
    block: list[str] = []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
        i -= 1
    return block, i


def rst_to_markdown(text: str) -> str:
    """Convert the reST constructs used in robustlab docstrings to Markdown (arithmatex math, fenced code)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        if in_fence:
            out.append(line)
            i += 1
            continue
        if stripped.startswith(".. math::"):
            base = _indent(line)
            first = stripped[len(".. math::"):].strip()
            block, i = _take_block(lines, i + 1, base)
            body = ([first] if first else []) + textwrap.dedent("\n".join(block)).strip("\n").splitlines()
            out += [" " * base + "$$", *(" " * base + b for b in body), " " * base + "$$"]
            continue
        if stripped.startswith(">>>"):
            base = _indent(line)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][base:] if _indent(lines[i]) >= base else lines[i].strip())
                i += 1
            out += [" " * base + "```pycon", *(" " * base + b for b in block), " " * base + "```"]
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                block, i = _take_block(lines, j, base)
                head = _inline(line.rstrip()[:-1].rstrip())
                if head.strip():
                    out.append(head + ("" if head.rstrip().endswith(":") else ":"))
                code = textwrap.dedent("\n".join(block)).strip("\n").splitlines()
                first = code[0].lstrip() if code else ""
                lang = "bash" if first.startswith(("robustlab ", "make ", "python ")) else "pycon" if first.startswith(">>>") else "python"
                out += ["", " " * base + f"```{lang}", *(" " * base + c for c in code), " " * base + "```"]
                continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out)


def _inline(line: str) -> str:
    line = _MATH_ROLE.sub(lambda m: r"\(" + m.group(1) + r"\)", line)
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", line)


if griffe is not None:

    class RstToMarkdown(griffe.Extension):
        """Rewrite every loaded object's docstring with :func:`rst_to_markdown`."""

        def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value)
