"""robustlab train: summary table, metrics.json + checkpoint, free objective options, clear errors."""

import json

import pytest
import torch
import torch.nn.functional as F

from robustlab import data
from robustlab._registry import Spec
from robustlab.cli import main
from robustlab.cli._train import parse_free_options, parse_value
from robustlab.training import OBJECTIVES, Objective, load_checkpoint

TINY = ["--data", "gaussians", "--data-arg", "n_train=120", "--data-arg", "n_test=60", "--data-arg", "dim=4",
        "--model-arg", "hidden=8", "--epochs", "2", "--batch-size", "32", "--no-progress"]


def test_train_writes_metrics_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", *TINY, "--noise", "symmetric:0.4", "--seed", "3", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    for row in ("data", "noise", "model", "loss", "objective", "epochs", "train acc (noisy labels)",
                "test acc (clean)", "worst-class test acc", "time"):
        assert row in text
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["config"]["noise_kind"] == "symmetric" and rec["config"]["noise_rate"] == 0.4
    assert 0.2 < rec["noise"]["realized_rate"] < 0.6 and len(rec["history"]["epoch"]) == 2
    # the checkpoint reproduces the reported clean test accuracy
    model = load_checkpoint(out).eval()
    d = data.load("gaussians", n_train=120, n_test=60, dim=4)
    with torch.no_grad():
        acc = float((model(d.x_test).argmax(1) == d.y_test).float().mean())
    assert rec["metrics"]["test_acc"] == pytest.approx(acc)
    assert f"{acc:.4f}" in text
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_train_is_reproducible(tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["train", *TINY, "--noise", "pairflip:0.2", "--seed", "1", "--out", str(tmp_path / name)]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["history"]["loss"] == b["history"]["loss"] and a["metrics"] == b["metrics"]


class _Recording(Objective):
    """Records its constructor arguments (for the free-option mapping test)."""

    last: dict = {}

    def __init__(self, *, eps: float = 0.1, step_size: float = 0.01, steps: int = 1, random_start: bool = True,
                 norm: str = "linf"):
        type(self).last = {"eps": eps, "step_size": step_size, "steps": steps, "random_start": random_start, "norm": norm}

    def __call__(self, model, batch, loss):
        logits = model(batch.x)
        return F.cross_entropy(logits, batch.y), {}


@pytest.fixture
def recording_objective(monkeypatch):
    spec = Spec(name="cli_test_recording", factory=_Recording, reference="test", doc="test objective")
    monkeypatch.setitem(OBJECTIVES._specs, spec.name, spec)
    return _Recording


def test_free_objective_options_map_to_constructor(recording_objective, capsys):
    rc = main(["train", *TINY, "--objective", "cli_test_recording", "--eps", "8/255", "--step-size", "0.02",
               "--steps", "7", "--random-start", "false", "--norm=l2"])
    assert rc == 0
    assert recording_objective.last == {"eps": pytest.approx(8 / 255), "step_size": 0.02, "steps": 7,
                                        "random_start": False, "norm": "l2"}


def test_objective_option_that_prefixes_a_command_option(monkeypatch, capsys):
    """``--mode`` is an objective option, not an abbreviation of ``--model`` (argparse's prefix matching is off)."""

    class _Mode(_Recording):
        def __init__(self, *, mode: str = "ce"):
            type(self).last = {"mode": mode}

    monkeypatch.setitem(OBJECTIVES._specs, "cli_test_mode", Spec(name="cli_test_mode", factory=_Mode,
                                                                   reference="test", doc="test objective"))
    assert main(["train", *TINY, "--objective", "cli_test_mode", "--mode", "hinge"]) == 0
    assert _Mode.last == {"mode": "hinge"}


def test_unknown_objective_option_names_accepted(recording_objective, capsys):
    rc = main(["train", *TINY, "--objective", "cli_test_recording", "--beta", "6"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown parameter '--beta' for objective 'cli_test_recording'" in err
    assert "--eps" in err and "--step-size" in err and "--random-start" in err


@pytest.mark.parametrize("argv, msg", [
    (["--noise", "symetric:0.4"], "Did you mean 'symmetric'"),
    (["--noise", "symmetric:1.5"], r"[0, 1)"),
    (["--model", "mlpp"], "Did you mean 'mlp'"),
    (["--model-arg", "hiden=3"], "Did you mean 'hidden'"),
    (["--loss-arg", "q=0.7"], "loss 'ce'"),
    (["--optimizer", "rmsprop"], "'optimizer' parameter of fit"),
    (["--epochs", "0"], "'epochs' parameter of fit"),
    (["--data-arg", "oops"], "key=value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_values_fail_clearly(argv, msg, capsys):
    rc = main(["train", *TINY, *argv])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_unknown_option_on_other_commands_still_errors(capsys):
    try:
        code = main(["list", "noise", "--bogus"])
    except SystemExit as e:  # argparse's own exit
        code = e.code
    assert code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_parse_helpers():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("none") is None and parse_value("64,64") == (64, 64) and parse_value("relu") == "relu"
    assert parse_free_options(["--a", "-1", "--b", "--c=x", "--d-e", "2"]) == {"a": -1, "b": True, "c": "x", "d_e": 2}


def test_train_json_and_unwritable_out_fail_fast(tmp_path, capsys):
    assert main(["train", *TINY, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["resolved"]["train"]["epochs"] == 2 and rec["config"]["noise_kind"] == "none"
    blocker = tmp_path / "f"
    blocker.write_text("x")
    assert main(["train", *TINY, "--epochs", "50", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and "Traceback" not in err


def test_download_is_passed_on_but_never_recorded(tmp_path, capsys, monkeypatch):
    seen = {}
    real = data.load

    def spy(name, **kw):
        seen.update(kw)
        kw.pop("download", None)
        kw.pop("mirror", None)
        return real(name, **kw)

    monkeypatch.setattr(data, "load", spy)
    out = tmp_path / "r"
    assert main(["train", *TINY, "--data-arg", "download=true", "--data-arg", "mirror=http://example.invalid",
                 "--out", str(out)]) == 0
    assert seen["download"] is True and seen["mirror"] == "http://example.invalid"
    assert "download" not in (out / "metrics.json").read_text()
    assert "example.invalid" not in json.dumps(load_checkpoint(out).robustlab_extra)
