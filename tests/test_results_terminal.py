"""`robustlab results list/show` print labels from result files without terminal control sequences."""

from __future__ import annotations

from robustlab.bench import run_sweep
from robustlab.cli import main


def test_results_list_and_show_strip_control_sequences(tmp_path, capsys):
    evil = "\x1b[2J\x1b]0;owned\x07red\rlabel"
    spec = {"name": "evil", "data": [{"name": "gaussians", "label": evil, "n_train": 40, "n_test": 20,
                                     "num_classes": 2, "dim": 3}],
            "models": ["linear"], "losses": ["ce"], "seeds": [0], "train": {"epochs": 1},
            "evaluations": ["clean"]}
    out = tmp_path / "out"
    res = run_sweep(spec, out, workers=1, progress=False)
    assert res.completed == 1
    capsys.readouterr()
    assert main(["results", "list", str(out)]) == 0
    listed = capsys.readouterr().out
    run_id = listed.splitlines()[1].split()[0]
    assert main(["results", "show", str(out), run_id]) == 0
    shown = capsys.readouterr().out
    for text in (listed, shown):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "red label" in shown or "redlabel" in shown.replace(" ", "")
