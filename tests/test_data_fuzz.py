"""Seeded fuzz of every file loader: malformed bytes give a result or a ValueError/TypeError with a message.

Each case mutates a small valid file (truncation, bit flips, random bytes, spliced garbage, float labels) and
loads it under a 3 GiB address-space cap, so a memory bomb fails the test instead of the machine. Bounded to a
few seconds: a fixed number of mutations per format.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustlab import data
from robustlab.data import ClassificationData
from robustlab.testing._data import write_fake_files

N_MUTATIONS = 24


def _mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 6))
    n = len(raw)
    if kind == 0:  # truncate
        return raw[: int(rng.integers(0, max(n, 1)))]
    if kind == 1:  # flip bits
        b = bytearray(raw)
        for i in rng.integers(0, n, size=max(1, n // 200)):
            b[int(i)] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)
    if kind == 2:  # random bytes of the same length
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if kind == 3:  # splice garbage into the middle
        i = int(rng.integers(0, max(n, 1)))
        return raw[:i] + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes() + raw[i:]
    if kind == 4:  # overwrite the header
        return rng.integers(0, 256, min(n, 16), dtype=np.uint8).tobytes() + raw[16:]
    return b""  # empty


def _valid_files(tmp: Path) -> dict[str, tuple[str, dict, list[Path]]]:
    """Small valid files per loader: name -> (load ref, options, files to mutate)."""
    rng = np.random.default_rng(0)
    out: dict[str, tuple[str, dict, list[Path]]] = {}
    mn = write_fake_files("mnist", tmp / "idx", n_train=20, n_test=20)
    for f in list(mn.iterdir()):  # raw copies of the gz files too
        (mn / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
        f.unlink() if "train" in f.name else None
    out["idx"] = ("mnist", {"root": str(tmp / "idx")}, sorted(mn.iterdir()))
    cf = write_fake_files("cifar10", tmp / "cifar", n_train=10, n_test=10)
    out["cifar10"] = ("cifar10", {"root": str(tmp / "cifar")}, [cf / "test_batch", cf / "data_batch_1", cf / "batches.meta"])
    c100 = write_fake_files("cifar100", tmp / "c100", n_train=10, n_test=10)
    out["cifar100"] = ("cifar100", {"root": str(tmp / "c100")}, [c100 / "test", c100 / "train"])
    csv = tmp / "a.csv"
    csv.write_text("f1,f2,label\n" + "".join(f"{rng.random():.3f},{rng.random() * 9:.3f},{i % 3}\n" for i in range(30)))
    out["csv"] = (f"csv:{csv}", {}, [csv])
    npz = tmp / "a.npz"
    np.savez(npz, x=rng.random((30, 4)), y=np.arange(30) % 3)
    out["npz"] = (f"npz:{npz}", {}, [npz])
    svm = tmp / "a.txt"
    svm.write_text("".join(f"{i % 3} 1:{rng.random():.3f} 3:{rng.random():.3f}\n" for i in range(30)))
    out["svmlight"] = (f"svmlight:{svm}", {}, [svm])
    return out


FORMATS = ["idx", "cifar10", "cifar100", "csv", "npz", "svmlight"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_loader_fuzz(fmt, tmp_path, capped_memory):
    files = _valid_files(tmp_path)
    ref, kw, targets = files[fmt]
    assert isinstance(data.load(ref, **kw), ClassificationData)  # the unmutated files load
    rng = np.random.default_rng(FORMATS.index(fmt))
    for i in range(N_MUTATIONS):
        target = targets[i % len(targets)]
        original = target.read_bytes()
        raw = original
        if target.suffix == ".gz":  # mutate the payload, keep the gzip valid half the time
            raw = gzip.compress(_mutate(gzip.decompress(original), rng), mtime=0) if i % 2 else _mutate(original, rng)
        else:
            raw = _mutate(original, rng)
        target.write_bytes(raw)
        try:
            got = data.load(ref, **kw)
        except (ValueError, TypeError) as e:
            assert str(e).strip(), f"{fmt} mutation {i}: empty message from {type(e).__name__}"
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{fmt} mutation {i} of {target.name}: raw {type(e).__name__}: {e}")
        else:
            assert isinstance(got, ClassificationData)
            assert not got.y_test.dtype.is_floating_point
        finally:
            target.write_bytes(original)


def test_pickle_fuzz_of_opcodes(tmp_path, capped_memory):
    """Random opcode soup through the restricted unpickler: only CorruptFileError (a ValueError) comes out."""
    from robustlab.data._files import restricted_load

    rng = np.random.default_rng(1)
    base = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    ops = list(pickle.dumps([1, 2.0, "s", b"b", (1,), {1: 2}], protocol=4))
    p = tmp_path / "p"
    for i in range(200):
        raw = _mutate(base, rng) if i % 2 else bytes(rng.choice(ops + list(range(256)), int(rng.integers(1, 64))).tolist())
        p.write_bytes(raw)
        try:
            restricted_load(p)
        except ValueError as e:
            assert str(e)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"opcode fuzz {i}: raw {type(e).__name__}: {e}")


def test_fuzz_helpers_are_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    fa, fb = _valid_files(a), _valid_files(b)
    assert fa["csv"][2][0].read_bytes() == fb["csv"][2][0].read_bytes()
    shutil.rmtree(a), shutil.rmtree(b)
    assert _mutate(b"x" * 100, np.random.default_rng(3)) == _mutate(b"x" * 100, np.random.default_rng(3))
