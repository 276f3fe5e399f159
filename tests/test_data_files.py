"""File-based data sets, mnist1d and download=True (against a local HTTP server only)."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab import data
from robustlab.data import _download
from robustlab.data._download import OFFICIAL, RemoteFile
from robustlab.data._files import read_idx, restricted_load
from robustlab.data._mnist1d import _resample, mnist1d_templates
from robustlab.testing._data import write_fake_files, write_idx


# -- IDX ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    a = np.random.default_rng(0).integers(0, 256, (7, 5, 3))
    p = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", a)
    np.testing.assert_array_equal(read_idx(p), a)


def test_idx_truncated_and_bad_magic(tmp_path):
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 2, 2)))
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    g = tmp_path / "y-idx1-ubyte.gz"
    g.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-6])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_idx(g)


# -- MNIST family ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_family_from_files(tmp_path, name):
    write_fake_files(name, tmp_path, n_train=30, n_test=20)
    d = data.load(name, root=str(tmp_path))
    raw = read_idx(tmp_path / name / "train-images-idx3-ubyte.gz")
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    torch.testing.assert_close(d.x_train[:, 0], torch.from_numpy(raw).float() / 255)
    assert d.class_names[0] == ("0" if name == "mnist" else "T-shirt/top")
    assert data.load(name, root=str(tmp_path), flatten=True).input_shape == (784,)


def test_mnist_torchvision_layout_and_raw_files(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(12) % 10)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (15, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(15) % 10)
    d = data.load("mnist", root=str(tmp_path))
    assert d.x_train.shape[0] == 15 and d.x_test.shape[0] == 12


def test_missing_train_split_loads_test_and_says_so(tmp_path):
    write_fake_files("mnist", tmp_path, n_test=50, train=False)
    with pytest.warns(UserWarning, match="train split is missing"):
        d = data.load("mnist", root=str(tmp_path))
    assert d.meta["missing_split"] == "train"
    assert d.x_train.shape == (0, 1, 28, 28) and d.y_train.shape == (0,) and d.x_test.shape[0] == 50


def test_use_test_split_as_train(tmp_path):
    write_fake_files("mnist", tmp_path, n_test=100, train=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "missing" warning when the split is requested
        d = data.load("mnist", root=str(tmp_path), use_test_split_as_train=0.8, seed=3)
    assert d.x_train.shape[0] == 80 and d.x_test.shape[0] == 20
    assert torch.bincount(d.y_train, minlength=10).tolist() == [8] * 10  # stratified
    full = torch.from_numpy(read_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz")).float().div(255).flatten(1)
    both = torch.cat([d.x_train, d.x_test]).flatten(1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, full.tolist()))  # a partition of the test set
    again = data.load("mnist", root=str(tmp_path), use_test_split_as_train=0.8, seed=3)
    other = data.load("mnist", root=str(tmp_path), use_test_split_as_train=0.8, seed=4)
    assert torch.equal(d.x_train, again.x_train) and not torch.equal(d.x_train, other.x_train)
    with pytest.raises(ValueError, match="use_test_split_as_train"):
        data.load("mnist", root=str(tmp_path), use_test_split_as_train=1.0)


def test_missing_files_name_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte") as e:
        data.load("mnist", root=str(tmp_path))
    assert str(tmp_path / "mnist" / "raw") in str(e.value)
    with pytest.raises(FileNotFoundError, match="root="):
        data.load("fashion_mnist")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        data.load("cifar10", root=str(tmp_path))


def test_mnist_labels_out_of_range_and_mismatched(tmp_path):
    d = tmp_path / "mnist"
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 11]))
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        data.load("mnist", root=str(tmp_path))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="mismatched lengths"):
        data.load("mnist", root=str(tmp_path))


# -- CIFAR -------------------------------------------------------------------------------------------
def test_cifar10_and_cifar100(tmp_path):
    write_fake_files("cifar10", tmp_path, n_train=25, n_test=10)
    d = data.load("cifar10", root=str(tmp_path))
    assert d.x_train.shape == (25, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    assert d.class_names[9] == "truck"
    batch = restricted_load(tmp_path / "cifar-10-batches-py" / "test_batch")
    torch.testing.assert_close(d.x_test.flatten(1), torch.from_numpy(batch[b"data"]).float() / 255)
    write_fake_files("cifar100", tmp_path, n_train=30, n_test=10)
    assert data.load("cifar100", root=str(tmp_path)).num_classes == 100
    assert data.load("cifar100", root=str(tmp_path), label_mode="coarse").num_classes == 20
    with pytest.raises(ValueError, match="label_mode"):
        data.load("cifar100", root=str(tmp_path), label_mode="medium")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(ValueError, match="refusing to load global 'posix.system'|refusing to load global 'os.system'"):
        data.load("cifar10", root=str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_cifar_truncated_pickle(tmp_path):
    write_fake_files("cifar10", tmp_path, n_train=10, n_test=10)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.load("cifar10", root=str(tmp_path))


# -- csv / npz / svmlight ----------------------------------------------------------------------------
def _write_csv(path, rows, header="name,f1,f2"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_label_by_name_and_scaling(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(["b", "a", "c"][i % 3], float(rng.normal(10, 5)), int(rng.integers(-3, 3))) for i in range(60)]
    p = _write_csv(tmp_path / "t.csv", rows)
    d = data.load(f"csv:{p}", label="name", test_fraction=0.25, seed=1)
    assert d.class_names == ["a", "b", "c"] and d.input_shape == (2,)
    assert d.x_train.shape[0] == 45 and d.x_test.shape[0] == 15
    # per-feature min-max with the train split's statistics: train spans exactly [0, 1]
    assert torch.allclose(d.x_train.min(0).values, torch.zeros(2)) and torch.allclose(d.x_train.max(0).values, torch.ones(2))
    assert "train split" in d.meta["scaling"]
    # reproducible split
    again = data.load(f"csv:{p}", label="name", test_fraction=0.25, seed=1)
    assert torch.equal(d.x_test, again.x_test)
    # labels map back to the file's labels
    raw = {tuple(np.round([r[1], r[2]], 6)): r[0] for r in rows}
    assert len(raw) > 0


def test_csv_errors(tmp_path):
    p = _write_csv(tmp_path / "a.csv", [("x", 1, 2), ("y", 3, 4)] * 5)
    with pytest.raises(ValueError, match=r"no label column 'label' in its header \(columns: 'name', 'f1', 'f2'\)"):
        data.load(f"csv:{p}")
    p = _write_csv(tmp_path / "b.csv", [("x", 1, "oops"), ("y", 3, 4)] * 5)
    with pytest.raises(ValueError, match="column 'f2' must be numeric; row 2 is not a number"):
        data.load(f"csv:{p}", label="name")
    p = _write_csv(tmp_path / "c.csv", [("x", 1, "nan"), ("y", 3, 4)] * 5)
    with pytest.raises(ValueError, match="NaN or infinite"):
        data.load(f"csv:{p}", label="name")
    (tmp_path / "d.csv").write_text("name,f1,f2\nx,1,2\ny,3\n")
    with pytest.raises(ValueError, match="different number of fields"):
        data.load(f"csv:{tmp_path / 'd.csv'}", label="name")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"csv:{tmp_path / 'missing.csv'}", label="name")


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 1, 4, 4)).astype(np.uint8)
    y = np.arange(40) % 4
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = data.load(f"npz:{tmp_path / 'a.npz'}", test_fraction=0.2)
    assert d.input_shape == (1, 4, 4) and d.num_classes == 4 and d.x_train.shape[0] == 32
    assert d.meta["scaling"] == "divided by 255"
    xt = rng.normal(size=(10, 3)) * 100
    np.savez(tmp_path / "b.npz", x=rng.normal(size=(20, 3)) * 100, y=np.arange(20) % 2, x_test=xt, y_test=np.arange(10) % 2)
    d = data.load(f"npz:{tmp_path / 'b.npz'}")
    assert d.x_test.shape == (10, 3) and float(d.x_test.min()) >= 0 and float(d.x_test.max()) <= 1
    np.savez(tmp_path / "c.npz", x=np.ones((5, 2)), y=np.arange(4))
    with pytest.raises(ValueError, match="mismatched lengths"):
        data.load(f"npz:{tmp_path / 'c.npz'}")
    np.savez(tmp_path / "d.npz", x=np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['y'\]"):
        data.load(f"npz:{tmp_path / 'd.npz'}")
    np.savez(tmp_path / "e.npz", x=np.ones((5, 2)), y=np.array([0, 1, 2, 3, 7]))
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        data.load(f"npz:{tmp_path / 'e.npz'}", num_classes=5)
    np.savez(tmp_path / "f.npz", x=np.array([[1.0, np.inf]] * 6), y=np.arange(6) % 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        data.load(f"npz:{tmp_path / 'f.npz'}")
    np.savez(tmp_path / "g.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match="corrupt or not an npz|allow_pickle"):
        data.load(f"npz:{tmp_path / 'g.npz'}")
    (tmp_path / "h.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt"):
        data.load(f"npz:{tmp_path / 'h.npz'}")


def test_svmlight(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    y = (np.arange(30) % 3) + 1  # LIBSVM's 1-based labels
    dump_svmlight_file(x, y, str(tmp_path / "s.txt"))
    dump_svmlight_file(x[:9], y[:9], str(tmp_path / "s.txt.t"))
    d = data.load(f"svmlight:{tmp_path / 's.txt'}")
    assert d.num_classes == 3 and d.class_names == ["1", "2", "3"]
    assert d.x_train.shape == (30, 5) and d.x_test.shape == (9, 5)  # .t picked up as the test split
    assert torch.equal(d.y_train, torch.from_numpy(y - 1))
    (tmp_path / "bad.txt").write_text("1 1:0.5 2:abc\n")
    with pytest.raises(ValueError, match="could not be parsed"):
        data.load(f"svmlight:{tmp_path / 'bad.txt'}")


def test_path_loaders_listed():
    names = data.available()
    assert {"csv:<path>", "npz:<path>", "svmlight:<path>", "mnist", "cifar10", "mnist1d"} <= set(names)


# -- mnist1d -----------------------------------------------------------------------------------------
def test_mnist1d_templates_and_shapes():
    t = mnist1d_templates()
    assert t.shape == (10, 12) and np.allclose(t[:, 0], 0) and np.allclose(t.std(1), 1 / 6)
    d = data.load("mnist1d", num_samples=1000, seed=5)
    assert d.input_shape == (40,) and d.x_train.shape == (800, 40) and d.x_test.shape == (200, 40)
    counts = torch.bincount(torch.cat([d.y_train, d.y_test]), minlength=10)
    assert counts.tolist() == [100] * 10  # class-balanced
    assert torch.equal(d.x_train, data.load("mnist1d", num_samples=1000, seed=5).x_train)
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0  # train min-max scaled


def test_mnist1d_resample_matches_numpy_interp():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 30))
    lengths = np.array([30, 20, 13, 2, 25, 7])
    out = _resample(x, lengths, 17)
    for i, n in enumerate(lengths):
        ref = np.interp(np.linspace(0, 1, 17), np.linspace(0, 1, n), x[i, :n])
        np.testing.assert_allclose(out[i], ref, atol=1e-12)


def test_mnist1d_bad_options():
    with pytest.raises(ValueError, match="padding"):
        data.load("mnist1d", padding=(60, 36))
    with pytest.raises(ValueError, match="num_samples"):
        data.load("mnist1d", num_samples=5)


@pytest.mark.slow
def test_mnist1d_linear_vs_nonlinear_gap():
    """Greydanus reports ~32% for logistic regression and far more for nonlinear models."""
    from sklearn.linear_model import LogisticRegression

    d = data.load("mnist1d")
    acc = LogisticRegression(max_iter=3000).fit(d.x_train.numpy(), d.y_train.numpy()).score(d.x_test.numpy(), d.y_test.numpy())
    assert 0.2 < acc < 0.45


# -- shared real data ----------------------------------------------------------------------------------
def test_real_mnist_test_set(shared_datasets):
    root = os.path.join(shared_datasets, "mnist-t10k")
    with pytest.warns(UserWarning, match="missing"):
        d = data.load("mnist", root=root)
    assert d.x_test.shape == (10000, 1, 28, 28) and d.x_train.shape[0] == 0
    assert torch.bincount(d.y_test).tolist()[:3] == [980, 1135, 1032]  # the published class counts
    s = data.load("mnist", root=root, use_test_split_as_train=0.8)
    assert s.x_train.shape[0] == 8000 and s.x_test.shape[0] == 2000


def test_real_letter_csv(shared_datasets):
    d = data.load(f"csv:{os.path.join(shared_datasets, 'letter', 'letter-recognition.csv')}", label="Letter")
    assert d.num_classes == 26 and d.class_names[0] == "A" and d.input_shape == (16,)
    assert d.x_train.shape[0] + d.x_test.shape[0] == 20000
    ldr = data.load(f"csv:{os.path.join(shared_datasets, 'letter', 'letter-recognition.csv')}", label="Letter",
                    test_last=5000)
    assert ldr.x_train.shape[0] == 15000 and ldr.x_test.shape[0] == 5000
    assert ldr.class_names[int(ldr.y_train[0])] == "T"  # the file's first row, order kept


# -- download against 127.0.0.1 ----------------------------------------------------------------------
@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_download_mnist_from_local_server(tmp_path, http_server, monkeypatch):
    served, url = http_server
    write_fake_files("mnist", served, n_train=20, n_test=10)
    files = tuple(RemoteFile(f.name, _md5(served / "mnist" / f.name)) for f in OFFICIAL["mnist"][1])
    for f in files:
        (served / f.name).write_bytes((served / "mnist" / f.name).read_bytes())
    monkeypatch.setitem(OFFICIAL, "mnist", ("http://invalid.example/", files, "mnist", False))
    root = tmp_path / "root"
    d = data.load("mnist", root=str(root), download=True, mirror=url)
    assert d.x_train.shape[0] == 20 and d.x_test.shape[0] == 10
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(f.name for f in files)  # no temp files left
    # second call: files present, nothing fetched (server gone would not matter)
    monkeypatch.setenv("ROBUSTLAB_DATA_MIRROR", "http://127.0.0.1:9/")
    assert data.load("mnist", root=str(root), download=True).x_test.shape[0] == 10


def test_download_env_mirror_and_checksum_mismatch(tmp_path, http_server, monkeypatch):
    served, url = http_server
    (served / "train-images-idx3-ubyte.gz").write_bytes(b"tampered")
    files = (RemoteFile("train-images-idx3-ubyte.gz", "0" * 32),)
    monkeypatch.setitem(OFFICIAL, "mnist", ("http://invalid.example/", files, "mnist", False))
    monkeypatch.setenv("ROBUSTLAB_DATA_MIRROR", url)
    assert _download.mirror_for("mnist") == url
    with pytest.raises(ValueError, match="Checksum mismatch"):
        _download.download("mnist", tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []  # the bad file was discarded, nothing half-written
    monkeypatch.setenv("ROBUSTLAB_MIRROR_MNIST", "http://127.0.0.1:9/")  # per-set variable wins
    with pytest.raises(ConnectionError, match="Could not download"):
        _download.download("mnist", tmp_path, timeout=5)


def test_download_cifar_archive(tmp_path, http_server, monkeypatch):
    served, url = http_server
    write_fake_files("cifar10", served / "src", n_train=10, n_test=5)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(served / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setitem(OFFICIAL, "cifar10", ("http://invalid.example/", (RemoteFile(archive.name, _md5(archive)),),
                                              "cifar-10-batches-py", True))
    root = tmp_path / "root"
    d = data.load("cifar10", root=str(root), download=True, mirror=url)
    assert d.x_train.shape[0] == 10 and d.x_test.shape[0] == 5
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # temp folder removed


def test_download_refuses_path_traversal(tmp_path, http_server, monkeypatch):
    served, url = http_server
    buf = io.BytesIO(b"x")
    archive = served / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tar.addfile(info, buf)
    monkeypatch.setitem(OFFICIAL, "cifar100", ("http://invalid.example/", (RemoteFile(archive.name, _md5(archive)),),
                                               "cifar-100-python", True))
    with pytest.raises(ValueError, match="outside"):
        _download.download("cifar100", tmp_path / "root", mirror=url)
    assert not (tmp_path / "escape.txt").exists()


def test_download_unknown_set():
    with pytest.raises(ValueError, match="download=True is available for"):
        _download.download("digits", "/tmp/x")
