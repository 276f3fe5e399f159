"""fit_regression: determinism, robustness of Huber to outlier targets, input errors."""

import pytest
import torch
from torch import nn

from robustlab import data
from robustlab._validation import InvalidParameterError
from robustlab.noise import inject_targets
from robustlab.training import fit_regression, regression_model


def _linear_data(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    y = x @ torch.tensor([2.0, -1.0, 0.5]) + 1.0 + 0.05 * torch.randn(n, generator=g)
    return data.RegressionData(x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:],
                               input_shape=(3,), name="lin")


def _fit(d, loss, **kw):
    torch.manual_seed(0)
    return fit_regression(nn.Linear(3, 1), d, loss=loss, epochs=kw.pop("epochs", 40), lr=0.05, batch_size=32,
                          schedule="constant", **kw)


def test_same_seed_same_weights_and_history_keys():
    d = _linear_data()
    a, b = _fit(d, "mse", epochs=3), _fit(d, "mse", epochs=3)
    assert torch.equal(a.model.weight, b.model.weight)
    assert {"loss", "test_mse", "test_mae", "test_r2", "lr"} <= set(a.history)


def test_huber_resists_outlier_targets_mse_does_not():
    d = _linear_data()
    noisy = inject_targets(d.y_train, kind="outliers", rate=0.2, magnitude=30.0,
                           generator=torch.Generator().manual_seed(0))
    dn = d.with_train_targets(noisy.targets)
    mse = _fit(dn, "mse").history["test_mse"][-1]
    hub = _fit(dn, "huber", loss_kw={"delta": 0.1}).history["test_mse"][-1]
    assert hub < 0.2 * mse, (hub, mse)


def test_regression_model_and_errors():
    d = data.load("friedman", n_samples=60)
    m = regression_model("mlp", input_shape=d.input_shape, hidden=(8,))
    assert m(d.x_test).shape == (d.x_test.shape[0], 1) and m.robustlab_config["task"] == "regression"
    r = fit_regression(m, d, loss="log_cosh", epochs=1)
    assert len(r.history["test_r2"]) == 1
    with pytest.raises(InvalidParameterError, match="one output"):
        fit_regression(nn.Linear(10, 2), d, epochs=1)
    with pytest.raises(InvalidParameterError, match="RegressionData"):
        fit_regression(m, data.load("blobs2d", n_samples=60), epochs=1)
    with pytest.raises(KeyError, match="Did you mean 'huber'"):
        fit_regression(m, d, loss="hubr", epochs=1)
