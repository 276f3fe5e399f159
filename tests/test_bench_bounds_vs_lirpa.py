"""``benchmarks/_bounds_vs_lirpa.py`` without the peer's interpreter: ratios against the stored figures, one line per
case, and the malloc thresholds left alone (they are fixed only when both sides run live)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _helpers import ROOT, load_script


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    mod = load_script("benchmarks/_bounds_vs_lirpa.py")
    yield mod
    sys.modules.pop("_certify_models", None)


def test_stored_figures_give_one_line_per_case(bench, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fixed = []
    monkeypatch.setattr(bench, "_fix_malloc", lambda: fixed.append(1) or True)
    bench.run(threads=1, quick=False, rounds=2, lirpa_python="/nonexistent/python", save_peer=False,
              cases="mlp/linf/IBP")
    out = capsys.readouterr().out
    assert "stored in certify_lirpa.json" in out and "each process's default" in out and not fixed
    (line,) = [ln for ln in out.splitlines() if ln.startswith("mlp ")]
    cols = line.split()
    ours, peer, ratio = float(cols[4]), float(cols[5]), float(cols[6])
    assert cols[:4] == ["mlp", "linf", "IBP", "256"] and ours > 0 and peer > 0
    assert ratio == pytest.approx(ours / peer, rel=0.02)  # without a live peer: our median over the stored median


def test_malloc_thresholds_are_set_on_glibc(bench) -> None:  # type: ignore[no-untyped-def]
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert set(bench.MALLOC_ENV) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import _bounds_vs_lirpa as b; "
            "print(b._fix_malloc())")  # in a process of its own: the thresholds are process-wide
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == "True", got.stderr
