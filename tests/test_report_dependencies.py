"""Every declared runtime dependency is imported by the package (no dead weight such as matplotlib,
which the report never used: its plots are its own SVG)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# distribution name -> import name, where they differ
IMPORT_NAME = {"scikit-learn": "sklearn", "PyYAML": "yaml", "Pillow": "PIL"}


def test_every_declared_dependency_is_imported_somewhere():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "robustlab").rglob("*.py"))
    unused = []
    for dep in deps:
        dist = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0]
        mod = IMPORT_NAME.get(dist, dist.replace("-", "_"))
        if not re.search(rf"^\s*(import|from)\s+{re.escape(mod)}(\.|\s|$)", source, re.M):
            unused.append(dist)
    assert not unused, f"declared in pyproject.toml but never imported: {unused}"
