"""No private helper crosses package lines: ``from ..<other package>... import _name`` is refused.

The threat model's helpers (``_view_b``, ``_perturb``) used to be imported across packages; they are public in
``robustlab.attacks.threat`` now. ``KNOWN`` would list crossings still to fix; it is empty.
"""

from __future__ import annotations

import ast
import pathlib

import robustlab

ROOT = pathlib.Path(robustlab.__file__).parent

KNOWN: set[str] = set()  # remaining crossings, to be removed as they are fixed (none left)


def _crossings() -> set[str]:
    found = set()
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT)
        here = list(rel.parts[:-1])
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                target = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "robustlab":
                target = node.module.split(".")[1:]
            else:
                continue
            if not target or (here and target[0] == here[0]) or (not here and len(target) == 1):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.add(f"{rel.as_posix()}: {'.' * node.level}{node.module or ''}.{alias.name}")
    return found


def test_no_new_private_imports_across_packages():
    new = _crossings() - KNOWN
    assert not new, f"private names imported across packages (make them public where they are shared): {sorted(new)}"


def test_the_threat_helpers_no_longer_cross():
    assert not {c for c in _crossings() if c.endswith(("._view_b", "._perturb", "._random_start", "._ce_sum"))}
