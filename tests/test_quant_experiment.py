"""benchmarks/exp_quantization.py: ``--seeds`` parsing, the mean ± std cells and one run over two seeds."""

import argparse
import json
import sys

import pytest
from _helpers import load_script


def _exp():
    return load_script("benchmarks/exp_quantization.py", "exp_quantization")


def test_parse_seeds_accepts_a_comma_list_and_names_bad_values():
    exp = _exp()
    assert exp.parse_seeds("0") == [0]
    assert exp.parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ["", "a", "0,,1", "-1", "1.5", "0,1,0"]:
        with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
            exp.parse_seeds(bad)


def test_cells_are_mean_and_sample_std_over_seeds():
    exp = _exp()
    assert exp.mean_std([0.5]) == (0.5, 0.0)
    mu, sd = exp.mean_std([1.0, 2.0, 3.0])
    assert mu == pytest.approx(2.0) and sd == pytest.approx(1.0)  # n - 1, not n (which gives 0.816)
    runs = [{"float_clean": 0.97, "clean": {"2": 0.80}}, {"float_clean": 0.95, "clean": {"2": 0.90}}]
    assert exp.cell_values(runs, "clean", 2) == pytest.approx([80.0, 90.0])
    assert exp.fmt(exp.cell_values(runs, "float_clean", None)) == "96.0 ± 1.4"
    assert exp.fmt([97.04]) == "97.0"


def test_two_seeds_keep_the_split_and_write_every_per_seed_value(tmp_path, monkeypatch, capsys):
    exp = _exp()
    real_load = exp.data.load
    split_seeds = []

    def load(name, **kw):  # --data mnist served by the small digits set; records the split seed asked for
        split_seeds.append(kw.get("seed"))
        return real_load("digits")

    monkeypatch.setattr(exp.data, "load", load)
    out = tmp_path / "q.json"
    monkeypatch.setattr(sys, "argv", ["exp", "--data", "mnist", "--epochs", "1", "--n-test", "20", "--seeds", "1,2",
                                      "--schemes", "per_tensor", "--symmetries", "symmetric", "--json", str(out)])
    exp.main()
    assert split_seeds == [0]  # one split, the one of seed 0, whatever --seeds says
    res = json.loads(out.read_text())
    assert res["complete"] and res["seeds_done"] == [1, 2] and not (tmp_path / "q.json.tmp").exists()
    assert len(res["results"]) == len(exp.OBJECTIVES)
    for runs in res["results"].values():
        assert [r["meta"]["seed"] for r in runs] == [1, 2]  # the attack's random start follows the seed
        assert set(runs[0]["clean"]) == {str(b) for b in exp.BITS}
    printed = capsys.readouterr().out
    assert "mean ± sample std over seeds 1,2" in printed and printed.count(" ± ") >= 2 * 5 * len(exp.OBJECTIVES)
