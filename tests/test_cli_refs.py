"""The shared option table (``cli._options``), data references (``data.DataRef``) and model references
(``models.resolve``)."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from torch import nn

from robustlab import data, models, training
from robustlab._validation import InvalidParameterError
from robustlab.cli import _options

# -- option table -------------------------------------------------------------------------------------


def test_parse_number_accepts_fractions():
    assert _options.parse_number("8/255") == pytest.approx(8 / 255)
    assert _options.parse_number("0.1") == 0.1
    for bad in ("eight", "1/0", "nan", "inf", ""):
        with pytest.raises(InvalidParameterError, match="--eps"):
            _options.parse_number(bad)


def test_parse_device():
    assert _options.parse_device("cpu") == "cpu"
    with pytest.raises(InvalidParameterError, match="tpu9.*cpu, cuda"):
        _options.parse_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            _options.parse_device("cuda:0")


def test_every_option_has_help_and_parses():
    p = argparse.ArgumentParser()
    _options.add_options(p, *_options.OPTIONS, defaults={"batch_size": 7}, eps={"required": True})
    for action in p._actions:
        if action.dest != "help":
            assert action.help, action.dest
    args = p.parse_args(["--eps", "8/255", "--data-arg", "a=1", "--data-arg", "b=x", "--quiet"])
    assert args.eps == pytest.approx(8 / 255) and args.batch_size == 7 and args.quiet
    assert _options.key_values(args.data_arg, "--data-arg") == {"a": 1, "b": "x"}
    assert _options.progress_arg(args) is False
    with pytest.raises(KeyError, match="unknown shared option"):
        _options.add_options(argparse.ArgumentParser(), "output")
    with pytest.raises(InvalidParameterError, match="key=value"):
        _options.key_values(["novalue"], "--data-arg")


def test_check_writable(tmp_path):
    assert _options.check_writable(tmp_path / "a" / "b" / "r.json") == tmp_path / "a" / "b" / "r.json"
    assert not (tmp_path / "a").exists()  # creates nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidParameterError, match="is a file, not a folder"):
        _options.check_writable(tmp_path / "f" / "r.json")
    with pytest.raises(InvalidParameterError, match="is a folder"):
        _options.check_writable(tmp_path)
    assert _options.check_writable(tmp_path, directory=True) == tmp_path
    with pytest.raises(InvalidParameterError, match="cannot be written"):
        _options.check_writable("/proc/robustlab-test/r.json")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# -- data references ----------------------------------------------------------------------------------


def test_dataref_round_trip_and_load():
    ref = data.DataRef("digits", options={"test_fraction": 0.5})
    assert data.DataRef.from_config(ref.to_config()) == ref
    d = ref.load()
    assert d.name == "digits" and d.x_test.shape[0] > 0
    assert data.DataRef.from_config("digits") == data.DataRef("digits")
    # the spec's flat form and the run-config form
    assert data.DataRef.from_config({"name": "mnist", "root": "/d", "seed": 1}) == \
        data.DataRef("mnist", root="/d", options={"seed": 1})
    assert data.DataRef.from_config({"data": "mnist", "data_args": {"root": "/d", "seed": 1}}) == \
        data.DataRef("mnist", root="/d", options={"seed": 1})


def test_dataref_from_file_drops_download_and_mirror():
    cfg = {"data": "mnist", "data_args": {"root": "/nonexistent/x", "download": True, "mirror": "http://evil/"}}
    ref = data.DataRef.from_config(cfg)
    assert ref.options == {} and ref.root == "/nonexistent/x"
    assert data.DataRef.from_config(cfg, trusted=True).options == {"download": True, "mirror": "http://evil/"}
    with pytest.raises(FileNotFoundError):
        ref.load()
    assert not os.path.exists("/nonexistent/x")


def test_dataref_override():
    ref = data.DataRef("mnist", root="/a", options={"use_test_split_as_train": 0.8, "seed": 0})
    new = ref.override(root="/b", options={"seed": 3})
    assert new == data.DataRef("mnist", root="/b", options={"use_test_split_as_train": 0.8, "seed": 3})
    assert ref.override(name="digits") == data.DataRef("digits")
    assert ref.override() == ref


def test_dataref_bad_input():
    with pytest.raises(InvalidParameterError):
        data.DataRef("")
    with pytest.raises(InvalidParameterError, match="name"):
        data.DataRef.from_config({"root": "/x"})
    with pytest.raises(InvalidParameterError):
        data.DataRef.from_config(3)
    with pytest.raises(InvalidParameterError, match="root"):
        data.DataRef("csv:x.csv", root="/r").load()
    with pytest.raises(KeyError, match="Did you mean 'digits'"):
        data.DataRef("digit").load()


# -- model references ---------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self, input_shape=(64,), num_classes=10):
        super().__init__()
        self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def make_net(input_shape, num_classes, width=3):
    return _Net(input_shape, num_classes)


def test_resolve_registry_factory_module():
    m = models.resolve("mlp", input_shape=(64,), num_classes=10, hidden=(8,))
    assert m(torch.zeros(2, 64)).shape == (2, 10)
    f = models.resolve(f"{__name__}:make_net", input_shape=(5,), num_classes=3)
    assert isinstance(f, _Net) and f(torch.zeros(1, 5)).shape == (1, 3)
    c = models.resolve(f"{__name__}:_Net", input_shape=(4,), num_classes=2)
    assert c(torch.zeros(1, 4)).shape == (1, 2)
    inst = nn.Linear(2, 2)
    assert models.resolve(inst) is inst
    with pytest.raises(KeyError, match="Did you mean 'mlp'.*module:attribute"):
        models.resolve("mpl", input_shape=(4,), num_classes=2)
    with pytest.raises(InvalidParameterError, match="cannot import module"):
        models.resolve("no_such_module_xyz:Net")
    with pytest.raises(InvalidParameterError, match="has no attribute"):
        models.resolve(f"{__name__}:nothing_here")
    with pytest.raises(InvalidParameterError, match="timm"):
        models.resolve("timm:resnet18") if not _has("timm") else pytest.skip("timm installed")


def _has(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_resolve_checkpoint_and_torchscript(tmp_path):
    m = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(4,))
    training.save_checkpoint(m, tmp_path / "run")
    loaded = models.resolve(str(tmp_path / "run"))
    assert torch.equal(loaded(torch.ones(1, 6)), m(torch.ones(1, 6)))
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(6, 3))), str(ts))
    assert models.resolve(str(ts))(torch.zeros(2, 6)).shape == (2, 3)
    assert models.resolve(f"torchscript:{ts}")(torch.zeros(1, 6)).shape == (1, 3)
    with pytest.raises(FileNotFoundError):
        models.resolve(str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "pickled_module", "foreign_dict"])
def test_resolve_bad_checkpoints_give_clear_errors(tmp_path, kind):
    p = tmp_path / "model.pt"
    good = tmp_path / "good.pt"
    training.save_checkpoint(models.create("mlp", input_shape=(6,), num_classes=3, hidden=(4,)), good)
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(good.read_bytes()[:200])
    elif kind == "garbage":
        p.write_bytes(b"\x80\x04not a checkpoint at all" * 5)
    elif kind == "pickled_module":
        torch.save(nn.Linear(2, 2), p)
    else:
        torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(InvalidParameterError, match=str(p).replace("\\", "\\\\")):
        models.resolve(str(p))


def test_check_compatible():
    from robustlab.models._ref import check_compatible

    m = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(4,))
    check_compatible(m, (6,), 3)
    with pytest.raises(InvalidParameterError, match=r"shape \(6,\).*\(1, 28, 28\)"):
        check_compatible(m, (1, 28, 28), 3)
    with pytest.raises(InvalidParameterError, match="3 outputs.*10 classes"):
        check_compatible(m, (6,), 10)
    bare = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    with pytest.raises(InvalidParameterError, match="cannot take inputs"):
        check_compatible(bare, (1, 28, 28), 3)
    with pytest.raises(InvalidParameterError, match=r"returns \(1, 3\)"):
        check_compatible(bare, (6,), 10)


# -- every evaluation command uses the same table -----------------------------------------------------
EVAL_COMMANDS = ("attack", "evaluate", "certify", "conformal", "shift")


def _subparsers():
    from robustlab.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_shared_options_are_the_same_in_every_command():
    subs = _subparsers()
    for name in EVAL_COMMANDS:
        p = subs[name]
        flags = {s for a in p._actions for s in a.option_strings}
        for opt in ("--out", "--n-test", "--seed", "--device", "--json", "--quiet", "--data", "--data-root",
                     "--data-arg", "--model", "--model-arg", "--checkpoint", *(("--eps",) if name != "shift" else ())):
            assert opt in flags, (name, opt)
        assert "--output" not in flags and "--max-samples" not in flags and "--no-progress" not in flags
        for a in p._actions:
            assert a.help, (name, a.dest)
            shared = next((k for k, (fl, _) in _options.OPTIONS.items() if fl == tuple(a.option_strings)), None)
            if shared and shared not in ("eps", "batch_size"):  # eps/batch-size keep per-command defaults
                assert a.help == _options.OPTIONS[shared][1]["help"], (name, a.dest)
        if name == "shift":  # no threat model
            continue
        eps = p.parse_known_args(["--eps", "8/255"])[0].eps
        assert (eps[0] if isinstance(eps, list) else eps) == pytest.approx(8 / 255), name


def test_list_suites_and_choice_suggestions(capsys):
    from robustlab.cli import main
    from robustlab.evaluate import SUITES

    assert main(["list", "suites"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUITES)
    assert main(["list", "data"]) == 0
    assert "csv:<path>" in capsys.readouterr().out
    assert main(["list", "models"]) == 0
    assert "TorchScript" in capsys.readouterr().out
    assert main(["list", "scoress"]) == 2
    assert "Did you mean 'scores'?" in capsys.readouterr().err
    assert main(["certify", "--checkpoint", "x", "--method", "ibpp"]) == 2
    assert "Did you mean 'ibp'?" in capsys.readouterr().err


def test_data_root_as_data_arg(tmp_path, capsys):
    from robustlab.cli import main

    run = tmp_path / "run"
    training.save_checkpoint(models.create("linear", input_shape=(1, 28, 28), num_classes=10), run,
                             extra={"config": {"data": "mnist", "data_args": {}}})
    assert main(["attack", "--checkpoint", str(run), "--eps", "0.1", "--data-arg", f"root={tmp_path / 'none'}"]) == 2
    assert str(tmp_path / "none") in capsys.readouterr().err  # the root was used (and has no files)
    assert main(["attack", "--checkpoint", str(run), "--eps", "0.1", "--data-arg", "name=digits"]) == 2
    assert "--data NAME" in capsys.readouterr().err


def test_cli_takes_a_module_attribute_factory(capsys):
    import json

    from robustlab.cli import main

    assert main(["attack", "--model", f"{__name__}:make_net", "--model-arg", "width=5", "--data", "digits",
                 "--attack", "fgsm", "--eps", "0.1", "--n-test", "12", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == f"{__name__}:make_net" and doc["n"] == 12
    assert main(["attack", "--model", f"{__name__}:make_net", "--model-arg", "depth=5", "--data", "digits",
                 "--eps", "0.1"]) == 2
    assert "does not take option(s) depth; it takes input_shape, num_classes, width" in capsys.readouterr().err


def test_dataref_is_hashable():
    a = data.DataRef("mnist", root="/a", options={"seed": 1})
    assert len({a, data.DataRef("mnist", root="/a", options={"seed": 1}), data.DataRef("digits")}) == 2


def test_checkpoint_fuzz_loads_or_refuses_clearly(tmp_path):
    """Seeded byte flips and truncations of a valid checkpoint: it loads, or InvalidParameterError names it."""
    import random
    import warnings

    from robustlab.models._ref import load_checkpoint_file

    good = tmp_path / "good.pt"
    training.save_checkpoint(models.create("mlp", input_shape=(6,), num_classes=3, hidden=(4,)), good)
    raw = good.read_bytes()
    rng = random.Random(0)
    p = tmp_path / "model.pt"
    for i in range(150):
        b = bytearray(raw if i % 5 else rng.randbytes(rng.randrange(1, 400)))
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if i % 3 == 0:
            b = b[: rng.randrange(1, len(b))]
        p.write_bytes(bytes(b))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                load_checkpoint_file(p)
            except InvalidParameterError as e:
                assert str(p) in str(e)


def test_registry_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    from robustlab.models._ref import names_saved_model

    monkeypatch.chdir(tmp_path)
    training.save_checkpoint(models.create("linear", input_shape=(6,), num_classes=3), tmp_path / "mlp")
    assert not names_saved_model("mlp") and names_saved_model("./mlp") and names_saved_model("checkpoint:mlp")
    assert models.resolve("mlp", input_shape=(6,), num_classes=3, hidden=(4,)).robustlab_config["name"] == "mlp"
    assert models.resolve("./mlp")(torch.zeros(1, 6)).shape == (1, 3)
