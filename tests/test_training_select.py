"""fit(select=..., val_fraction=..., patience=..., ema=...): robust model selection and weight averaging."""

import pytest
import torch
from _helpers import flat_params as _params
from _helpers import tiny_mlp

from robustlab import data
from robustlab._validation import InvalidParameterError
from robustlab.training import fit, load_checkpoint
from robustlab.training._select import resolve_select_kw, stratified_split


@pytest.fixture(scope="module")
def digits():
    return data.load("digits").subset(n_train=300, n_test=100)


_model = tiny_mlp


def test_stratified_split():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1)
    tr, va = stratified_split(y, 0.1, seed=0)
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(101))
    assert torch.equal(va, torch.sort(va).values) and torch.equal(tr, torch.sort(tr).values)
    assert torch.bincount(y[va], minlength=4).tolist() == [5, 3, 2, 0]  # a singleton class stays in train
    assert torch.equal(stratified_split(y, 0.1, seed=0)[1], va)
    assert not torch.equal(stratified_split(y, 0.1, seed=1)[1], va)
    with pytest.raises(InvalidParameterError, match=r"val_fraction=0.01 of 101 training samples rounds to 0"):
        stratified_split(y, 0.01, seed=0)


def test_clean_selection_returns_the_best_epochs_weights(digits, tmp_path):
    snaps = {}

    def snap(epoch, row):
        snaps[epoch] = _params(res_model).clone()

    res_model = _model(digits)
    # a large constant lr makes validation accuracy go up and down, so the best epoch is not always the last
    res = fit(res_model, digits, select="clean", val_fraction=0.2, epochs=8, batch_size=32, lr=0.5,
              schedule="constant", seed=0, callback=snap, checkpoint_dir=tmp_path, progress=False)
    h = res.history
    assert h["val_epoch"] == [float(e) for e in range(1, 9)] and len(h["val_acc"]) == 8
    best = h["val_epoch"][h["val_acc"].index(max(h["val_acc"]))]  # first epoch reaching the maximum
    assert h["selected_epoch"] == [best]
    assert torch.equal(_params(res.model), snaps[int(best)])
    saved = load_checkpoint(tmp_path / "best.pt", model=_model(digits))
    assert torch.equal(_params(saved), snaps[int(best)]) and saved.robustlab_extra["epoch"] == best
    # the held-out fifth is not trained on: ALDR-KL's per-sample state is sized to the rest
    res2 = fit(_model(digits), digits, loss="aldr_kl", select="clean", val_fraction=0.2, epochs=1, progress=False)
    assert res2.history["selected_epoch"] == [1.0]


def test_select_every_and_patience(digits):
    h = fit(_model(digits), digits, select="clean", select_every=3, epochs=7, batch_size=64, progress=False).history
    assert h["val_epoch"] == [3.0, 6.0, 7.0]  # and always the last epoch
    h = fit(_model(digits), digits, select="clean", patience=1, epochs=30, lr=0.5, schedule="constant",
            batch_size=32, progress=False).history
    assert "stopped_epoch" in h and h["stopped_epoch"][0] < 30 and h["epoch"][-1] == h["stopped_epoch"][0]
    assert h["val_acc"][-1] <= max(h["val_acc"][:-1])


def test_pgd_selection_uses_the_objectives_radius(digits):
    from robustlab.training import OBJECTIVES

    obj = OBJECTIVES.get("pgd_at", eps=0.1, steps=2)
    assert resolve_select_kw("pgd", None, obj) == {"steps": 10, "norm": "linf", "eps": 0.1}
    assert resolve_select_kw("pgd", {"steps": 3, "eps": 0.05}, obj)["eps"] == 0.05
    h = fit(_model(digits), digits, objective=obj, select="pgd", select_kw={"steps": 3}, epochs=3,
            batch_size=64, progress=False).history
    assert len(h["val_robust_acc"]) == 3 and "val_acc" not in h
    clean = fit(_model(digits), digits, objective=OBJECTIVES.get("pgd_at", eps=0.1, steps=2), select="clean",
                epochs=3, batch_size=64, progress=False).history
    assert max(h["val_robust_acc"]) <= max(clean["val_acc"])  # same training; robust <= clean on the same split
    with pytest.raises(InvalidParameterError, match=r"select='pgd' needs a radius: pass select_kw=\{'eps'"):
        fit(_model(digits), digits, select="pgd", progress=False)


def test_ema_weights_are_returned_and_evaluated(digits):
    d = digits.subset(n_train=64)
    snaps = []
    m = _model(d)
    init = _params(m).clone()
    res = fit(m, d, ema=0.7, epochs=4, batch_size=64, lr=0.1, schedule="constant", weight_decay=0.0,
              callback=lambda e, r: snaps.append(_params(m).clone()), progress=False)  # one step per epoch
    expected = init
    for raw in snaps:
        expected = 0.7 * expected + 0.3 * raw
    torch.testing.assert_close(_params(res.model), expected)
    res.model.eval()
    with torch.no_grad():
        acc = float((res.model(d.x_test).argmax(1) == d.y_test).float().mean())
    assert res.history["test_acc"][-1] == pytest.approx(acc)  # test accuracy is the EMA model's


@pytest.mark.parametrize("kw, msg", [
    ({"select": "robust"}, r"'select' parameter of fit must be a str among \{None, 'clean', 'pgd'\}"),
    ({"select": "clean", "val_fraction": 0}, "needs a held-out split"),
    ({"val_fraction": 1.0}, r"'val_fraction' parameter of fit must be a float in \[0, 1\)"),
    ({"patience": 2}, "'patience' parameter of fit needs select"),
    ({"select": "clean", "patience": 0}, "'patience'"),
    ({"select": "clean", "select_every": 0}, "'select_every'"),
    ({"select": "clean", "select_kw": {"eps": 0.1}}, "only used with select='pgd'"),
    ({"select": "pgd", "select_kw": {"eps": -1}}, "'eps'"),
    ({"ema": 1.0}, r"'ema' parameter of fit must be a float in \(0, 1\)"),
])
def test_bad_selection_arguments(digits, kw, msg):
    m = _model(digits)
    before = _params(m).clone()
    with pytest.raises(InvalidParameterError, match=msg):
        fit(m, digits, progress=False, **kw)
    assert torch.equal(_params(m), before)
