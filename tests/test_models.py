"""Architecture facts of lenet / preact_resnet18 / wide_resnet and the Residual module."""

import pytest
import torch
from torch import nn

from robustlab import models
from robustlab.models import Residual


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_residual_is_body_plus_shortcut():
    body, short = nn.Linear(3, 3), nn.Linear(3, 3, bias=False)
    r = Residual(body, short)
    x = torch.randn(4, 3)
    torch.testing.assert_close(r(x), body(x) + short(x))
    torch.testing.assert_close(Residual(body)(x), body(x) + x)  # default shortcut: identity


@pytest.mark.parametrize("hw", [(8, 8), (9, 13), (28, 28), (32, 32)])
def test_lenet_any_size(hw):
    m = models.create("lenet", input_shape=(3, *hw), num_classes=5).eval()
    assert m(torch.rand(2, 3, *hw)).shape == (2, 5)


def test_lenet_rejects_vectors_and_tiny_images():
    with pytest.raises(ValueError, match=r"\(C, H, W\) with H, W >= 8"):
        models.create("lenet", input_shape=(64,), num_classes=10)
    with pytest.raises(ValueError, match="H, W >= 8"):
        models.create("lenet", input_shape=(1, 7, 8), num_classes=10)


def test_preact_resnet18_structure():
    m = models.create("preact_resnet18", input_shape=(3, 32, 32), num_classes=10)
    assert _count(m, Residual) == 8  # 4 stages x 2 blocks
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert sum(c.kernel_size == (3, 3) for c in convs) == 17 and sum(c.kernel_size == (1, 1) for c in convs) == 3
    assert _count(m, nn.AdaptiveAvgPool2d) == 0 and _count(m, nn.MaxPool2d) == 0  # IBP-friendly pooling only
    # parameter count of the CIFAR PreAct ResNet-18, computed from the layer shapes
    expected = 3 * 64 * 9 + 512 * 10 + 10
    chans = [(64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    for cin, cout in chans:
        expected += 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)
    expected += 2 * 512  # final BN
    assert _n_params(m) == expected


@pytest.mark.parametrize("depth, width", [(10, 1), (16, 2), (28, 10)])
def test_wide_resnet_depth_and_width(depth, width):
    m = models.create("wide_resnet", input_shape=(3, 32, 32), num_classes=10, depth=depth, width=width)
    n = (depth - 4) // 6
    assert _count(m, Residual) == 3 * n
    convs3 = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(convs3) == 1 + 6 * n  # stem + 2 per block; depth = 6n + 4 counts the head and shortcuts too
    assert max(c.out_channels for c in convs3) == 64 * width
    if (depth, width) == (28, 10):
        assert 36.4e6 < _n_params(m) < 36.6e6  # WRN-28-10: 36.5M parameters (Zagoruyko & Komodakis)


def test_wide_resnet_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        models.create("wide_resnet", input_shape=(3, 8, 8), num_classes=10, depth=12)


def test_resnets_handle_small_odd_images_and_train_step():
    for name, kw in [("preact_resnet18", {"width": 2}), ("wide_resnet", {"depth": 10, "width": 1, "base": 2})]:
        m = models.create(name, input_shape=(1, 9, 11), num_classes=3, **kw)
        out = m(torch.rand(4, 1, 9, 11))
        out.sum().backward()
        assert out.shape == (4, 3)


def test_normalize_per_channel():
    m = models.create("lenet", input_shape=(3, 8, 8), num_classes=4, normalize=([0.1, 0.2, 0.3], [0.5, 0.5, 0.25]))
    x = torch.rand(2, 3, 8, 8)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.25]).view(3, 1, 1)
    torch.testing.assert_close(m[0](x), (x - mean) / std)


def test_available_models():
    assert set(models.available()) >= {"linear", "mlp", "lenet", "preact_resnet18", "wide_resnet"}
    assert "Residual" in models.__all__


def test_lenet_leaves_chance_level_on_digits():
    """Regression: with PyTorch's default init the avg-pool LeNet stayed at 10% on digits."""
    from robustlab import data
    from robustlab.training import fit

    d = data.load("digits").subset(n_train=600)
    torch.manual_seed(0)
    m = models.create("lenet", input_shape=d.input_shape, num_classes=10)
    h = fit(m, d, epochs=6, batch_size=32, lr=0.1, progress=False).history
    assert h["test_acc"][-1] > 0.5


def test_mlp_accepts_a_single_width():
    from robustlab import models

    m = models.create("mlp", input_shape=(4,), num_classes=3, hidden=7)
    linears = [lin for lin in m.modules() if isinstance(lin, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [7, 3]
