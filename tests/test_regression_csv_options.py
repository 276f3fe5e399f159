"""A regression CSV refuses unknown loader options by name, from Python and from the CLI."""

from __future__ import annotations

import pytest

from robustlab import data
from robustlab._validation import InvalidParameterError
from robustlab.cli import main


def _csv(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b,t\n" + "".join(f"{i},{i + 1},{2 * i + 1}\n" for i in range(12)))
    return p


def test_load_names_the_unknown_option_and_the_accepted_ones(tmp_path) -> None:
    p = _csv(tmp_path)
    with pytest.raises(InvalidParameterError, match=r"unknown option\(s\) \['bogus'\]; it takes \['target', 'delimiter'"):
        data.load(f"csv:{p}", target="t", bogus=1)
    assert data.load(f"csv:{p}", target="t").x_train.shape[1] == 2


def test_cli_reports_the_unknown_option_without_a_traceback(tmp_path, capsys) -> None:
    p = _csv(tmp_path)
    assert main(["train", "--data", f"csv:{p}", "--data-arg", "target=t", "--data-arg", "bogus=1", "--loss", "mse",
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown option(s) ['bogus']" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
