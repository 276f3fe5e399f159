"""Every foreseeable failure of an evaluation command exits non-zero with one line
``robustlab <command>: error: ...`` naming the file or argument, and never a traceback; data and
models are named the same way in every command (issues 11 and 12)."""

from __future__ import annotations

import json
import os
import random
import struct

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import data, models, training
from robustlab.cli import main

COMMANDS = {  # the smallest valid invocation of each evaluation command, after the model/data options
    "attack": ["--attack", "fgsm", "--eps", "0.05", "--n-test", "8"],
    "evaluate": ["--suite", "fgsm", "--eps", "0.05", "--n-test", "8"],
    "certify": ["--eps", "0.01", "--n-test", "8"],
    "conformal": ["--n-test", "20"],
    "shift": ["--corruptions", "contrast", "--severities", "1", "--n-test", "8"],
}


def _fails(capsys, argv, *needles, code=None):
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc != 0, cap.out
    if code is not None:
        assert rc == code
    assert "Traceback" not in cap.err + cap.out
    assert cap.err.startswith(f"robustlab {argv[0]}: error: ") or f"robustlab {argv[0]}: error: " in cap.err, cap.err
    for n in needles:
        assert n in cap.err, (n, cap.err)
    return cap.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = data.load("digits")
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=d.input_shape, num_classes=d.num_classes)
    training.fit(m, d.subset(n_train=200), epochs=1, batch_size=64, lr=0.05, progress=False)
    out = tmp_path_factory.mktemp("run")
    training.save_checkpoint(m, out, extra={"config": {"data": "digits", "data_args": {}}})
    return out


# -- bad checkpoints ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "pickled_module", "foreign"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_checkpoint_is_one_clear_line(run_dir, tmp_path, capsys, kind, command):
    p = tmp_path / "model.pt"
    good = (run_dir / "model.pt").read_bytes()
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        p.write_bytes(random.Random(0).randbytes(300))
    elif kind == "pickled_module":
        torch.save(nn.Linear(64, 10), p)
    else:
        torch.save({"state_dict": {}}, p)
    out = tmp_path / "r.json"
    _fails(capsys, [command, "--checkpoint", str(p), "--data", "digits", *COMMANDS[command], "--out", str(out)],
           str(p))
    assert not out.exists()


def test_missing_checkpoint_and_no_model(capsys, tmp_path):
    _fails(capsys, ["attack", "--checkpoint", str(tmp_path / "nope"), "--eps", "0.1"], "No checkpoint", code=2)
    _fails(capsys, ["attack", "--data", "digits", "--eps", "0.1"], "--checkpoint PATH", code=2)


# -- options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_device(run_dir, capsys, command):
    _fails(capsys, [command, "--checkpoint", str(run_dir), *COMMANDS[command], "--device", "tpu9"],
           "--device", "tpu9", "cpu", code=2)


def test_bad_eps_and_output_option_names(run_dir, capsys):
    _fails(capsys, ["attack", "--checkpoint", str(run_dir), "--eps", "eight"], "--eps", "8/255", code=2)
    _fails(capsys, ["attack", "--checkpoint", str(run_dir), "--eps", "0.1", "--output", "x.json"],
           "unrecognized arguments: --output", "Did you mean --out?", code=2)
    _fails(capsys, ["certify", "--checkpoint", str(run_dir), "--max-samples", "3"], "--max-samples", "--n-test",
           code=2)


@pytest.mark.parametrize("command", [*sorted(COMMANDS), "train"])
def test_unwritable_out_fails_before_any_work(run_dir, capsys, monkeypatch, command):
    from robustlab.cli import _inputs

    def boom(*a, **k):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(_inputs, "load_inputs", boom)
    monkeypatch.setattr(training, "fit", boom)
    argv = ["train", "--data", "digits", "--epochs", "1"] if command == "train" else \
        [command, "--checkpoint", str(run_dir), *COMMANDS[command]]
    _fails(capsys, [*argv, "--out", "/proc/robustlab-test/r.json"], "--out", "/proc/robustlab-test", code=2)


def test_full_disk_is_a_clear_error(run_dir, capsys, monkeypatch, tmp_path):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "r.json"))

    monkeypatch.setattr(training, "atomic_write_text", full)
    _fails(capsys, ["attack", "--checkpoint", str(run_dir), *COMMANDS["attack"], "--out", str(tmp_path / "r.json")],
           "No space left on device", "r.json", code=1)


def test_unknown_suite_suggests_standard(run_dir, capsys):
    _fails(capsys, ["evaluate", "--checkpoint", str(run_dir), "--suite", "standrd", "--eps", "0.1"],
           "Did you mean 'standard'", code=2)
    _fails(capsys, ["evaluate", "--checkpoint", str(run_dir), "--suite", "fgsm,pgdd", "--eps", "0.1"],
           "Did you mean 'pgd'", code=2)


@pytest.mark.parametrize("exc", [MemoryError, OverflowError])
def test_memory_and_overflow_errors_from_files(run_dir, capsys, monkeypatch, exc):
    def explode(self):
        raise exc("from a hostile file")

    monkeypatch.setattr(data.DataRef, "load", explode)
    _fails(capsys, ["attack", "--checkpoint", str(run_dir), *COMMANDS["attack"]], "hostile file", code=1)


# -- data of the wrong shape, data by path, models by reference ---------------------------------------
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_wrong_shape_data(run_dir, capsys, command):
    _fails(capsys, [command, "--checkpoint", str(run_dir), "--data", "blobs2d", *COMMANDS[command]],
           "(1, 8, 8)", "(2,)", code=2)


def test_empty_data_file(run_dir, capsys, tmp_path):
    (tmp_path / "e.csv").write_text("")
    _fails(capsys, ["attack", "--checkpoint", str(run_dir), "--data", f"csv:{tmp_path / 'e.csv'}",
                    *COMMANDS["attack"]], "e.csv", code=2)


def test_torchscript_and_factory_models(capsys, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    ts = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(ts))
    out = tmp_path / "r.json"
    assert main(["attack", "--model", str(ts), "--data", "digits", *COMMANDS["attack"], "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"] == str(ts) and doc["data"] == "digits" and doc["n"] == 8
    assert doc["attack_params"]["eps"] == 0.05
    capsys.readouterr()
    assert main(["certify", "--model", "mlp", "--model-arg", "hidden=8", "--data", "blobs2d", "--eps", "0.01",
                 "--n-test", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_points"] == 10
    _fails(capsys, ["attack", "--model", "mpl", "--data", "digits", "--eps", "0.1"], "Did you mean 'mlp'", code=2)


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A tiny MNIST-format folder holding only the test split (like ../shared/datasets/mnist-t10k)."""
    root = tmp_path_factory.mktemp("mnist-t10k")
    rng = np.random.default_rng(0)
    y = np.arange(60) % 10
    x = (rng.random((60, 28, 28)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c: 2 * c + 4, :] = 255  # a class-dependent stripe
    _write_idx(root / "t10k-images-idx3-ubyte", x)
    _write_idx(root / "t10k-labels-idx1-ubyte", y)
    return root


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_checkpoint_trained_on_files_works_everywhere(mnist_dir, tmp_path_factory, capsys, command):
    d = data.load("mnist", root=str(mnist_dir), use_test_split_as_train=0.5)
    m = models.create("linear", input_shape=d.input_shape, num_classes=10)
    run = tmp_path_factory.mktemp("mnist-run")
    # the root is not recorded (older checkpoints): --data-root on the command line supplies it
    training.save_checkpoint(m, run, extra={"config": {"data": "mnist", "data_args": {"use_test_split_as_train": 0.5}}})
    _fails(capsys, [command, "--checkpoint", str(run), *COMMANDS[command]], "--data-root", code=2)
    out = tmp_path_factory.mktemp("o") / "r.json"
    assert main([command, "--checkpoint", str(run), "--data-root", str(mnist_dir), *COMMANDS[command],
                 "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    meta = doc.get("meta", doc)
    assert meta["data_ref"] == {"name": "mnist", "root": str(mnist_dir), "options": {"use_test_split_as_train": 0.5}}


def test_recorded_root_and_data_arg_override(mnist_dir, tmp_path, capsys):
    run = tmp_path / "run"
    m = models.create("linear", input_shape=(1, 28, 28), num_classes=10)
    cfg = {"data": {"name": "mnist", "root": str(mnist_dir), "options": {"use_test_split_as_train": 0.5}}}
    training.save_checkpoint(m, run, extra={"config": cfg})
    assert main(["attack", "--checkpoint", str(run), *COMMANDS["attack"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 8
    assert main(["attack", "--checkpoint", str(run), "--attack", "fgsm", "--eps", "0.05", "--json",
                 "--data-arg", "use_test_split_as_train=0.8"]) == 0
    want = data.load("mnist", root=str(mnist_dir), use_test_split_as_train=0.8).x_test.shape[0]
    assert json.loads(capsys.readouterr().out)["n"] == want != 30  # the override, not the recorded 0.5


def test_recorded_download_and_mirror_are_ignored(tmp_path, capsys, monkeypatch):
    from robustlab.data import _download

    def no_network(*a, **k):
        raise AssertionError("a checkpoint made a command contact a host")

    monkeypatch.setattr(_download, "fetch_file", no_network)
    monkeypatch.setattr(_download, "download", no_network)
    root = tmp_path / "never-created"
    run = tmp_path / "run"
    cfg = {"data": "mnist", "data_args": {"root": str(root), "download": True, "mirror": "http://127.0.0.1:9/"}}
    training.save_checkpoint(models.create("linear", input_shape=(1, 28, 28), num_classes=10), run,
                             extra={"config": cfg})
    for command in sorted(COMMANDS):
        _fails(capsys, [command, "--checkpoint", str(run), *COMMANDS[command]], "t10k-images", code=2)
    assert not root.exists()


def test_progress_follows_quiet():
    import argparse

    from robustlab.cli._inputs import call

    seen = {}

    def with_progress(x, *, progress=None):
        seen["progress"] = progress
        return x

    def without(x):
        return x

    assert call(with_progress, 1, args=argparse.Namespace(quiet=True)) == 1 and seen["progress"] is False
    call(with_progress, 1, args=argparse.Namespace(quiet=False))
    assert seen["progress"] is None  # auto: a bar only on a terminal
    assert call(without, 2, args=argparse.Namespace(quiet=True)) == 2


def test_warnings_are_one_plain_line(run_dir, capsys, monkeypatch):
    import warnings

    real = data.DataRef.load

    def warn_then_load(self):
        warnings.warn("the train split is missing", UserWarning, stacklevel=2)
        return real(self)

    monkeypatch.setattr(data.DataRef, "load", warn_then_load)
    assert main(["attack", "--checkpoint", str(run_dir), *COMMANDS["attack"]]) == 0
    err = capsys.readouterr().err
    assert "robustlab attack: warning: the train split is missing" in err and "UserWarning" not in err


def test_terminal_output_has_no_control_sequences(run_dir, tmp_path, capsys):
    import shutil

    odd = tmp_path / "run\x1b[31mred\x07"
    shutil.copytree(run_dir, odd)
    assert main(["attack", "--checkpoint", str(odd), *COMMANDS["attack"]]) == 0
    out = capsys.readouterr().out
    assert "runred" in out and "\x1b" not in out and "\x07" not in out
    err = _fails(capsys, ["attack", "--checkpoint", str(odd / "nope"), *COMMANDS["attack"]], "runred")
    assert "\x1b" not in err


# -- hostile data files reach the user as one line ----------------------------------------------------
def _hostile(tmp_path, case: str) -> list[str]:
    from robustlab.testing._data import write_idx

    if case == "empty_csv":
        (tmp_path / "h.csv").write_text("f,label\n")
        return ["--data", f"csv:{tmp_path / 'h.csv'}"]
    if case == "empty_svmlight":
        (tmp_path / "e.txt").write_text("")
        return ["--data", f"svmlight:{tmp_path / 'e.txt'}"]
    if case == "empty_npz":
        np.savez(tmp_path / "z.npz", x=np.zeros((0, 3)), y=np.zeros(0, dtype=int))
        return ["--data", f"npz:{tmp_path / 'z.npz'}"]
    if case == "secret_csv":
        (tmp_path / "p.csv").write_text("root:x:0:0:SECRET-TOKEN\nSECRET-TOKEN\n")
        return ["--data", f"csv:{tmp_path / 'p.csv'}"]
    if case == "idx_overflow":
        (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *[0xFFFFFFFF] * 3))
        write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10) % 10)
        return ["--data", "mnist", "--data-root", str(tmp_path)]
    if case == "idx_sizes_differ":
        write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)))
        write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10) % 10)
        write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 32, 32)))
        write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(10) % 10)
        return ["--data", "mnist", "--data-root", str(tmp_path)]
    assert case == "cifar_pickle_bomb"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("test_batch", "batches.meta"):
        (folder / name).write_bytes(b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62))
    return ["--data", "cifar10", "--data-root", str(tmp_path)]


@pytest.mark.parametrize("case", ["empty_csv", "empty_svmlight", "empty_npz", "secret_csv", "idx_overflow",
                                  "idx_sizes_differ", "cifar_pickle_bomb"])
def test_hostile_data_files_through_the_cli(tmp_path, capsys, case):
    err = _fails(capsys, ["attack", "--model", "linear", *_hostile(tmp_path, case), "--eps", "0.1"])
    assert "SECRET" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_recorded_data_reference(tmp_path, capsys):
    run = tmp_path / "run"
    training.save_checkpoint(models.create("linear", input_shape=(64,), num_classes=10), run,
                             extra={"config": {"data": 3}})
    _fails(capsys, ["attack", "--checkpoint", str(run), "--eps", "0.1"], str(run), "--data NAME", code=2)
    assert main(["attack", "--checkpoint", str(run), "--data", "digits", "--data-arg", "flatten=true",
                 *COMMANDS["attack"]]) == 0


def test_evaluation_flags_are_shown_and_stored(tmp_path, capsys):
    torch.manual_seed(0)
    soft = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))
    ts = tmp_path / "soft.ts"
    torch.jit.save(torch.jit.script(soft), str(ts))
    out = tmp_path / "r.json"
    assert main(["attack", "--model", str(ts), "--data", "digits", *COMMANDS["attack"], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    flags = json.loads(out.read_text())["flags"]
    assert flags and any("probabilit" in f for f in flags)
    assert all(f"flag: {f}" in text for f in flags)
