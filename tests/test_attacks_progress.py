"""The shared progress helper and the progress= argument of attacks/evaluations."""

from __future__ import annotations

import io
import sys

import pytest

from robustlab._progress import check_progress, progress_bar, progress_enabled
from robustlab._validation import InvalidParameterError


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_auto_follows_stderr_tty(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_enabled(None) is False
    monkeypatch.setattr(sys, "stderr", _TTY())
    assert progress_enabled(None) is True
    assert progress_enabled(False) is False


def test_progress_bar_shows_only_when_enabled(monkeypatch):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress_bar(range(3), "work", enabled=False)) == [0, 1, 2]
    assert err.getvalue() == ""
    assert list(progress_bar(range(3), "work", enabled=None)) == [0, 1, 2]
    assert "work" in err.getvalue()


def test_progress_bar_manual_total(monkeypatch):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar(4, "manual", enabled=True) as bar:
        bar.update(4)
    assert "manual" in err.getvalue()


def test_check_progress_rejects_non_bool():
    assert check_progress(None) is None and check_progress(True) is True
    with pytest.raises(InvalidParameterError, match="'progress'.*bool or None.*'yes'"):
        check_progress("yes")
