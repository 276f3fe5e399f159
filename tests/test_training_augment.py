"""training.augment: the conformance battery, exact crop/flip/cutout semantics, fit(augment=...)."""

import pytest
import torch
from _helpers import flat_params as _params
from _helpers import tiny_mlp

from robustlab import data
from robustlab.testing import parametrize_checks
from robustlab.training import augment, fit
from robustlab.training.augment import AUGMENTATIONS


@parametrize_checks(AUGMENTATIONS)
def test_augmentation(spec, check):
    check(spec)


def test_registry_lists_the_issue_names():
    assert set(augment.available()) >= {"none", "flip", "crop_flip", "cutout", "noise"}
    with pytest.raises(KeyError, match="Did you mean 'crop_flip'"):
        augment.get("cropflip")


def _reference_crop_flip(x, off_i, off_j, flips, p, mode):
    """Per-sample loop (the obvious implementation) for comparison."""
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect" if mode == "reflect" else "constant")
    h, w = x.shape[-2:]
    out = []
    for k in range(x.shape[0]):
        crop = padded[k, :, off_i[k]:off_i[k] + h, off_j[k]:off_j[k] + w]
        out.append(crop.flip(-1) if flips[k] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_flip_equals_per_sample_crop(mode):
    x = torch.rand(32, 3, 10, 9, generator=torch.Generator().manual_seed(0))
    aug = augment.get("crop_flip", padding=4, padding_mode=mode)
    out = aug(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the draws in the documented order
    off = torch.randint(0, 9, (2, 32), generator=g)
    flips = torch.rand(32, generator=g) < 0.5
    assert torch.equal(out, _reference_crop_flip(x, off[0], off[1], flips, 4, mode))
    assert 0 < int(flips.sum()) < 32 and len(set(off[0].tolist())) > 3


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(200, 1, 12, 12)
    out = augment.get("cutout", size=4)(x, torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 4  # corner squares are clipped to 2x2 or more
    assert bool((zeros < 16).any())
    full = augment.get("cutout")(torch.ones(100, 1, 32, 32), torch.Generator().manual_seed(0))
    assert int(full.eq(0).flatten(1).sum(1).max()) == 256  # default: half the side (16x16 on 32x32)


def test_bad_parameters_and_inputs():
    from robustlab._validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="'padding_mode'.*'reflect', 'zeros'"):
        augment.get("crop_flip", padding_mode="edge")
    with pytest.raises(InvalidParameterError, match="'sigma'"):
        augment.get("noise", sigma=-1)
    with pytest.raises(InvalidParameterError, match=r"needs image batches of shape \(N, C, H, W\). Got shape \(4, 5\)"):
        augment.get("flip")(torch.rand(4, 5))
    with pytest.raises(InvalidParameterError, match="padding=4 for 3x3 images"):
        augment.get("crop_flip")(torch.rand(2, 1, 3, 3))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits").subset(n_train=200, n_test=50)


_model = tiny_mlp


def test_fit_augment_is_seeded_and_changes_training(digits):
    kw = dict(epochs=2, batch_size=50, progress=False)
    a = fit(_model(digits), digits, augment="crop_flip", augment_kw={"padding": 2}, seed=1, **kw).model
    b = fit(_model(digits), digits, augment="crop_flip", augment_kw={"padding": 2}, seed=1, **kw).model
    c = fit(_model(digits), digits, augment="crop_flip", augment_kw={"padding": 2}, seed=2, **kw).model
    plain = fit(_model(digits), digits, seed=1, **kw).model
    none = fit(_model(digits), digits, augment="none", seed=1, **kw).model
    assert torch.equal(_params(a), _params(b)) and not torch.equal(_params(a), _params(c))
    assert not torch.equal(_params(a), _params(plain))
    assert torch.equal(_params(none), _params(plain))  # 'none' is today's fit exactly


def test_fit_passes_the_augmented_batch_to_the_objective(digits):
    from robustlab.training import Objective

    seen = []

    class Spy(Objective):
        def __call__(self, model, batch, loss):
            seen.append(batch.x.clone())
            return loss(model(batch.x), batch.y), {}

    calls = []

    def aug(x, generator):
        calls.append(x.shape)
        return 1 - x

    fit(_model(digits), digits, objective=Spy(), augment=aug, epochs=1, batch_size=100, seed=0, progress=False)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2 and torch.equal(seen[0], 1 - digits.x_train[perm[:100]])


def test_fit_augment_refuses_flat_inputs_and_bad_values():
    from robustlab._validation import InvalidParameterError

    d = data.load("gaussians", num_classes=3, dim=5, n_train=30, n_test=10, seed=0)
    with pytest.raises(InvalidParameterError, match=r"augment 'crop_flip' needs image inputs \(C, H, W\).*\(5,\)"):
        fit(_model(d), d, augment="crop_flip", progress=False)
    with pytest.raises(InvalidParameterError, match="'augment' parameter of fit"):
        fit(_model(d), d, augment=3, progress=False)
    fit(_model(d), d, augment="noise", epochs=1, progress=False)  # noise works on any shape
