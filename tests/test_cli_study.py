"""The study of issue 12, shortened, from the CLI alone: noisy-label training, PGD-AT, attack, evaluate,
certify, conformal, shift, then a bench spec and its report — on an embedded data set always, and on the
shared MNIST test files (``../shared/datasets/mnist-t10k``) when they are present.

Later commands name only the checkpoint: the data (and its root folder) come from what ``train`` recorded.
"""

from __future__ import annotations

import json
import os

import pytest

from robustlab.cli import main

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "mnist-t10k")
TRAIN = ["--model", "mlp", "--model-arg", "hidden=32", "--epochs", "1", "--batch-size", "64", "--seed", "0"]


def _data_args(kind: str) -> list[str]:
    if kind == "embedded":
        return ["--data", "digits"]
    root = os.path.abspath(os.environ.get("ROBUSTLAB_MNIST_T10K", MNIST))
    if not os.path.isfile(os.path.join(root, "t10k-images-idx3-ubyte.gz")) and \
            not os.path.isfile(os.path.join(root, "t10k-images-idx3-ubyte")):
        pytest.skip(f"shared MNIST test files not found at {root}")
    # the folder holds only the test split: 20 % of it trains, the rest is the test split
    return ["--data", "mnist", "--data-root", root, "--data-arg", "use_test_split_as_train=0.2"]


def _spec_data(argv: list[str]) -> dict:
    """The spec's data entry naming the same data as the command-line options ``argv``."""
    entry: dict = {"name": argv[argv.index("--data") + 1]}
    if "--data-root" in argv:
        entry["root"] = argv[argv.index("--data-root") + 1]
        entry["options"] = {"use_test_split_as_train": 0.2}
    return entry


def _ok(capsys, argv: list[str]) -> str:
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, f"robustlab {' '.join(argv)} -> {rc}\n{cap.err}"
    assert "Traceback" not in cap.err
    return cap.out


def _json(path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("kind", ["embedded", "mnist_files"])
def test_study_from_the_cli(kind, tmp_path, capsys):
    data = _data_args(kind)
    noisy, at = tmp_path / "runs" / "noisy", tmp_path / "runs" / "pgd_at"
    # 1. noisy-label training and 2. PGD adversarial training
    _ok(capsys, ["train", *data, *TRAIN, "--noise", "symmetric:0.4", "--loss", "gce", "--out", str(noisy)])
    _ok(capsys, ["train", *data, *TRAIN, "--objective", "pgd_at", "--eps", "8/255", "--steps", "2", "--out", str(at)])
    assert (noisy / "model.pt").is_file() and (at / "metrics.json").is_file()

    n = ["--n-test", "24", "--quiet"]
    # 3. one attack, 4. the evaluation suite: only the checkpoint names the model and its data
    out = _ok(capsys, ["attack", "--checkpoint", str(at), "--attack", "pgd", "--eps", "8/255", "--steps", "3", *n,
                       "--out", str(tmp_path / "attack.json")])
    doc = _json(tmp_path / "attack.json")
    assert "robust accuracy" in out and doc["n"] == 24 and doc["attack_params"]["steps"] == 3
    assert doc["eps"] == pytest.approx(8 / 255) and 0 <= doc["robust_accuracy"] <= doc["clean_accuracy"] <= 1
    _ok(capsys, ["evaluate", "--checkpoint", str(at), "--suite", "fast", "--eps", "8/255", "--steps", "3",
                 "--n-queries", "20", *n, "--out", str(tmp_path / "evaluate.json")])
    doc = _json(tmp_path / "evaluate.json")
    assert doc["suite"] == "fast" and len(doc["per_attack"]) == len(doc["suite_members"]) >= 2
    # 5. certification: interval bounds and randomized smoothing
    _ok(capsys, ["certify", "--checkpoint", str(at), "--method", "ibp", "--eps", "0", "1/255", *n,
                 "--out", str(tmp_path / "ibp.json")])
    doc = _json(tmp_path / "ibp.json")
    assert doc["certified_accuracy"]["0"] == pytest.approx(doc["clean_accuracy"])
    _ok(capsys, ["certify", "--checkpoint", str(noisy), "--method", "smoothing", "--sigma", "0.25", "--n0", "10",
                 "--n", "50", "--alpha", "0.05", "--radii", "0", "0.1", *n, "--out", str(tmp_path / "rs.json")])
    doc = _json(tmp_path / "rs.json")
    assert {"sigma", "n0", "n", "alpha"} <= set(doc) and doc["num_points"] == 24
    # 6. conformal prediction sets
    _ok(capsys, ["conformal", "--checkpoint", str(noisy), "--score", "aps", "--alpha", "0.2", "--n-test", "200",
                 "--out", str(tmp_path / "conformal.json")])
    doc = _json(tmp_path / "conformal.json")
    assert doc["n_calibration"] + doc["n_test"] == 200 and 0 < doc["coverage"] <= 1
    # 7. distribution shift
    _ok(capsys, ["shift", "--checkpoint", str(noisy), "--corruptions", "contrast,gaussian_noise", "--severities",
                 "1,3", "--baseline", str(at), *n, "--out", str(tmp_path / "shift.json")])
    doc = _json(tmp_path / "shift.json")
    assert set(doc["accuracy"]) == {"contrast", "gaussian_noise"}
    # every result records the same data reference, read back from the checkpoints
    refs = [_json(tmp_path / f)["data_ref" if f != "shift.json" else "meta"] for f in
            ("attack.json", "evaluate.json", "ibp.json", "rs.json", "conformal.json", "shift.json")]
    refs[-1] = refs[-1]["data_ref"]
    assert all(r == refs[0] for r in refs)
    assert refs[0]["name"] == ("digits" if kind == "embedded" else "mnist")


@pytest.mark.parametrize("kind", ["embedded", "mnist_files"])
def test_study_bench_spec_and_report(kind, tmp_path, capsys):
    import yaml

    spec = {
        "name": "study", "description": "the study's sweep, shortened",
        "data": [_spec_data(_data_args(kind))], "noise": ["symmetric:0.4"],
        "models": [{"name": "mlp", "hidden": [32]}], "losses": ["gce"], "objectives": ["standard"],
        "seeds": [0], "train": {"epochs": 1, "batch_size": 64},
        "evaluations": ["clean", {"name": "attacks", "attacks": ["pgd"], "eps": [0.05], "steps": 2, "n_test": 30}],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = _ok(capsys, ["bench", "run", str(path), "--out", str(tmp_path / "results"), "--quiet"])
    assert "1 completed, 0 failed" in out
    _ok(capsys, ["report", str(tmp_path / "results"), "-o", str(tmp_path / "report.md")])
    _ok(capsys, ["report", str(tmp_path / "results"), "-o", str(tmp_path / "report.html")])
    md = (tmp_path / "report.md").read_text()
    assert "clean acc" in md and ("digits" if kind == "embedded" else "mnist") in md
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_same_command_same_numbers(capsys):
    argv = ["attack", "--model", "mlp", "--model-arg", "hidden=16", "--data", "digits", "--attack", "pgd",
            "--eps", "0.1", "--steps", "3", "--n-test", "40", "--seed", "1", "--json"]
    docs = []
    for _ in range(2):
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        doc.pop("time_s")
        docs.append(doc)
    assert docs[0] == docs[1]
