"""Hostile data files: each case used to give a silent result, a memory bomb or a raw error (issue 11)."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from robustlab import data
from robustlab.data._files import MAX_SVMLIGHT_FEATURES, read_idx, restricted_load
from robustlab.testing._data import write_idx


def _idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: np.uint8, 0x0D: ">f4"}[code]
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(dt).tobytes()


# -- float labels are refused the same way by every loader ------------------------------------------
FLOAT_MSG = "integer class indices; 1 label"


def test_csv_fractional_and_nan_labels_refused(tmp_path):
    for bad in ("1.5", "nan", "inf"):
        p = tmp_path / f"{bad}.csv"
        p.write_text("f,label\n" + "".join(f"0.{i},{i % 2}\n" for i in range(9)) + f"0.9,{bad}\n")
        with pytest.raises(ValueError, match=FLOAT_MSG):
            data.load(f"csv:{p}")


def test_csv_string_labels_still_categorical(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("f,label\n" + "".join(f"0.{i},{'AB'[i % 2]}\n" for i in range(10)))
    d = data.load(f"csv:{p}")
    assert d.class_names == ["A", "B"] and d.num_classes == 2


def test_csv_integer_valued_float_labels_accepted(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text("f,label\n" + "".join(f"0.{i},{i % 2}.0\n" for i in range(10)))
    assert data.load(f"csv:{p}").num_classes == 2


def test_idx_float_labels_refused(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((10, 28, 28))))
    y = np.arange(10, dtype=np.float64) % 10
    y[3] = 2.5
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(y, 0x0D))
    with pytest.raises(ValueError, match=FLOAT_MSG):
        data.load("mnist", root=tmp_path, use_test_split_as_train=0.5)


def test_cifar_float_labels_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2.5, 3]}))
    with pytest.raises(ValueError, match=FLOAT_MSG):
        data.load("cifar10", root=tmp_path)


def test_npz_and_svmlight_same_message(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.random.rand(10, 3), y=np.array([0, 1] * 4 + [2.5, 1]))
    with pytest.raises(ValueError, match=FLOAT_MSG):
        data.load(f"npz:{tmp_path / 'f.npz'}")
    (tmp_path / "f.txt").write_text("".join(f"{i % 2} 1:0.{i}\n" for i in range(9)) + "1.5 1:0.5\n")
    with pytest.raises(ValueError, match=FLOAT_MSG):
        data.load(f"svmlight:{tmp_path / 'f.txt'}")


# -- unbounded memory from small inputs -------------------------------------------------------------
def test_svmlight_huge_feature_index(tmp_path, capped_memory):
    p = tmp_path / "bomb.txt"
    p.write_text("0 1:1\n1 1000000000:1")
    with pytest.raises(ValueError, match=f"limit of {MAX_SVMLIGHT_FEATURES} features.*n_features"):
        data.load(f"svmlight:{p}")
    with pytest.raises(ValueError, match="n_features"):
        data.load(f"svmlight:{p}", n_features=5)
    with pytest.raises(ValueError, match="dense array"):
        data.load(f"svmlight:{p}", n_features=1_000_000_000)


def test_idx_gzip_bomb_reads_only_the_header_size(tmp_path, capped_memory):
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(p, "wb", compresslevel=1) as f:  # header says 10 images; the stream expands to 512 MiB
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28))
        zeros = bytes(1 << 26)
        for _ in range(8):
            f.write(zeros)
    assert p.stat().st_size < 4 << 20
    with pytest.raises(ValueError, match="header says shape \\(10, 28, 28\\).*more bytes"):
        read_idx(p)


def test_idx_overflowing_dims(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    with pytest.raises(ValueError, match="header is corrupt"):
        read_idx(p)


def test_idx_train_test_image_sizes_differ(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10) % 10)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 32, 32)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(10) % 10)
    with pytest.raises(ValueError, match="same image size"):
        data.load("mnist", root=tmp_path)


def _pickle_file(tmp_path, raw: bytes):
    p = tmp_path / "batch"
    p.write_bytes(raw)
    return p


@pytest.mark.parametrize("raw", [
    b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62),  # BINUNICODE8 of 2^62 bytes
    b"\x80\x02cbuiltins\nbytes\nJ\x00\x00\x00\x7f\x85R.",  # bytes(2**31 - ...) allocation
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xe1\xf5\x05J\x00\xe1\xf5\x05\x86C\x01b\x87R.",
    b"\x80\x02" + b"(" * 100_000 + b".",  # runaway nesting
    b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.",  # code execution
], ids=["binunicode8", "bytes_n", "reconstruct_huge", "nesting", "os_system"])
def test_restricted_unpickler_bounded(tmp_path, raw, capped_memory):
    with pytest.raises(ValueError, match="corrupt|not a plain data pickle"):
        restricted_load(_pickle_file(tmp_path, raw))


def test_restricted_unpickler_reads_numpy_pickles(tmp_path):
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3], b"x": np.float32(2.0)}
    for proto in (2, 4, 5):
        got = restricted_load(_pickle_file(tmp_path, pickle.dumps(obj, protocol=proto)))
        assert np.array_equal(got[b"data"], obj[b"data"]) and got[b"labels"] == [1, 2, 3]


# -- empty files: a clear error, not "need at least one array to concatenate" -------------------------
def test_empty_files(tmp_path):
    (tmp_path / "h.csv").write_text("f,label\n")
    (tmp_path / "e.txt").write_text("")
    np.savez(tmp_path / "z.npz", x=np.zeros((0, 3)), y=np.zeros(0, dtype=int))
    for ref in (f"csv:{tmp_path / 'h.csv'}", f"svmlight:{tmp_path / 'e.txt'}", f"npz:{tmp_path / 'z.npz'}"):
        with pytest.raises(ValueError, match="no samples"):
            data.load(ref)


# -- error messages never print file contents ---------------------------------------------------------
def test_errors_do_not_echo_file_contents(tmp_path):
    secret = "root:x:0:0:SECRET-TOKEN:/root:/bin/bash"
    (tmp_path / "p.csv").write_text(secret + "\n" + secret + "\n")
    (tmp_path / "q.csv").write_text("a,label\n1,0\nSECRET-TOKEN,1\n")
    (tmp_path / "s.txt").write_text("0 1:SECRET-TOKEN\n")
    (tmp_path / "n.npz").write_bytes(b"PK\x03\x04SECRET-TOKEN")
    for ref, kw in ((f"csv:{tmp_path / 'p.csv'}", {}), (f"csv:{tmp_path / 'q.csv'}", {}),
                    (f"svmlight:{tmp_path / 's.txt'}", {}), (f"npz:{tmp_path / 'n.npz'}", {})):
        with pytest.raises(ValueError) as e:
            data.load(ref, **kw)
        assert "SECRET" not in str(e.value)
