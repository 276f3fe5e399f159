"""``robustlab shift --quantize BITS`` and the bench evaluation ``quantization``."""

from __future__ import annotations

import json

import pytest
import torch

from robustlab import data, models, shift, training
from robustlab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = data.load("digits").subset(n_train=600, n_test=120)
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(32,))
    run = tmp_path_factory.mktemp("run")
    training.fit(m, d, epochs=8, lr=0.05, progress=False, checkpoint=run)
    return m.eval(), d, run


def test_cli_quantize_table_and_json(run_dir, capsys):
    m, d, run = run_dir
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", "--quantize", "8,3,2", "--n-test", "100",
                 "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = shift.quantization_error(m, data.load("digits"), bits=[8, 3, 2], n_test=100)
    assert doc["clean"] == {str(b): a for b, a in want.clean.items()}
    assert doc["float_clean"] == want.float_clean and doc["robust"] is None
    assert doc["meta"]["command"] == "shift --quantize"
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", "--quantize", "4", "--n-test", "50",
                 "--attack", "fgsm", "--eps", "0.1", "--quant-scheme", "per_tensor", "--quant-activations", "-q"]) == 0
    out = capsys.readouterr().out
    assert "robust" in out and "per_tensor symmetric weights, activations quantized" in out


def test_cli_quantize_asymmetric(run_dir, capsys):
    m, d, run = run_dir
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", "--quantize", "3,2", "--n-test", "100",
                 "--quant-symmetry", "asymmetric", "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = shift.quantization_error(m, data.load("digits"), bits=[3, 2], n_test=100, symmetry="asymmetric")
    assert doc["clean"] == {str(b): a for b, a in want.clean.items()} and doc["meta"]["symmetry"] == "asymmetric"
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", "--quantize", "3",
                 "--quant-symmetry", "affine"]) == 2
    assert "--quant-symmetry" in capsys.readouterr().err


def test_cli_mixed_precision_search(run_dir, capsys):
    m, d, run = run_dir
    argv = ["shift", "--checkpoint", str(run), "--data", "digits", "--quantize", "8,4,2", "--mixed-budget", "3",
            "--n-holdout", "200", "--n-test", "100", "-q"]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    full = data.load("digits")
    want = shift.mixed_precision_search(m, full, budget=3.0, bits=[8, 4, 2], n_holdout=200, seed=0)
    assert doc["bits"] == want.bits and doc["accuracy"] == want.accuracy and doc["average_bits"] <= 3.0
    with torch.no_grad():
        acc = float((shift.quantize(m, bits=want.bits)(full.x_test[:100]).argmax(1) == full.y_test[:100]).double().mean())
    assert doc["test_accuracy"]["mixed"] == pytest.approx(acc) and doc["num_test"] == 100
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "uniform 2-bit" in out and "held out only if" in out
    assert main([*argv, "--mixed-budget", "1"]) == 2
    assert "'budget' parameter of mixed_precision_search" in capsys.readouterr().err


@pytest.mark.parametrize("argv, text", [
    (["--quantize", "8,1"], "--quantize must be comma-separated integers in 2..16"),
    (["--quantize", "eight"], "--quantize must be comma-separated integers"),
    (["--quantize", "8", "--attack", "fgsm"], "--attack needs --eps"),
    (["--attack", "fgsm", "--eps", "0.1"], "go with --quantize"),
    (["--quant-symmetry", "asymmetric"], "--quant-activations and --mixed-budget go with --quantize"),
    (["--mixed-budget", "3"], "--mixed-budget go with --quantize"),
    (["--quantize", "8,2", "--mixed-budget", "3", "--attack", "fgsm", "--eps", "0.1"], "does not take --attack"),
])
def test_cli_quantize_errors(run_dir, capsys, argv, text):
    _, _, run = run_dir
    assert main(["shift", "--checkpoint", str(run), "--data", "digits", *argv]) == 2
    assert text in capsys.readouterr().err


def test_bench_evaluation_quantization_in_a_spec():
    from robustlab import pipeline

    res = pipeline.run({"data": {"name": "digits", "n_train": 400, "n_test": 150}, "model": {"name": "linear"},
                        "train": {"epochs": 3}, "seed": 0,
                        "evaluations": [{"name": "quantization", "bits": [8, 2], "n_test": 100}]})
    got = {n: v for n, v, _ in res.metrics if n.startswith("quant_acc/")}
    assert set(got) == {"quant_acc/bits=8", "quant_acc/bits=2", "quant_acc/worst"}
    assert got["quant_acc/worst"] == min(got["quant_acc/bits=8"], got["quant_acc/bits=2"])
    with pytest.raises(ValueError, match="bits"):
        pipeline.run({"data": {"name": "digits", "n_train": 100, "n_test": 50}, "model": {"name": "linear"},
                      "train": {"epochs": 1}, "evaluations": [{"name": "quantization", "bits": [1]}]})
