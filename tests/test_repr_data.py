"""Long-tailed splits, shifted unlabeled splits and the Gaussian-mixture shift setting (issue 15)."""

from __future__ import annotations

import json

import pytest
import torch

from robustlab import data, noise
from robustlab._validation import InvalidParameterError


def test_longtail_counts_follow_the_exponential_profile():
    assert data.longtail_counts(100, 3, 0.1) == [100, 31, 10]
    assert data.longtail_counts(500, 10, 0.01)[-1] == 5
    assert data.longtail_counts(50, 4, 1.0) == [50] * 4
    assert data.tail_classes(10) == [5, 6, 7, 8, 9]


def test_longtail_subsamples_train_only_seeded():
    d = data.load("digits")
    lt = data.longtail(d, rho=0.1, seed=0)
    counts = torch.bincount(lt.y_train, minlength=10).tolist()
    assert counts == lt.meta["longtail"]["counts"]
    assert counts[0] == int(torch.bincount(d.y_train).min()) and counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    assert torch.equal(lt.x_test, d.x_test) and torch.equal(lt.y_test, d.y_test)
    again = data.longtail(d, rho=0.1, seed=0)
    assert torch.equal(again.x_train, lt.x_train)
    other = data.longtail(d, rho=0.1, seed=1)
    assert not torch.equal(other.x_train, lt.x_train)
    # every kept row is a row of the original split, each once
    rows = {tuple(r.flatten().tolist()) for r in d.x_train}
    assert all(tuple(r.flatten().tolist()) in rows for r in lt.x_train[:50])


def test_load_longtail_option_on_every_kind_of_data_set(tmp_path):
    a = data.load("digits", longtail=0.1, longtail_seed=3)
    b = data.longtail(data.load("digits"), rho=0.1, seed=3)
    assert torch.equal(a.x_train, b.x_train)
    g = data.load("gaussians", longtail=0.5)
    assert torch.bincount(g.y_train).tolist() == g.meta["longtail"]["counts"]
    # a path form takes it too
    d = data.load("digits")
    p = tmp_path / "d.npz"
    import numpy as np

    np.savez(p, x=d.x_train.numpy(), y=d.y_train.numpy(), x_test=d.x_test.numpy(), y_test=d.y_test.numpy())
    f = data.load(f"npz:{p}", longtail=0.2)
    assert f.meta["longtail"]["rho"] == 0.2


@pytest.mark.parametrize("kw, match", [({"longtail": 0}, "'longtail' parameter.*\\(0, 1\\]"),
                                       ({"longtail": 1.5}, "longtail"), ({"longtail": "x"}, "longtail"),
                                       ({"longtail_seed": 1}, "needs 'longtail'"),
                                       ({"longtail": 0.1, "longtail_seed": -1}, "longtail_seed")])
def test_longtail_bad_options_are_refused(kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        data.load("digits", **kw)


def test_longtail_then_noise_composes():
    lt = data.load("digits", longtail=0.1)
    for kind in ("symmetric", "asymmetric", "pairflip"):
        if kind not in noise.NOISES:
            continue
        res = noise.inject(lt.y_train, kind=kind, rate=0.3, num_classes=10, generator=torch.Generator().manual_seed(0),
                           x=lt.x_train, **({"dataset": "mnist"} if kind == "asymmetric" else {}))
        assert res.labels.shape == lt.y_train.shape


def test_pipeline_longtail_from_the_spec_and_validated():
    from robustlab.pipeline import Config, load_data, run

    cfg = Config.from_dict({"data": {"name": "digits", "options": {"longtail": 0.1}}, "noise": "symmetric:0.3",
                            "train": {"epochs": 1}, "evaluations": [{"name": "longtail"}]})
    d = load_data(cfg.data)
    assert d.meta["longtail"]["rho"] == 0.1
    res = run(cfg, progress=False)
    assert res.train_data.y_train.shape[0] == d.y_train.shape[0]
    names = {n for n, _, _ in res.metrics}
    assert {"acc/head", "acc/tail"} <= names
    with pytest.raises(InvalidParameterError, match="'longtail' parameter of data.options"):
        Config.from_dict({"data": {"name": "digits", "options": {"longtail": 0.0}}})


def test_cli_train_longtail(tmp_path, capsys):
    from robustlab.cli import main

    rc = main(["train", "--data", "digits", "--data-arg", "longtail=0.1", "--noise", "symmetric:0.2", "--epochs", "1",
               "--out", str(tmp_path / "r"), "--json", "--quiet"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    assert "longtail" in json.dumps(rec)
    rc = main(["train", "--data", "digits", "--data-arg", "longtail=3", "--epochs", "1", "--out", str(tmp_path / "s")])
    assert rc != 0
    assert "longtail" in capsys.readouterr().err


def test_unlabeled_shifted_is_disjoint_and_shifted():
    d = data.load("digits")
    lab, unl = data.unlabeled_shifted(d, kind="rotate", severity=3, n=400, seed=0)
    assert lab.x_train.shape[0] + len(unl) == d.x_train.shape[0]
    assert unl.x.shape == (400, 1, 8, 8) and float(unl.x.min()) >= 0 and float(unl.x.max()) <= 1
    _, same = data.unlabeled_shifted(d, kind="none", n=400, seed=0)
    assert not torch.allclose(unl.x, same.x)
    # the in-domain pool holds exactly the removed training rows
    assert same.x.shape[0] == 400 and torch.equal(torch.sort(torch.cat([lab.y_train, same.y_hidden])).values,
                                                  torch.sort(d.y_train).values)
    _, again = data.unlabeled_shifted(d, kind="rotate", severity=3, n=400, seed=0)
    assert torch.equal(again.x, unl.x)
    flat = data.load("gaussians")
    _, fu = data.unlabeled_shifted(flat, kind="feature_noise", severity=2, n=10)
    assert fu.x.shape == (10, *flat.input_shape)


@pytest.mark.parametrize("kw, match", [({"kind": "rotat"}, "Did you mean 'rotate'"), ({"n": 0}, "'n' parameter"),
                                       ({"severity": -1}, "severity")])
def test_unlabeled_shifted_bad_input(kw, match):
    with pytest.raises((InvalidParameterError, KeyError, ValueError), match=match):
        data.unlabeled_shifted(data.load("digits"), **kw)


def test_unlabeled_image_kind_on_flat_data_is_refused():
    with pytest.raises(InvalidParameterError, match="needs inputs of shape"):
        data.unlabeled_shifted(data.load("gaussians"), kind="rotate")


def test_gaussian_mixture_shift_geometry():
    gm = data.gaussian_mixture_shift(dim=20, snr=2.0, shift=0.5, n_test=20000, seed=0)
    mu, ms = gm.mu.double(), gm.mu_shifted.double()
    assert float(mu.norm()) == pytest.approx(2.0, rel=1e-5)
    assert float((ms - mu) @ mu) == pytest.approx(0.0, abs=1e-5)
    assert float((ms - mu).norm()) == pytest.approx(1.0, rel=1e-5)
    # the Bayes classifier's test error matches Phi(-||mu|| / sigma)
    assert gm.error(gm.mu) == pytest.approx(gm.bayes_error, abs=0.01)
    assert data.gaussian_mixture_shift(seed=1).x_train.shape == (20, 50)
    with pytest.raises(InvalidParameterError, match="'shift' parameter"):
        data.gaussian_mixture_shift(shift=-1)


def test_gaussian_mixture_labelled_and_test_samples_do_not_depend_on_the_pool():
    a = data.gaussian_mixture_shift(n_unlabeled=0, shift=0.0, seed=3)
    b = data.gaussian_mixture_shift(n_unlabeled=500, shift=2.0, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test) and torch.equal(a.mu, b.mu)


def test_bench_spec_with_longtail_axis_and_evaluation():
    from robustlab.bench.spec import expand

    runs = expand("longtail")  # the shipped spec behind docs/results/representation.md
    assert len(runs) == 2 * 3 * 3
    assert all(r.config["data"]["options"] == {"longtail": 0.1} for r in runs)
    assert [e["name"] for e in runs[0].config["evaluations"]] == ["clean", "longtail"]
    with pytest.raises(ValueError, match="'longtail' parameter of data.options"):
        expand({"name": "bad", "data": [{"name": "digits", "longtail": 5}], "models": ["mlp"], "losses": ["ce"]})
