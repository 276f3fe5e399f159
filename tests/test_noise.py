"""Unit tests of robustlab.noise against closed forms and independent computations."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from robustlab import noise
from robustlab._validation import InvalidParameterError
from robustlab.noise._instance import truncated_normal


def _labels(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n,), generator=g)


def _empirical(y, z, c):
    m = np.zeros((c, c))
    np.add.at(m, (y.numpy(), z.numpy()), 1)
    return m / m.sum(1, keepdims=True)


def test_symmetric_closed_form_and_chi_square(generator):
    c, r = 4, 0.3
    y = torch.zeros(30000, dtype=torch.long)  # one class: a clean goodness-of-fit test on one row
    out = noise.inject(y, kind="symmetric", rate=r, num_classes=c, generator=generator)
    expected = np.array([1 - r] + [r / (c - 1)] * (c - 1))
    np.testing.assert_allclose(out.transition[0].numpy(), expected)
    counts = np.bincount(out.labels.numpy(), minlength=c)
    p = scipy.stats.chisquare(counts, expected * len(y)).pvalue
    assert p > 1e-4, p


def test_uniform_may_keep_true_class(generator):
    c, r = 5, 0.6
    y = _labels(50000, c)
    out = noise.inject(y, kind="uniform", rate=r, num_classes=c, generator=generator)
    want = r * (c - 1) / c
    assert abs(out.realized_rate - want) < 5 * math.sqrt(want * (1 - want) / len(y))
    assert torch.allclose(out.transition.diagonal(), torch.full((c,), 1 - r + r / c, dtype=torch.float64))


def test_asymmetric_mnist_map_exact(generator):
    y = torch.arange(10).repeat(3000)
    out = noise.inject(y, kind="asymmetric", rate=0.45, num_classes=10, generator=generator, dataset="mnist")
    emp = _empirical(y, out.labels, 10)
    for a, b in {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}.items():
        assert abs(emp[a, b] - 0.45) < 0.05 and abs(emp[a, a] - 0.55) < 0.05
        others = np.delete(emp[a], [a, b])
        assert (others == 0).all()  # nowhere else
    for k in (0, 1, 4, 8, 9):
        assert emp[k, k] == 1.0  # untouched classes never flip


def test_asymmetric_cifar10_and_letter_maps():
    t = noise.get("asymmetric", rate=0.4, num_classes=10, dataset="cifar10").matrix()
    for a, b in [(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)]:
        assert t[a, b] == pytest.approx(0.4)
    assert t[0, 0] == 1 and t[1, 1] == 1 and t[6, 6] == 1
    letter = noise.ASYMMETRIC_MAPS["letter"]
    assert all(letter[b] == a for a, b in letter.items()) and len(letter) == 20
    assert {0, 9, 18, 19, 24, 25}.isdisjoint(letter)


def test_asymmetric_generic_equals_pairflip():
    a = noise.get("asymmetric", rate=0.3, num_classes=6).matrix()
    b = noise.get("pairflip", rate=0.3, num_classes=6).matrix()
    assert torch.equal(a, b)
    assert b[5, 0] == pytest.approx(0.3) and b[0, 1] == pytest.approx(0.3)


def test_asymmetric_bad_options():
    with pytest.raises(InvalidParameterError, match="dataset"):
        noise.get("asymmetric", rate=0.3, num_classes=10, dataset="imagenet")
    with pytest.raises(InvalidParameterError, match="bad pairs"):
        noise.get("asymmetric", rate=0.3, num_classes=5, dataset="mnist")  # the map needs 10 classes
    with pytest.raises(InvalidParameterError, match="not both"):
        noise.get("asymmetric", rate=0.3, num_classes=10, dataset="mnist", mapping={0: 1})
    # regression: non-integer classes were truncated silently ({1.7: 2.9} became {1: 2})
    for bad in ({1.7: 2.9}, {0: "1"}, {True: 1}, [(0, 1)], 5):
        with pytest.raises(InvalidParameterError, match="'mapping' parameter"):
            noise.get("asymmetric", rate=0.3, num_classes=4, mapping=bad)
    assert noise.get("asymmetric", rate=0.3, num_classes=4, mapping={np.int64(0): 3}).mapping == {0: 3}


def test_transition_kind_and_validation(generator):
    t = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    y = torch.arange(3).repeat(20000)
    out = noise.inject(y, kind="transition", num_classes=3, transition=t, generator=generator)
    np.testing.assert_allclose(_empirical(y, out.labels, 3), t.numpy(), atol=0.02)
    assert (out.labels[y == 1] == 1).all()
    for bad, msg in [(torch.ones(3, 2) / 2, "shape"), (torch.tensor([[1.5, -0.5, 0], [0, 1, 0], [0, 0, 1]]), "non-negative"),
                     (torch.full((3, 3), 0.5), "row-stochastic"), (None, "needs the 'transition'")]:
        with pytest.raises(InvalidParameterError, match=msg):
            noise.inject(y, kind="transition", num_classes=3, transition=bad)
    with pytest.raises(InvalidParameterError, match="must be None"):
        noise.inject(y, kind="transition", rate=0.2, num_classes=3, transition=t)
    with pytest.raises(InvalidParameterError, match="only used with kind='transition'"):
        noise.inject(y, kind="symmetric", rate=0.2, num_classes=3, transition=t)


def test_rate_message_and_missing_rate():
    y = _labels(10, 3)
    with pytest.raises(InvalidParameterError, match=r"^The 'rate' parameter of inject must be a float in \[0, 1\)\. Got 1.5 instead\.$"):
        noise.inject(y, kind="symmetric", rate=1.5, num_classes=3)
    with pytest.raises(InvalidParameterError, match="Got None"):
        noise.inject(y, kind="symmetric", num_classes=3)
    with pytest.raises(KeyError, match="Did you mean 'pairflip'"):
        noise.inject(y, kind="pairflp", rate=0.1, num_classes=3)


def test_instance_noise_properties(generator):
    n, c, d = 20000, 5, 12
    x = torch.rand(n, d, generator=generator)
    y = _labels(n, c, seed=3)
    out = noise.inject(y, kind="instance", rate=0.3, num_classes=c, x=x, generator=torch.Generator().manual_seed(1))
    # per-sample rates are a truncated normal around 0.3 -> realized rate close to its mean
    mean_q = scipy.stats.truncnorm((0 - 0.3) / 0.1, (1 - 0.3) / 0.1, loc=0.3, scale=0.1).mean()
    assert abs(out.realized_rate - mean_q) < 0.02
    # instance dependence: the flip target depends on x (not a fixed class-conditional row)
    same_class = y == 0
    flipped = out.labels[same_class & out.is_noisy]
    assert len(torch.unique(flipped)) > 1
    # the same features give the same labels; other features give other labels
    again = noise.inject(y, kind="instance", rate=0.3, num_classes=c, x=x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.labels, again.labels)
    with pytest.raises(ValueError, match="needs the features"):
        noise.inject(y, kind="instance", rate=0.3, num_classes=c)
    with pytest.raises(ValueError, match="NaN"):
        noise.inject(y, kind="instance", rate=0.3, num_classes=c, x=torch.full((n, d), float("nan")))


def test_instance_noise_images_are_flattened(generator):
    x = torch.rand(300, 1, 8, 8, generator=generator)
    y = _labels(300, 10)
    out = noise.inject(y, kind="instance", rate=0.4, num_classes=10, x=x, generator=generator)
    assert out.labels.shape == (300,) and 0.2 < out.realized_rate < 0.6


def test_truncated_normal_matches_scipy(generator):
    s = truncated_normal(200000, 0.05, 0.1, 0.0, 1.0, generator)
    ref = scipy.stats.truncnorm((0 - 0.05) / 0.1, (1 - 0.05) / 0.1, loc=0.05, scale=0.1)
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    assert abs(float(s.mean()) - ref.mean()) < 1e-3 and abs(float(s.std()) - ref.std()) < 1e-3


def test_does_not_modify_input_and_keeps_device(generator):
    y = _labels(100, 4)
    y0 = y.clone()
    out = noise.inject(y, kind="pairflip", rate=0.4, num_classes=4, generator=generator)
    assert torch.equal(y, y0) and out.labels.device == y.device and out.labels is not y


def test_parse():
    assert noise.parse("symmetric:0.4") == ("symmetric", 0.4)
    assert noise.parse(" pairflip:0 ") == ("pairflip", 0.0)
    assert noise.parse("none") == ("symmetric", 0.0)
    for bad, msg in [("symmetric", "KIND:RATE"), ("symmetric:abc", "must be a float"), ("symmetric:1.0", r"\[0, 1\)"),
                     ("bogus:0.1", "Unknown noise kind")]:
        with pytest.raises((ValueError, KeyError), match=msg):
            noise.parse(bad)


def test_available_lists_all_kinds():
    assert set(noise.available()) >= {"symmetric", "uniform", "asymmetric", "pairflip", "instance", "transition"}


def test_asymmetric_cifar100_flips_within_superclasses():
    from robustlab.noise._class_conditional import CIFAR100_COARSE

    assert sorted(CIFAR100_COARSE.count(c) for c in range(20)) == [5] * 20
    m = noise.ASYMMETRIC_MAPS["cifar100"]
    assert sorted(m) == list(range(100)) and sorted(m.values()) == list(range(100))  # a permutation
    for a, b in m.items():
        assert a != b and CIFAR100_COARSE[a] == CIFAR100_COARSE[b]
    # fish (coarse 1) are fine ids 1, 32, 67, 73, 91: aquarium_fish -> flatfish -> ray -> shark -> trout -> aquarium_fish
    assert [m[i] for i in (1, 32, 67, 73, 91)] == [32, 67, 73, 91, 1]
    # a cycle of length 5 in every superclass
    for start in range(100):
        i, n = m[start], 1
        while i != start:
            i, n = m[i], n + 1
        assert n == 5
    t = noise.get("asymmetric", rate=0.4, num_classes=100, dataset="cifar100").matrix()
    assert torch.allclose(t.diagonal(), torch.full((100,), 0.6, dtype=torch.float64))
    assert t[1, 32] == pytest.approx(0.4) and t[4, 30] == pytest.approx(0.4)  # beaver -> dolphin (aquatic mammals)
    with pytest.raises(ValueError, match="num_classes=10"):
        noise.get("asymmetric", rate=0.3, num_classes=10, dataset="cifar100")


def test_asymmetric_cifar100_consecutive_is_the_reference_codes_grouping():
    m = noise.ASYMMETRIC_MAPS["cifar100_consecutive"]
    assert m == {i: 5 * (i // 5) + (i + 1) % 5 for i in range(100)}
    g = torch.Generator().manual_seed(0)
    y = torch.arange(100).repeat(50)
    out = noise.inject(y, kind="asymmetric", rate=0.4, num_classes=100, generator=g, dataset="cifar100_consecutive")
    changed = out.labels != y
    assert torch.equal(out.labels[changed], torch.tensor([m[int(v)] for v in y[changed]]))
    assert 0.35 < float(changed.float().mean()) < 0.45


def test_blockwise_sampling_equals_the_full_rows():
    from robustlab.noise._base import sample_labels, sample_rows

    t = noise.get("symmetric", rate=0.4, num_classes=7).matrix()
    y = torch.randint(0, 7, (20_000,), generator=torch.Generator().manual_seed(1))  # > one block of rows
    a = sample_labels(t, y, torch.Generator().manual_seed(3))
    b = sample_rows(t[y], torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_num_classes_is_bounded():
    from robustlab.noise._base import MAX_CLASSES

    y = torch.zeros(4, dtype=torch.long)
    for kind in ("symmetric", "uniform", "pairflip", "asymmetric"):
        with pytest.raises(ValueError, match=rf"'num_classes' parameter of inject must be an int in \[2, {MAX_CLASSES}\]"):
            noise.inject(y, kind=kind, rate=0.2, num_classes=10**30)  # used to allocate until OOM-killed
    assert noise.inject(y, kind="symmetric", rate=0.2, num_classes=1000).labels.shape == (4,)
