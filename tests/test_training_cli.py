"""robustlab train --augment / --precision / --resume and the spec's train: {augment, precision}."""

import json

import pytest
import torch

from robustlab import pipeline
from robustlab.cli import main
from robustlab.training import load_checkpoint

DIGITS = ["--data", "digits", "--model-arg", "hidden=16", "--epochs", "2", "--batch-size", "128", "--no-progress"]


def test_augment_and_precision_reach_fit_and_the_record(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--augment", "crop_flip", "--precision", "bf16", "--out", str(out)]) == 0
    assert "augment=crop_flip precision=bf16" in capsys.readouterr().out
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["config"]["augment"] == "crop_flip" and rec["config"]["precision"] == "bf16"
    plain = tmp_path / "plain"
    assert main(["train", *DIGITS, "--out", str(plain)]) == 0
    capsys.readouterr()
    assert "augment" not in json.loads((plain / "metrics.json").read_text())["config"]
    a, b = load_checkpoint(out).state_dict(), load_checkpoint(plain).state_dict()
    assert a.keys() == b.keys() and not torch.equal(a["1.weight"], b["1.weight"])  # same init, other training


@pytest.mark.parametrize("args, msg", [(["--augment", "crop"], "'augment'.*'crop_flip'"),
                                       (["--precision", "fp8"], "'precision'.*'bf16'"),
                                       (["--resume"], "--resume needs --out")])
def test_bad_values_are_one_error_line(args, msg, capsys):
    rc = main(["train", *DIGITS, *args])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    import re

    assert re.search(msg, err), err


def test_resume_continues_from_the_train_state(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--resume", "--out", str(out)]) == 0
    state = torch.load(out / "train_state" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    first = json.loads((out / "metrics.json").read_text())["history"]
    # a rerun of the finished command trains nothing more and reports the same run
    assert main(["train", *DIGITS, "--resume", "--out", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())["history"]
    assert again["epoch"] == first["epoch"] and again["time_s"] == first["time_s"]
    capsys.readouterr()


def test_defaults_keep_earlier_run_configs():
    """augment/precision at fit's defaults are not recorded: earlier configs and run ids are unchanged."""
    assert "augment" not in pipeline.train_defaults() and "precision" not in pipeline.train_defaults()
    assert pipeline.check_train_options({"augment": "none", "precision": "fp32"}) == pipeline.train_defaults()
    assert pipeline.check_train_options({"augment": "crop_flip"})["augment"] == "crop_flip"
    cfg = pipeline.Config.from_dict({"data": "digits", "train": {"augment": "cutout", "precision": "bf16"}})
    assert cfg.train["augment"] == "cutout" and cfg.train["precision"] == "bf16"


def test_bench_spec_train_augment_and_precision():
    from robustlab.bench.spec import SpecError, expand

    def spec(**train):
        return {"name": "t", "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4}],
                "models": ["linear"], "losses": ["ce"], "seeds": [0], "train": {"epochs": 1, **train}}

    plain = expand(spec())[0]
    assert "augment" not in plain.config["train"]
    assert expand(spec(augment="none", precision="fp32"))[0].id == plain.id  # defaults: the same run
    aug = expand(spec(augment="noise", precision="bf16"))[0]
    assert aug.config["train"]["augment"] == "noise" and aug.id != plain.id
    with pytest.raises(SpecError, match=r"train\.augment.*'crop_flip'"):
        expand(spec(augment="crop"))


def test_list_augmentations(capsys):
    assert main(["list", "augmentations"]) == 0
    out = capsys.readouterr().out
    for name in ("none", "flip", "crop_flip", "cutout", "noise"):
        assert name in out


def test_select_and_ema_options(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--objective", "pgd_at", "--eps", "0.1", "--steps", "2", "--select", "pgd", "--ema", "0.9", "--patience", "5"]
    assert main(["train", *DIGITS, *args, "--out", str(out)]) == 0
    capsys.readouterr()
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["config"]["select"] == "pgd" and rec["config"]["ema"] == 0.9 and rec["config"]["patience"] == 5
    assert len(rec["history"]["val_robust_acc"]) == 2 and len(rec["history"]["selected_epoch"]) == 1
    rc = main(["train", *DIGITS, "--ema", "1.5"])
    assert rc != 0 and "'ema' parameter of fit must be a value among {None} or a float in (0, 1)" in capsys.readouterr().err
    rc = main(["train", *DIGITS, "--patience", "2"])
    assert rc != 0 and "'patience' parameter of fit needs select" in capsys.readouterr().err


def test_pipeline_records_selection_on_its_own_epochs():
    cfg = {"data": {"name": "digits", "n_train": 300, "n_test": 50}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
           "train": {"epochs": 3, "select": "clean", "select_every": 2, "eval_every": 1}}
    m = {(n, s): v for n, v, s in pipeline.run(cfg, progress=False).metrics}
    assert {s for n, s in m if n == "train/val_acc"} == {2, 3}  # measured at epochs 2 and 3 only
    assert {s for n, s in m if n == "train/test_acc"} == {1, 2, 3}
    assert m[("train/selected_epoch", -1)] in (2.0, 3.0) and not any(n == "train/val_epoch" for n, _ in m)
