"""Progress bars (issue 12) on the long loops of certification, conformal, corruption suites and RiFT:
``progress=True`` shows a bar on stderr, ``False``/auto-off (no TTY) shows nothing, the numbers never change."""

import pytest
import torch
from torch import nn

from robustlab import data, models, shift
from robustlab.certify import certified_accuracy, verified
from robustlab.defences import module_robust_criticality


@pytest.fixture(scope="module")
def small():
    d = data.load("digits").subset(n_train=64, n_test=24)
    torch.manual_seed(0)
    return d, models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(16,)).eval()


def _both(fn, capsys):
    quiet = fn(False)
    assert capsys.readouterr().err == ""
    auto = fn(None)  # stderr is not a TTY under pytest: no bar
    assert capsys.readouterr().err == ""
    loud = fn(True)
    return quiet, auto, loud, capsys.readouterr().err


def test_ibp_and_crown_certification_bar(small, capsys):
    d, m = small
    for method in ("ibp", "crown"):
        quiet, auto, loud, err = _both(
            lambda p, method=method: verified(m, d.x_test, d.y_test, eps=0.01, method=method, batch_size=8, progress=p),
            capsys)
        assert torch.equal(quiet, loud) and torch.equal(quiet, auto)
        assert f"certify {method} eps=0.01" in err and "/24" in err
    assert certified_accuracy(m, d, eps=0.01, progress=False) == float(quiet.float().mean())
    with pytest.raises(ValueError, match="'progress' parameter of verified"):
        certified_accuracy(m, d, eps=0.01, progress="yes")


def test_corruption_suite_bar(small, capsys):
    d, m = small
    kw = dict(corruptions=["gaussian_noise", "shot_noise"], severities=(1, 3))

    def run(p):
        return shift.corruption_error(m, d, generator=torch.Generator().manual_seed(0), progress=p, **kw).accuracy

    quiet, auto, loud, err = _both(run, capsys)
    assert quiet == loud == auto
    assert "corruptions" in err and "/4" in err
    with pytest.raises(ValueError, match="'progress' parameter of corruption_error"):
        shift.corruption_error(m, d, progress=1, **kw)


def test_rift_scan_bar(small, capsys):
    d, m = small
    x, y = d.x_train[:32], d.y_train[:32]

    def run(p):
        return module_robust_criticality(m, x, y, eps=0.1, steps=2, epochs=1, progress=p,
                                         generator=torch.Generator().manual_seed(0))

    quiet, auto, loud, err = _both(run, capsys)
    assert quiet == loud == auto
    assert "RiFT criticality scan" in err and "/2" in err
    with pytest.raises(ValueError, match="'progress' parameter of module_robust_criticality"):
        module_robust_criticality(m, x, y, eps=0.1, progress="on")


def test_mnist_c_bar(capsys):
    d = data.load("digits").subset(n_train=16, n_test=8)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    if d.x_test.dim() != 4:
        pytest.skip("digits are not images here")
    out = shift.mnist_c_accuracy(m, d, progress=True, generator=torch.Generator().manual_seed(0))
    assert "MNIST-C corruptions" in capsys.readouterr().err and "clean" in out
