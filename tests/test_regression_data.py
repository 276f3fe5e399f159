"""Regression data sets and target noise: loading, seeding, CSV errors, battery."""

import pytest
import torch

from robustlab import data, noise
from robustlab._validation import InvalidParameterError
from robustlab.data import REGRESSION_DATASETS, RegressionData
from robustlab.noise import TARGET_NOISES, inject_targets
from robustlab.testing import parametrize_checks


@parametrize_checks(REGRESSION_DATASETS)
def test_regression_dataset(spec, check):
    check(spec)


@parametrize_checks(TARGET_NOISES)
def test_target_noise(spec, check):
    check(spec)


def test_load_friedman_and_diabetes():
    d = data.load("friedman", n_samples=400, seed=3)
    assert isinstance(d, RegressionData) and d.input_shape == (10,) and d.x_test.shape[0] == 100
    assert d.y_train.dtype == torch.float32 and d.num_classes is None and d.task == "regression"
    assert not torch.equal(d.y_train, data.load("friedman", n_samples=400, seed=4).y_train)
    assert data.load("diabetes").x_train.shape[1] == 10
    assert "friedman" in data.available()


def test_regression_csv(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b,price\n" + "".join(f"{i},{i % 3},{2.5 * i}\n" for i in range(20)))
    d = data.load(f"csv:{p}", target="price", test_fraction=0.25)
    assert isinstance(d, RegressionData) and d.input_shape == (2,) and d.x_test.shape[0] == 5
    assert torch.allclose(torch.cat([d.y_train, d.y_test]).sort().values, torch.arange(20) * 2.5)
    with pytest.raises(ValueError, match="no target column 'cost'"):
        data.load(f"csv:{p}", target="cost")
    p.write_text("a,price\n1,2\nx,3\n")
    with pytest.raises(ValueError, match="column 'a' must be numeric; row 3"):
        data.load(f"csv:{p}", target="price")
    p.write_text("a,price\n1,2\n2,nan\n")
    with pytest.raises(ValueError, match="'price' holds NaN"):
        data.load(f"csv:{p}", target="price")


def test_target_noise_kinds():
    y = torch.linspace(0, 10, 100)
    g = torch.Generator().manual_seed(0)
    out = inject_targets(y, kind="outliers", rate=0.1, magnitude=20.0, generator=g)
    assert out.is_noisy.sum() == 10 and float((out.targets - y).abs().max()) > 40
    adv = inject_targets(y, kind="adversarial", rate=0.1, magnitude=1.0)
    changed = adv.is_noisy.nonzero().squeeze(1)  # the 10 most extreme targets, reflected through the mean
    assert set(changed.tolist()) == set(range(5)) | set(range(95, 100))
    assert torch.allclose(adv.targets[changed], 10 - y[changed], atol=1e-5)
    t = inject_targets(y, kind="student_t", df=1.0, scale=1.0, generator=torch.Generator().manual_seed(0))
    gs = inject_targets(y, kind="gaussian", scale=1.0, generator=torch.Generator().manual_seed(0))
    assert float((t.targets - y).abs().max()) > float((gs.targets - y).abs().max())  # heavier tails
    with pytest.raises(InvalidParameterError, match="'df'"):
        inject_targets(y, kind="student_t", df=0.0)
    with pytest.raises(InvalidParameterError, match="unknown option"):
        inject_targets(y, kind="gaussian", df=3.0)
    with pytest.raises(InvalidParameterError, match="'y'"):
        inject_targets(y.long(), kind="gaussian")
    with pytest.raises(KeyError, match="Did you mean 'outliers'"):
        inject_targets(y, kind="outlier")
    assert "adversarial" not in noise.available()  # label-noise kinds stay apart
