"""Synthetic segmentation data and mask corruptions."""

import pytest
import torch

from robustlab import data
from robustlab._validation import InvalidParameterError


def test_synthetic_segmentation_is_seeded_and_valid():
    a = data.synthetic_segmentation(n_train=8, n_test=4, size=16, seed=1)
    b = data.synthetic_segmentation(n_train=8, n_test=4, size=16, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.shape == (8, 1, 16, 16) and a.y_test.shape == (4, 16, 16)
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1 and set(a.y_train.unique().tolist()) == {0, 1}


def test_mask_corruptions():
    m = torch.zeros(1, 12, 12, dtype=torch.int64)
    m[0, 2:6, 2:6] = 1   # two objects
    m[0, 8:11, 8:11] = 1
    g = torch.Generator().manual_seed(0)
    assert torch.equal(data.corrupt_masks(m, kind="remove", amount=0.0), m)
    assert int(data.corrupt_masks(m, kind="remove", amount=1.0).sum()) == 0
    assert int(data.corrupt_masks(m, kind="dilate", amount=1).sum()) == 36 + 25
    assert int(data.corrupt_masks(m, kind="erode", amount=1).sum()) == 4 + 1
    b = data.corrupt_masks(m, kind="boundary", amount=1.0, generator=g)
    changed = b != m  # only pixels on a boundary (inside and outside rings) flip
    assert int(changed.sum()) > 0 and not bool(changed[0, 4, 4]) and not bool(changed[0, 0, 11])
    with pytest.raises(InvalidParameterError, match="'kind'"):
        data.corrupt_masks(m, kind="blur", amount=0.1)
    with pytest.raises(InvalidParameterError, match="'amount'"):
        data.corrupt_masks(m, kind="boundary", amount=1.5)
