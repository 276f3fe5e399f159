"""Streaming data (torch Dataset / DataLoader / imagefolder:) give the in-memory numbers on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab import data as rdata
from robustlab.evaluate import robust_accuracy, robustness_curve


def write_tree(root: Path, classes: int = 3, per_class: int = 12, size: int = 8, seed: int = 0) -> Path:
    """``root/c<k>/<i>.png``: seeded random RGB images, class ``k`` brighter in channel ``k % 3`` (learnable)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            img = torch.rand(size, size, 3, generator=g) * 0.8
            img[..., c % 3] += 0.2
            img = img * 255
            Image.fromarray(img.clamp(0, 255).to(torch.uint8).numpy()).save(root / f"c{c}" / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("images") / "tree")


@pytest.fixture(scope="module")
def both(tree: Path) -> tuple[rdata.StreamingData, rdata.ClassificationData]:
    stream = rdata.load(f"imagefolder:{tree}", size=8, test_fraction=0.5, seed=1)
    mem = rdata.load(f"imagefolder:{tree}", size=8, test_fraction=0.5, seed=1, in_memory=True)
    return stream, mem


@pytest.fixture(scope="module")
def model(both: tuple[rdata.StreamingData, rdata.ClassificationData]) -> nn.Module:
    _, mem = both
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(mem.x_train), mem.y_train).backward()
        opt.step()
    return net.eval()


def same(a: dict, b: dict) -> bool:
    """Equal JSON documents (NaN equals NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def forms(stream: rdata.StreamingData, mem: rdata.ClassificationData) -> dict[str, object]:
    """The streaming forms of the test split: StreamingData, a Dataset, a DataLoader with another batch size."""
    ds = TensorDataset(mem.x_test, mem.y_test)
    return {"streaming": stream, "dataset": ds, "loader": DataLoader(ds, batch_size=5)}


def test_same_images(both: tuple[rdata.StreamingData, rdata.ClassificationData]) -> None:
    stream, mem = both
    xs = torch.stack([stream.test[i][0] for i in range(len(stream.test))])
    assert torch.equal(xs, mem.x_test) and mem.x_test.shape[1:] == (3, 8, 8)
    assert stream.num_classes == mem.num_classes == 3 and stream.class_names == ["c0", "c1", "c2"]


@pytest.mark.parametrize("batch_size", [4, 256])
def test_robust_accuracy_pgd(both, model, batch_size: int) -> None:
    stream, mem = both
    ref = robust_accuracy(model, mem, "pgd", eps=0.07, batch_size=batch_size, suite_kw={"steps": 5},
                          return_adv=True)
    assert 0 < ref.robust_accuracy < ref.clean_accuracy  # the attack breaks some, not all, points
    for name, d in forms(stream, mem).items():
        res = robust_accuracy(model, d, "pgd", eps=0.07, batch_size=batch_size, suite_kw={"steps": 5},
                              return_adv=True)
        assert torch.equal(res.robust, ref.robust) and torch.equal(res.clean, ref.clean), name
        assert res.to_dict() | {"time_s": 0} == ref.to_dict() | {"time_s": 0}, name
        assert torch.equal(res.x_adv, ref.x_adv), name


def test_robust_accuracy_cascade_and_n(both, model) -> None:
    stream, mem = both
    kw = {"eps": 0.07, "batch_size": 3, "n": 10, "suite_kw": {"steps": 3, "n_queries": 30}}
    ref = robust_accuracy(model, mem, ["pgd", "square"], **kw)
    res = robust_accuracy(model, stream, ["pgd", "square"], **kw)
    assert res.n == ref.n == 10
    assert res.per_attack == ref.per_attack and torch.equal(res.robust, ref.robust)


def test_robustness_curve(both, model) -> None:
    stream, mem = both
    kw = {"eps_grid": [0.02, 0.05, 0.08, 0.12], "attack_kw": {"steps": 5}, "batch_size": 4, "bootstrap": 50,
          "bisection_steps": 2}
    ref = robustness_curve(model, mem, **kw)
    assert ref.adv_error.max() > 0
    for name, d in forms(stream, mem).items():
        res = robustness_curve(model, d, **kw)
        assert (res.robust_error == ref.robust_error).all() and (res.fooled == ref.fooled).all(), name
        assert torch.equal(res.critical_eps, ref.critical_eps), name
        assert res.to_dict() == ref.to_dict(), name


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_certified_accuracy(both, model, method: str) -> None:
    from robustlab.certify import certified_accuracy

    stream, mem = both
    accs = [certified_accuracy(model, mem, eps=e, method=method, batch_size=4) for e in (0.002, 0.01, 0.03)]
    assert accs[0] > 0 and accs[-1] < accs[0]  # a number that moves with eps
    for name, d in forms(stream, mem).items():
        got = [certified_accuracy(model, d, eps=e, method=method, batch_size=4) for e in (0.002, 0.01, 0.03)]
        assert got == accs, name


def test_smoothing_certify(both, model) -> None:
    from robustlab.certify import SmoothedClassifier

    stream, mem = both
    smooth = SmoothedClassifier(model, sigma=0.25, num_classes=3)
    kw = {"n0": 10, "n": 200, "alpha": 0.01, "batch_size": 64, "points_per_call": 4}
    ref = smooth.certify_data(mem, generator=torch.Generator().manual_seed(3), **kw)
    assert ref.radii.max() > 0 and torch.equal(ref.y, mem.y_test)
    for name, d in forms(stream, mem).items():
        got = smooth.certify_data(d, generator=torch.Generator().manual_seed(3), **kw)
        assert torch.equal(got.classes, ref.classes) and torch.equal(got.radii, ref.radii), name
        assert torch.equal(got.accuracy([0.0, 0.1, 0.2]), ref.accuracy([0.0, 0.1, 0.2])), name
    # every point in one call: exactly certify(x)
    one = smooth.certify_data(stream, generator=torch.Generator().manual_seed(3), **(kw | {"points_per_call": 99}))
    c, r = smooth.certify(mem.x_test, n0=10, n=200, alpha=0.01, batch_size=64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one.classes, c) and torch.equal(one.radii, r)


@pytest.mark.parametrize("score", ["thr", "aps"])
def test_split_conformal(both, model, score: str) -> None:
    from robustlab.conformal import SplitConformal

    stream, mem = both
    ref = SplitConformal(score, alpha=0.2).calibrate_data(model, mem, generator=torch.Generator().manual_seed(1))
    ev = ref.evaluate(model, mem, generator=torch.Generator().manual_seed(2), batch_size=4)
    for name, d in forms(stream, mem).items():
        cp = SplitConformal(score, alpha=0.2).calibrate_data(model, d, generator=torch.Generator().manual_seed(1),
                                                             batch_size=4)
        assert torch.equal(cp.threshold_, ref.threshold_), name
        got = cp.evaluate(model, d, generator=torch.Generator().manual_seed(2))
        assert got.to_dict() == ev.to_dict() and torch.equal(got.sets, ev.sets), name


def test_robust_conformal(both, model) -> None:
    from robustlab.conformal import RobustConformal
    from robustlab.data._stream import take

    stream, mem = both
    perm = torch.randperm(mem.y_test.shape[0], generator=torch.Generator().manual_seed(0))
    cal, test = perm[:10], perm[10:]
    kw = {"sigma": 0.25, "eps": 0.1, "score": "aps", "alpha": 0.2, "beta": 0.01, "n_mc": 8, "batch_size": 12,
          "n_holdout": 3}

    def run(d_cal, d_test, ppb=None):
        extra = {} if ppb is None else {"points_per_batch": ppb}
        rc = RobustConformal(model, **kw).calibrate_data(d_cal, generator=torch.Generator().manual_seed(5), **extra)
        return rc, rc.evaluate(d_test, generator=torch.Generator().manual_seed(6), **extra)

    ref, ev = run(take(mem, cal), take(mem, test))
    assert 0 < ev.coverage <= 1 and ev.average_set_size >= 1
    for name, d in forms(stream, mem).items():
        for ppb in (1, 5, 256):  # any batch size: batches of 3, 3 and 12 points (3 x 8 draws = 2 chunks of 12)
            rc, got = run(take(d, cal), take(d, test), ppb)
            assert rc.threshold_ == ref.threshold_ and torch.equal(rc.reference_, ref.reference_), (name, ppb)
            assert got.to_dict() == ev.to_dict() and torch.equal(got.sets, ev.sets), (name, ppb)


@pytest.mark.parametrize("batch_size", [4, 512])
def test_corruptions(both, model, batch_size: int) -> None:
    from robustlab.shift import corruption_error

    stream, mem = both
    base = nn.Sequential(nn.Flatten(), nn.Linear(192, 3)).eval()
    deterministic = ["saturate", "canny_edges"]
    kw = {"severities": (1, 3, 5), "batch_size": batch_size, "baseline": base}
    ref = corruption_error(model, mem, corruptions=deterministic, generator=torch.Generator().manual_seed(0), **kw)
    assert ref.mce is not None and min(ref.accuracy["canny_edges"].values()) < ref.clean_accuracy
    for name, d in forms(stream, mem).items():
        got = corruption_error(model, d, corruptions=deterministic, generator=torch.Generator().manual_seed(0), **kw)
        assert same(got.to_dict(), ref.to_dict()), name
    # a random corruption: the same draws when the test split is one batch
    if batch_size >= mem.y_test.shape[0]:
        rnd = kw | {"corruptions": ["gaussian_noise", "speckle_noise"]}
        ref = corruption_error(model, mem, generator=torch.Generator().manual_seed(0), **rnd)
        assert ref.accuracy["gaussian_noise"][5] < 1
        got = corruption_error(model, stream, generator=torch.Generator().manual_seed(0), **rnd)
        assert same(got.to_dict(), ref.to_dict())
    sub = corruption_error(model, stream, corruptions=deterministic, n_test=7, **kw)
    assert same(sub.to_dict(), corruption_error(model, mem.subset(n_test=7), corruptions=deterministic, **kw).to_dict())


def test_train_streaming_same_weights(both) -> None:
    """fit on the image folder's train Dataset (streamed) ends with the in-memory run's weights."""
    from robustlab.training import fit

    stream, mem = both

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 3))

    kw = {"epochs": 2, "batch_size": 5, "optimizer": "adam", "lr": 1e-2, "progress": False, "objective": "pgd_at",
          "objective_kw": {"eps": 0.03, "steps": 2}, "augment": "flip"}
    ref = fit(net(), mem, **kw)
    got = fit(net(), stream.train, test_data=stream.test, **kw)
    for p, q in zip(ref.model.parameters(), got.model.parameters()):
        assert torch.equal(p, q)
    assert got.history["test_acc"] == ref.history["test_acc"] and got.history["loss"] == ref.history["loss"]


def test_fit_takes_streaming_data_whole(both) -> None:
    """fit(model, StreamingData) trains on its train split and tests on its test split."""
    from robustlab.training import fit

    stream, _ = both

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 8), nn.ReLU(), nn.Linear(8, 3))

    kw = {"epochs": 1, "batch_size": 6, "optimizer": "adam", "lr": 1e-2, "progress": False}
    ref = fit(net(), stream.train, test_data=stream.test, **kw)
    got = fit(net(), stream, **kw)
    for p, q in zip(ref.model.parameters(), got.model.parameters()):
        assert torch.equal(p, q)
    assert got.history["test_acc"] == ref.history["test_acc"]
