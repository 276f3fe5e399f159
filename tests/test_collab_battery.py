"""Every registered aggregator passes the aggregator battery; the battery catches broken rules."""

import pytest
import torch

from robustlab._registry import Registry
from robustlab.collab import AGGREGATORS, BYZANTINE
from robustlab.collab.aggregators import Aggregator
from robustlab.testing import iter_checks, parametrize_checks


@parametrize_checks(AGGREGATORS)
def test_aggregator(spec, check):
    check(spec)


def _broken_registry():
    r = Registry("aggregator", checks="robustlab.testing._aggregators")

    def plain_mean(x, f, pivot=0):
        """Mean claiming to be robust."""
        return x.mean(0)

    def row_order(x, f, pivot=0):
        """First row (not permutation invariant)."""
        return x[0].clone() if x.shape[0] > 0 else x.sum(0)

    @r.register("claims_robust", reference="test")
    def _a():
        """Mean claiming to be robust."""
        return Aggregator("claims_robust", lambda x, f: _checked(x, f, plain_mean), {}, lambda n, f: 1.0)

    @r.register("first_row", reference="test")
    def _b():
        """First row."""
        return Aggregator("first_row", lambda x, f: _checked(x, f, row_order), {}, lambda n, f: 1e9)

    return r


def _checked(x, f, fn):
    from robustlab.collab.aggregators import _check

    _check(x, f, fn.__name__)
    return fn(x, f)


@pytest.mark.parametrize("name, failing", [("claims_robust", "check_f_kappa_robust"),
                                           ("first_row", "check_permutation_invariant")])
def test_battery_catches_broken_rules(name, failing):
    r = _broken_registry()
    checks = {c.name: (s, c) for s, c in iter_checks(r) if s.name == name}
    s, c = checks[failing]
    with pytest.raises(AssertionError):
        c(s)


def test_rules_on_hand_computed_examples():
    from robustlab.collab import aggregators as A

    x = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0], [100.0, -100.0]])
    torch.testing.assert_close(A.trimmed_mean(x, 1), torch.tensor([2.0, 11.0]))
    torch.testing.assert_close(A.coordinate_median(x, 1), torch.tensor([2.0, 11.0]))
    torch.testing.assert_close(A.krum(x, 1), torch.tensor([1.0, 11.0]))  # ties between rows 1 and 2: content order
    torch.testing.assert_close(A.multi_krum(x, 1), x[:4].mean(0))
    torch.testing.assert_close(A.monna(x, 1, pivot=0), x[:4].mean(0))
    torch.testing.assert_close(A.monna(x, 1, pivot=4), torch.cat([x[:3], x[4:]]).mean(0))  # farthest from the pivot: row 3
    gm = A.geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 0, max_iter=1000)
    t = 1 / (3 + 3 ** 0.5)  # Fermat point of the right isosceles triangle: (t, t)
    torch.testing.assert_close(gm, torch.tensor([t, t]), atol=1e-5, rtol=0)
    cc = A.centered_clipping(torch.tensor([[0.0], [0.0], [10.0]]), 1, tau=1.0, iters=1, center=torch.zeros(1))
    torch.testing.assert_close(cc, torch.tensor([1 / 3]))


def test_unknown_options_and_names_are_refused():
    from robustlab._registry import UnknownNameError
    from robustlab._validation import InvalidParameterError
    from robustlab.collab import aggregators as A

    with pytest.raises(InvalidParameterError, match="Unknown option.*'tua'.*Accepted: tau, iters, center"):
        A.get("centered_clipping", tua=1.0)
    with pytest.raises(UnknownNameError, match="Did you mean 'krum'"):
        A.get("krun")
    with pytest.raises(InvalidParameterError, match="'m' parameter of multi_krum"):
        A.multi_krum(torch.randn(7, 2), 2, m=6)
    with pytest.raises(InvalidParameterError, match="krum needs n >= 7"):
        A.krum(torch.randn(6, 2), 2)


@parametrize_checks(BYZANTINE)
def test_byzantine_behaviour(spec, check):
    check(spec)


def test_behaviours_on_hand_computed_examples():
    from robustlab.collab import byzantine as B

    hon = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(B.get("sign_flip")(hon, 1, g), torch.tensor([[-3.0, -2.0]]))
    torch.testing.assert_close(B.get("ipm", epsilon=0.5)(hon, 2, g), torch.tensor([[-1.5, -1.0]] * 2))
    sd = torch.tensor([(8 / 3) ** 0.5, 0.0])
    torch.testing.assert_close(B.get("alie", z=1.0)(hon, 1, g), torch.tensor([[3.0, 2.0]]) + sd)
    torch.testing.assert_close(B.get("mimic")(hon, 2, g), torch.tensor([[1.0, 2.0]] * 2))  # first of the two extremes
    assert B.alie_z(10, 3) == pytest.approx(0.5244, abs=1e-4)  # s = 3, Φ⁻¹(0.7)
    assert B.alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)  # s = 14, Φ⁻¹(0.72)
    assert torch.equal(B.get("label_flip").transform_labels(torch.tensor([0, 9, 3]), 10), torch.tensor([9, 0, 6]))
