"""Bench specs take a regression CSV: ``csv:PATH`` with ``target=COLUMN``, validated like ``data.load``."""

import pytest

from robustlab import pipeline
from robustlab.bench import load_spec
from robustlab.bench.spec import SpecError, expand
from robustlab.cli import main


def _csv(tmp_path):
    rows = ["a,b,price"] + [f"{i / 40:.3f},{(i * 7 % 40) / 40:.3f},{3 * i / 40 - (i * 7 % 40) / 20:.4f}" for i in range(40)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")


def _spec(tmp_path, data_entry: str):
    p = tmp_path / "s.yaml"
    p.write_text(f"name: csvreg\ndata:\n  - {data_entry}\nmodels:\n  - {{name: mlp, hidden: [8]}}\nlosses: [mse]\n"
                 "seeds: [0]\ntrain: {epochs: 1, batch_size: 16, optimizer: adam, lr: 0.01}\n")
    return p


def test_spec_csv_target_is_a_regression_run(tmp_path):
    _csv(tmp_path)
    spec = load_spec(_spec(tmp_path, '{name: "csv:r.csv", target: price, test_fraction: 0.25}'))
    (run,) = expand(spec)
    data = run.config["data"]
    assert data["name"] == f"csv:{tmp_path / 'r.csv'}" and data["options"] == {"target": "price", "test_fraction": 0.25}
    res = pipeline.run(run.config)
    assert res.resolved["task"] == "regression" and {"test/mse", "test/r2"} <= {m[0] for m in res.metrics}


@pytest.mark.parametrize("entry, match", [
    ('{name: "csv:r.csv", target: price, bogus: 1}', r"unknown parameter 'bogus' for the csv: regression loader"),
    ('{name: "csv:r.csv", target: 3}', r"target: must be a column name string"),
    ('{name: "csv:r.csv", target: price, longtail: 0.1}', r"\['longtail'\] apply to classification sets"),
])
def test_spec_csv_target_options_are_checked(tmp_path, entry, match):
    _csv(tmp_path)
    with pytest.raises(SpecError, match=match):
        load_spec(_spec(tmp_path, entry))


def test_spec_csv_missing_target_column_is_reported_at_check(tmp_path, capsys):
    _csv(tmp_path)
    assert main(["bench", "run", str(_spec(tmp_path, '{name: "csv:r.csv", target: cost}')),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no target column 'cost'" in err and "'price'" in err
