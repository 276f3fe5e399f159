"""Denoised smoothing through checkpoints and the CLI: ``robustlab denoise`` then ``robustlab certify --denoiser``."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from robustlab import data, models, training
from robustlab._validation import InvalidParameterError
from robustlab.certify import SmoothedClassifier
from robustlab.cli import main
from robustlab.defences import DenoisedSmoothing, load_denoised, save_denoiser


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A LeNet on clean 8x8 digits saved as a run folder (the base classifier of every test here)."""
    d = data.load("digits")
    torch.manual_seed(0)
    base = models.create("lenet", input_shape=d.input_shape, num_classes=10, channels=(8, 16), hidden=(32,))
    run = tmp_path_factory.mktemp("base")
    training.fit(base, d, epochs=10, batch_size=64, lr=0.05, progress=False, seed=0, checkpoint=run)
    return run, base.eval(), d


def _denoise(run, out, *extra):
    return main(["denoise", "--checkpoint", str(run), "--data", "digits", "--sigma", "0.25", "--epochs", "1",
                 "--pretrain-epochs", "1", "--n-train", "256", "--denoiser-arg", "width=8", "--denoiser-arg", "depth=3",
                 "--out", str(out), "-q", *extra])


@pytest.mark.parametrize("method, extra", [("fo", []), ("zo", ["--q", "2", "--query-budget", "3000"]),
                                           ("consistency", ["--levels", "2"])])
def test_denoise_then_certify_from_the_cli(base_run, tmp_path, capsys, method, extra):
    run, base, d = base_run
    out = tmp_path / "den"
    assert _denoise(run, out, "--method", method, *extra) == 0
    printed = capsys.readouterr().out
    assert f"denoiser ({method}, σ=0.25)" in printed and (out / "model.pt").is_file()
    assert (out / "autoencoder.pt").is_file() == (method == "zo")
    record = json.loads((out / "denoise.json").read_text())
    assert record["method"] == method and record["num_train"] == 256 and record["history"][method]
    if method == "zo":
        assert 0 < record["queries"] <= 3000
    argv = ["certify", "--checkpoint", str(run), "--denoiser", str(out), "--data", "digits", "--method", "smoothing",
            "--n0", "10", "--n", "40", "--n-test", "6", "--radii", "0", "0.1", "--json", "-q"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sigma"] == 0.25 and doc["denoiser"]["trained_method"] == method
    assert doc["denoiser"]["autoencoder"] == (method == "zo")
    # the CLI certifies exactly DenoisedSmoothing(base, loaded denoiser): same numbers through the Python API
    ds = load_denoised(base, out)
    classes, radii = SmoothedClassifier(ds, sigma=0.25, num_classes=10).certify(
        d.x_test[:6], n0=10, n=40, alpha=0.001, batch_size=1000, generator=torch.Generator().manual_seed(0))
    from robustlab.certify import certified_accuracy_curve

    want = certified_accuracy_curve(classes, radii, d.y_test[:6], [0.0, 0.1])
    assert doc["certified_accuracy"] == {"0": float(want[0]), "0.1": float(want[1])}


def test_save_and_load_round_trip_is_exact_and_never_unpickles(base_run, tmp_path):
    run, base, d = base_run
    torch.manual_seed(1)
    den = models.create("dncnn", input_shape=d.input_shape, num_classes=10, width=8, depth=3)
    ae = models.create("conv_autoencoder", input_shape=d.input_shape, num_classes=10, width=8, latent_channels=2)
    ds = DenoisedSmoothing(base, den, 0.5, autoencoder=ae)
    ds.fit(d.x_train[:64], method="mse", epochs=1, generator=torch.Generator().manual_seed(0))
    save_denoiser(ds, tmp_path / "d", method="mse")
    back = load_denoised(base, tmp_path / "d")
    assert back.sigma == 0.5 and back.robustlab_denoiser["method"] == "mse"
    x = d.x_test[:16]
    with torch.no_grad():
        torch.testing.assert_close(back(x), ds.eval()(x), rtol=0, atol=0)
    assert load_denoised(base, tmp_path / "d", sigma=0.25).sigma == 0.25
    # a pickled module in place of the denoiser is refused, not executed
    torch.save(den, tmp_path / "evil.pt")
    with pytest.raises(InvalidParameterError, match="pickled Python objects"):
        load_denoised(base, tmp_path / "evil.pt")
    assert pickle  # the module used by torch.save above


def test_certify_denoiser_errors(base_run, tmp_path, capsys):
    run, base, d = base_run
    common = ["certify", "--checkpoint", str(run), "--data", "digits", "--n-test", "4", "-q"]
    assert main([*common, "--method", "smoothing", "--denoiser", str(run)]) != 0  # a classifier, not a denoiser
    assert "is not a denoiser checkpoint" in capsys.readouterr().err
    assert main([*common, "--method", "smoothing", "--denoiser", str(tmp_path / "missing")]) != 0
    assert "No checkpoint" in capsys.readouterr().err
    torch.manual_seed(0)
    ds = DenoisedSmoothing(base, models.create("dncnn", input_shape=d.input_shape, num_classes=10, width=4, depth=2), 0.25)
    save_denoiser(ds, tmp_path / "den")
    assert main([*common, "--method", "ibp", "--denoiser", str(tmp_path / "den")]) != 0
    assert "--denoiser applies to --method smoothing" in capsys.readouterr().err


@pytest.mark.parametrize("argv, text", [
    (["--epochs", "0"], "--epochs must be an integer >= 1"), (["--sigma", "0"], "--sigma must be a number > 0"),
    (["--n-train", "0"], "--n-train must be an integer >= 1"), (["--denoiser-arg", "depth=1"], "'depth'"),
])
def test_denoise_bad_arguments(base_run, tmp_path, capsys, argv, text):
    run, _, _ = base_run
    assert _denoise(run, tmp_path / "x", *argv) != 0
    assert text in capsys.readouterr().err
    assert not (tmp_path / "x" / "model.pt").exists()


def test_save_denoiser_needs_registry_modules(base_run, tmp_path):
    _, base, _ = base_run
    ds = DenoisedSmoothing(base, torch.nn.Conv2d(1, 1, 3, padding=1), 0.25)
    with pytest.raises(InvalidParameterError, match="models.create"):
        save_denoiser(ds, tmp_path / "d")
