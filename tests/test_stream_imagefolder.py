"""imagefolder: data sets (layout, split, hardening) and the streaming adapter's refusals; spec and CLI wiring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_stream_evaluations import write_tree
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robustlab import data as rdata
from robustlab._validation import InvalidParameterError
from robustlab.data._readers import CorruptFileError
from robustlab.data._stream import iter_batches
from robustlab.evaluate import robust_accuracy


def load(path: Path, **kw):
    return rdata.load(f"imagefolder:{path}", **kw)


def test_layout_split_and_metadata(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", per_class=12)
    a = load(tree, size=8, test_fraction=0.25, seed=3)
    assert isinstance(a.test, Dataset) and len(a.train) == 27 and len(a.test) == 9
    assert a.input_shape == (3, 8, 8) and a.num_classes == 3 and a.classes == ["c0", "c1", "c2"]
    assert sorted(a.test.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # stratified
    assert a.test.files == load(tree, size=8, test_fraction=0.25, seed=3).test.files  # reproducible
    assert a.test.files != load(tree, size=8, test_fraction=0.25, seed=4).test.files
    assert not set(a.train.files) & set(a.test.files)
    x, y = a.test[0]
    assert x.dtype == torch.float32 and x.shape == (3, 8, 8) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert load(tree, size=(4, 6)).input_shape == (3, 4, 6) and load(tree, size=(4, 6)).test[0][0].shape == (3, 4, 6)
    assert load(tree, size=8, channels=1).test[0][0].shape == (1, 8, 8)
    assert load(tree).input_shape == (3, 8, 8)  # size of the first image


def test_train_val_folders(tmp_path: Path) -> None:
    write_tree(tmp_path / "t" / "train", per_class=4)
    write_tree(tmp_path / "t" / "val", per_class=2, seed=1)
    d = load(tmp_path / "t", size=8)
    assert (len(d.train), len(d.test)) == (12, 6) and d.meta["split"] == "train/ and val/"
    (tmp_path / "t" / "val" / "zz").mkdir()
    with pytest.raises(InvalidParameterError, match=r"'zz'.*training split lacks"):
        load(tmp_path / "t", size=8)
    write_tree(tmp_path / "u" / "train", per_class=2)
    with pytest.raises(InvalidParameterError, match="no val/"):
        load(tmp_path / "u", size=8)


def test_workers_give_the_same_batches(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", per_class=4)
    mem = load(tree, size=8, test_fraction=0.5, in_memory=True)
    d = load(tree, size=8, test_fraction=0.5, workers=2)
    xs = torch.cat([xb for xb, _, _ in iter_batches(d, 4)])
    assert d.num_workers == 2 and torch.equal(xs, mem.x_test)


def test_bad_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameterError, match="no class folders"):
        load(tmp_path / "empty")
    tree = write_tree(tmp_path / "t", per_class=2)
    (tree / "c3").mkdir()
    (tree / "c3" / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidParameterError, match=r"class folder '.*c3' holds no images"):
        load(tree, size=8)
    with pytest.raises(InvalidParameterError, match="needs a path"):
        rdata.load("imagefolder:")
    for bad in ({"size": 0}, {"size": "big"}, {"channels": 2}, {"test_fraction": 1.0}, {"workers": -1}):
        with pytest.raises(InvalidParameterError):
            load(write_tree(tmp_path / f"b{len(os.listdir(tmp_path))}", per_class=2), **bad)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", per_class=3)
    (tree / "c1" / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    d = load(tree, size=8, test_fraction=0.5)
    with pytest.raises(CorruptFileError, match=r"c1/01\.png"):
        d.to_memory()
    (tree / "c1" / "01.png").write_text("import os; os.system('echo pwned')")  # text is not an image, never run
    with pytest.raises(CorruptFileError, match=r"c1/01\.png"):
        load(tree, size=8, in_memory=True)


def test_decompression_bomb_and_size_mismatch(tmp_path: Path) -> None:
    from PIL import Image

    tree = write_tree(tmp_path / "t", per_class=2)
    with pytest.raises(CorruptFileError, match=r"max_pixels=50.*decompression bomb"):
        load(tree, size=8, max_pixels=50, in_memory=True)
    Image.new("RGB", (5000, 5000)).save(tree / "c0" / "big.png")  # small file, 25 M pixels
    with pytest.raises(CorruptFileError, match=r"big\.png"):
        load(tree, size=8, max_pixels=10_000_000, in_memory=True)
    (tree / "c0" / "big.png").unlink()
    Image.new("RGB", (9, 7)).save(tree / "c2" / "odd.png")
    with pytest.raises(CorruptFileError, match=r"odd\.png.*pass size="):
        load(tree, in_memory=True)
    assert load(tree, size=8, in_memory=True).x_train.shape[1:] == (3, 8, 8)


def test_symlinks_leaving_the_root_are_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", per_class=1)
    tree = write_tree(tmp_path / "t", per_class=2)
    (tree / "c0" / "inner.png").symlink_to(tree / "c1" / "00.png")  # inside the root: fine
    d = load(tree, size=8)
    assert len(d.train) + len(d.test) == 7  # 3 x 2 images and the link
    (tree / "c0" / "escape.png").symlink_to(outside / "c0" / "00.png")
    with pytest.raises(InvalidParameterError, match=r"escape\.png' is a symlink leading outside"):
        load(tree, size=8)
    (tree / "c0" / "escape.png").unlink()
    (tree / "c9").symlink_to(outside / "c1", target_is_directory=True)
    with pytest.raises(InvalidParameterError, match=r"c9' is a symlink leading outside"):
        load(tree, size=8)


def test_adapter_refusals() -> None:
    x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    ds = TensorDataset(x, y)
    with pytest.raises(InvalidParameterError, match="shuffles"):
        robust_accuracy(model, DataLoader(ds, batch_size=2, shuffle=True), "pgd", eps=0.1)
    with pytest.raises(TypeError, match="torch Dataset or DataLoader"):
        robust_accuracy(model, [x, y, y], "pgd", eps=0.1)
    with pytest.raises(TypeError, match=r"must yield \(x, y\) items; got a list of 3 items"):
        robust_accuracy(model, TensorDataset(x, y, y), "pgd", eps=0.1)
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\)"):
        robust_accuracy(model, TensorDataset(x, y + 1), "pgd", eps=0.1, batch_size=2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        robust_accuracy(model, TensorDataset(x * 3, y), "pgd", eps=0.1)
    with pytest.raises(ValueError, match="NaN"):
        robust_accuracy(model, TensorDataset(x.masked_fill(x > 0.9, float("nan")), y), "pgd", eps=0.1)
    # batches are re-formed whatever the loader's batch size, in order, with the selected examples only
    sel = torch.tensor([True, False, True, True, False, True])
    got = list(iter_batches(DataLoader(ds, batch_size=4), 3, select=sel))
    assert [b[2].tolist() for b in got] == [[0, 2, 3], [5]] and torch.equal(got[1][0], x[5:6])
    assert [b[2].tolist() for b in iter_batches(ds, 4, n=5)] == [[0, 1, 2, 3], [4]]


def test_data_ref_spec_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from robustlab.bench import expand
    from robustlab.bench.spec import check_spec
    from robustlab.cli import main
    from robustlab.data import DataRef

    tree = write_tree(tmp_path / "t", per_class=6)
    ref = DataRef.from_config({"name": f"imagefolder:{tree}", "size": 8})
    assert ref.is_path and "imagefolder:<path>" in rdata.available()
    assert isinstance(ref.load(), rdata.StreamingData)
    s = {"name": "t", "data": [{"name": f"imagefolder:{tree}", "options": {"size": 8}}], "models": ["linear"],
         "losses": ["ce"], "train": {"epochs": 1, "batch_size": 8}, "evaluations": ["clean"]}
    from robustlab.bench._worker import execute_run

    res = execute_run(expand(check_spec(s))[0].config, threads=1)
    assert res["status"] == "completed", res.get("error")
    args = ["--model", "linear", "--data", f"imagefolder:{tree}", "--data-arg", "size=8", "--json"]
    for cmd in (["attack", "--attack", "pgd", "--eps", "0.03"], ["certify", "--eps", "0.01"],
                ["conformal"], ["shift", "--corruptions", "saturate"]):
        assert main([*cmd, *args]) == 0, cmd
        assert "imagefolder:t" in capsys.readouterr().out
