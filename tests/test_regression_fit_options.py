"""fit_regression shares fit's resume state, best-epoch selection and weight EMA; augment is refused."""

import pytest
import torch
from torch import nn

from robustlab import data
from robustlab._validation import InvalidParameterError
from robustlab.training import fit_regression


def _data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    y = x @ torch.tensor([2.0, -1.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    return data.RegressionData(x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:],
                               input_shape=(3,), name="lin")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def _fit(model, d, **kw):
    return fit_regression(model, d, loss="huber", epochs=kw.pop("epochs", 4), lr=kw.pop("lr", 0.02), batch_size=32,
                          optimizer="sgd",
                          **kw)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("extra", [{}, {"ema": 0.9, "select": "clean"}])
def test_resume_is_bit_identical(tmp_path, extra):
    d = _data()
    ref = _fit(_model(), d, **extra)

    def stop_at_2(epoch, row):
        if epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):  # interrupted after epoch 2's evaluation: last.pt holds epoch 1
        _fit(_model(), d, checkpoint_dir=tmp_path, callback=stop_at_2, **extra)
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # the resumed run must not depend on the initial weights it is given
    res = _fit(fresh, d, checkpoint_dir=tmp_path, resume=True, **extra)
    for a, b in zip(ref.model.parameters(), res.model.parameters()):
        assert torch.equal(a, b)
    drop = ("time_s",)
    assert {k: v for k, v in res.history.items() if k not in drop} == {k: v for k, v in ref.history.items() if k not in drop}
    with pytest.raises(InvalidParameterError, match="written with other settings.*lr"):
        fit_regression(_model(), d, loss="huber", epochs=4, lr=0.05, batch_size=32, optimizer="sgd",
                       checkpoint_dir=tmp_path, resume=True, **extra)


def test_select_keeps_the_lowest_validation_mse(tmp_path):
    d = _data()
    res = _fit(_model(), d, epochs=6, select="mse", val_fraction=0.25, lr=0.3, checkpoint_dir=tmp_path)
    h = res.history
    assert h["val_epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and len(h["val_mse"]) == 6
    best = min(range(6), key=lambda i: h["val_mse"][i])
    assert h["selected_epoch"] == [h["val_epoch"][best]]
    # the returned model is the selected one: its MSE on the held-out split is the recorded best
    g = torch.randperm(240, generator=torch.Generator().manual_seed(0 + 3))[:60]
    with torch.no_grad():
        val = float(((res.model(d.x_train[g]).reshape(-1) - d.y_train[g]) ** 2).mean())
    assert val == pytest.approx(min(h["val_mse"]), rel=1e-5)
    assert (tmp_path / "best.pt").is_file()


def test_select_patience_stops_early():
    res = _fit(_model(), _data(), epochs=30, select="clean", patience=1, lr=2.0)
    assert "stopped_epoch" in res.history and res.history["stopped_epoch"][0] < 30


def test_ema_model_is_the_average_and_is_returned():
    d = _data()
    plain = _fit(_model(), d)
    avg = _fit(_model(), d, ema=0.5)
    assert not torch.equal(plain.model[0].weight, avg.model[0].weight)
    with torch.no_grad():
        mse = float(((avg.model(d.x_test).reshape(-1) - d.y_test) ** 2).mean())
    assert avg.history["test_mse"][-1] == pytest.approx(mse, rel=1e-5)


@pytest.mark.parametrize("kw, match", [
    ({"augment": "flip"}, r"'augment'.*images and class labels.*augment='flip'"),
    ({"select": "pgd"}, r"'select'.*'pgd'"),
    ({"patience": 2}, r"'patience'.*select='clean'"),
    ({"resume": True}, r"'resume'.*checkpoint_dir"),
    ({"ema": 1.5}, r"'ema'"),
    ({"select": "clean", "val_fraction": 0.001}, r"'val_fraction'.*rounds to 0"),
])
def test_bad_options_are_named(kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        _fit(_model(), _data(), **kw)
