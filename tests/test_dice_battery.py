"""Every registered segmentation loss passes its battery; dice equals a direct computation."""

import pytest
import torch

from robustlab.losses import SEGMENTATION_LOSSES, segmentation
from robustlab.testing import parametrize_checks


@parametrize_checks(SEGMENTATION_LOSSES)
def test_segmentation_loss(spec, check):
    check(spec)


def test_dice_values_by_hand():
    # binary: p = sigmoid(0) = 0.5 everywhere on a 2x2 image, mask with one foreground pixel
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    fg = 1 - (2 * 0.5 + 1) / (2.0 + 1 + 1)   # foreground: sum p = 2, sum t = 1, inter 0.5
    bg = 1 - (2 * 1.5 + 1) / (2.0 + 3 + 1)   # background: sum p = 2, sum t = 3, inter 1.5
    assert float(segmentation("dice")(x, t)) == pytest.approx((fg + bg) / 2)
    fg2 = 1 - (2 * 0.5 + 1) / (1.0 + 1 + 1)  # squared: sum p^2 = 4 * 0.25 = 1
    bg2 = 1 - (2 * 1.5 + 1) / (1.0 + 3 + 1)
    assert float(segmentation("soft_dice")(x, t)) == pytest.approx((fg2 + bg2) / 2)
